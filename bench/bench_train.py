"""Training throughput on CPU: seconds of audio trained per second of wall time.

One training step = model forward (normalization, SpecCutout, encoder, decoder) + CTC loss + backward
+ NovoGrad step, on random 64-bin log-mel batches with random character transcripts (about 15
characters per second of audio, like read English). Measured for each model and CTC backend.

    python bench/bench_train.py                       # 5x5 and 15x5, k2 and torch CTC, 2 threads
    python bench/bench_train.py --models 5x5 --backends torch --steps 5 --batch-seconds 80

Prints one line per (model, backend): parameters, batch, mean seconds per step, audio s/s.
"""

import argparse
import os
import platform
import time

import torch

from qnet.augment import build_augment
from qnet.ctc import CtcLoss, k2_available
from qnet.model import build_model, count_parameters
from qnet.optim import NovoGrad


def make_batch(batch_seconds: float, utt_seconds: float, num_tokens: int, seed: int = 0):
    """Random features (B, T, 64), lengths (a spread of 70-100% of the longest) and transcripts."""
    g = torch.Generator().manual_seed(seed)
    num_utts = max(1, int(batch_seconds // utt_seconds))
    frames = int(utt_seconds * 100)
    feats = torch.randn(num_utts, frames, 64, generator=g) * 2 - 10
    lens = torch.linspace(frames, int(frames * 0.7), num_utts).long()
    targets = []
    for n in lens.tolist():
        length = max(1, int(n / 100 * 15))
        targets.append(torch.randint(1, num_tokens, (length,), generator=g).tolist())
    return feats, lens, targets


def bench_one(model_name: str, backend: str, args) -> dict:
    """Time `args.steps` training steps after `args.warmup` untimed ones."""
    torch.manual_seed(0)
    model = build_model(model_name, 29)
    model.augment = build_augment(spec_cutout=True)
    model.train()
    ctc = CtcLoss(backend)
    opt = NovoGrad(model.parameters(), lr=1e-3)
    feats, lens, targets = make_batch(args.batch_seconds, args.utt_seconds, 29)
    audio = float(lens.sum()) / 100

    def step():
        opt.zero_grad(set_to_none=True)
        log_probs, out_lens = model(feats, lens)
        loss, _, _ = ctc(log_probs, out_lens, targets)
        loss.backward()
        opt.step()

    for _ in range(args.warmup):
        step()
    times = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    mean = sum(times) / len(times)
    return {"params": count_parameters(model), "utts": feats.shape[0], "audio": audio, "step_s": mean,
            "min_s": min(times), "audio_per_s": audio / mean}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["5x5", "15x5"])
    p.add_argument("--backends", nargs="+", default=["k2", "torch"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch-seconds", type=float, default=40.0, help="audio per batch")
    p.add_argument("--utt-seconds", type=float, default=10.0, help="longest utterance in the batch")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"# {platform.node()}: {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads; batch {args.batch_seconds:g} s of "
          f"audio in utterances up to {args.utt_seconds:g} s; {args.warmup} warm-up + {args.steps} timed steps")
    print(f"{'model':>6} {'ctc':>6} {'params':>11} {'utts':>5} {'audio_s':>8} {'s/step':>8} {'min':>8} {'audio_s/s':>10}")
    for model_name in args.models:
        for backend in args.backends:
            if backend == "k2" and not k2_available():
                print(f"{model_name:>6} {backend:>6}  skipped: k2 not importable")
                continue
            r = bench_one(model_name, backend, args)
            print(f"{model_name:>6} {backend:>6} {r['params']:>11,} {r['utts']:>5} {r['audio']:>8.1f} "
                  f"{r['step_s']:>8.2f} {r['min_s']:>8.2f} {r['audio_per_s']:>10.2f}", flush=True)


if __name__ == "__main__":
    main()
