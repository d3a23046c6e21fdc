"""Decoding speed and accuracy on saved CTC log-probs (the network excluded), CPU:
greedy, ctc-decoding (H), HLG 1best, whole-lattice and n-best rescoring, next to pyctcdecode + kenlm at its
default beam (100) with the same ARPA.

    . path.sh && nice python bench/bench_decode.py [--num-utts 200] [--work-dir /tmp/bench_decode]
    nice python bench/bench_decode.py --log-probs exp/test_log_probs.pt   # a real model's outputs

Without --log-probs, the log-probs are synthetic "peaky" CTC outputs made from held-out sentences of the
synthetic NARRATIVE domain (qnet.corpus.textgen): each character gets 1-3 frames then 1-4 blank frames,
frame logits are noisy, and a fraction of characters peak on a wrong letter (a confusion), so greedy
decoding makes realistic spelling errors. The LMs (3-gram for HLG and pyctcdecode, 4-gram for rescoring)
are trained with lmplz on separate sentences of the same domain, so some test words are OOV.
--log-probs takes a torch file {"log_probs": [(T, V) tensors], "texts": [reference strings]} of a char
model (frames of 20 ms assumed for the real-time factor).

RTF = decoding seconds / audio seconds (frames * 0.02 s), one CPU thread, after a warm-up.
"""

import argparse
import logging
import random
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


def run_qnet(methods: List[str], lang: Path, G4: Path, log_probs, refs, batch_size: int, lm_scales):
    """{result key: (hyps, seconds)} for each method, decoded in batches."""
    from qnet.decode import Decoder, DecodeOptions
    from qnet.tokens import CharTokenizer

    results = {}
    for method in methods:
        dec = Decoder([method], CharTokenizer(), lang, G_rescore=G4, opts=DecodeOptions(lm_scales=lm_scales))
        # warm-up on one batch (graph loading, allocator)
        _decode_all(dec, log_probs[:batch_size], batch_size)
        start = time.perf_counter()
        hyps = _decode_all(dec, log_probs, batch_size)
        elapsed = time.perf_counter() - start
        for key, h in hyps.items():
            results[key] = (h, elapsed)
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
    p.add_argument("--skip-nbest", action="store_true")
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
    if args.log_probs:
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

    methods = ["greedy", "ctc-decoding", "1best", "whole-lattice-rescoring"]
    if not args.skip_nbest:
        methods.append("nbest-rescoring")
    results = run_qnet(methods, lang, G4, log_probs, refs, args.batch_size, lm_scales)
    hyps, seconds = run_pyctcdecode(arpa3, log_probs)
    results["pyctcdecode beam=100 (3-gram, alpha=0.5 beta=1.5)"] = (hyps, seconds)

    import platform

    print(f"# bench_decode: {len(refs)} utterances, {audio_s:.0f} s of audio, {source}")
    print(f"# LM: {len(lm_sentences)} sentences, test OOV rate {100 * oov:.2f}%; HLG: 3-gram "
          f"(lmplz --prune 0 0 1), rescoring: 4-gram; machine: {platform.machine()} "
          f"{torch.get_num_threads()} thread (shared 2-core box: timings are noisy)")
    print(f"{'method':58s} {'WER%':>7s} {'RTF':>9s}  (rescoring: time covers all {len(lm_scales)} scales)")
    for key, (h, secs) in results.items():
        print(f"{key:58s} {wer(refs, h):7.2f} {secs / audio_s:9.5f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
