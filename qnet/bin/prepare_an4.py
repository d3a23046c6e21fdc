"""Prepare CMU AN4 manifests: python -m qnet.bin.prepare_an4 CORPUS_DIR OUT_DIR [--num-dev-speakers 8]."""

import argparse
import logging
import sys
from pathlib import Path

from qnet.corpus.an4 import PARTS, An4LayoutError, prepare_an4
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Read AN4 in the an4_sphere.tar.gz layout (etc/an4_{train,test}.{fileids,transcription}, "
        "wav/**/*.sph) and write OUT_DIR/an4_{recordings,supervisions}_{train,dev,test}.jsonl.gz, per-part "
        "reports and OUT_DIR/an4_dev_speakers.txt. dev is held out from CMU's train list by speaker. "
        "Parts already written are skipped.",
    )
    p.add_argument("corpus_dir", type=Path, help="the AN4 folder (holding etc/ and wav/), or its parent")
    p.add_argument("out_dir", type=Path, help="manifest folder, e.g. data/manifests")
    p.add_argument("--parts", nargs="+", default=list(PARTS), choices=PARTS)
    p.add_argument("--num-dev-speakers", type=int, default=8,
                   help="train speakers held out as dev, evenly spaced over the sorted speaker list")
    p.add_argument("--dev-speakers", nargs="*", default=None, help="hold out exactly these train speakers instead")
    p.add_argument("--max-speakers", type=int, default=0,
                   help="keep only the first N speakers (sorted) of the train and test lists (0 = all; smoke runs)")
    p.add_argument("--max-duration", type=float, default=16.7,
                   help="utterances longer than this (s) are dropped from train and flagged elsewhere; 0 = no limit")
    p.add_argument("--sampling-rate", type=int, default=16000)
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; exit status 1 on a layout error or when a part yielded nothing."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    try:
        status = prepare_an4(
            args.corpus_dir, args.out_dir, args.parts, args.num_dev_speakers, args.dev_speakers,
            args.max_speakers, args.max_duration, args.sampling_rate,
        )
    except (An4LayoutError, ValueError) as exc:
        logging.error(str(exc))
        return 1
    logging.info("parts: " + ", ".join(f"{p}={s}" for p, s in status.items()))
    bad = [p for p, s in status.items() if s == "empty"]
    if bad:
        logging.error(f"parts with no usable utterance: {' '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
