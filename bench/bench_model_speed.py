"""QuartzNet CPU speed: qnet against NVIDIA NeMo's own QuartzNet, inference and one training step.

    python bench/bench_model_speed.py                      # everything below, prints a table
    python bench/bench_model_speed.py --configs 15x5 --repeats 5 --impls qnet,nemo

Each implementation runs in its own subprocess ("worker") so that thread settings, environment and torch
versions do not mix:

| impl           | python                  | what is timed                                                    |
|----------------|-------------------------|------------------------------------------------------------------|
| nemo           | NeMo venv (torch 2.x)   | NeMo's EncDecCTCModel from quartznet_15x5.yaml's layout (bench/nemo_quartznet.py) |
| qnet           | this venv (torch 1.13)  | `qnet.model.build_model(cfg)`, eager, environment as given         |
| qnet-cl        | this venv               | qnet's model with `patch_channels_last` (the change proposed for qnet/model/quartznet.py) |
| qnet-fold      | this venv               | `qnet.export.InferenceQuartzNet` (BN folded, (B, T, C) layout), eager, inference only |
| qnet-script    | this venv               | the same, TorchScript (what `python -m qnet.bin.export` writes), inference only |
| qnet-onnx      | this venv, onnxruntime  | the folded ONNX export (`--formats onnx`) in onnxruntime, inference only |
| <impl>-t2      | NeMo venv (torch 2.x)   | the same qnet code under NeMo's torch (qnet-t2, qnet-cl-t2, qnet-fold-t2, qnet-script-t2) |
| <impl>+mkl     | as <impl>               | with MKL_DEBUG_CPU_TYPE=5: torch 1.13's MKL 2020.0 takes a slow non-AVX2 sgemm path on AMD CPUs; this variable selects its AVX2 kernels (~2.5x faster matmul here) |

Tasks per configuration (random weights, random features, fp32, `--threads` intra-op threads):
`infer_b1` one 10 s clip (1000 frames) in eval mode under inference_mode; `infer_b8` 8 such clips in one
batch; `train_b8` one training step on 8 x 10 s: train mode, forward, torch's ctc_loss (150-token
targets), backward. Every timing is repeated `--repeats` times after `--warmup` untimed calls and
the median is reported. Analytic FLOPs (2 per multiply-add of every conv, see `forward_flops`) give
GFLOP/s, compared with a 2048x2048 fp32 matmul measured by each worker in the same run.
The NeMo venv is made by bench/nemo_env.sh; without it the NeMo columns are skipped with a warning.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Callable, Dict, List, Tuple

import torch

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH_DIR = os.path.join(REPO, "bench")
DEFAULT_NEMO_VENV = os.environ.get("NEMO_VENV", "/work/nemo-venv")
ALL_TASKS = ("infer_b1", "infer_b8", "train_b8")
BASE_IMPLS = ("qnet", "qnet-cl", "qnet-fold", "qnet-script", "qnet-onnx")
ALL_IMPLS = (("nemo",) + BASE_IMPLS + tuple(i + "+mkl" for i in BASE_IMPLS)
             + tuple(i + "-t2" for i in BASE_IMPLS if i != "qnet-onnx"))
DEFAULT_IMPLS = ("nemo", "qnet", "qnet+mkl", "qnet-cl+mkl", "qnet-script+mkl", "qnet-onnx", "qnet-t2", "qnet-cl-t2",
                 "qnet-fold-t2")
NUM_TOKENS = 29
TARGET_LEN = 150  # characters in ~10 s of read speech


# ----------------------------------------------------------------------------------------------
# analytic FLOPs


def quartznet_blocks(name: str) -> List[Tuple[int, int, int, int, int, bool, bool]]:
    """(filters, kernel, stride, dilation, repeat, residual, separable) of each block of 5x5/10x5/15x5."""
    copies = {"5x5": 1, "10x5": 2, "15x5": 3}[name]
    blocks = [(256, 33, 2, 1, 1, False, True)]
    for filters, kernel in [(256, 33), (256, 39), (512, 51), (512, 63), (512, 75)]:
        blocks += [(filters, kernel, 1, 1, 5, True, True)] * copies
    return blocks + [(512, 87, 1, 2, 1, False, True), (1024, 1, 1, 1, 1, False, False)]


def forward_flops(name: str, frames: int = 1000, feat_in: int = 64, num_tokens: int = NUM_TOKENS) -> float:
    """FLOPs (2 x multiply-adds of all convs, decoder included) of one forward pass over `frames` frames.

    Everything after C1 runs at ceil(frames / 2) frames; BN, ReLU, masking and log-softmax are ignored
    (they are O(channels) per frame, under 1%).
    """
    t_out = (frames + 1) // 2
    macs = 0
    cin = feat_in
    for filters, kernel, stride, _dilation, repeat, residual, separable in quartznet_blocks(name):
        c = cin
        for _ in range(repeat):
            macs += (c * kernel + c * filters) if separable else c * filters * kernel
            c = filters
        if residual:
            macs += cin * filters
        cin = filters
    macs += cin * num_tokens
    return 2.0 * macs * t_out


# ----------------------------------------------------------------------------------------------
# timing (shared with bench/nemo_quartznet.py, which imports this module inside the NeMo venv)


def median_time(fn: Callable[[], object], repeats: int, warmup: int) -> Tuple[float, List[float], List[float]]:
    """Median wall seconds of `repeats` calls of `fn` after `warmup` untimed calls, all wall times, and
    the process CPU seconds of each call (all threads; robust to other processes taking the cores)."""
    for _ in range(warmup):
        fn()
    times, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        fn()
        times.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(times), times, cpu


def matmul_gflops(n: int = 2048, repeats: int = 5) -> float:
    """Achieved GFLOP/s of an n x n fp32 matmul with the current thread setting (the 'peak')."""
    a, b = torch.randn(n, n), torch.randn(n, n)
    med, _, _ = median_time(lambda: torch.mm(a, b), repeats, warmup=1)
    return 2.0 * n ** 3 / med / 1e9


def add_worker_options(parser: argparse.ArgumentParser) -> None:
    """Options every worker understands."""
    parser.add_argument("--configs", default="5x5,10x5,15x5", help="comma-separated: 5x5,10x5,15x5")
    parser.add_argument("--tasks", default=",".join(ALL_TASKS), help=f"comma-separated subset of {ALL_TASKS}")
    parser.add_argument("--repeats", type=int, default=3, help="timed calls per task (median reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed calls before timing")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--frames", type=int, default=1000, help="frames per clip (1000 = 10 s)")


def make_batch(batch: int, frames: int, layout: str, feat_in: int = 64):
    """Random features in the runner's layout ('btf' or 'bft') and full lengths."""
    feats = torch.randn(batch, frames, feat_in)
    if layout == "bft":
        feats = feats.transpose(1, 2).contiguous()
    return feats, torch.full((batch,), frames, dtype=torch.long)


