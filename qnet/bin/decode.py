"""Decode lhotse cuts with a QuartzNet CTC model: greedy, ctc-decoding (H), HLG 1best (optionally swept over
LM weights, --hlg-scales), whole-lattice and n-best rescoring with a larger G (LM-scale sweep), and n-best
rescoring with G plus a neural LM (nnlm-rescoring, --nnlm; both scales swept); every HLG method also sweeps
the word insertion penalties of --word-penalties. Writes Kaldi text hypotheses and scores them.

    python -m qnet.bin.decode --model exp/avg.pt --cuts data/fbank/mini_cuts_test.jsonl.gz \
        --lang-dir data/lang_char --G-rescore data/lm/G_4_gram.fst.txt \
        --methods greedy,ctc-decoding,1best,whole-lattice-rescoring --out-dir exp/decode_test

Writes OUT_DIR/ref-SET.txt, OUT_DIR/hyp-SET-KEY.txt per result key, and (with --score true) the
recogs-/errs-/wer-summary- files; logs go to OUT_DIR/log/.
"""

import argparse
import logging
import time
from pathlib import Path
from typing import Dict, List

import torch

from qnet.decode import DEFAULT_LM_SCALES, DEFAULT_NNLM_SCALES, METHODS, Decoder, DecodeOptions
from qnet.scoring import score_dir, write_text
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="checkpoint (qnet.model.load_model)")
    p.add_argument("--cuts", required=True, help="lhotse cuts (precomputed features or audio)")
    p.add_argument("--test-set", default=None, help="name in output files (default: from --cuts)")
    p.add_argument("--lang-dir", default=None, help="lang dir (needed for every method but greedy on chars)")
    p.add_argument("--hlg", default=None, help="HLG (default LANG_DIR/HLG.pt)")
    p.add_argument("--G-rescore", dest="G_rescore", default=None, help="larger G.fst.txt for rescoring")
    p.add_argument("--methods", default="greedy", help=f"comma list of {','.join(METHODS)}")
    p.add_argument("--nnlm", default=None, help="nnlm-rescoring: the NNLM (nnlm.pt of qnet.bin.train_nnlm)")
    p.add_argument("--nnlm-scales", default=",".join(f"{s:g}" for s in DEFAULT_NNLM_SCALES),
                   help="nnlm-rescoring: comma list of NNLM scales (each with every --lm-scales value)")
    p.add_argument("--nnlm-max-tokens", type=int, default=20000,
                   help="nnlm-rescoring: padded words per NNLM batch (memory bound)")
    p.add_argument("--out-dir", required=True)
    p.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch")
    p.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N")
    p.add_argument("--search-beam", type=float, default=20.0)
    p.add_argument("--output-beam", type=float, default=8.0)
    p.add_argument("--min-active-states", type=int, default=30)
    p.add_argument("--max-active-states", type=int, default=10000)
    p.add_argument("--num-paths", type=int, default=100, help="n-best rescoring: paths sampled")
    p.add_argument("--nbest-scale", type=float, default=0.5, help="n-best rescoring: lattice score scale")
    p.add_argument("--blank-skip-threshold", type=float, default=0.0,
                   help="graph methods: drop frames whose blank probability exceeds this after such a frame "
                        "(faster lattices; 0 = keep every frame)")
    p.add_argument("--max-lattice-frames", type=int, default=1500,
                   help="output frames per lattice-generation call (memory bound on flat posteriors)")
    p.add_argument("--max-lattice-arcs", type=int, default=50_000,
                   help="rescoring: a lattice with more arcs is pruned by arc posteriors first (memory bound)")
    p.add_argument("--max-intersect-arcs", type=int, default=2_000_000,
                   help="n-best rescoring: estimated arcs of one lattice x paths intersection (memory bound)")
    p.add_argument("--lm-scales", default=",".join(f"{s:g}" for s in DEFAULT_LM_SCALES),
                   help="comma list of LM scales for rescoring")
    p.add_argument("--hlg-scales", default="1",
                   help="1best: comma list of weights on HLG's LM scores (each pair with --word-penalties "
                        "decodes its own lattice; pick on a dev set)")
    p.add_argument("--word-penalties", default="0",
                   help="1best and the rescoring methods: comma list of word insertion penalties in nats (negative "
                        "favours words; each with every --hlg-scales or --lm-scales value; give negative lists as "
                        "--word-penalties=-2,-1,0)")
    p.add_argument("--modified-ctc-topo", type=str2bool, default=False, help="H for ctc-decoding")
    p.add_argument("--score", type=str2bool, default=True, help="score right away (false for split jobs)")
    p.add_argument("--cer", type=str2bool, default=None, help="also CER (default: for character models)")
    p.add_argument("--num-threads", type=int, default=1, help="torch CPU threads")
    return p


