"""QuartzNet CPU training-step and inference timing, current code against a baseline copy of the model file.

    git show HEAD:qnet/model/quartznet.py > /tmp/quartznet_old.py
    nice python bench/bench_model_cpu_profile.py --baseline /tmp/quartznet_old.py --configs mini,small --threads 2
    python bench/bench_model_cpu_profile.py --configs mini --profile train   # top ops of the current code
    python bench/bench_model_cpu_profile.py --baseline /tmp/quartznet_old.py --check   # same results?

Both models get the same weights and inputs (random features, `--batch` utterances of up to `--frames`
frames with mixed lengths, torch ctc_loss with targets of frames/8 tokens). Tasks: `train` = train mode,
forward + ctc_loss + backward; `eval` = eval mode forward under inference_mode. The two models run
alternately in the same process, `--repeats` times after one warm-up each; medians of wall seconds and of
process CPU seconds (all threads; less sensitive to other processes taking the cores) are printed, with
speedup = baseline / current. On a shared machine use the CPU column and several repeats.
"""

import argparse
import importlib.util
import os
import statistics
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from qnet.model import build_model  # noqa: E402


def load_baseline(path: str):
    """Import a stand-alone copy of qnet/model/quartznet.py as a module."""
    spec = importlib.util.spec_from_file_location("quartznet_baseline", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def make_inputs(batch: int, frames: int, feat_in: int, num_tokens: int, seed: int = 0):
    """Features (B, T, F), lengths (B,) spread over [frames/2, frames], CTC targets and their lengths."""
    gen = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, feat_in, generator=gen)
    lens = torch.randint(frames // 2, frames + 1, (batch,), generator=gen)
    lens[0] = frames
    target_len = max(1, frames // 8)
    targets = torch.randint(1, num_tokens, (batch, target_len), generator=gen)
    return feats, lens, targets, torch.full((batch,), target_len, dtype=torch.long)


def make_task(model, task: str, inputs):
    """A closure running one `task` ('train' or 'eval') of `model` on `inputs`."""
    feats, lens, targets, target_lens = inputs

    def train_step():
        model.train()
        model.zero_grad(set_to_none=True)
        log_probs, out_lens = model(feats, lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens, zero_infinity=True)
        loss.backward()

    def eval_forward():
        model.eval()
        with torch.inference_mode():
            model(feats, lens)

    return train_step if task == "train" else eval_forward


def check_same(baseline, name: str, batch: int, frames: int) -> None:
    """Print the largest float64 differences of current vs baseline: valid log-probs, gradients, buffers.

    float64 so that a rounding-level difference cannot flip a ReLU and show up as a large gradient
    difference; train mode (batch statistics, running-stat updates) and eval mode with random BatchNorm
    statistics and mixed lengths.
    """
    torch.manual_seed(0)
    current = build_model(name, 29).double()
    gen = torch.Generator().manual_seed(1)
    for m in current.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            m.weight.data = 0.5 + torch.rand(m.num_features, generator=gen, dtype=torch.float64)
            m.bias.data = 0.3 * torch.randn(m.num_features, generator=gen, dtype=torch.float64)
            m.running_var = 0.5 + torch.rand(m.num_features, generator=gen, dtype=torch.float64)
    old = baseline.QuartzNet(current.config).double()
    old.load_state_dict(current.state_dict())
    feats, lens, targets, target_lens = make_inputs(batch, frames, current.config.feat_in, 29)
    feats = feats.double()
    for train in (True, False):
        results = []
        for model in (old, current):
            model.train(train)
            model.zero_grad(set_to_none=True)
            log_probs, out_lens = model(feats, lens)
            F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens, zero_infinity=True).backward()
            valid = (torch.arange(log_probs.size(1)) < out_lens.unsqueeze(1)).unsqueeze(2)
            grads = {k: p.grad for k, p in model.named_parameters()}
            results.append((log_probs.detach() * valid, out_lens, grads, dict(model.named_buffers())))
        (lp_a, len_a, grad_a, buf_a), (lp_b, len_b, grad_b, buf_b) = results
        assert torch.equal(len_a, len_b), "output lengths differ"
        grad_diff = max(float((grad_a[k] - grad_b[k]).abs().max() / grad_a[k].abs().max().clamp(min=1e-30))
                        for k in grad_a)
        buf_diff = max(float((buf_a[k].double() - buf_b[k].double()).abs().max()) for k in buf_a)
        print(f"{name:8s} {'train' if train else 'eval':6s} float64 max |d log_prob| "
              f"{float((lp_a - lp_b).abs().max()):.1e}, max relative |d grad| {grad_diff:.1e}, "
              f"max |d buffer| {buf_diff:.1e}", flush=True)


def time_once(fn):
    """(wall seconds, process CPU seconds) of one call."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


def main():
    """Parse options, time every (config, task), print a table."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--configs", default="mini,small,5x5,15x5", help="comma-separated model configs")
    parser.add_argument("--tasks", default="train,eval", help="comma-separated: train,eval")
    parser.add_argument("--baseline", default="", help="path of an old quartznet.py to compare against")
    parser.add_argument("--batch", type=int, default=16, help="utterances per batch")
    parser.add_argument("--frames", type=int, default=400, help="frames of the longest utterance")
    parser.add_argument("--threads", type=int, default=2, help="torch.set_num_threads")
    parser.add_argument("--repeats", type=int, default=5, help="timed calls per model and task")
    parser.add_argument("--check", action="store_true", help="compare results with --baseline instead of timing")
    parser.add_argument("--profile", default="", help="'train' or 'eval': print torch.profiler's top ops instead")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    baseline = load_baseline(args.baseline) if args.baseline else None
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, batch {args.batch} x {args.frames} frames")
    if args.check:
        if baseline is None:
            parser.error("--check needs --baseline")
        for name in [c for c in args.configs.split(",") if c]:
            check_same(baseline, name, args.batch, args.frames)
        return
    print(f"{'config':8s} {'task':6s} {'impl':9s} {'wall s':>8s} {'cpu s':>8s} {'speedup wall/cpu':>17s}")
    for name in [c for c in args.configs.split(",") if c]:
        torch.manual_seed(0)
        current = build_model(name, 29)
        models = {"current": current}
        if baseline is not None:
            old = baseline.QuartzNet(current.config)
            old.load_state_dict(current.state_dict())
            models = {"baseline": old, "current": current}
        inputs = make_inputs(args.batch, args.frames, current.config.feat_in, 29)
        if args.profile:
            from torch.profiler import ProfilerActivity, profile

            fn = make_task(current, args.profile, inputs)
            fn()
            with profile(activities=[ProfilerActivity.CPU]) as prof:
                fn()
            print(f"== {name} {args.profile}")
            print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
            continue
        for task in [t for t in args.tasks.split(",") if t]:
            fns = {impl: make_task(m, task, inputs) for impl, m in models.items()}
            times = {impl: [] for impl in fns}
            for fn in fns.values():
                fn()  # warm-up
            for _ in range(args.repeats):
                for impl, fn in fns.items():
                    times[impl].append(time_once(fn))
            med = {impl: (statistics.median(w for w, _ in t), statistics.median(c for _, c in t))
                   for impl, t in times.items()}
            for impl, (wall, cpu) in med.items():
                speedup = ""
                if impl == "current" and "baseline" in med:
                    speedup = f"{med['baseline'][0] / wall:.2f}x / {med['baseline'][1] / cpu:.2f}x"
                print(f"{name:8s} {task:6s} {impl:9s} {wall:8.3f} {cpu:8.3f} {speedup:>17s}", flush=True)


if __name__ == "__main__":
    main()
