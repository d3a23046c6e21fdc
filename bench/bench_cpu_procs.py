#!/usr/bin/env python3
"""CPU training throughput of the small models: k2's CTC loss against torch's in one process of N threads,
and one process of N threads against N data-parallel processes (torchrun, gloo) of one thread.

Runs `qnet.bin.train` for --steps steps each way on the same manifests (fresh exp dirs, no checkpoints),
and prints the median logged throughput (seconds of audio per second of wall time, summed over ranks)
after the first --skip steps. The runs are back to back on the same machine, so their ratios are what
to compare across machines; the absolute numbers are not.

    cd egs/mini && python ../../bench/bench_cpu_procs.py --lang-dir data/librispeech/lang_char \
        --train-cuts data/librispeech/fbank/librispeech_cuts_train-all-shuf.jsonl.gz --model mini-s3 --max-duration 25
(from the directory the manifests' feature paths are relative to)
"""

import argparse
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPEED = re.compile(r"epoch \d+ step (\d+): .* ([0-9.]+) s of audio/s")


def run(procs: int, threads: int, ctc: str, args: argparse.Namespace, work: Path) -> dict:
    """Train --steps steps with `procs` processes of `threads` threads; the median logged speed."""
    exp = work / f"p{procs}_t{threads}_{ctc}"
    train = ["--lang-dir", args.lang_dir, "--exp-dir", str(exp), "--train-cuts", *args.train_cuts,
             "--model", args.model, "--max-duration", str(args.max_duration), "--num-threads", str(threads),
             "--device", "cpu", "--num-workers", "0", "--save-every-n", "0", "--tensorboard", "false",
             "--exit-after-steps", str(args.steps), "--log-interval", "10", "--spec-cutout", "false",
             "--num-epochs", "100", "--ctc-backend", ctc]
    if procs > 1:
        cmd = ["bash", str(ROOT / "utils" / "torchrun_local.sh"), str(procs), "-m", "qnet.bin.train", *train]
    else:
        cmd = [sys.executable, "-m", "qnet.bin.train", *train]
    t0 = time.time()
    # torchrun_local.sh finds torchrun and python3 on PATH: this interpreter's first
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}"}
    out = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    wall = time.time() - t0
    if out.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}")
    speeds = [float(m.group(2)) for m in SPEED.finditer(out.stdout) if int(m.group(1)) > args.skip]
    if not speeds:
        raise SystemExit(f"no throughput lines after step {args.skip} in the log of {cmd}")
    return {"procs": procs, "threads": threads, "ctc": ctc, "median_audio_s_per_s": statistics.median(speeds),
            "wall_s": wall, "samples": len(speeds)}


def main() -> None:
    """The three configurations, one after the other, and their ratios."""
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--lang-dir", required=True)
    p.add_argument("--train-cuts", required=True, nargs="+")
    p.add_argument("--model", default="mini-s3")
    p.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="N: threads of the one process")
    p.add_argument("--steps", type=int, default=150, help="training steps per run (per process)")
    p.add_argument("--skip", type=int, default=30, help="steps left out of the median (start-up)")
    p.add_argument("--max-duration", type=float, default=30.0, help="seconds of audio per batch per process")
    args = p.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench_cpu_procs_") as tmp:
        work = Path(tmp)
        k2 = run(1, args.cores, "k2", args, work)
        one = run(1, args.cores, "torch", args, work)
        many = run(args.cores, 1, "torch", args, work)
    for r in (k2, one, many):
        print(f"{r['procs']} process(es) x {r['threads']} thread(s), {r['ctc']} CTC: "
              f"{r['median_audio_s_per_s']:.0f} s of audio/s (median of {r['samples']} log lines; "
              f"{r['wall_s']:.0f} s wall for {args.steps} steps)")
    speed = lambda r: r["median_audio_s_per_s"]  # noqa: E731
    print(f"torch CTC over k2 CTC (1 process x {args.cores} threads): {speed(one) / speed(k2):.2f}x")
    print(f"{args.cores} processes x 1 thread over 1 process x {args.cores} threads (torch CTC): "
          f"{speed(many) / speed(one):.2f}x")


if __name__ == "__main__":
    main()