def test_set_name(cuts_path: str) -> str:
    """`mini_cuts_test.jsonl.gz` -> `mini_cuts_test` (used when --test-set is not given)."""
    name = Path(cuts_path).name
    for ext in (".gz", ".jsonl", ".json", ".yaml"):
        if name.endswith(ext):
            name = name[: -len(ext)]
    return name


def _to_16k(cut):
    return cut.resample(16000) if cut.sampling_rate != 16000 else cut


def batch_features(cuts) -> (torch.Tensor, torch.Tensor):
    """(feats (B,T,64), lens (B,)) of a CutSet batch: stored features, or NeMo log-mel from the audio."""
    from lhotse.dataset.collation import collate_audio, collate_features

    if all(c.has_features for c in cuts):
        feats, lens = collate_features(cuts)
        return feats, lens.to(torch.int64)
    from qnet.features import compute_nemo_mel

    cuts = cuts.map(_to_16k)
    audio, audio_lens = collate_audio(cuts)
    return compute_nemo_mel(audio, audio_lens)


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    out_dir = Path(args.out_dir)
    test_set = args.test_set or test_set_name(args.cuts)
    setup_logger(out_dir / "log" / f"decode-{test_set}.log")
    logging.info(f"decode {vars(args)}")
    torch.set_num_threads(args.num_threads)

    from qnet.data import SimpleCutSampler, cut_text, load_cuts
    from qnet.model import load_model
    from qnet.tokens import CharTokenizer, load_tokenizer

    device = torch.device(args.device)
    model = load_model(args.model).to(device).eval()
    if args.lang_dir:
        tokenizer = load_tokenizer(args.lang_dir)
        if tokenizer.table != model.tokens:
            raise ValueError(f"{args.lang_dir}/tokens.txt does not match the tokens of {args.model}")
    else:
        tokenizer = CharTokenizer(model.tokens)
    compute_cer = isinstance(tokenizer, CharTokenizer) if args.cer is None else args.cer

    opts = DecodeOptions(
        search_beam=args.search_beam, output_beam=args.output_beam, min_active_states=args.min_active_states,
        max_active_states=args.max_active_states, num_paths=args.num_paths, nbest_scale=args.nbest_scale,
        max_lattice_arcs=args.max_lattice_arcs, max_intersect_arcs=args.max_intersect_arcs,
        max_lattice_frames=args.max_lattice_frames, blank_skip_threshold=args.blank_skip_threshold,
        lm_scales=[float(s) for s in args.lm_scales.split(",") if s],
        nnlm_scales=[float(s) for s in args.nnlm_scales.split(",") if s], nnlm_max_tokens=args.nnlm_max_tokens,
        hlg_scales=[float(s) for s in args.hlg_scales.split(",") if s],
        word_penalties=[float(s) for s in args.word_penalties.split(",") if s],
    )
    methods = [m for m in args.methods.split(",") if m]
    decoder = Decoder(methods, tokenizer, args.lang_dir, args.G_rescore, args.hlg, device, opts,
                      args.modified_ctc_topo, nnlm=args.nnlm)

    cuts = load_cuts(args.cuts)
    sampler = SimpleCutSampler(cuts, max_duration=args.max_duration, shuffle=False)
    refs: Dict[str, str] = {}
    hyps: Dict[str, Dict[str, str]] = {k: {} for k in decoder.result_keys()}
    audio_seconds = 0.0
    start = time.time()
    from tqdm import tqdm

    for batch_cuts in tqdm(sampler, desc=f"decode {test_set}", unit="batch"):
        ids: List[str] = [c.id for c in batch_cuts]
        for c in batch_cuts:
            refs[c.id] = tokenizer.normalize(cut_text(c))[0]
            audio_seconds += c.duration
        feats, feat_lens = batch_features(batch_cuts)
        with torch.no_grad():
            log_probs, out_lens = model(feats.to(device), feat_lens.to(device))
        for key, batch_hyps in decoder.decode(log_probs, out_lens, ids).items():
            hyps.setdefault(key, {}).update(zip(ids, batch_hyps))
    elapsed = time.time() - start
    logging.info(f"decoded {len(refs)} utterances ({audio_seconds:.1f} s of audio) in {elapsed:.1f} s "
                 f"(RTF {elapsed / max(audio_seconds, 1e-9):.4f}); {decoder.stats.summary()}")

    write_text(out_dir / f"ref-{test_set}.txt", refs)
    for key, texts in hyps.items():
        write_text(out_dir / f"hyp-{test_set}-{key}.txt", texts)
    if args.score:
        score_dir(out_dir, test_set, compute_cer)


if __name__ == "__main__":
    main()