def time_tasks(runner, tasks, args) -> Dict[str, dict]:
    """Time the requested tasks of one runner; returns {task: {"median": s, "times": [...]}}."""
    out = {}
    layout = getattr(runner, "layout", "btf")
    model = getattr(runner, "model", None)
    for task in tasks:
        batch = 1 if task == "infer_b1" else 8
        feats, lens = make_batch(batch, args.frames, layout)
        if task.startswith("infer"):
            if model is not None:
                model.eval()

            def step():
                with torch.inference_mode():
                    runner(feats, lens)

        else:
            if model is None or not getattr(runner, "trainable", True):
                continue
            model.train()
            generator = torch.Generator().manual_seed(0)
            low, high = (1, runner.num_tokens) if runner.blank == 0 else (0, runner.num_tokens - 1)
            targets = torch.randint(low, high, (batch, TARGET_LEN), generator=generator)
            target_lens = torch.full((batch,), TARGET_LEN, dtype=torch.long)

            def step():
                model.zero_grad(set_to_none=True)
                log_probs, out_lens = runner(feats, lens)
                loss = torch.nn.functional.ctc_loss(
                    log_probs.transpose(0, 1), targets, out_lens, target_lens,
                    blank=runner.blank, reduction="mean", zero_infinity=True,
                )
                loss.backward()

        med, times, cpu = median_time(step, args.repeats, args.warmup)
        out[task] = {"median": med, "times": times, "cpu": cpu}
    return out


