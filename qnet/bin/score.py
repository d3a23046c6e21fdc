"""Score hypotheses Kaldi/icefall style (recogs-, errs-, wer-summary- files).

    python -m qnet.bin.score --dir exp/decode_test --test-set test [--cer true]
        scores every DIR/hyp-SET-KEY.txt against DIR/ref-SET.txt
    python -m qnet.bin.score --ref data/test/text --hyp exp/hyp.txt --out-dir exp/score --test-set test --key mine
        scores one Kaldi text file against another
"""

import argparse
from pathlib import Path

from qnet.scoring import pair_results, read_text, score_dir, score_set
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dir", help="decode dir holding ref-SET.txt and hyp-SET-*.txt")
    p.add_argument("--ref", help="Kaldi text file of references (with --hyp)")
    p.add_argument("--hyp", help="Kaldi text file of hypotheses (with --ref)")
    p.add_argument("--out-dir", help="where --ref/--hyp results go (default: the --hyp folder)")
    p.add_argument("--key", default="hyp", help="result key for --ref/--hyp")
    p.add_argument("--test-set", default="test")
    p.add_argument("--cer", type=str2bool, default=False, help="also write CER files (character models)")
    return p


def main(argv=None) -> None:
    args = get_parser().parse_args(argv)
    if args.dir:
        setup_logger(Path(args.dir) / "log" / f"score-{args.test_set}.log")
        score_dir(args.dir, args.test_set, args.cer)
    elif args.ref and args.hyp:
        out_dir = Path(args.out_dir or Path(args.hyp).parent)
        setup_logger(out_dir / "log" / f"score-{args.test_set}.log")
        results = pair_results(read_text(args.ref), read_text(args.hyp), f"{args.test_set}-{args.key}")
        score_set(out_dir, args.test_set, {args.key: results}, args.cer)
    else:
        get_parser().error("give --dir, or --ref and --hyp")


if __name__ == "__main__":
    main()
