"""Does bf16 autocast train like fp32? The learning test's run (tests/train_helpers.learning_run: 240
espeak-ng utterances, mini-s3 model, 30 epochs on CPU) once per precision and seed; prints the final train
loss, validation loss and greedy WER of each, and the validation WER every 4 epochs.

    python bench/bench_amp_convergence.py --precisions fp32 bf16 --seeds 42 43 --work-dir /tmp/amp_conv

Needs espeak-ng and sox (as the learning test). On 2 CPU cores an fp32 run takes about a minute, a bf16 one
up to 9 (torch 1.13's CPU bf16 kernels).
"""

import argparse
import os
import platform
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from train_helpers import learning_run  # noqa: E402


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--precisions", nargs="+", default=["fp32", "bf16"], choices=["fp32", "bf16", "fp16"])
    p.add_argument("--seeds", type=int, nargs="+", default=[42])
    p.add_argument("--work-dir", required=True)
    args = p.parse_args(argv)
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}; "
          f"command: {' '.join(sys.argv)}")
    print("| precision | seed | seconds | train loss (last) | valid loss | valid WER % | valid WER % every 4 epochs |")
    print("|---|---|---|---|---|---|---|")
    for seed in args.seeds:
        for precision in args.precisions:
            t0 = time.time()
            amp = "none" if precision == "fp32" else precision
            run = learning_run(Path(args.work_dir) / f"{precision}-{seed}", "--amp", amp, "--seed", str(seed))
            history = torch.load(run["model"])["history"]
            train = [h for h in history if h["kind"] == "train"]
            valid = [h for h in history if h["kind"] == "valid"]
            every_4 = " ".join("%.0f" % v["wer"] for v in valid[3::4])
            print(f"| {precision} | {seed} | {time.time() - t0:.0f} | {train[-1]['loss']:.3f} | {valid[-1]['loss']:.3f} | "
                  f"{valid[-1]['wer']:.1f} | {every_4} |", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
