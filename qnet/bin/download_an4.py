"""Download and unpack CMU AN4: python -m qnet.bin.download_an4 DL_DIR (-> DL_DIR/an4)."""

import argparse
import logging
import sys
from pathlib import Path

from qnet.corpus.an4 import DOWNLOAD_URLS, An4LayoutError, download_an4
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Download an4_sphere.tar.gz (CMU's address, then NeMo's public mirror) into DL_DIR, "
        "verify it (every member read; lists and 1078 SPHERE files present) and unpack DL_DIR/an4. "
        "An archive already in DL_DIR is verified and reused.",
    )
    p.add_argument("dl_dir", type=Path, help="download folder, e.g. download")
    p.add_argument("--url", action="append", default=None,
                   help=f"URL to try (repeatable; default: {' then '.join(DOWNLOAD_URLS)})")
    p.add_argument("--timeout", type=float, default=30.0, help="seconds without data before a URL is given up")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; exit status 1 when no URL gave a valid archive."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    try:
        corpus = download_an4(args.dl_dir, args.url or DOWNLOAD_URLS, args.timeout)
    except An4LayoutError as exc:
        logging.error(str(exc))
        return 1
    logging.info(f"AN4 is in {corpus}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
