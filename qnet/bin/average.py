"""Average the models of several training checkpoints into one model checkpoint.

    python -m qnet.bin.average --exp-dir exp/mini --epoch 30 --avg 5       # epochs 26..30
    python -m qnet.bin.average --checkpoints exp/a/epoch-9.pt exp/a/epoch-10.pt --out avg.pt

Floating-point tensors are averaged; integer buffers (BatchNorm's num_batches_tracked) get the
floor of their mean. The result is a plain qnet model checkpoint (`qnet.model.load_model` reads it).
"""

import argparse
import logging
import sys
from pathlib import Path

from qnet.checkpoint import average_checkpoints, epoch_checkpoints
from qnet.utils import setup_logger


def get_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    p = argparse.ArgumentParser(prog="python -m qnet.bin.average", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--exp-dir", help="directory with epoch-E.pt checkpoints")
    p.add_argument("--epoch", type=int, default=0, help="last epoch to average (default: the newest)")
    p.add_argument("--avg", type=int, default=5, help="how many epochs, ending at --epoch")
    p.add_argument("--checkpoints", nargs="+", help="explicit checkpoint files (instead of --exp-dir)")
    p.add_argument("--out", help="output file (default: EXP_DIR/averaged-epoch-E-avg-N.pt)")
    return p


def resolve_checkpoints(exp_dir: Path, epoch: int, avg: int):
    """The epoch-E.pt files for epochs epoch-avg+1 .. epoch (all must exist); returns (paths, epoch)."""
    found = dict(epoch_checkpoints(exp_dir))
    if not found:
        raise FileNotFoundError(f"{exp_dir}: no epoch-*.pt checkpoints")
    epoch = epoch or max(found)
    wanted = list(range(max(1, epoch - avg + 1), epoch + 1))
    missing = [e for e in wanted if e not in found]
    if missing:
        raise FileNotFoundError(f"{exp_dir}: missing epoch checkpoints {missing} (have {sorted(found)})")
    return [found[e] for e in wanted], epoch


def main(argv=None) -> int:
    """Average and write the model; exit 1 with a message on bad input."""
    args = get_parser().parse_args(argv)
    setup_logger()
    try:
        if args.checkpoints:
            paths = [Path(p) for p in args.checkpoints]
            out = Path(args.out or "averaged.pt")
        elif args.exp_dir:
            exp_dir = Path(args.exp_dir)
            paths, epoch = resolve_checkpoints(exp_dir, args.epoch, args.avg)
            out = Path(args.out or exp_dir / f"averaged-epoch-{epoch}-avg-{len(paths)}.pt")
        else:
            raise ValueError("give --exp-dir (with --epoch/--avg) or --checkpoints")
        average_checkpoints(paths, out)
    except (FileNotFoundError, ValueError) as exc:
        logging.error("%s", exc)
        return 1
    logging.info("averaged %d checkpoints (%s .. %s) into %s", len(paths), paths[0].name, paths[-1].name, out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