def run_worker(impl: str, make_runner: Callable[[str], Tuple[object, int]], args) -> dict:
    """Build and time each configuration; returns the worker's JSON-able result."""
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    result = {"impl": impl, "torch": torch.__version__, "python": sys.version.split()[0],
              "threads": torch.get_num_threads(), "matmul_gflops_before": matmul_gflops(), "configs": {}}
    tasks = [t for t in args.tasks.split(",") if t]
    for name in [c for c in args.configs.split(",") if c]:
        runner, params = make_runner(name)
        result["configs"][name] = {"params": params, "tasks": time_tasks(runner, tasks, args)}
        del runner
    result["matmul_gflops_after"] = matmul_gflops()
    return result


# ----------------------------------------------------------------------------------------------
# prototype of the change proposed for qnet/model/quartznet.py ("qnet-cl")


def _batch_norm_channels_last(bn, x):
    """BatchNorm1d `bn` on x (B, C, T) stored as (B, T, C), via the 4-D channels-last kernel."""
    if bn.training and bn.track_running_stats:
        bn.num_batches_tracked.add_(1)
    y = torch.nn.functional.batch_norm(x.unsqueeze(2), bn.running_mean, bn.running_var, bn.weight, bn.bias,
                                       bn.training or not bn.track_running_stats, bn.momentum, bn.eps)
    return y.squeeze(2)


def depthwise_weight_grad(x, grad_out, kernel: int, stride: int, padding: int, dilation: int):
    """d loss / d weight (C, 1, K) of a depthwise conv1d, for x (B, C, T) and grad_out (B, C, T').

    dW[c, k] = sum_{b, t} grad_out[b, c, t] * x_pad[b, c, t * stride + k * dilation]: a correlation of
    x with grad_out, computed as ONE depthwise conv with B*C channels whose kernels are grad_out
    (length T', dilated by `stride`, stepped by `dilation`), then summed over the batch. oneDNN runs
    that on its fast depthwise path, ~10x faster than its own backward-weights kernel for these shapes.
    """
    F = torch.nn.functional
    batch, channels, _ = x.shape
    out_frames = grad_out.size(2)
    x_pad = F.pad(x.transpose(1, 2), (0, 0, padding, padding))  # (B, T + 2p, C)
    frames = x_pad.size(1)
    # (1, B*C, 1, T + 2p) in channels-last memory: one "image" whose channels are the (b, c) pairs
    inp = x_pad.transpose(0, 1).reshape(1, frames, batch * channels).transpose(1, 2).unsqueeze(2)
    kernels = grad_out.reshape(batch * channels, 1, 1, out_frames)
    corr = F.conv2d(inp, kernels, None, (1, dilation), 0, (1, stride), batch * channels)
    return corr[..., :kernel].reshape(batch, channels, kernel).sum(0).unsqueeze(1)


class DepthwiseConvChannelsLast(torch.autograd.Function):
    """Depthwise conv1d of x (B, C, T) held in (B, T, C) memory, as a channels-last conv2d (oneDNN).

    Backward: grad_input with oneDNN's channels-last depthwise backward-data (fast), grad_weight with
    `depthwise_weight_grad` (oneDNN's channels-last backward-weights is ~10x slower than forward).
    """

    @staticmethod
    def forward(ctx, x, weight, stride: int, padding: int, dilation: int):
        ctx.save_for_backward(x, weight)
        ctx.conf = (stride, padding, dilation)
        y = torch.nn.functional.conv2d(x.unsqueeze(2), weight.unsqueeze(2), None, (1, stride), (0, padding),
                                       (1, dilation), weight.size(0))
        return y.squeeze(2)

    @staticmethod
    def backward(ctx, grad_out):
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conf
        if not grad_out.transpose(1, 2).is_contiguous():  # keep the channels-last fast paths
            grad_out = grad_out.transpose(1, 2).contiguous().transpose(1, 2)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out.unsqueeze(2), x.unsqueeze(2), weight.unsqueeze(2), None, [1, stride], [0, padding],
                [1, dilation], False, [0, 0], weight.size(0), [True, False, False])[0].squeeze(2)
        if ctx.needs_input_grad[1]:
            grad_w = depthwise_weight_grad(x, grad_out, weight.size(2), stride, padding, dilation)
        return grad_x, grad_w, None, None, None


