"""Convert a NeMo QuartzNet/Jasper CTC checkpoint (.nemo) into a qnet model.

    python -m qnet.bin.import_nemo QuartzNet15x5Base-En.nemo exp/nemo_qn15x5

writes OUT_DIR/model.pt (a qnet checkpoint, load with qnet.model.load_model) and OUT_DIR/tokens.txt.
"""

import argparse
import logging
import sys
from pathlib import Path

from qnet.utils import setup_logger, str2bool


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("nemo_file", type=Path, help="the .nemo archive (plain or gzip tar)")
    parser.add_argument("out_dir", type=Path, help="output folder for model.pt and tokens.txt")
    parser.add_argument(
        "--check-preprocessor", type=str2bool, default=True,
        help="refuse models whose preprocessor differs from qnet's 64-bin NeMo log-mel "
             "(false: only warn) [default: true]",
    )
    parser.add_argument("--log-file", type=Path, default=None, help="also log to this file")
    return parser


def main(argv=None) -> int:
    """Import the model; return the exit status."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    from qnet.model import count_parameters, save_model
    from qnet.nemo import NemoImportError, import_nemo

    try:
        model, tokens, nemo_config = import_nemo(args.nemo_file, check_preprocessor_config=args.check_preprocessor)
    except NemoImportError as exc:
        logging.error("%s", exc)
        return 1
    args.out_dir.mkdir(parents=True, exist_ok=True)
    extra = {"nemo_source": str(args.nemo_file), "nemo_version": str(nemo_config.get("nemo_version", "unknown"))}
    save_model(args.out_dir / "model.pt", model, tokens, extra=extra)
    tokens.to_file(args.out_dir / "tokens.txt")
    logging.info(
        "imported %s: %d blocks, %d parameters, %d tokens -> %s/{model.pt,tokens.txt}",
        args.nemo_file, len(model.config.blocks), count_parameters(model), len(tokens), args.out_dir,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
