"""QuartzNet training throughput on one CUDA GPU with AMP, at the largest batch that fits.

For a CUDA machine with torch 2.x and no k2 (torch CTC). Batches are random 64-bin log-mel features
of `--utt-seconds` long utterances (default 16.7 s, the training limit: the worst case for memory)
with random character transcripts. Steps: (1) find the largest number of utterances per batch
that trains without running out of memory (doubling, then binary search; each probe runs two full
steps); (2) time `--steps` steps at that size (and at --fractions of it) and print seconds of audio
per second, peak memory and step time.

    python bench/bench_train_cuda.py                          # 15x5, --amp bf16 if supported else fp16
    python bench/bench_train_cuda.py --model 5x5 --amp fp16 --utt-seconds 10 --steps 30

Only qnet.model, qnet.ctc (torch backend), qnet.optim and qnet.augment are imported: no lhotse, no k2.
"""

import argparse
import contextlib
import time

import torch

from qnet.augment import build_augment
from qnet.ctc import CtcLoss
from qnet.model import build_model, count_parameters
from qnet.optim import NovoGrad


def is_oom(exc: BaseException) -> bool:
    """CUDA out-of-memory (torch.cuda.OutOfMemoryError on torch >= 1.13.1, else the message)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or "out of memory" in str(exc)


class Bench:
    """One model + optimizer + scaler on the GPU; `step(n)` trains once on n utterances."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device("cuda")
        torch.manual_seed(0)
        self.model = build_model(args.model, 29).to(self.device)
        self.model.augment = build_augment(spec_cutout=True)
        self.model.train()
        self.ctc = CtcLoss("torch")
        self.opt = NovoGrad(self.model.parameters(), lr=1e-3)
        self.amp_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(args.amp)
        self.scaler = torch.cuda.amp.GradScaler(enabled=args.amp == "fp16")
        self.frames = int(args.utt_seconds * 100)

    def batch(self, n: int):
        g = torch.Generator().manual_seed(n)
        feats = (torch.randn(n, self.frames, 64, generator=g) * 2 - 10).to(self.device)
        lens = torch.full((n,), self.frames, dtype=torch.long, device=self.device)
        length = int(self.args.utt_seconds * 15)
        targets = [torch.randint(1, 29, (length,), generator=g).tolist() for _ in range(n)]
        return feats, lens, targets

    def autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type="cuda", dtype=self.amp_dtype)

    def step(self, feats, lens, targets) -> None:
        self.opt.zero_grad(set_to_none=True)
        with self.autocast():
            log_probs, out_lens = self.model(feats, lens)
        loss, _, _ = self.ctc(log_probs, out_lens, targets)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(self.opt)
        torch.nn.utils.clip_grad_norm_(self.model.parameters(), float("inf"))
        self.scaler.step(self.opt)
        self.scaler.update()

    def fits(self, n: int) -> bool:
        """Two steps on n utterances without OOM?"""
        try:
            data = self.batch(n)
            for _ in range(2):
                self.step(*data)
            torch.cuda.synchronize()
            return True
        except RuntimeError as exc:
            if not is_oom(exc):
                raise
            return False
        finally:
            self.opt.zero_grad(set_to_none=True)
            data = None
            torch.cuda.empty_cache()

    def largest_batch(self) -> int:
        lo, hi = 0, self.args.start_batch
        while hi <= self.args.max_batch and self.fits(hi):
            print(f"  {hi} utterances fit", flush=True)
            lo, hi = hi, hi * 2
        hi = min(hi, self.args.max_batch + 1)
        while hi - lo > max(1, lo // 32):  # within ~3%
            mid = (lo + hi) // 2
            ok = self.fits(mid)
            print(f"  {mid} utterances {'fit' if ok else 'do not fit'}", flush=True)
            lo, hi = (mid, hi) if ok else (lo, mid)
        return lo

    def time_steps(self, n: int) -> dict:
        data = self.batch(n)
        for _ in range(self.args.warmup):
            self.step(*data)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        for _ in range(self.args.steps):
            self.step(*data)
        torch.cuda.synchronize()
        dt = (time.perf_counter() - t0) / self.args.steps
        audio = n * self.args.utt_seconds
        return {"n": n, "audio": audio, "step_s": dt, "audio_per_s": audio / dt,
                "peak_gib": torch.cuda.max_memory_allocated() / 2**30}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="15x5")
    p.add_argument("--amp", choices=("auto", "fp16", "bf16", "none"), default="auto")
    p.add_argument("--utt-seconds", type=float, default=16.7)
    p.add_argument("--start-batch", type=int, default=8)
    p.add_argument("--max-batch", type=int, default=4096)
    p.add_argument("--steps", type=int, default=20)
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--fractions", type=float, nargs="*", default=[0.5], help="also time at these fractions of the largest batch")
    args = p.parse_args()
    if not torch.cuda.is_available():
        raise SystemExit("bench_train_cuda.py needs a CUDA GPU (torch.cuda.is_available() is False)")
    if args.amp == "auto":
        args.amp = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    torch.backends.cudnn.benchmark = True
    bench = Bench(args)
    name = torch.cuda.get_device_name()
    total = torch.cuda.get_device_properties(0).total_memory / 2**30
    print(f"# {name} ({total:.0f} GiB), torch {torch.__version__}, CUDA {torch.version.cuda}; model {args.model} "
          f"({count_parameters(bench.model):,} params), AMP {args.amp}, CTC torch, utterances {args.utt_seconds:g} s")
    print("searching the largest batch:", flush=True)
    largest = bench.largest_batch()
    if largest == 0:
        raise SystemExit(f"not even {args.start_batch} utterances fit; try --start-batch 1")
    print(f"largest batch: {largest} utterances = {largest * args.utt_seconds:.0f} s of audio "
          f"(--max-duration {largest * args.utt_seconds:.0f})")
    print(f"{'utts':>6} {'audio_s':>8} {'s/step':>8} {'audio_s/s':>10} {'peak_GiB':>9}")
    for frac in [1.0] + list(args.fractions):
        n = max(1, int(largest * frac))
        r = bench.time_steps(n)
        print(f"{r['n']:>6} {r['audio']:>8.0f} {r['step_s']:>8.3f} {r['audio_per_s']:>10.0f} {r['peak_gib']:>9.1f}", flush=True)


if __name__ == "__main__":
    main()
