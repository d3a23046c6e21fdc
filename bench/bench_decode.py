"""Decoding speed and accuracy on saved CTC log-probs (the network excluded), CPU:
greedy, ctc-decoding (H), HLG 1best, whole-lattice and n-best rescoring, next to pyctcdecode + kenlm at its
default beam (100) with the same ARPA.

    . path.sh && nice python bench/bench_decode.py [--num-utts 200] [--work-dir /tmp/bench_decode]
    nice python bench/bench_decode.py --log-probs exp/test_log_probs.pt   # a real model's outputs
    nice python bench/bench_decode.py --model egs/mini/exp/librispeech/quartznet_mini-s3_lang_char/averaged-avg-2.pt \
        --cuts egs/mini/data/librispeech/fbank/librispeech_cuts_test-clean.jsonl.gz --repeats 3 --blank-skip 0.999

Without --log-probs, the log-probs are synthetic "peaky" CTC outputs made from held-out sentences of the
synthetic NARRATIVE domain (qnet.corpus.textgen): each character gets 1-3 frames then 1-4 blank frames,
frame logits are noisy, and a fraction of characters peak on a wrong letter (a confusion), so greedy
decoding makes realistic spelling errors. The LMs (3-gram for HLG and pyctcdecode, 4-gram for rescoring)
are trained with lmplz on separate sentences of the same domain, so some test words are OOV.
--log-probs takes a torch file {"log_probs": [(T, V) tensors], "texts": [reference strings]} of a char
model (frames of 20 ms assumed for the real-time factor). --model + --cuts make that file from a trained
char model and cuts with stored features (the network's time is not counted), cached in --work-dir.

--repeats N times HLG 1best (each --blank-skip threshold too) and pyctcdecode N times, round after
round, and prints each one's median RTF, its spread (min-max) and the per-round speed ratio against
pyctcdecode: on a shared machine only ratios measured side by side mean anything.

RTF = decoding seconds / audio seconds (frames * 0.02 s), one CPU thread, after a warm-up.
"""

import argparse
import logging
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Dict, List, Tuple

import torch

FRAME_SECONDS = 0.02  # QuartzNet output frames: 10 ms features, stride 2


def synthetic_log_probs(texts: List[str], seed: int, confusion_rate: float, noise: float) -> List[torch.Tensor]:
    """Peaky CTC log-probs (T, 29) spelling `texts`, with noise and letter confusions."""
    from qnet.tokens import CharTokenizer

    tok = CharTokenizer()
    V = len(tok.table)
    g = torch.Generator().manual_seed(seed)
    rng = random.Random(seed)
    letters = list(range(2, V))
    out = []
    for text in texts:
        frames: List[Tuple[int, int]] = []  # (peak id, true id)
        for tid in tok.encode(text):
            wrong = tid
            if tid != tok.space_id and rng.random() < confusion_rate:
                wrong = rng.choice([t for t in letters if t != tid])
            for _ in range(rng.randint(1, 3)):
                frames.append((wrong, tid))
            for _ in range(rng.randint(1, 4)):
                frames.append((0, 0))
        logits = noise * torch.randn(len(frames), V, generator=g)
        for t, (peak, true) in enumerate(frames):
            logits[t, peak] += 6.0
            if peak != true:  # the true symbol stays a strong runner-up
                logits[t, true] += 5.0
        out.append(logits.log_softmax(dim=-1))
    return out