def _conv_channels_last(x, weight, stride, padding, dilation, groups):
    """Conv1d of x (B, C, T) stored as (B, T, C): 1x1 -> matmul, depthwise -> DepthwiseConvChannelsLast,
    other -> channels-last conv2d."""
    F = torch.nn.functional
    if weight.size(2) == 1 and stride == 1 and padding == 0 and groups == 1:
        return F.linear(x.transpose(1, 2), weight.squeeze(2)).transpose(1, 2)
    if groups == weight.size(0) and weight.size(1) == 1:
        return DepthwiseConvChannelsLast.apply(x, weight, stride, padding, dilation)
    y = F.conv2d(x.unsqueeze(2), weight.unsqueeze(2), None, (1, stride), (0, padding), (1, dilation), groups)
    return y.squeeze(2)


def patch_channels_last(model):
    """Make a qnet QuartzNet compute in (B, T, C) memory (logical shapes stay (B, C, T)); trainable.

    Same parameters, state_dict, masking and BatchNorm semantics; only the kernels change: depthwise
    convs run as channels-last conv2d (oneDNN's depthwise path), 1x1 convs as matmuls over (B*T, C),
    BatchNorm on a 4-D channels-last view. The encoder input `feats.transpose(1, 2)` already has
    this memory layout, so no copy is needed anywhere. This is a prototype of the change proposed
    for qnet/model/quartznet.py (ConvBN/ResidualProjection/CTCDecoder forwards); bench only.
    """
    import types

    from qnet.model.quartznet import ConvBN, CTCDecoder, ResidualProjection, conv_output_lengths, lengths_to_mask

    def mask_time(x, lens):
        # torch.where keeps the (B, T, C) memory layout; masked_fill with a broadcast mask returns a
        # (B, C, T)-contiguous tensor, which sends every following conv down the slow NCW path
        mask = lengths_to_mask(lens, x.size(2)).unsqueeze(1)
        return torch.where(mask, x, torch.zeros((), dtype=x.dtype, device=x.device))

    def convbn_forward(self, x, lens):
        if self.depthwise is not None:
            if self.kernel > 1 or self.training:
                x = mask_time(x, lens)
            dw = self.depthwise
            x = _conv_channels_last(x, dw.weight, self.stride, self.padding, self.dilation, dw.groups)
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
            if self.training:
                x = mask_time(x, lens)
            x = _conv_channels_last(x, self.conv.weight, 1, 0, 1, 1)
        else:
            if self.conv_mixes_frames or self.training:
                x = mask_time(x, lens)
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
            x = _conv_channels_last(x, self.conv.weight, self.stride, self.padding, self.dilation, 1)
        return _batch_norm_channels_last(self.norm, x), lens

    def residual_forward(self, x, lens):
        if self.training:
            x = mask_time(x, lens)
        return _batch_norm_channels_last(self.norm, _conv_channels_last(x, self.conv.weight, 1, 0, 1, 1))

    def decoder_forward(self, x):
        logits = torch.nn.functional.linear(x.transpose(1, 2), self.conv.weight.squeeze(2), self.conv.bias)
        return torch.log_softmax(logits, dim=-1)

    for module in model.modules():
        if isinstance(module, ConvBN):
            module.forward = types.MethodType(convbn_forward, module)
        elif isinstance(module, ResidualProjection):
            module.forward = types.MethodType(residual_forward, module)
        elif isinstance(module, CTCDecoder):
            module.forward = types.MethodType(decoder_forward, module)
    return model


# ----------------------------------------------------------------------------------------------
# qnet workers


