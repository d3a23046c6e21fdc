"""Prepare English Common Voice manifests: python -m qnet.bin.prepare_commonvoice CORPUS_DIR OUT_DIR [--splits ...]."""

import argparse
import logging
import sys
from pathlib import Path

from qnet.corpus.commonvoice import DEFAULT_SPLITS, prepare_commonvoice_en
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Read CORPUS_DIR/en/{train,dev,test}.tsv + clips/ (lhotse's Common Voice recipe), "
        "drop unreadable clips, normalize texts to our characters and write "
        "OUT_DIR/commonvoice_{recordings,supervisions}_<split>.jsonl.gz with a report per split.",
    )
    p.add_argument("corpus_dir", type=Path, help="the cv-corpus-*/ folder holding en/")
    p.add_argument("out_dir", type=Path)
    p.add_argument("--splits", nargs="+", default=list(DEFAULT_SPLITS))
    p.add_argument("--language", default="en", help="language folder (texts are normalized to a-z ' anyway)")
    p.add_argument("-j", "--num-jobs", type=int, default=1)
    p.add_argument("--max-duration", type=float, default=16.7, help="drop longer clips from train; 0 = no limit")
    p.add_argument("--sampling-rate", type=int, default=16000)
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; exit status 1 when no split could be prepared."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    try:
        status = prepare_commonvoice_en(args.corpus_dir, args.out_dir, args.splits, args.num_jobs,
                                        args.max_duration, args.sampling_rate, args.language)
    except (FileNotFoundError, ValueError) as exc:
        logging.error(str(exc))
        return 1
    logging.info("splits: " + ", ".join(f"{s}={v}" for s, v in status.items()))
    bad = [s for s, v in status.items() if v in ("missing", "empty")]
    return 1 if len(bad) == len(status) else 0


if __name__ == "__main__":
    sys.exit(main())
