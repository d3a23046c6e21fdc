"""Collect wer-summary files into RESULTS.md next to the published QuartzNet numbers.

    python -m qnet.bin.make_results --out exp/RESULTS.md --title "LibriSpeech" --published librispeech \
        --tune test-clean=dev-clean --tune test-other=dev-other 15x5=exp/quartznet_15x5

    python -m qnet.bin.make_results --out exp/RESULTS.md --title mini \
        --check "greedy WER: ls:greedy:test-clean <= 10" \
        --check "HLG vs greedy: ls:1best:test-clean <= 0.7 * ls:greedy:test-clean" ls=exp/librispeech/quartznet_mini

Each SYSTEM=DIR names an experiment folder; every wer-summary-<set>.txt below it is read. Checks are
`LABEL: SYSTEM:METHOD:SET <= NUMBER` or `LABEL: SYSTEM:METHOD:SET <= FACTOR * SYSTEM:METHOD:SET`
(FACTOR 0.7 = at least 30% relative better).
"""

import argparse
import logging
import sys
from pathlib import Path

from qnet.results import PUBLISHED, Check, collect_system, read_stage_times, render_markdown
from qnet.utils import atomic_write_text, setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("systems", nargs="+", metavar="SYSTEM=DIR", help="system name and its experiment folder")
    p.add_argument("--out", required=True, help="RESULTS.md to write")
    p.add_argument("--title", default="Results")
    p.add_argument("--sets", nargs="*", default=None, help="columns, in order (default: every scored set)")
    p.add_argument("--tune", action="append", default=[], metavar="SET=DEV",
                   help="pick LM scales for SET on DEV (repeatable); without it a set picks its own best")
    p.add_argument("--published", choices=sorted(PUBLISHED), default=None, help="add the published numbers")
    p.add_argument("--check", action="append", default=[], help="a target to evaluate (repeatable)")
    p.add_argument("--voices", action="append", default=[], metavar="SET=FILE",
                   help="a per-voice WER table for SET, speakers named by a synth_voices.txt (repeatable)")
    p.add_argument("--stage-times", default=None, help="file of '<stage> <seconds> <what>' lines to tabulate")
    p.add_argument("--cer", type=str2bool, default=False,
                   help="also read cer-summary files: character error rates as methods <method>-cer")
    p.add_argument("--note", action="append", default=[], help="a line for the Sources section (repeatable)")
    p.add_argument("--strict", type=str2bool, default=False, help="exit 1 when a check fails or is missing")
    p.add_argument("--print", dest="print_", type=str2bool, default=False, help="also print RESULTS.md")
    return p


def parse_pairs(items, what: str) -> dict:
    """`A=B` strings -> {A: B}; a clear error for anything else."""
    pairs = {}
    for item in items:
        name, sep, value = item.partition("=")
        if not sep or not name or not value:
            raise SystemExit(f"make_results: {what} {item!r} is not NAME=VALUE")
        pairs[name] = value
    return pairs


def main(argv=None) -> int:
    """Write RESULTS.md; exit status 1 only with --strict true and a failed or missing check."""
    args = get_parser().parse_args(argv)
    setup_logger()
    systems = [collect_system(name, d, args.cer) for name, d in parse_pairs(args.systems, "system").items()]
    checks = [Check.parse(c) for c in args.check]
    stage_times = read_stage_times(args.stage_times) if args.stage_times and Path(args.stage_times).is_file() else ()
    text, evaluated = render_markdown(args.title, systems, args.sets, parse_pairs(args.tune, "--tune"),
                                      args.published, checks, args.note, parse_pairs(args.voices, "--voices"),
                                      stage_times)
    atomic_write_text(args.out, text)
    logging.info(f"wrote {args.out}")
    if args.print_:
        sys.stdout.write(text)
    failed = [c.label for c, ok, _ in evaluated if ok is not True]
    if failed:
        logging.warning(f"targets not met: {failed}")
        if args.strict:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