class QnetRunner:
    """qnet model (eager, folded, or scripted): (feats (B,T,F), lens) -> (log_probs, out_lens)."""

    layout = "btf"
    blank = 0
    num_tokens = NUM_TOKENS

    def __init__(self, model, trainable=True):
        self.model = model
        self.trainable = trainable

    def __call__(self, feats, lens):
        return self.model(feats, lens)


class OnnxRunner:
    """qnet's folded ONNX export run by onnxruntime (inference only)."""

    layout = "btf"
    model = None
    trainable = False

    def __init__(self, path: str, threads: int):
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])

    def __call__(self, feats, lens):
        return self.session.run(None, {"feats": feats.numpy(), "feat_lens": lens.numpy()})


def qnet_worker(impl: str, args) -> dict:
    """Time qnet's model in the current interpreter as `impl` (see the module docstring)."""
    sys.path.insert(0, REPO)
    from qnet.model import build_model

    base = impl.split("+")[0]
    base = base[:-3] if base.endswith("-t2") else base
    if base in ("qnet-fold", "qnet-script", "qnet-onnx"):
        args.tasks = ",".join(t for t in args.tasks.split(",") if t != "train_b8")

    def make_runner(name):
        model = build_model(name, NUM_TOKENS)
        params = sum(p.numel() for p in model.parameters())
        if base == "qnet":
            return QnetRunner(model), params
        if base == "qnet-cl":
            return QnetRunner(patch_channels_last(model)), params
        from qnet import export

        if base == "qnet-fold":
            return QnetRunner(export.InferenceQuartzNet(model), trainable=False), params
        if base == "qnet-script":
            scripted = export.to_torchscript(export.deploy_module(model, fold_bn=True), "script")
            return QnetRunner(scripted, trainable=False), params
        if base == "qnet-onnx":
            import tempfile

            path = os.path.join(tempfile.mkdtemp(prefix="qnet_bench_onnx."), "model.onnx")
            export.export_onnx(export.deploy_module(model, fold_bn=True, channels_last=False), path)
            return OnnxRunner(path, args.threads), params
        raise ValueError(f"unknown qnet implementation {impl!r}")

    return run_worker(impl, make_runner, args)


# ----------------------------------------------------------------------------------------------
# driver


