"""Train a QuartzNet CTC model on lhotse cuts.

    python -m qnet.bin.train --lang-dir data/lang_char --train-cuts data/fbank/mini_cuts_train.jsonl.gz \
        --valid-cuts data/fbank/mini_cuts_dev.jsonl.gz --exp-dir exp/mini --model mini --num-epochs 30

Precision: `--amp auto` (default) trains in fp16 with a GradScaler on CUDA and in fp32 on CPU; `--amp bf16`
trains in bfloat16 autocast on CUDA or CPU, `--amp none` in fp32. Steps whose gradients overflow are
skipped (see the log's "gradient overflow" lines and the final count).

Multi-GPU: `torchrun --nproc_per_node 4 -m qnet.bin.train ...` (or `srun` one task per GPU, see
conf/train_multinode.sbatch). Rerunning the same command in the same --exp-dir resumes from the
newest checkpoint. See qnet/trainer.py for what is saved and how.
"""

import argparse
import logging
import sys

from qnet.trainer import TrainingError, add_train_arguments, train


def get_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(
        prog="python -m qnet.bin.train",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_train_arguments(parser)
    return parser


def main(argv=None) -> int:
    """Parse options and train; exit status 1 with a clear message when training cannot go on."""
    args = get_parser().parse_args(argv)
    try:
        train(args)
    except TrainingError as exc:
        logging.error("training stopped: %s", exc)
        print(f"qnet.bin.train: error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
