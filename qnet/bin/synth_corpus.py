"""Synthesize a small speech corpus offline (espeak-ng + flite TTS) in the LibriSpeech or WSJ LDC layout.

Examples:
  python -m qnet.bin.synth_corpus --layout librispeech --out data/corpus --seed 1
  python -m qnet.bin.synth_corpus --layout wsj --out data/corpus/wsj --seed 1 --smoke true
"""

import argparse
import logging
import sys
import time

from qnet.corpus.synth import SynthConfig, synthesize_corpus
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--layout", required=True, choices=("librispeech", "wsj"),
                   help="librispeech: <out>/LibriSpeech/{train-clean-100,dev-clean,test-clean} + <out>/lm; "
                        "wsj: <out>/LDC93S6B/11-*.1 + <out>/LDC94S13B/13-*.1 disc directories")
    p.add_argument("--out", required=True, help="output root directory")
    p.add_argument("--seed", type=int, default=0, help="random seed; same seed -> byte-identical files")
    p.add_argument("--smoke", type=str2bool, default=False, help="tiny sizes for CI (20/5/5 utterances)")
    p.add_argument("--num-train", type=int, default=None, help="training utterances (WSJ: si84 + si200)")
    p.add_argument("--num-dev", type=int, default=None, help="dev utterances (dev-clean / dev93)")
    p.add_argument("--num-test", type=int, default=None, help="test utterances (test-clean / eval92)")
    p.add_argument("--num-lm", type=int, default=None, help="LM-text sentences (disjoint from dev/test)")
    p.add_argument("--min-words", type=int, default=None, help="shortest sentence in words (default 6; wsj 5)")
    p.add_argument("--max-words", type=int, default=None, help="longest sentence in words (default 16; wsj 13)")
    p.add_argument("--num-speakers-train", type=int, default=None, help="training voices (default 100 / 40)")
    p.add_argument("--num-speakers-dev", type=int, default=None, help="dev voices (default 6)")
    p.add_argument("--num-speakers-test", type=int, default=None, help="test voices (default 6)")
    p.add_argument("--test-group", default="",
                   help="voice group of the test set (default: the layout's own test voices); e.g. held-back "
                        "for voices that no recipe corpus uses")
    p.add_argument("--nj", type=int, default=2, help="parallel synthesis processes")
    p.add_argument("--log", default=None, help="also log to this file")
    return p


def main(argv=None) -> int:
    """Entry point."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log)
    cfg = SynthConfig.default(
        args.layout, seed=args.seed, smoke=args.smoke, num_train=args.num_train, num_dev=args.num_dev,
        num_test=args.num_test, num_lm=args.num_lm, min_words=args.min_words, max_words=args.max_words,
        num_speakers_train=args.num_speakers_train, num_speakers_dev=args.num_speakers_dev,
        num_speakers_test=args.num_speakers_test, test_group=args.test_group or None)
    for name in ("num_train", "num_dev", "num_test", "num_lm"):
        if getattr(cfg, name) < 0:
            raise SystemExit(f"--{name.replace('_', '-')} must be >= 0")
    start = time.time()
    logging.info("synthesizing %s", cfg)
    synthesize_corpus(args.out, cfg, num_jobs=args.nj)
    logging.info("done in %.1f s", time.time() - start)
    return 0


if __name__ == "__main__":
    sys.exit(main())
