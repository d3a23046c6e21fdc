"""Build an icefall-style lang dir (tokens.txt, words.txt, lexicon[_disambig].txt, L.pt, L_disambig.pt).

    python -m qnet.bin.prepare_lang --unit char --text data/train_text.txt --lang-dir data/lang_char
    python -m qnet.bin.prepare_lang --unit bpe --bpe-size 256 --text T --words data/lm/vocab.txt --lang-dir D
"""

import argparse
import logging

from qnet.lang import prepare_lang
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--unit", choices=["char", "bpe"], required=True, help="modelling unit")
    p.add_argument("--bpe-size", type=int, default=None, help="sentencepiece vocabulary size (--unit bpe)")
    p.add_argument("--text", nargs="+", required=True,
                   help="training transcripts, one sentence per line (words are taken from here; "
                        "BPE is trained on them)")
    p.add_argument("--words", nargs="*", default=[],
                   help="extra word lists (first field of each line), e.g. the LM vocabulary")
    p.add_argument("--lang-dir", required=True)
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    setup_logger(f"{args.lang_dir}/log/prepare_lang.log")
    logging.info(f"prepare_lang {vars(args)}")
    prepare_lang(args.lang_dir, args.unit, args.text, args.words, args.bpe_size)


if __name__ == "__main__":
    main()
