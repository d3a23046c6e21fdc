"""Prepare WSJ manifests and LM text from the LDC discs: python -m qnet.bin.prepare_wsj --wsj0 DIR --wsj1 DIR OUT_DIR."""

import argparse
import logging
import sys
from pathlib import Path

from qnet.corpus.sphere import SphereError
from qnet.corpus.wsj import DEFAULT_SETS, WSJ_SETS, WsjLayoutError, prepare_wsj
from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(
        description="Read the WSJ LDC discs (LDC93S6B 11-*.*, LDC94S13B 13-*.*) or a flattened "
        "CORPUS/wsj0 CORPUS/wsj1 copy and write OUT_DIR/wsj_{recordings,supervisions}_<set>.jsonl.gz, "
        "per-set reports, OUT_DIR/wsj_lm_text.txt and OUT_DIR/wsj_ldc_lm/*.arpa.gz. Sets already "
        "written are skipped.",
    )
    p.add_argument("out_dir", type=Path, help="manifest folder, e.g. data/manifests")
    p.add_argument("--wsj0", type=Path, action="append", default=[], help="folder with the wsj0 discs (11-*.*) or a wsj0 copy")
    p.add_argument("--wsj1", type=Path, action="append", default=[], help="folder with the wsj1 discs (13-*.*) or a wsj1 copy")
    p.add_argument("--discs", type=Path, action="append", default=[],
                   help="a disc folder (11-1.1 ...), a folder of discs, or a CORPUS holding wsj0/ wsj1/; repeat as needed")
    p.add_argument("--sets", nargs="+", default=list(DEFAULT_SETS), choices=sorted(WSJ_SETS),
                   help="sets to prepare; their audio: " + "; ".join(f"{k} on {v.audio}" for k, v in WSJ_SETS.items()))
    p.add_argument("--max-duration", type=float, default=16.7,
                   help="utterances longer than this (s) are dropped from train* sets and flagged in test sets; 0 = no limit")
    p.add_argument("--sampling-rate", type=int, default=16000)
    p.add_argument("--lm-text", type=str2bool, default=True, help="write wsj_lm_text.txt from wsj1 np_data 87-89")
    p.add_argument("--ldc-arpa", type=str2bool, default=True, help="extract the LDC base_lm ARPAs when present")
    p.add_argument("--log-file", type=Path, default=None)
    return p


def main(argv=None) -> int:
    """Entry point; exit status 1 on a layout error, missing sph2pipe, or no set prepared."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    dirs = args.wsj0 + args.wsj1 + args.discs
    if not dirs:
        logging.error("give the corpus with --wsj0 DIR --wsj1 DIR or --discs DIR...")
        return 1
    try:
        status = prepare_wsj(dirs, args.out_dir, args.sets, args.max_duration, args.sampling_rate, args.lm_text, args.ldc_arpa)
    except (WsjLayoutError, SphereError) as exc:
        logging.error(str(exc))
        return 1
    logging.info("sets: " + ", ".join(f"{s}={v}" for s, v in status.items()))
    bad = [s for s, v in status.items() if v == "empty"]
    if bad:
        logging.warning(f"sets not prepared (see above): {' '.join(bad)}")
    return 1 if status and len(bad) == len(status) else 0


if __name__ == "__main__":
    sys.exit(main())
