"""QuartzNet training and inference speed on one GPU: precisions, batch sizes and model code paths, in one run.

Made for one short run on a lent GPU (under 8 minutes on an H200 with torch 2.x; needs neither k2 nor
lhotse nor the network):

    PYTHONPATH=. python bench/bench_train_cuda.py --json bench_train_cuda.json

prints, for QuartzNet 15x5:
  1. training (forward, torch CTC loss, backward, NovoGrad step through qnet.trainer.apply_gradients, as
     qnet.bin.train does) at fp32, fp16 (autocast + GradScaler) and bf16 (autocast), at --max-duration 200,
     400 and 800 s of audio per batch, with the model code path "auto" gives on this device: seconds of
     audio trained per second and peak memory;
  2. inference (eval mode, no grad) at each precision: real-time factor (compute seconds per second of
     audio) for one batch of --infer-duration seconds and for a single utterance;
  3. the model code paths (qnet.model.quartznet.parse_impl): plain Conv1d/BatchNorm1d, all CPU rewrites
     ("cpu") and each rewrite alone, training at --impl-precision and --impl-max-duration, and inference,
     so that the CUDA default ("auto" = plain, until this has run) can be chosen from numbers;
  4. NVIDIA NeMo's own QuartzNet 15x5 (bench/nemo_quartznet.py) trained and run at the same settings, when
     nemo_toolkit imports here; otherwise one line saying that it was skipped and why.

Batches are synthetic, shaped like LibriSpeech training batches: utterance durations drawn from a
LibriSpeech-960-like distribution (80 % 10-16.7 s, 20 % 1.5-10 s), sorted into buckets of similar length
as lhotse's DynamicBucketingSampler does, and each batch filled from one bucket up to the max duration
(random 64-bin features, padded to the longest, random character transcripts at 15 characters/s).
Each setting cycles over a long, a middle and a short bucket's batch: `--warmup` steps (every shape once,
so cuDNN's autotuner is done before timing), then `--steps` timed ones. A setting whose warmup step takes
more than --max-step-seconds, or that runs out of memory, is reported as such and skipped; settings left
when --time-budget runs out are listed as skipped.

On CPU (`--device cpu`, for CI) the defaults shrink to the tiny model, 4-8 s batches and 2 steps, and
peak memory is the process's peak RSS; fp16 is skipped where torch's CPU autocast cannot do it.
"""

import argparse
import contextlib
import datetime
import json
import os
import platform
import random
import resource
import sys
import time
from typing import Dict, List, Optional, Sequence

import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from qnet.ctc import CtcLoss  # noqa: E402
from qnet.model import build_model, count_parameters  # noqa: E402
from qnet.model.quartznet import REWRITES  # noqa: E402
from qnet.optim import NovoGrad  # noqa: E402
from qnet.trainer import AMP_DTYPES, apply_gradients, autocast_works, make_grad_scaler  # noqa: E402

FRAMES_PER_SECOND = 100
CHARS_PER_SECOND = 15
NUM_TOKENS = 29

GPU_DEFAULTS = dict(model="15x5", max_durations=[200.0, 400.0, 800.0], steps=6, warmup=3, infer_duration=400.0,
                    impl_max_duration=400.0, max_utt_duration=16.7, time_budget=420.0, max_step_seconds=30.0)
CPU_DEFAULTS = dict(model="tiny", max_durations=[4.0, 8.0], steps=2, warmup=1, infer_duration=4.0,
                    impl_max_duration=4.0, max_utt_duration=2.0, time_budget=120.0, max_step_seconds=30.0)


class SettingFailed(Exception):
    """A setting could not be measured (out of memory, too slow); the message says which."""


def is_oom(exc: BaseException) -> bool:
    """Out of memory on the accelerator (torch.cuda.OutOfMemoryError, or the message)."""
    oom_type = getattr(torch.cuda, "OutOfMemoryError", None)
    return (oom_type is not None and isinstance(exc, oom_type)) or "out of memory" in str(exc)


def librispeech_like_durations(n: int, max_utt: float, rng: random.Random) -> List[float]:
    """n utterance durations (s): 80 % uniform in [10, max_utt], 20 % in [1.5, 10] (scaled down when max_utt < 10)."""
    scale = min(1.0, max_utt / 16.7)
    out = []
    for _ in range(n):
        lo, hi = (10.0 * scale, max_utt) if rng.random() < 0.8 else (1.5 * scale, 10.0 * scale)
        out.append(rng.uniform(lo, hi))
    return out


