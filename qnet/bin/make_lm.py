"""Word n-gram LM for HLG and rescoring: ARPA (kenlm lmplz, or a ready ARPA) -> G.fst.txt (kaldilm).

    python -m qnet.bin.make_lm --text data/lm/text.txt --order 3 --prune 0 1 1 \
        --lang-dir data/lang_char --out-dir data/lm --name G_3_gram
    python -m qnet.bin.make_lm --arpa download/lm/4-gram.arpa.gz --lang-dir data/lang_bpe_500 \
        --out-dir data/lm --name G_4_gram

Writes OUT_DIR/NAME.arpa (normalized), optionally NAME.bin (kenlm binary) and OUT_DIR/NAME.fst.txt.
"""

import argparse
import logging
from pathlib import Path

from qnet.lm import arpa_order, arpa_to_fst_txt, build_binary, normalize_arpa, train_arpa
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--text", help="LM training text (plain or .gz), normalized like the transcripts")
    src.add_argument("--arpa", help="a ready ARPA (plain or .gz); its words are normalized")
    p.add_argument("--order", type=int, default=3, help="n-gram order (lmplz -o; for --arpa: max order used)")
    p.add_argument("--prune", type=int, nargs="*", default=None,
                   help="lmplz --prune count thresholds per order, e.g. 0 1 1")
    p.add_argument("--discount-fallback", type=str2bool, default=True,
                   help="lmplz --discount_fallback (needed for tiny corpora)")
    p.add_argument("--binary", type=str2bool, default=False, help="also write a kenlm binary NAME.bin")
    p.add_argument("--lang-dir", required=True, help="lang dir whose words.txt G uses")
    p.add_argument("--out-dir", default="data/lm")
    p.add_argument("--name", default="G_3_gram", help="output stem: OUT_DIR/NAME.{arpa,fst.txt}")
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    out_dir = Path(args.out_dir)
    setup_logger(out_dir / "log" / f"make_lm.{args.name}.log")
    logging.info(f"make_lm {vars(args)}")
    arpa = out_dir / f"{args.name}.arpa"
    if args.text:
        train_arpa(args.text, arpa, order=args.order, prune=args.prune, discount_fallback=args.discount_fallback)
        max_order = -1
    else:
        normalize_arpa(args.arpa, arpa)
        max_order = min(args.order, arpa_order(arpa)) if args.order else -1
    if args.binary:
        build_binary(arpa, out_dir / f"{args.name}.bin")
    arpa_to_fst_txt(arpa, Path(args.lang_dir) / "words.txt", out_dir / f"{args.name}.fst.txt", max_order)


if __name__ == "__main__":
    main()
