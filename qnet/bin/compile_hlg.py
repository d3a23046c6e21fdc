"""Compile HLG = H o det(L_disambig o G) with k2 and save it as LANG_DIR/HLG.pt.

    python -m qnet.bin.compile_hlg --lang-dir data/lang_char --lm data/lm/G_3_gram.fst.txt
"""

import argparse
import logging
from pathlib import Path

from qnet.graph import compile_HLG, default_hlg_path, save_HLG
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", required=True)
    p.add_argument("--lm", required=True, help="G.fst.txt from qnet.bin.make_lm")
    p.add_argument("--out", default=None, help="output (default LANG_DIR/HLG.pt)")
    p.add_argument("--modified", type=str2bool, default=False, help="modified CTC topology (O(V) arcs)")
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    out = default_hlg_path(args.lang_dir, args.out)
    setup_logger(Path(args.lang_dir) / "log" / f"compile_hlg.{out.stem}.log")
    logging.info(f"compile_hlg {vars(args)}")
    HLG = compile_HLG(args.lang_dir, args.lm, modified=args.modified)
    save_HLG(HLG, out)
    logging.info(f"wrote {out}")


if __name__ == "__main__":
    main()