def make_lms(work: Path, lm_sentences: List[str], test_sentences: List[str]) -> Tuple[Path, Path, Path]:
    """Char lang dir (LM vocabulary), 3-gram (HLG, pyctcdecode) and 4-gram (rescoring); returns
    (lang dir, 3-gram ARPA, 4-gram G.fst.txt). Cached in `work`."""
    from qnet.graph import compile_HLG, save_HLG
    from qnet.lang import prepare_lang
    from qnet.lm import arpa_to_fst_txt, train_arpa

    lang = work / "lang_char"
    lm_text = work / "lm_text.txt"
    if not lm_text.is_file():
        lm_text.write_text("\n".join(lm_sentences) + "\n")
    if not (lang / "L_disambig.pt").is_file():
        prepare_lang(lang, "char", [lm_text])
    arpa3, arpa4 = work / "G_3_gram.arpa", work / "G_4_gram.arpa"
    if not arpa3.is_file():
        train_arpa(lm_text, arpa3, order=3, prune=[0, 0, 1])
    if not arpa4.is_file():
        train_arpa(lm_text, arpa4, order=4)
    for arpa in (arpa3, arpa4):
        fst = arpa.with_suffix(".fst.txt")
        if not fst.is_file():
            arpa_to_fst_txt(arpa, lang / "words.txt", fst)
    if not (lang / "HLG.pt").is_file():
        save_HLG(compile_HLG(lang, work / "G_3_gram.fst.txt"), lang / "HLG.pt")
    return lang, arpa3, work / "G_4_gram.fst.txt"


def wer(refs: List[str], hyps: List[str]) -> float:
    """WER in percent with kaldialign."""
    from qnet.scoring import error_stats

    counts, _ = error_stats([(str(i), r.split(), h.split()) for i, (r, h) in enumerate(zip(refs, hyps))])
    return counts.rate


def model_log_probs(model_path: str, cuts_path: str, cache_dir: Path, max_utts: int = 0):
    """(log-probs [(T, V)], reference texts) of a char model on cuts with stored features; cached."""
    import hashlib

    key = hashlib.sha1(f"{Path(model_path).resolve()} {Path(model_path).stat().st_mtime} "
                       f"{Path(cuts_path).resolve()} {max_utts}".encode()).hexdigest()[:12]
    cache = cache_dir / f"log_probs_{key}.pt"
    if cache.is_file():
        saved = torch.load(cache)
        return saved["log_probs"], saved["texts"]
    from qnet.data import cut_text, load_cuts
    from qnet.model import load_model
    from qnet.utils import atomic_torch_save

    model = load_model(model_path).eval()
    log_probs, texts = [], []
    for i, cut in enumerate(load_cuts(cuts_path)):
        if max_utts and i >= max_utts:
            break
        feats = torch.from_numpy(cut.load_features()).unsqueeze(0)
        with torch.no_grad():
            lp, lens = model(feats, torch.tensor([feats.shape[1]]))
        log_probs.append(lp[0, : int(lens[0])].clone())
        texts.append(cut_text(cut))
    atomic_torch_save({"log_probs": log_probs, "texts": texts, "model": model_path, "cuts": cuts_path}, cache)
    return log_probs, texts


def run_qnet(methods: List[str], lang: Path, G4: Path, log_probs, refs, batch_size: int, lm_scales,
             label: str = "", nnlm=None, **opts):
    """{result key + label: (hyps, seconds)} for each method, decoded in batches with DecodeOptions `opts`."""
    from qnet.decode import Decoder, DecodeOptions
    from qnet.tokens import CharTokenizer

    results = {}
    for method in methods:
        dec = Decoder([method], CharTokenizer(), lang, G_rescore=G4, nnlm=nnlm,
                      opts=DecodeOptions(lm_scales=lm_scales, **opts))
        # warm-up on one batch (graph loading, allocator)
        _decode_all(dec, log_probs[:batch_size], batch_size)
        start = time.perf_counter()
        hyps = _decode_all(dec, log_probs, batch_size)
        elapsed = time.perf_counter() - start
        for key, h in hyps.items():
            results[key + label] = (h, elapsed)
        if dec.stats.empty or dec.stats.fallback or dec.stats.pruned:
            logging.warning(f"{method}: {dec.stats.summary()}")
    return results


