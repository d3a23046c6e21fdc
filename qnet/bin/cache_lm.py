"""Build the rescoring G cache once, before parallel decode jobs load it (steps/decode.sh):

    python -m qnet.bin.cache_lm --lang-dir data/lang_char --G data/lm/G_4_gram.fst.txt

Writes data/lm/G_4_gram.pt (qnet.lm.build_G_cache: streamed from the text, bounded memory) unless it
is newer than the text already, and checks that the HLG given with --hlg exists.
"""

import argparse
import logging
import sys
import time
from pathlib import Path

from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--lang-dir", type=Path, required=True, help="lang dir (its words.txt numbers #0)")
    p.add_argument("--G", dest="G", type=Path, required=True, help="G.fst.txt for rescoring")
    p.add_argument("--hlg", type=Path, default=None, help="also check that this HLG.pt exists")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; 1 when an input is missing."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    from qnet.lang import SymbolTable
    from qnet.lm import G_cache_is_fresh, build_G_cache

    if args.hlg is not None and not args.hlg.is_file():
        logging.error(f"{args.hlg} does not exist; build it with steps/make_hlg.sh before decoding")
        return 1
    words = args.lang_dir / "words.txt"
    if not words.is_file():
        logging.error(f"{words} does not exist")
        return 1
    start = time.time()
    up_to_date = G_cache_is_fresh(args.G)
    try:
        cache = build_G_cache(args.G, SymbolTable.from_file(words)["#0"])
    except FileNotFoundError as exc:
        logging.error(str(exc))
        return 1
    logging.info(f"{cache}: {'up to date' if up_to_date else 'built'} ({time.time() - start:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
