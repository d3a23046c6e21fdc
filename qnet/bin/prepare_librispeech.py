"""Prepare LibriSpeech manifests: python -m qnet.bin.prepare_librispeech CORPUS_DIR OUT_DIR [--parts ...|auto] [-j N]."""

import argparse
import logging
import sys
from pathlib import Path

from qnet.corpus.librispeech import prepare_librispeech
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Scan CORPUS_DIR/<part>/<spk>/<chapter>/*.trans.txt + .flac/.wav and write "
        "OUT_DIR/librispeech_{recordings,supervisions}_<part>.jsonl.gz (lhotse) and a per-part "
        "report of skipped/fixed items. Parts whose manifests exist are skipped.",
    )
    p.add_argument("corpus_dir", type=Path, help="the LibriSpeech folder (holding train-clean-100/, dev-clean/, ...)")
    p.add_argument("out_dir", type=Path, help="manifest folder, e.g. data/manifests")
    p.add_argument("--parts", nargs="+", default=["auto"], help="parts to prepare, or 'auto' for every part found")
    p.add_argument("-j", "--num-jobs", type=int, default=1, help="worker processes scanning chapters")
    p.add_argument("--max-duration", type=float, default=16.7,
                   help="utterances longer than this (s) are dropped from train* parts and flagged elsewhere; 0 = no limit")
    p.add_argument("--sampling-rate", type=int, default=16000, help="other rates are resampled on load")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; exit status 1 when no requested part could be prepared."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    parts = "auto" if args.parts == ["auto"] else args.parts
    try:
        status = prepare_librispeech(args.corpus_dir, args.out_dir, parts, args.num_jobs, args.max_duration, args.sampling_rate)
    except FileNotFoundError as exc:
        logging.error(str(exc))
        return 1
    bad = {p: s for p, s in status.items() if s in ("missing", "empty")}
    logging.info("parts: " + ", ".join(f"{p}={s}" for p, s in status.items()))
    if bad:
        logging.warning(f"parts not prepared (see above): {' '.join(bad)}")
    return 1 if len(bad) == len(status) else 0


if __name__ == "__main__":
    sys.exit(main())
