"""Train a word-level neural LM (causal Transformer or LSTM) on an LM text, for n-best rescoring.

    python -m qnet.bin.train_nnlm --text data/lm/lm_text.txt.gz --exp-dir exp/nnlm --model-size base \
        --vocab-size 200000 --num-epochs 5

Multi-GPU: `torchrun --nproc_per_node 4 -m qnet.bin.train_nnlm ...`. Rerunning the same command in the
same --exp-dir resumes from the newest checkpoint. Writes EXP_DIR/nnlm.pt (the epoch with the lowest
held-out perplexity), epoch-E.pt / checkpoint-S.pt, log/, tensorboard/, curves.png. See qnet/nnlm.py.
"""

import argparse
import sys

from qnet.nnlm import NnlmTrainer, add_nnlm_arguments


def get_parser() -> argparse.ArgumentParser:
    """The command-line options."""
    parser = argparse.ArgumentParser(prog="python -m qnet.bin.train_nnlm", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_nnlm_arguments(parser)
    return parser


def main(argv=None) -> int:
    """Parse options and train."""
    args = get_parser().parse_args(argv)
    NnlmTrainer(args).run()
    return 0


if __name__ == "__main__":
    sys.exit(main())