def bucketed_batches(max_duration: float, max_utt: float, seed: int = 0, num_buckets: int = 30) -> List[List[float]]:
    """Three batches (long, middle, short bucket) of utterance durations, each filled up to max_duration."""
    rng = random.Random(seed)
    durations = sorted(librispeech_like_durations(max(300, int(40 * max_duration / max_utt)), max_utt, rng))
    size = len(durations) // num_buckets
    buckets = [durations[i * size:(i + 1) * size] for i in range(num_buckets)]
    batches = []
    for bucket in (buckets[-1], buckets[num_buckets // 2], buckets[num_buckets // 6]):
        bucket = list(bucket)
        rng.shuffle(bucket)
        batch, total = [], 0.0
        for d in bucket * (1 + int(max_duration / max(sum(bucket), 1e-9))):
            if total + d > max_duration:
                break
            batch.append(d)
            total += d
        batches.append(batch or [min(bucket)])
    return batches


class Batch:
    """Padded random features (B, T, 64) on the device, lengths and character targets for some durations."""

    def __init__(self, durations: Sequence[float], device: torch.device, seed: int):
        g = torch.Generator().manual_seed(seed)
        frames = [max(2, int(d * FRAMES_PER_SECOND)) for d in durations]
        self.audio_seconds = float(sum(durations))
        self.num_utts = len(durations)
        self.feats = (torch.randn(len(frames), max(frames), 64, generator=g) * 2 - 10).to(device)
        self.lens = torch.tensor(frames, dtype=torch.long, device=device)
        self.targets = [torch.randint(1, NUM_TOKENS, (max(1, int(d * CHARS_PER_SECOND)),), generator=g).tolist()
                        for d in durations]


class Runner:
    """A model + loss + optimizer + scaler at one precision; `train_step` / `infer` time one batch."""

    def __init__(self, model: torch.nn.Module, device: torch.device, precision: str, nemo: bool = False):
        self.model = model.to(device)
        self.device = device
        self.precision = precision
        self.nemo = nemo
        self.ctc = CtcLoss("torch", blank=NUM_TOKENS - 1 if nemo else 0)
        self.optimizer = NovoGrad(self.model.parameters(), lr=1e-3, betas=(0.95, 0.5), weight_decay=1e-3)
        self.scaler = make_grad_scaler(device.type, enabled=precision == "fp16")

    def autocast(self):
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=AMP_DTYPES[self.precision])

    def forward(self, batch: Batch):
        if self.nemo:  # NeMo's model takes (B, F, T) features and puts the blank last
            log_probs, out_lens, _ = self.model.forward(processed_signal=batch.feats.transpose(1, 2).contiguous(),
                                                        processed_signal_length=batch.lens)
            return log_probs, out_lens
        return self.model(batch.feats, batch.lens)

    def train_step(self, batch: Batch) -> None:
        self.model.train()
        with self.autocast():
            log_probs, out_lens = self.forward(batch)
        loss, _, _ = self.ctc(log_probs, out_lens, batch.targets)
        apply_gradients(loss, self.model, self.optimizer, self.scaler, grad_clip=0.0)

    def infer(self, batch: Batch) -> None:
        self.model.eval()
        with torch.no_grad(), self.autocast():
            log_probs, _ = self.forward(batch)
        log_probs.float().argmax(-1)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def reset_peak(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)


def peak_gib(device: torch.device) -> float:
    """Peak allocated GPU memory since `reset_peak`; on CPU the process's peak RSS so far."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**30
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


def time_setting(run, batches: List[Batch], warmup: int, steps: int, device: torch.device, max_step_s: float) -> Dict:
    """Warm up (every batch shape at least once), then time `steps` calls of run(batch) cycling over batches."""
    reset_peak(device)
    try:
        for i in range(max(warmup, len(batches))):
            t0 = time.perf_counter()
            run(batches[i % len(batches)])
            synchronize(device)
            if time.perf_counter() - t0 > max_step_s:
                raise SettingFailed(f"too slow: a warmup step took {time.perf_counter() - t0:.1f} s (> {max_step_s:g} s)")
        audio = 0.0
        t0 = time.perf_counter()
        for i in range(steps):
            batch = batches[i % len(batches)]
            run(batch)
            audio += batch.audio_seconds
        synchronize(device)
        elapsed = time.perf_counter() - t0
    except RuntimeError as exc:
        if not is_oom(exc):
            raise
        raise SettingFailed("out of memory") from exc
    finally:
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return {"s_per_step": elapsed / steps, "audio_s_per_s": audio / elapsed, "rtf": elapsed / audio,
            "peak_gib": peak_gib(device)}


class Bench:
    """Runs the settings in order, prints a table row per setting, keeps the rows for --json."""

    def __init__(self, args):
        self.args = args
        self.device = torch.device(args.device)
        self.t_start = time.time()
        self.rows: List[Dict] = []
        self.batch_cache: Dict = {}
        self.precisions = []
        for p in args.precisions:
            why = self.precision_unavailable(p)
            if why:
                self.note(f"{p}: skipped ({why})")
            else:
                self.precisions.append(p)

    def precision_unavailable(self, precision: str) -> Optional[str]:
        if precision == "fp32":
            return None
        if self.device.type == "cuda" and precision == "bf16" and not torch.cuda.is_bf16_supported():
            return "this GPU has no bf16"
        if not autocast_works(self.device.type, AMP_DTYPES[precision]):
            return f"torch {torch.__version__} has no {precision} autocast on {self.device.type}"
        if precision == "fp16" and not make_grad_scaler(self.device.type, enabled=True).is_enabled():
            return f"torch {torch.__version__} has no GradScaler on {self.device.type}"
        return None

    def note(self, text: str) -> None:
        print(f"# {text}", flush=True)

    def batches(self, max_duration: float) -> List[Batch]:
        key = max_duration
        if key not in self.batch_cache:
            self.batch_cache = {}  # keep one set on the device at a time
            durations = bucketed_batches(max_duration, self.args.max_utt_duration, seed=int(max_duration))
            self.batch_cache[key] = [Batch(d, self.device, seed=i) for i, d in enumerate(durations)]
        return self.batch_cache[key]

    def out_of_time(self) -> bool:
        return time.time() - self.t_start > self.args.time_budget

    def qnet_model(self, impl: str) -> torch.nn.Module:
        torch.manual_seed(0)
        model = build_model(self.args.model, NUM_TOKENS)
        from qnet.augment import build_augment

        model.augment = build_augment(spec_cutout=True)
        return model.set_impl(impl)

    def measure(self, task: str, name: str, impl: str, precision: str, max_duration: float, make_model,
                single: bool = False) -> None:
        row = {"task": task, "model": name, "impl": impl, "precision": precision, "max_duration": max_duration,
               "single_utterance": single}
        if self.out_of_time():
            row["skipped"] = f"time budget ({self.args.time_budget:g} s) used up"
        else:
            batches = self.batches(max_duration)
            if single:
                batches = [Batch([min(self.args.max_utt_duration, 15.0)], self.device, seed=99)]
            runner = None
            try:
                runner = Runner(make_model(), self.device, precision, nemo=name.startswith("nemo"))
                run = runner.train_step if task == "train" else runner.infer
                row.update(time_setting(run, batches, self.args.warmup, self.args.steps, self.device,
                                        self.args.max_step_seconds))
                row["utts_per_batch"] = sum(b.num_utts for b in batches) / len(batches)
                row["audio_s_per_batch"] = sum(b.audio_seconds for b in batches) / len(batches)
            except SettingFailed as exc:
                row["skipped"] = str(exc)
            finally:
                del runner
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
        self.rows.append(row)
        self.print_row(row)

    def print_header(self) -> None:
        print(f"| task | model | impl | precision | max_duration | utts/batch | s/step | audio s/s | RTF | peak {self.mem_unit()} |")
        print("|---|---|---|---|---|---|---|---|---|---|", flush=True)

    def mem_unit(self) -> str:
        return "GiB" if self.device.type == "cuda" else "RSS GiB (process)"

    def print_row(self, r: Dict) -> None:
        what = "1 utt" if r["single_utterance"] else f"{r['max_duration']:g}"
        head = f"| {r['task']} | {r['model']} | {r['impl']} | {r['precision']} | {what} |"
        if "skipped" in r:
            print(f"{head} skipped: {r['skipped']} | | | | |", flush=True)
            return
        print(f"{head} {r['utts_per_batch']:.1f} | {r['s_per_step']:.3f} | {r['audio_s_per_s']:.0f} | "
              f"{r['rtf']:.5f} | {r['peak_gib']:.2f} |", flush=True)

    def run(self) -> None:
        a = self.args
        model_name = a.model
        params = count_parameters(build_model(model_name, NUM_TOKENS))
        self.note(f"model {model_name} ({params:,} parameters), {len(self.precisions)} precisions, "
                  f"max durations {a.max_durations}, {a.warmup} warmup + {a.steps} timed steps per setting, "
                  f"time budget {a.time_budget:g} s")
        self.print_header()
        default = lambda: self.qnet_model("auto")  # noqa: E731
        for precision in self.precisions:  # 1. training
            for max_duration in a.max_durations:
                self.measure("train", model_name, "auto", precision, max_duration, default)
        for precision in self.precisions:  # 2. inference
            self.measure("infer", model_name, "auto", precision, a.infer_duration, default)
            self.measure("infer", model_name, "auto", precision, a.infer_duration, default, single=True)
        impl_precision = a.impl_precision if a.impl_precision in self.precisions else "fp32"
        for impl in ["plain", "cpu"] + sorted(REWRITES):  # 3. model code paths
            self.measure("train", model_name, impl, impl_precision, a.impl_max_duration,
                         lambda impl=impl: self.qnet_model(impl))
        for impl in ("plain", "cpu"):
            self.measure("infer", model_name, impl, impl_precision, a.infer_duration,
                         lambda impl=impl: self.qnet_model(impl))
        self.nemo(model_name)

    def nemo(self, model_name: str) -> None:
        """4. NeMo's QuartzNet when nemo_toolkit imports here."""
        if model_name not in ("5x5", "10x5", "15x5"):
            self.note(f"NeMo: skipped (no NeMo layout for model {model_name})")
            return
        try:
            sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
            import nemo  # noqa: F401
            from nemo_quartznet import build_nemo_model
        except Exception as exc:  # not installed, or broken: the qnet numbers stand alone
            self.note(f"NeMo: skipped, nemo_toolkit is not importable here ({type(exc).__name__}: {exc})")
            return
        self.note(f"NeMo {getattr(nemo, '__version__', '?')}: QuartzNet {model_name} (bench/nemo_quartznet.py)")
        for precision in self.precisions:
            self.measure("train", f"nemo-{model_name}", "nemo", precision, self.args.impl_max_duration,
                         lambda: build_nemo_model(model_name))
            self.measure("infer", f"nemo-{model_name}", "nemo", precision, self.args.infer_duration,
                         lambda: build_nemo_model(model_name))


def get_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--device", default="cuda", help="cuda (default) or cpu (tiny CI run)")
    p.add_argument("--model", default=None, help="qnet model configuration (default 15x5; tiny on CPU)")
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"], choices=["fp32", "fp16", "bf16"])
    p.add_argument("--max-durations", type=float, nargs="+", default=None, help="seconds of audio per training batch")
    p.add_argument("--max-utt-duration", type=float, default=None, help="longest utterance (s); default 16.7")
    p.add_argument("--steps", type=int, default=None, help="timed steps per setting")
    p.add_argument("--warmup", type=int, default=None, help="untimed steps first (at least one per batch shape)")
    p.add_argument("--infer-duration", type=float, default=None, help="seconds of audio per inference batch")
    p.add_argument("--impl-precision", default="bf16", help="precision of the model-code-path comparison")
    p.add_argument("--impl-max-duration", type=float, default=None, help="batch of the code-path comparison (s)")
    p.add_argument("--time-budget", type=float, default=None, help="stop starting new settings after this (s)")
    p.add_argument("--max-step-seconds", type=float, default=None, help="give up on a setting whose step is slower")
    p.add_argument("--cudnn-benchmark", type=int, default=1, help="torch.backends.cudnn.benchmark (1/0)")
    p.add_argument("--json", default=None, help="also write every row here")
    return p


def main(argv=None) -> int:
    args = get_parser().parse_args(argv)
    device = torch.device(args.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        print("bench_train_cuda.py: CUDA is not available here (torch.cuda.is_available() is False); "
              "use --device cpu for the tiny CPU run", file=sys.stderr)
        return 1
    for key, value in (GPU_DEFAULTS if device.type == "cuda" else CPU_DEFAULTS).items():
        if getattr(args, key) is None:
            setattr(args, key, value)
    torch.backends.cudnn.benchmark = bool(args.cudnn_benchmark)
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA {torch.version.cuda}, cuDNN " \
                f"{torch.backends.cudnn.version()}, cudnn.benchmark {bool(args.cudnn_benchmark)}"
    else:
        where = f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"
    print(f"# bench_train_cuda.py {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC: {where}; torch {torch.__version__}, "
          f"Python {platform.python_version()}")
    print(f"# command: {' '.join([os.path.basename(sys.executable)] + sys.argv)}")
    bench = Bench(args)
    bench.run()
    elapsed = time.time() - bench.t_start
    print(f"# done in {elapsed:.0f} s")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"device": where, "torch": torch.__version__, "args": vars(args), "rows": bench.rows,
                       "seconds": elapsed}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