def run_subprocess(impl: str, args) -> dict:
    """Run one worker in its interpreter; returns its JSON (or {"impl", "error"})."""
    common = ["--configs", args.configs, "--tasks", args.tasks, "--repeats", str(args.repeats),
              "--warmup", str(args.warmup), "--threads", str(args.threads), "--frames", str(args.frames)]
    nemo_python = os.path.join(args.nemo_venv, "bin", "python")
    in_nemo_venv = impl == "nemo" or impl.endswith("-t2")
    if in_nemo_venv and not os.path.exists(nemo_python):
        return {"impl": impl, "error": f"{nemo_python} not found (run bench/nemo_env.sh)"}
    if impl == "nemo":
        cmd = [nemo_python, os.path.join(BENCH_DIR, "nemo_quartznet.py")] + common
    else:
        python = nemo_python if in_nemo_venv else sys.executable
        cmd = [python, os.path.abspath(__file__), "--worker", impl] + common
    env = dict(os.environ, PYTHONPATH=REPO, OMP_NUM_THREADS=str(args.threads))
    if impl.endswith("+mkl"):
        env["MKL_DEBUG_CPU_TYPE"] = "5"
    print(f"# running {impl}: {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        print(f"# {impl} failed (exit {proc.returncode}):\n{tail}", file=sys.stderr)
        return {"impl": impl, "error": f"exit {proc.returncode}: {tail.splitlines()[-1] if tail else ''}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def merge_rounds(rounds: List[dict]) -> dict:
    """One result per implementation from several rounds: timings pooled, matmul peak = best seen."""
    ok = [r for r in rounds if "error" not in r]
    if not ok:
        return rounds[0]
    merged = json.loads(json.dumps(ok[0]))
    merged["rounds"] = len(ok)
    for r in ok[1:]:
        merged["matmul_gflops_before"] = max(merged["matmul_gflops_before"], r["matmul_gflops_before"])
        merged["matmul_gflops_after"] = max(merged["matmul_gflops_after"], r["matmul_gflops_after"])
        for name, cr in r["configs"].items():
            for task, tr in cr["tasks"].items():
                dst = merged["configs"][name]["tasks"][task]
                dst["times"] += tr["times"]
                dst["cpu"] += tr["cpu"]
    for cr in merged["configs"].values():
        for tr in cr["tasks"].values():
            tr["median"] = statistics.median(tr["times"])
    return merged


def format_table(results: List[dict], frames: int) -> str:
    """A markdown table: wall seconds (median, min), CPU seconds, GFLOP/s vs the matmul peak, NeMo ratio."""
    nemo = next((r for r in results if r.get("impl") == "nemo" and "error" not in r), None)
    lines = ["| impl | torch | config | task | median s | min s | CPU s | s per 10 s clip | GFLOP/s | "
             "% of matmul | NeMo median / this |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in results:
        if "error" in r:
            lines.append(f"| {r['impl']} | - | - | - | error: {r['error']} | | | | | | |")
            continue
        peak = max(r["matmul_gflops_before"], r["matmul_gflops_after"])
        for name, cr in r["configs"].items():
            for task, tr in cr["tasks"].items():
                batch = 1 if task == "infer_b1" else 8
                flops = forward_flops(name, frames) * batch * (3 if task.startswith("train") else 1)
                med = tr["median"]
                gflops = flops / med / 1e9
                ratio = ""
                if nemo is not None:
                    ref = nemo["configs"].get(name, {}).get("tasks", {}).get(task)
                    if ref:
                        ratio = f"{ref['median'] / med:.2f}x"
                per_clip = f"{med / batch:.3f}" if task.startswith("infer") else ""
                lines.append(f"| {r['impl']} | {r['torch'].split('+')[0]} | {name} | {task} | {med:.3f} | "
                             f"{min(tr['times']):.3f} | {statistics.median(tr['cpu']):.3f} | {per_clip} | "
                             f"{gflops:.1f} | {100 * gflops / peak:.0f}% | {ratio} |")
    peaks = ", ".join(f"{r['impl']} {max(r['matmul_gflops_before'], r['matmul_gflops_after']):.0f}"
                      for r in results if "error" not in r)
    flops = ", ".join(f"{n} {forward_flops(n, frames) / 1e9:.2f}" for n in ("5x5", "10x5", "15x5"))
    return "\n".join(lines + ["", f"matmul 2048x2048 fp32 GFLOP/s (best of the run) per worker: {peaks}",
                              f"analytic GFLOP per {frames}-frame forward: {flops} (training step = 3 x forward)"])


def main():
    """Run the workers and print the table (or, with --worker, be one)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    add_worker_options(parser)
    parser.add_argument("--impls", default=",".join(DEFAULT_IMPLS), help=f"comma-separated subset of {ALL_IMPLS}")
    parser.add_argument("--rounds", type=int, default=1,
                        help="run every implementation this many times, alternating, and pool the timings "
                             "(spreads the noise of a shared machine over all of them)")
    parser.add_argument("--nemo-venv", default=DEFAULT_NEMO_VENV, help="venv made by bench/nemo_env.sh")
    parser.add_argument("--json", default="", help="also write all raw results to this file")
    parser.add_argument("--worker", default="", help=argparse.SUPPRESS)
    args = parser.parse_args()

    if args.worker:
        print(json.dumps(qnet_worker(args.worker, args)))
        return

    impls = [i for i in args.impls.split(",") if i]
    unknown = sorted(set(impls) - set(ALL_IMPLS))
    if unknown:
        parser.error(f"unknown --impls {unknown}; known: {ALL_IMPLS}")
    rounds: Dict[str, List[dict]] = {impl: [] for impl in impls}
    for _ in range(args.rounds):
        for impl in impls:
            rounds[impl].append(run_subprocess(impl, args))
    results = [merge_rounds(rounds[impl]) for impl in impls]
    if args.json:
        with open(args.json, "w") as f:
            json.dump(results, f, indent=1)
    print(f"# threads {args.threads}, {args.rounds} round(s) x {args.repeats} repeats after {args.warmup} warmup; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    print(format_table(results, args.frames))


if __name__ == "__main__":
    main()
