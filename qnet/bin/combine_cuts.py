"""Concatenate cut manifests into one (optionally shuffled), atomically:
python -m qnet.bin.combine_cuts OUT IN [IN ...] [--shuffle true --seed 0]."""

import argparse
import logging
import random
import sys
from pathlib import Path

from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description="Combine lhotse cut manifests, e.g. the three LibriSpeech "
                                "train parts into librispeech_cuts_train-all-shuf.jsonl.gz.")
    p.add_argument("out", type=Path, help="output cuts manifest (.jsonl.gz)")
    p.add_argument("inputs", type=Path, nargs="+", help="input cuts manifests")
    p.add_argument("--shuffle", type=str2bool, default=False, help="shuffle the combined cuts (in memory)")
    p.add_argument("--seed", type=int, default=0)
    return p


def main(argv=None) -> int:
    """Entry point; fails when an input is missing or two inputs share a cut id."""
    args = get_parser().parse_args(argv)
    setup_logger()
    from lhotse import CutSet, load_manifest

    from qnet.corpus.validate import atomic_to_file

    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        logging.error(f"missing input manifests: {' '.join(missing)}")
        return 1
    cuts, seen = [], set()
    for p in args.inputs:
        for c in load_manifest(p):
            if c.id in seen:
                logging.error(f"{p}: cut id {c.id} appears in an earlier input too")
                return 1
            seen.add(c.id)
            cuts.append(c)
    if args.shuffle:
        random.Random(args.seed).shuffle(cuts)
    atomic_to_file(CutSet.from_cuts(cuts), args.out)
    logging.info(f"{args.out}: {len(cuts)} cuts from {len(args.inputs)} manifests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