def _decode_all(dec, log_probs: List[torch.Tensor], batch_size: int) -> Dict[str, List[str]]:
    out: Dict[str, List[str]] = {}
    for i in range(0, len(log_probs), batch_size):
        chunk = log_probs[i: i + batch_size]
        lens = torch.tensor([x.shape[0] for x in chunk])
        batch = torch.full((len(chunk), int(lens.max()), chunk[0].shape[1]), -1e4)
        batch[:, :, 0] = 0.0  # padding frames are blanks (never read: lens)
        for b, x in enumerate(chunk):
            batch[b, : x.shape[0]] = x
        for key, hyps in dec.decode(batch, lens, [str(i + b) for b in range(len(chunk))]).items():
            out.setdefault(key, []).extend(hyps)
    return out


def run_pyctcdecode(arpa: Path, log_probs, beam_width: int = 100):
    """pyctcdecode + kenlm (default alpha/beta) at `beam_width`: (hyps, seconds)."""
    from pyctcdecode import build_ctcdecoder

    labels = [""] + [" "] + list("abcdefghijklmnopqrstuvwxyz'")
    decoder = build_ctcdecoder(labels, kenlm_model_path=str(arpa))
    decoder.decode(log_probs[0].numpy(), beam_width=beam_width)  # warm-up
    start = time.perf_counter()
    hyps = [" ".join(decoder.decode(x.numpy(), beam_width=beam_width).split()) for x in log_probs]
    return hyps, time.perf_counter() - start


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work-dir", default="/tmp/qnet_bench_decode")
    p.add_argument("--num-utts", type=int, default=200)
    p.add_argument("--num-lm-sentences", type=int, default=20000)
    p.add_argument("--confusion-rate", type=float, default=0.05)
    p.add_argument("--noise", type=float, default=1.0)
    p.add_argument("--batch-size", type=int, default=20)
    p.add_argument("--lm-scales", default="0.5,0.8,1.0,1.2")
    p.add_argument("--log-probs", default=None, help="real model outputs (see the module docstring)")
    p.add_argument("--model", default=None, help="with --cuts: log-probs of this char model (see above)")
    p.add_argument("--cuts", default=None, help="cuts with stored features for --model")
    p.add_argument("--max-utts", type=int, default=0, help="--model/--cuts: the first N cuts only (0: all)")
    p.add_argument("--skip-nbest", action="store_true")
    p.add_argument("--nnlm", default=None, help="add nnlm-rescoring rows with this nnlm.pt (qnet.bin.train_nnlm)")
    p.add_argument("--nnlm-scales", default="0,0.2,0.4,0.6,0.8,1.0")
    p.add_argument("--skip-rescoring", action="store_true", help="no whole-lattice/n-best rows")
    p.add_argument("--blank-skip", default="", help="comma list of blank-skip thresholds for extra 1best rows")
    p.add_argument("--beams", default="", help="comma list of SEARCH_BEAM/MAX_ACTIVE_STATES for extra 1best rows, "
                                               "e.g. 12/2000 (egs/mini's decode_opts)")
    p.add_argument("--repeats", type=int, default=1, help="timing rounds of 1best rows and pyctcdecode")
    p.add_argument("--beam-width", type=int, default=100, help="pyctcdecode beam")
    args = p.parse_args(argv)

    from qnet.corpus.textgen import generate_splits
    from qnet.tokens import normalize_text
    from qnet.utils import setup_logger

    setup_logger(level=logging.WARNING)
    torch.set_num_threads(1)
    work = Path(args.work_dir) / f"lm{args.num_lm_sentences}"  # LMs and graphs are cached here
    work.mkdir(parents=True, exist_ok=True)
    splits, lm_sentences = generate_splits("narrative", 1234, {"test": args.num_utts}, args.num_lm_sentences)
    lm_sentences = [normalize_text(s)[0] for s in lm_sentences]
    if args.model or args.cuts:
        if not (args.model and args.cuts):
            p.error("--model and --cuts go together")
        log_probs, texts = model_log_probs(args.model, args.cuts, work, args.max_utts)
        log_probs = [x.float() for x in log_probs]
        refs = [normalize_text(t)[0] for t in texts]
        source = f"{args.model} on {args.cuts}"
    elif args.log_probs:
        saved = torch.load(args.log_probs)
        log_probs = [x.float() for x in saved["log_probs"]]
        refs = [normalize_text(t)[0] for t in saved["texts"]]
        source = args.log_probs
    else:
        refs = [normalize_text(s)[0] for s in splits["test"]]
        log_probs = synthetic_log_probs(refs, 7, args.confusion_rate, args.noise)
        source = f"synthetic peaky log-probs (confusion rate {args.confusion_rate}, noise {args.noise})"
    lang, arpa3, G4 = make_lms(work, lm_sentences, refs)
    vocab = set(" ".join(lm_sentences).split())
    oov = sum(w not in vocab for r in refs for w in r.split()) / max(1, sum(len(r.split()) for r in refs))
    audio_s = sum(x.shape[0] for x in log_probs) * FRAME_SECONDS
    lm_scales = [float(s) for s in args.lm_scales.split(",")]

    methods = ["greedy", "ctc-decoding"]
    if not args.skip_rescoring:
        methods.append("whole-lattice-rescoring")
        if not args.skip_nbest:
            methods.append("nbest-rescoring")
    results = run_qnet(methods, lang, G4, log_probs, refs, args.batch_size, lm_scales)
    if args.nnlm:
        results.update(run_qnet(["nnlm-rescoring"], lang, G4, log_probs, refs, args.batch_size, lm_scales,
                                nnlm=args.nnlm, nnlm_scales=[float(s) for s in args.nnlm_scales.split(",")]))
    # The head-to-head rows, timed round after round: HLG 1best (plain and with blank skipping) and pyctcdecode.
    pyctc = f"pyctcdecode beam={args.beam_width} (3-gram, alpha=0.5 beta=1.5)"
    variants = [("", {})] + [(f" (blank skip {t})", {"blank_skip_threshold": float(t)})
                             for t in args.blank_skip.split(",") if t]
    for beam in (b for b in args.beams.split(",") if b):
        search, active = beam.split("/")
        variants.append((f" (search beam {search}, max active {active})",
                         {"search_beam": float(search), "max_active_states": int(active)}))
    rounds: Dict[str, List[float]] = {}
    for _ in range(args.repeats):
        for label, opts in variants:
            for key, (h, secs) in run_qnet(["1best"], lang, G4, log_probs, refs, args.batch_size, lm_scales,
                                           label, **opts).items():
                results[key] = (h, secs)
                rounds.setdefault(key, []).append(secs)
        hyps, seconds = run_pyctcdecode(arpa3, log_probs, args.beam_width)
        results[pyctc] = (hyps, seconds)
        rounds.setdefault(pyctc, []).append(seconds)

    import platform

    print(f"# bench_decode: {len(refs)} utterances, {audio_s:.0f} s of audio, {source}")
    print(f"# LM: {len(lm_sentences)} sentences, test OOV rate {100 * oov:.2f}%; HLG: 3-gram "
          f"(lmplz --prune 0 0 1), rescoring: 4-gram; machine: {platform.machine()} "
          f"{torch.get_num_threads()} thread (shared 2-core box: timings are noisy)")
    print(f"{'method':58s} {'WER%':>7s} {'RTF':>9s}  (rescoring: time covers all {len(lm_scales)} scales)")
    for key, (h, secs) in results.items():
        if key in rounds:
            secs = statistics.median(rounds[key])
        print(f"{key:58s} {wer(refs, h):7.2f} {secs / audio_s:9.5f}")
    if args.repeats > 1:
        print(f"# {args.repeats} timing rounds: median RTF [min-max], and speed vs pyctcdecode in the same round "
              f"(pyctcdecode seconds / this row's seconds): median [min-max]")
        for key, times in rounds.items():
            speed = [p / t for p, t in zip(rounds[pyctc], times)]
            print(f"{key:58s} RTF {statistics.median(times) / audio_s:.5f} [{min(times) / audio_s:.5f}-"
                  f"{max(times) / audio_s:.5f}]  x{statistics.median(speed):.2f} [{min(speed):.2f}-{max(speed):.2f}]")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
