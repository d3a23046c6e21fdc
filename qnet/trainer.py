"""QuartzNet CTC training: one process per device (torchrun / SLURM / single), NovoGrad + cosine
schedule, AMP (fp16 + GradScaler or bf16; on CUDA, and bf16 on CPU), atomic resumable checkpoints,
fine-tuning init, validation with greedy WER, tensorboard and a PNG of the curves.

Entry point: `train(args)` with the options of `qnet.bin.train` (see `add_train_arguments`).

Distributed. World size and rank come from torchrun's env (RANK, WORLD_SIZE, LOCAL_RANK) or, when
launched by `srun` one task per GPU, from SLURM's (SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID; the
master address is the first host of SLURM_JOB_NODELIST). Each rank reads its own share of the
batches (lhotse samplers shard by rank). Every step all ranks agree (one small all-reduce) on
whether each has a batch and whether every loss is finite, so a NaN on one rank skips the batch
everywhere and no rank waits for another in a collective. Rank 0 alone writes logs, tensorboard
and checkpoints; at each epoch end the ranks compare parameter checksums and stop if they differ.

Resuming. With `--auto-resume true` (default) a start in an exp dir that has checkpoints continues
from the newest one: model, optimizer, scheduler, GradScaler, every rank's RNG states, epoch and
position in the epoch (the epoch's batch order is rebuilt from the seed and the consumed batches
are skipped without loading), so `kill -9` + the same command loses at most `--save-every-n` steps
and, on CPU with `--num-workers 0`, gives the same parameters as an uninterrupted run.
"""

import argparse
import contextlib
import datetime
import gc
import logging
import math
import os
import re
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

import torch
import torch.distributed as dist

from qnet.checkpoint import save_step_checkpoint
from qnet.utils import atomic_output, str2bool

MAX_CONSECUTIVE_NONFINITE = 20


class TrainingError(RuntimeError):
    """Training cannot go on (diverged, out of memory, bad setup); the message says why and what to do."""


# ----------------------------------------------------------------------------------------------
# Options


def add_run_arguments(g: argparse._ArgumentGroup) -> None:
    """The run options every qnet trainer shares (acoustic model, NNLM): exp dir, seed, device, threads,
    step checkpoints."""
    g.add_argument("--exp-dir", required=True)
    g.add_argument("--seed", type=int, default=42)
    g.add_argument("--device", default="auto", help="auto, cpu, cuda (under DDP: cuda:LOCAL_RANK)")
    g.add_argument("--num-threads", type=int, default=0, help="torch CPU threads (0 = torch's default)")
    g.add_argument("--save-every-n", type=int, default=1000, help="checkpoint-STEP.pt every N steps (0 = off)")
    g.add_argument("--keep-last-k", type=int, default=3, help="keep this many checkpoint-STEP.pt (0 = all)")


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `python -m qnet.bin.train`."""
    g = parser.add_argument_group("data")
    g.add_argument("--lang-dir", required=True, help="lang dir with tokens.txt (and bpe.model for BPE)")
    g.add_argument("--train-cuts", required=True, nargs="+", help="lhotse cut manifest(s) for training")
    g.add_argument("--valid-cuts", nargs="+", default=None, help="lhotse cut manifest(s) for validation")
    g.add_argument("--max-duration", type=float, default=200.0, help="seconds of audio per batch (per GPU)")
    g.add_argument("--max-utt-duration", type=float, default=16.7, help="drop training cuts longer than this (s)")
    g.add_argument("--num-buckets", type=int, default=30, help="DynamicBucketingSampler buckets")
    g.add_argument("--num-workers", type=int, default=2, help="DataLoader workers")
    g.add_argument("--on-the-fly-feats", type=str2bool, default=False,
                   help="compute nemo-mel features from audio instead of reading precomputed ones")
    g.add_argument("--sorta-grad", type=str2bool, default=False,
                   help="epoch 1 shortest utterances first (SortaGrad; holds the training cuts in memory "
                        "for that epoch), later epochs shuffled")
    g.add_argument("--perturb-speed", type=str2bool, default=False,
                   help="on-the-fly speed perturbation 0.9/1.1 (p=2/3); needs --on-the-fly-feats true")

    g = parser.add_argument_group("model")
    g.add_argument("--model", default=None,
                   help="configuration name (15x5, 10x5, 5x5, 5x3, small, mini, tiny); default: the "
                        "--init-from checkpoint's, else 15x5")
    g.add_argument("--dropout", type=float, default=None, help="override every block's dropout")
    g.add_argument("--init-from", default=None, help="qnet checkpoint or .nemo to fine-tune from (weights only)")
    g.add_argument("--spec-cutout", type=str2bool, default=True, help="NeMo SpecCutout (5 rects, 120 frames x 50 bins)")
    g.add_argument("--spec-augment", type=str2bool, default=False, help="SpecAugment frequency/time strips")
    g.add_argument("--freq-masks", type=int, default=2)
    g.add_argument("--freq-width", type=int, default=15)
    g.add_argument("--time-masks", type=int, default=2)
    g.add_argument("--time-width", type=float, default=55,
                   help="time strip width: frames (>= 1) or a fraction of the utterance (< 1)")
    g.add_argument("--freq-warp", type=float, default=0.0,
                   help="VTLP-style frequency warp by a random factor in [1 - x, 1 + x] per utterance (0 = off)")

    g.add_argument("--room-noise", type=float, default=0.0,
                   help="probability of feature-domain reverberation, and (separately) of additive noise, per "
                        "training utterance (qnet.augment.RoomNoise; 0 = off)")
    g = parser.add_argument_group("optimization")
    g.add_argument("--num-epochs", type=int, default=10)
    g.add_argument("--optimizer", choices=("novograd", "adamw"), default="novograd",
                   help="NovoGrad (the paper's, NeMo's) or AdamW (betas/eps/weight decay as given)")
    g.add_argument("--lr", type=float, default=0.01)
    g.add_argument("--betas", type=float, nargs=2, default=(0.95, 0.5))
    g.add_argument("--eps", type=float, default=1e-8)
    g.add_argument("--weight-decay", type=float, default=0.001)
    g.add_argument("--grad-averaging", type=str2bool, default=False)
    g.add_argument("--warmup-steps", type=int, default=1000)
    g.add_argument("--min-lr", type=float, default=0.0)
    g.add_argument("--max-steps", type=int, default=0,
                   help="schedule length; default num-epochs x batches per epoch (counted at the start)")
    g.add_argument("--grad-clip", type=float, default=0.0, help="clip the gradient norm to this (0 = off)")
    g.add_argument("--ctc-backend", choices=("k2", "torch"), default=None,
                   help="default: torch (the same loss as k2's; a training step on CPU is 1.5x faster with it)")
    g.add_argument("--amp", choices=("auto", "fp16", "bf16", "none"), default="auto",
                   help="mixed precision (torch.autocast; fp16 with a GradScaler): auto = fp16 on CUDA, none on "
                        "CPU; bf16 also works on CPU")
    g.add_argument("--model-impl", default="auto",
                   help="model code path (qnet.model.quartznet.parse_impl): auto = the CPU rewrites on CPU, plain "
                        "Conv1d/BatchNorm1d elsewhere; plain; cpu; or rewrites joined by '+'")
    g.add_argument("--max-consecutive-nonfinite", type=int, default=MAX_CONSECUTIVE_NONFINITE,
                   help="stop after this many batches in a row with NaN/inf loss")

    g = parser.add_argument_group("run")
    add_run_arguments(g)
    g.add_argument("--keep-last-epochs", type=int, default=0, help="keep this many epoch-E.pt (0 = all)")
    g.add_argument("--auto-resume", type=str2bool, default=True, help="continue from the newest checkpoint in exp-dir")
    g.add_argument("--log-interval", type=int, default=10, help="log/tensorboard every N steps")
    g.add_argument("--tensorboard", type=str2bool, default=True)
    g.add_argument("--exit-after-steps", type=int, default=0,
                   help="(testing) stop this run after N steps, as a kill right after a checkpoint would")


# ----------------------------------------------------------------------------------------------
# Distributed setup


# Above this many training cuts the batches per epoch are estimated at start-up instead of counted.
EXACT_COUNT_MAX_CUTS = 50_000


@dataclass
class DistInfo:
    """Where this process sits: rank, world size, local rank (GPU index on its node)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_distributed(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def first_slurm_host(nodelist: str) -> str:
    """First host of a SLURM nodelist ("gpu[03-05,9],cpu1" -> "gpu03"); uses `scontrol` when present."""
    try:
        out = subprocess.run(["scontrol", "show", "hostnames", nodelist], capture_output=True, text=True, timeout=30)
        if out.returncode == 0 and out.stdout.split():
            return out.stdout.split()[0]
    except (OSError, subprocess.SubprocessError):
        pass
    depth, first = 0, ""
    for ch in nodelist:
        if ch == "," and depth == 0:
            break
        depth += ch == "["
        depth -= ch == "]"
        first += ch
    m = re.match(r"^([^\[]*)\[([^\]]+)\](.*)$", first)
    if not m:
        return first
    prefix, ranges, suffix = m.groups()
    start = ranges.split(",")[0].split("-")[0]
    return f"{prefix}{start}{suffix}"


def distributed_env_from_slurm(env: Dict[str, str]) -> Dict[str, str]:
    """torch.distributed env vars (RANK, WORLD_SIZE, LOCAL_RANK, MASTER_ADDR, MASTER_PORT) for an
    `srun` task, from SLURM's variables; {} when not under a multi-task SLURM step."""
    if "SLURM_PROCID" not in env or int(env.get("SLURM_NTASKS", "1")) <= 1:
        return {}
    out = {
        "RANK": env["SLURM_PROCID"],
        "WORLD_SIZE": env["SLURM_NTASKS"],
        "LOCAL_RANK": env.get("SLURM_LOCALID", "0"),
    }
    if "MASTER_ADDR" not in env:
        nodelist = env.get("SLURM_STEP_NODELIST") or env.get("SLURM_JOB_NODELIST")
        if not nodelist:
            raise TrainingError("under SLURM with several tasks but neither MASTER_ADDR nor SLURM_JOB_NODELIST is set")
        out["MASTER_ADDR"] = first_slurm_host(nodelist)
    if "MASTER_PORT" not in env:
        out["MASTER_PORT"] = str(20000 + int(env.get("SLURM_JOB_ID", "0")) % 20000)
    return out


def init_distributed(device_kind: str) -> DistInfo:
    """Join the process group when launched by torchrun or srun (NCCL on CUDA, gloo on CPU)."""
    env = os.environ
    if not ("RANK" in env and "WORLD_SIZE" in env):
        env.update(distributed_env_from_slurm(dict(env)))
    if "RANK" not in env or int(env.get("WORLD_SIZE", "1")) <= 1:
        return DistInfo()
    info = DistInfo(int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0")))
    env.setdefault("MASTER_ADDR", "127.0.0.1")
    env.setdefault("MASTER_PORT", "29500")
    if device_kind == "cuda":
        torch.cuda.set_device(info.local_rank if torch.cuda.device_count() > 1 else 0)
    if not dist.is_initialized():
        dist.init_process_group(
            "nccl" if device_kind == "cuda" else "gloo",
            rank=info.rank,
            world_size=info.world_size,
            timeout=datetime.timedelta(minutes=30),
        )
    return info


def _all_reduce(values: List[float], device: torch.device, info: DistInfo) -> List[float]:
    """Sum a few numbers over ranks (identity when not distributed)."""
    if not info.is_distributed:
        return list(values)
    t = torch.tensor(values, dtype=torch.float64, device=device)
    dist.all_reduce(t)
    return t.tolist()


def _gather_objects(obj: Any, info: DistInfo) -> List[Any]:
    """Every rank's `obj`, in rank order (just [obj] when not distributed)."""
    if not info.is_distributed:
        return [obj]
    out: List[Any] = [None] * info.world_size
    dist.all_gather_object(out, obj)
    return out


def leave_process_group(owner: Any) -> None:
    """Barrier, drop `owner.ddp_model` (the DDP wrapper), then destroy the process group: in that order.

    If the DDP reducer held the last reference to the gloo group, the group's destructor would run while the
    reducer is freed, with the GIL held, and join gloo's worker threads; a worker that is just freeing a
    tensor owned by Python waits for the GIL, so both wait forever (torch 1.13, gloo: 1 of 8 short
    two-process NNLM trainings hung at exit before this order, 0 of 22 after). Freed first, the reducer leaves
    the group to the registry, whose release drops the GIL.
    """
    if not dist.is_initialized():
        return
    dist.barrier()
    owner.ddp_model = owner.model
    gc.collect()
    dist.destroy_process_group()


def parameter_checksums(model: torch.nn.Module) -> List[float]:
    """Sum and sum of squares of every parameter tensor (to compare replicas)."""
    sums = []
    with torch.no_grad():
        for p in model.parameters():
            p64 = p.detach().double()
            sums.extend([p64.sum().item(), p64.pow(2).sum().item()])
    return sums


# ----------------------------------------------------------------------------------------------
# Training curves


def plot_curves(history: List[Dict[str, Any]], png_path: Path) -> None:
    """PNG of training loss, learning rate, validation loss and greedy WER against steps."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    train = [h for h in history if h.get("kind") == "train"]
    valid = [h for h in history if h.get("kind") == "valid"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7))
    ax = axes[0][0]
    ax.plot([h["step"] for h in train], [h["loss"] for h in train], lw=1, label="train")
    if valid:
        ax.plot([h["step"] for h in valid], [h["loss"] for h in valid], "o-", label="valid")
    ax.set_yscale("log")
    ax.set_title("CTC loss (mean per utterance)")
    ax.set_xlabel("step")
    ax.legend()
    ax = axes[0][1]
    ax.plot([h["step"] for h in train], [h["lr"] for h in train], lw=1)
    ax.set_title("learning rate")
    ax.set_xlabel("step")
    ax = axes[1][0]
    if valid:
        ax.plot([h["epoch"] for h in valid], [h["wer"] for h in valid], "o-")
    ax.set_title("validation greedy WER (%)")
    ax.set_xlabel("epoch")
    ax = axes[1][1]
    ax.plot([h["step"] for h in train], [h["grad_norm"] for h in train], lw=1)
    ax.set_yscale("log")
    ax.set_title("gradient norm")
    ax.set_xlabel("step")
    fig.tight_layout()
    with atomic_output(png_path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, dpi=90)
    plt.close(fig)


# ----------------------------------------------------------------------------------------------
# The trainer


AMP_DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16}


def autocast_works(device_type: str, dtype: torch.dtype) -> bool:
    """Whether torch.autocast on `device_type` really runs in `dtype` here (torch 1.13's CPU autocast
    silently turns itself off for anything but bf16)."""
    import warnings

    from qnet.model.quartznet import autocast_dtype

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            with torch.autocast(device_type, dtype=dtype):
                return autocast_dtype(device_type) == dtype
        except RuntimeError:
            return False


def resolve_amp(amp: str, device: torch.device) -> str:
    """The precision to train in ("fp16", "bf16", "none") for --amp on `device`; TrainingError if impossible."""
    if amp == "auto":
        return "fp16" if device.type == "cuda" else "none"
    if amp == "none":
        return amp
    if device.type == "cuda" and amp == "bf16" and not torch.cuda.is_bf16_supported():
        raise TrainingError("--amp bf16: this GPU does not support bfloat16; use --amp fp16")
    if not autocast_works(device.type, AMP_DTYPES[amp]):
        raise TrainingError(
            f"--amp {amp}: torch {torch.__version__} has no {amp} autocast on {device.type}; "
            f"use --amp {'bf16 or none' if amp == 'fp16' else 'none'}"
        )
    return amp


def make_grad_scaler(device_type: str, enabled: bool):
    """A GradScaler for `device_type` (torch >= 2.3 scales on CPU too; before, torch.cuda.amp's, CUDA only)."""
    if hasattr(torch.amp, "GradScaler"):
        return torch.amp.GradScaler(device_type, enabled=enabled)
    return torch.cuda.amp.GradScaler(enabled=enabled and device_type == "cuda")


def apply_gradients(
    loss: torch.Tensor, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scaler, grad_clip: float
) -> Tuple[float, bool]:
    """Backward of `loss` (scaled by `scaler`), unscale, clip the norm to `grad_clip` (0 = off), and step.

    A NaN/inf gradient (an fp16 overflow, or any other) skips the step: parameters and optimizer state stay
    as they were, and an enabled scaler lowers its scale. Returns (gradient norm, whether updated).
    """
    optimizer.zero_grad(set_to_none=True)
    scaler.scale(loss).backward()
    scaler.unscale_(optimizer)  # records the scaler's inf check even when the step is skipped below
    max_norm = grad_clip if grad_clip > 0 else float("inf")
    grad_norm = float(torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm))
    updated = math.isfinite(grad_norm)
    if updated:
        scaler.step(optimizer)
    scaler.update()
    return grad_norm, updated


def setup_device(requested: str) -> Tuple[DistInfo, torch.device]:
    """Join the process group (init_distributed) and pick this process's device for --device `requested`
    (auto, cpu, cuda, cuda:N); under DDP on CUDA one GPU per rank. TrainingError when CUDA is missing."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda") and not torch.cuda.is_available():
        raise TrainingError(f"--device {requested}: CUDA is not available here; use --device cpu")
    info = init_distributed("cuda" if requested.startswith("cuda") else "cpu")
    if requested == "cuda" and info.is_distributed:
        # One GPU per task: cuda:LOCAL_RANK, or cuda:0 when the launcher bound one GPU to each task.
        requested = f"cuda:{info.local_rank if torch.cuda.device_count() > 1 else 0}"
    return info, torch.device(requested)


def start_run_log(exp_dir: Path, info: DistInfo, device: torch.device, tool: str, args: argparse.Namespace) -> None:
    """Create exp_dir (rank 0), log to exp_dir/log/log-<tool>-<date>.txt and log the options and the setup."""
    from qnet.utils import setup_logger

    if info.is_main:
        exp_dir.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now().strftime("%Y-%m-%d-%H-%M-%S")
    setup_logger(exp_dir / "log" / f"log-{tool.replace('_', '-')}-{stamp}.txt", rank=info.rank)
    logging.info("qnet %s: %s", tool, " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()))
    logging.info("world size %d (rank %d, local rank %d), device %s, torch %s",
                 info.world_size, info.rank, info.local_rank, device, torch.__version__)


def tensorboard_writer(exp_dir: Path, info: DistInfo, enabled: bool, step: int):
    """A SummaryWriter in exp_dir/tensorboard (rank 0, when enabled) that drops events after `step`, or None."""
    if not (info.is_main and enabled):
        return None
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter(log_dir=str(exp_dir / "tensorboard"), purge_step=step or None)


def _is_oom(exc: BaseException) -> bool:
    return isinstance(exc, RuntimeError) and "out of memory" in str(exc)


class Trainer:
    """Holds everything one training process needs; `run()` trains to the last epoch."""

    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.dist, self.device = setup_device(args.device)
        self.exp_dir = Path(args.exp_dir)
        self._setup_logging()
        if args.num_threads > 0:
            torch.set_num_threads(args.num_threads)

        self.amp = resolve_amp(args.amp, self.device)
        logging.info("precision: %s", "fp32" if self.amp == "none" else f"{self.amp} autocast on {self.device.type}"
                     + (" with a GradScaler" if self.amp == "fp16" else ""))

        self._seed_everything(args.seed + self.dist.rank)
        self._setup_tokens()
        self._setup_model()  # before the data: its subsampling decides which cuts CTC can align
        self._setup_data()
        self._setup_optimization()
        self.history: List[Dict[str, Any]] = []
        self.step = 0
        self.epoch = 1
        self.batches_done = 0
        self.steps_this_run = 0
        self.counters = {"nonfinite_batches": 0, "consecutive_nonfinite": 0, "infinite_utts": 0,
                         "overflow_steps": 0, "consecutive_overflow": 0}
        self._maybe_resume()
        self.tb = tensorboard_writer(self.exp_dir, self.dist, args.tensorboard, self.step)

    # -- setup ------------------------------------------------------------------------------------

    def _setup_logging(self) -> None:
        start_run_log(self.exp_dir, self.dist, self.device, "train", self.args)

    @staticmethod
    def _seed_everything(seed: int) -> None:
        import random

        import numpy as np

        random.seed(seed)
        np.random.seed(seed % 2**32)
        torch.manual_seed(seed)

    def _setup_tokens(self) -> None:
        from qnet.tokens import load_tokenizer

        self.tokenizer = load_tokenizer(self.args.lang_dir)
        self.tokens = self.tokenizer.table
        logging.info("lang dir %s: %d tokens (%s)", self.args.lang_dir, len(self.tokens), type(self.tokenizer).__name__)

    def _setup_data(self) -> None:
        from qnet.data import filter_cuts, load_cuts, load_train_cuts, make_loader

        a = self.args
        t0 = time.time()
        # Rank 0 scans and tokenizes the manifests once (exp_dir/train_cuts_index.json, kept for resumes);
        # the other ranks wait for it, then read the manifests lazily, filtered by its dropped ids.
        train_cuts, counts, per_file = load_train_cuts(
            a.train_cuts, self.tokenizer, a.max_utt_duration, seed=a.seed,
            index_path=self.exp_dir / "train_cuts_index.json", is_main=self.dist.is_main,
            barrier=dist.barrier if self.dist.is_distributed else None, num_jobs=min(8, os.cpu_count() or 1),
            subsampling_factor=self.model.config.subsampling_factor,
        )
        if len(per_file) > 1:
            for path, c in zip(a.train_cuts, per_file):
                logging.info("  %s: %s", path, c)
        logging.info("training cuts (%.0f s to index or read the index): %s", time.time() - t0, counts)
        if counts.kept == 0:
            raise TrainingError(f"no training cuts left after filtering {a.train_cuts}: {counts}")
        self.train_counts = counts
        common = dict(
            on_the_fly_feats=a.on_the_fly_feats,
            num_workers=a.num_workers,
            num_buckets=a.num_buckets,
            seed=a.seed,
            world_size=self.dist.world_size,
            rank=self.dist.rank,
        )
        input_transforms = []
        if a.room_noise > 0.0:
            from qnet.augment import RoomNoise

            input_transforms.append(RoomNoise(p_reverb=a.room_noise, p_noise=a.room_noise))
            logging.info("training input transforms: %s", input_transforms)
        self.train_loader = make_loader(
            train_cuts, self.tokenizer, a.max_duration, train=True, perturb_speed=a.perturb_speed,
            num_cuts=counts.kept, sorta_grad=a.sorta_grad, input_transforms=input_transforms, **common
        )
        self.valid_loader = None
        if a.valid_cuts:
            valid_cuts, vcounts = filter_cuts(load_cuts(a.valid_cuts), self.tokenizer, max_utt_duration=None,
                                              subsampling_factor=self.model.config.subsampling_factor)
            logging.info("validation cuts: %s", vcounts)
            if vcounts.kept:
                self.valid_loader = make_loader(valid_cuts, self.tokenizer, a.max_duration, train=False, **common)

    def _setup_model(self) -> None:
        from qnet.augment import build_augment
        from qnet.checkpoint import init_from_checkpoint, latest_checkpoint, nemo_config
        from qnet.model import build_model, count_parameters, load_checkpoint_dict

        a = self.args
        self.resume_path = latest_checkpoint(self.exp_dir) if a.auto_resume and self.exp_dir.is_dir() else None
        overrides = {} if a.dropout is None else {"dropout": a.dropout}
        self._resume_ckpt = None
        if self.resume_path is not None:
            self._resume_ckpt = load_checkpoint_dict(self.resume_path, map_location="cpu")
            ckpt_config = self._resume_ckpt["model_config"]
            if a.model is not None and a.model != ckpt_config.get("name"):
                logging.warning("--model %s ignored: resuming %s, a %s model", a.model, self.resume_path, ckpt_config.get("name"))
            model = build_model(ckpt_config)  # the checkpoint's own token count; _maybe_resume checks the table
        elif a.model is not None:
            model = build_model(a.model, len(self.tokens), **overrides)
        elif a.init_from:
            src = nemo_config(a.init_from) if a.init_from.endswith(".nemo") else load_checkpoint_dict(a.init_from)["model_config"]
            model = build_model(src, len(self.tokens), **overrides)
        else:
            model = build_model("15x5", len(self.tokens), **overrides)
        if a.init_from and self.resume_path is None:
            logging.info("fine-tuning: %s", init_from_checkpoint(model, a.init_from, self.tokens))
        model.augment = build_augment(
            spec_cutout=a.spec_cutout,
            spec_augment=a.spec_augment,
            freq_masks=a.freq_masks,
            freq_width=a.freq_width,
            time_masks=a.time_masks,
            time_width=int(a.time_width) if a.time_width >= 1 else float(a.time_width),
            freq_warp=a.freq_warp,
            num_bins=model.config.feat_in,
        )
        logging.info("model %s: %d parameters; augmentation: %s", model.config.name, count_parameters(model), model.augment)
        try:
            model.set_impl(a.model_impl)
        except ValueError as exc:
            raise TrainingError(f"--model-impl: {exc}") from exc
        logging.info("model code path: %s", a.model_impl)
        self.model = model.to(self.device)
        self.ddp_model = self.model
        if self.dist.is_distributed:
            from torch.nn.parallel import DistributedDataParallel as DDP

            ids = [self.device.index if self.device.index is not None else 0] if self.device.type == "cuda" else None
            self.ddp_model = DDP(self.model, device_ids=ids)

    def _setup_optimization(self) -> None:
        from qnet.ctc import CtcLoss
        from qnet.optim import CosineWarmupScheduler, NovoGrad

        a = self.args
        self.ctc = CtcLoss(a.ctc_backend)
        logging.info("CTC: %s backend, loss = mean over utterances of per-utterance NLL, zero_infinity", self.ctc.backend)
        if a.optimizer == "adamw":
            self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=a.lr, betas=tuple(a.betas), eps=a.eps,
                                               weight_decay=a.weight_decay)
        else:
            self.optimizer = NovoGrad(self.model.parameters(), lr=a.lr, betas=tuple(a.betas), eps=a.eps,
                                      weight_decay=a.weight_decay, grad_averaging=a.grad_averaging)
        logging.info("optimizer: %s, lr %g, betas %s, weight decay %g", type(self.optimizer).__name__, a.lr,
                     tuple(a.betas), a.weight_decay)
        self.steps_per_epoch_exact = True
        if a.max_steps > 0:
            self.steps_per_epoch = None
            max_steps = a.max_steps
        elif self.resume_path is not None:
            # The schedule's length and the epoch size come back with the checkpoint (_maybe_resume).
            self.steps_per_epoch = None
            max_steps = 1
        elif self.train_counts.kept <= EXACT_COUNT_MAX_CUTS:
            t0 = time.time()
            self.steps_per_epoch = self.train_loader.count_batches()
            max_steps = max(1, self.steps_per_epoch * a.num_epochs)
            logging.info("%d batches per epoch (counted in %.0f s); schedule: %d steps, warmup %d",
                         self.steps_per_epoch, time.time() - t0, max_steps, a.warmup_steps)
        else:
            # Counting means a pass of the sampler over every cut (minutes at LibriSpeech size) before
            # the first step: estimate from the kept hours instead, and set the true count after epoch 1.
            from qnet.data import estimate_batches_per_epoch

            self.steps_per_epoch = estimate_batches_per_epoch(self.train_counts.kept_seconds, a.max_duration,
                                                              self.dist.world_size)
            self.steps_per_epoch_exact = False
            max_steps = max(1, self.steps_per_epoch * a.num_epochs)
            logging.info("about %d batches per epoch (estimated from %.0f h; counted during epoch 1); schedule: "
                         "%d steps, warmup %d", self.steps_per_epoch, self.train_counts.kept_seconds / 3600,
                         max_steps, a.warmup_steps)
        self.scheduler = CosineWarmupScheduler(self.optimizer, a.warmup_steps, max_steps, a.min_lr)
        self.scaler = make_grad_scaler(self.device.type, enabled=self.amp == "fp16")
        if self.amp == "fp16" and not self.scaler.is_enabled():
            raise TrainingError(f"--amp fp16: torch {torch.__version__} has no GradScaler for {self.device.type}; "
                                f"use --amp bf16")

    def _autocast(self):
        if self.amp == "none":
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=AMP_DTYPES[self.amp])

    # -- checkpoints --------------------------------------------------------------------------------

    def _maybe_resume(self) -> None:
        from qnet.checkpoint import remove_stale_temporaries, set_rng_state

        if self.dist.is_main and self.exp_dir.is_dir():
            n = remove_stale_temporaries(self.exp_dir)
            if n:
                logging.info("removed %d temporary file(s) of an interrupted save", n)
        if self.resume_path is None:
            return
        ckpt, self._resume_ckpt = self._resume_ckpt, None
        if ckpt["tokens"] != list(self.tokens.symbols):
            raise TrainingError(
                f"{self.resume_path}: its token table differs from {self.args.lang_dir}/tokens.txt; "
                f"use another --exp-dir (or --init-from to fine-tune)"
            )
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("grad_scaler") or not self.scaler.is_enabled():
            self.scaler.load_state_dict(ckpt.get("grad_scaler", {}))
        else:  # written by a run without fp16 (--amp bf16/none): this fp16 run starts a fresh loss scale
            logging.info("checkpoint has no GradScaler state (not an fp16 run): starting with a fresh loss scale")
        self.step = int(ckpt["step"])
        self.epoch = int(ckpt["epoch"])
        self.batches_done = int(ckpt["batches_done"])
        self.history = list(ckpt.get("history", []))
        self.counters.update(ckpt.get("counters", {}))
        self.steps_per_epoch_exact = bool(ckpt.get("steps_per_epoch_exact", True))
        if ckpt.get("steps_per_epoch"):
            self.steps_per_epoch = ckpt["steps_per_epoch"]
            wanted = self.steps_per_epoch * self.args.num_epochs
            if self.args.max_steps == 0 and wanted != self.scheduler.max_steps:
                logging.warning("--num-epochs %d would mean a %d-step schedule; continuing the checkpoint's %d-step one",
                                self.args.num_epochs, wanted, self.scheduler.max_steps)
        saved_world = ckpt.get("sampler", {}).get("world_size", self.dist.world_size)
        if saved_world != self.dist.world_size:
            logging.warning(
                "checkpoint was written with world size %d, now %d: batches are sharded differently, so the "
                "rest of epoch %d is this run's order after skipping %d batches (not the exact remainder)",
                saved_world, self.dist.world_size, self.epoch, self.batches_done,
            )
        rng = ckpt["rng"]
        if len(rng) == self.dist.world_size:
            set_rng_state(rng[self.dist.rank])
        else:
            logging.warning("checkpoint was written by %d ranks, now %d: RNG states not restored", len(rng), self.dist.world_size)
        logging.info("resumed from %s: step %d, epoch %d after %d batches", self.resume_path, self.step, self.epoch, self.batches_done)

    def _set_epoch_length(self, batches: int) -> None:
        """Replace the estimated batches per epoch by the count of a finished epoch (the same on every
        rank: an epoch ends everywhere when one rank runs out), and the schedule's length with it."""
        logging.info("epoch %d had %d batches (estimated %s)%s", self.epoch, batches, self.steps_per_epoch,
                     "" if self.args.max_steps > 0 else f"; schedule: {batches * self.args.num_epochs} steps")
        self.steps_per_epoch = batches
        self.steps_per_epoch_exact = True
        if self.args.max_steps == 0:
            self.scheduler.max_steps = max(1, batches * self.args.num_epochs)

    def save_checkpoint(self, path: Path) -> None:
        """Write a training checkpoint (rank 0 writes; every rank contributes its RNG state)."""
        from qnet.checkpoint import get_rng_state
        from qnet.model import save_model

        rng = _gather_objects(get_rng_state(), self.dist)
        if not self.dist.is_main:
            return
        extra = {
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "grad_scaler": self.scaler.state_dict(),
            "sampler": self.train_loader.state_dict(),
            "rng": rng,
            "step": self.step,
            "epoch": self.epoch,
            "batches_done": self.batches_done,
            "steps_per_epoch": self.steps_per_epoch,
            "steps_per_epoch_exact": self.steps_per_epoch_exact,
            "history": self.history,
            "counters": dict(self.counters),
            "args": vars(self.args),
        }
        save_model(path, self.model, self.tokens, extra)

    # -- training -------------------------------------------------------------------------------------

    def _train_step(self, batch: Dict[str, Any]) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Forward + loss on one batch; returns (loss, per-utterance losses, infinite count)."""
        # BatchNorm running statistics change in the forward pass; keep a copy so that a skipped
        # (non-finite) batch leaves the model exactly as it was.
        self._bn_snapshot = [b.detach().clone() for b in self.model.buffers()]
        feats = batch["feats"].to(self.device, non_blocking=True)
        feat_lens = batch["feat_lens"].to(self.device, non_blocking=True)
        with self._autocast():
            log_probs, out_lens = self.ddp_model(feats, feat_lens)
        return self.ctc(log_probs, out_lens, batch["tokens"])

    def _gradient_overflow(self, scale: Optional[float]) -> None:
        """Count and log a step skipped for a NaN/inf gradient; stop when it keeps happening."""
        self.counters["overflow_steps"] += 1
        self.counters["consecutive_overflow"] += 1
        in_a_row = self.counters["consecutive_overflow"]
        if scale is not None:
            # fp16: routine while the GradScaler finds its scale (it halves it on every overflow)
            logging.info("gradient overflow at step %d: update skipped, loss scale %g -> %g",
                         self.step + 1, scale, self.scaler.get_scale())
        else:
            logging.warning("gradient overflow at step %d (NaN/inf gradient, finite loss): update skipped "
                            "(%d in a row)", self.step + 1, in_a_row)
        if in_a_row >= self.args.max_consecutive_nonfinite:
            raise TrainingError(
                f"{in_a_row} steps in a row had NaN/inf gradients (step {self.step + 1}): training has diverged. "
                f"Resume from an earlier checkpoint with a lower --lr, --grad-clip (e.g. 1.0) or --amp bf16/none."
            )

    def _oom_message(self, batch: Dict[str, Any]) -> str:
        durs = batch["durations"]
        pairs = ", ".join(f"{c} ({d:.1f} s)" for c, d in zip(batch["cut_ids"], durs))
        return (
            f"out of memory on a batch of {len(durs)} cuts, {sum(durs):.1f} s of audio, longest {max(durs):.1f} s: "
            f"{pairs}. Lower --max-duration (now {self.args.max_duration}, e.g. {0.75 * self.args.max_duration:g}) "
            f"or --max-utt-duration (now {self.args.max_utt_duration})."
        )

    def train_one_epoch(self) -> bool:
        """Train the rest of epoch `self.epoch`; returns False when --exit-after-steps stopped it."""
        from tqdm import tqdm

        a = self.args
        self.ddp_model.train()
        loader = self.train_loader.epoch(self.epoch, skip=self.batches_done)
        it = iter(loader)
        bar = tqdm(
            total=self.steps_per_epoch,
            initial=self.batches_done,
            desc=f"epoch {self.epoch}",
            disable=not self.dist.is_main,
            dynamic_ncols=True,
            mininterval=2.0 if sys.stderr.isatty() else 30.0,  # a log file gets a line every 30 s
        )
        interval = {"loss": 0.0, "utts": 0.0, "audio": 0.0, "grad_norm": 0.0, "updates": 0}
        t_interval = time.time()
        while True:
            batch = next(it, None)
            loss = per_utt = None
            n_inf = 0
            try:
                if batch is not None:
                    loss, per_utt, n_inf = self._train_step(batch)
                    finite = bool(torch.isfinite(loss).item())
                else:
                    finite = True
                n_utts = len(batch["cut_ids"]) if batch is not None else 0
                audio = sum(batch["durations"]) if batch is not None else 0.0
                loss_sum = float(per_utt.sum().item()) if (batch is not None and finite) else 0.0
                have, fin, loss_sum, n_utts, audio, n_inf_all = _all_reduce(
                    [float(batch is not None), float(finite), loss_sum, n_utts, audio, n_inf], self.device, self.dist
                )
                if have < self.dist.world_size:
                    break  # some rank ran out of batches: end the epoch everywhere
                if fin < self.dist.world_size:
                    self.counters["nonfinite_batches"] += 1
                    self.counters["consecutive_nonfinite"] += 1
                    consecutive_nonfinite = self.counters["consecutive_nonfinite"]
                    logging.warning(
                        "non-finite loss at step %d (epoch %d, cuts %s...): batch skipped (%d in a row, %d in all)",
                        self.step + 1, self.epoch, (batch or {}).get("cut_ids", [])[:3],
                        consecutive_nonfinite, self.counters["nonfinite_batches"],
                    )
                    self.optimizer.zero_grad(set_to_none=True)
                    if batch is not None:
                        with torch.no_grad():
                            for buf, saved in zip(self.model.buffers(), self._bn_snapshot):
                                buf.copy_(saved)
                    if consecutive_nonfinite >= a.max_consecutive_nonfinite:
                        raise TrainingError(
                            f"{consecutive_nonfinite} batches in a row had a NaN/inf loss (step {self.step + 1}): "
                            f"training has diverged. Resume from an earlier checkpoint with a lower --lr, "
                            f"--grad-clip (e.g. 1.0) or --amp bf16/none."
                        )
                    grad_norm = float("nan")
                else:
                    self.counters["consecutive_nonfinite"] = 0
                    scale = self.scaler.get_scale() if self.scaler.is_enabled() else None
                    grad_norm, updated = apply_gradients(loss, self.model, self.optimizer, self.scaler, a.grad_clip)
                    self.counters["infinite_utts"] += int(n_inf_all)
                    if updated:
                        self.counters["consecutive_overflow"] = 0
                        interval["loss"] += loss_sum
                        interval["utts"] += n_utts
                        interval["grad_norm"] += grad_norm
                        interval["updates"] += 1
                    else:
                        self._gradient_overflow(scale)
            except RuntimeError as exc:
                if _is_oom(exc) and batch is not None:
                    msg = self._oom_message(batch)
                    logging.error(msg)
                    raise TrainingError(msg) from exc
                raise
            interval["audio"] += audio
            lr = self.scheduler.get_last_lr()[0]
            self.scheduler.step()
            self.step += 1
            self.batches_done += 1
            self.steps_this_run += 1
            bar.update(1)

            if self.step % a.log_interval == 0 and interval["updates"] > 0:
                elapsed = max(time.time() - t_interval, 1e-9)
                mean_loss = interval["loss"] / max(interval["utts"], 1)
                mean_norm = interval["grad_norm"] / interval["updates"]
                speed = interval["audio"] / elapsed
                bar.set_postfix(loss=f"{mean_loss:.3f}", lr=f"{lr:.2e}", audio_s_per_s=f"{speed:.1f}")
                logging.info(
                    "epoch %d step %d: loss %.4f, lr %.3e, grad norm %.3f, %.1f s of audio/s%s",
                    self.epoch, self.step, mean_loss, lr, mean_norm, speed,
                    f", {self.counters['nonfinite_batches']} non-finite batches skipped" if self.counters["nonfinite_batches"] else "",
                )
                self.history.append(
                    {"kind": "train", "step": self.step, "epoch": self.epoch, "loss": mean_loss, "lr": lr, "grad_norm": mean_norm}
                )
                if self.tb is not None:
                    self.tb.add_scalar("train/loss", mean_loss, self.step)
                    self.tb.add_scalar("train/lr", lr, self.step)
                    self.tb.add_scalar("train/grad_norm", mean_norm, self.step)
                    self.tb.add_scalar("train/audio_seconds_per_second", speed, self.step)
                interval = {"loss": 0.0, "utts": 0.0, "audio": 0.0, "grad_norm": 0.0, "updates": 0}
                t_interval = time.time()

            if a.save_every_n > 0 and self.step % a.save_every_n == 0:
                save_step_checkpoint(self.save_checkpoint, self.exp_dir, self.step, a.keep_last_k, self.dist.is_main)
            if a.exit_after_steps > 0 and self.steps_this_run >= a.exit_after_steps:
                bar.close()
                return False
        bar.close()
        return True

    @torch.no_grad()
    def validate(self) -> Optional[Dict[str, float]]:
        """Validation loss (mean per utterance) and greedy WER (%) over all ranks' shares."""
        from qnet.ctc import greedy_decode
        from qnet.scoring import word_errors

        if self.valid_loader is None:
            return None
        model = self.model  # not the DDP wrapper: no collectives per batch
        was_training = model.training
        model.eval()
        loss_sum = utts = errs = words = 0.0
        examples = []
        for batch in self.valid_loader.epoch(0):
            feats = batch["feats"].to(self.device)
            feat_lens = batch["feat_lens"].to(self.device)
            with self._autocast():
                log_probs, out_lens = model(feats, feat_lens)
            _, per_utt, _ = self.ctc(log_probs, out_lens, batch["tokens"])
            finite = torch.isfinite(per_utt)
            loss_sum += float(per_utt[finite].sum())
            utts += float(finite.sum())
            for ref, hyp_ids in zip(batch["texts"], greedy_decode(log_probs.float(), out_lens)):
                hyp = self.tokenizer.decode(hyp_ids)
                errs += word_errors(ref, hyp)
                words += len(ref.split())
                if len(examples) < 3:
                    examples.append((ref, hyp))
        loss_sum, utts, errs, words = _all_reduce([loss_sum, utts, errs, words], self.device, self.dist)
        model.train(was_training)
        result = {"loss": loss_sum / max(utts, 1.0), "wer": 100.0 * errs / max(words, 1.0), "utts": utts, "words": words}
        for ref, hyp in examples:
            logging.info("  ref: %s\n  hyp: %s", ref, hyp)
        return result

    def check_replicas(self) -> None:
        """Under DDP, stop if the ranks' parameters have drifted apart."""
        if not self.dist.is_distributed:
            return
        sums = _gather_objects(parameter_checksums(self.model), self.dist)
        ref = torch.tensor(sums[0], dtype=torch.float64)
        worst = max(float((torch.tensor(s, dtype=torch.float64) - ref).abs().max()) for s in sums[1:])
        logging.info("DDP replicas in sync check: max parameter-checksum difference %.3g over %d ranks", worst, len(sums))
        if worst > 1e-6 * max(1.0, float(ref.abs().max())):
            raise TrainingError(f"DDP replicas have different parameters (checksum difference {worst:.3g})")

    def run(self) -> None:
        """Train until --num-epochs (or --exit-after-steps); validate, checkpoint and plot."""
        from qnet.checkpoint import remove_old_epoch_checkpoints

        a = self.args
        while self.epoch <= a.num_epochs:
            t0 = time.time()
            finished = self.train_one_epoch()
            if not finished:
                logging.info("stopping after %d steps of this run (--exit-after-steps)", a.exit_after_steps)
                break
            self.check_replicas()
            epoch = self.epoch
            valid = self.validate()
            msg = f"epoch {epoch} done in {time.time() - t0:.0f} s (step {self.step})"
            if valid is not None:
                msg += f": valid loss {valid['loss']:.4f}, greedy WER {valid['wer']:.2f}% ({int(valid['words'])} words)"
                self.history.append({"kind": "valid", "step": self.step, "epoch": epoch, "loss": valid["loss"], "wer": valid["wer"]})
                if self.tb is not None:
                    self.tb.add_scalar("valid/loss", valid["loss"], self.step)
                    self.tb.add_scalar("valid/wer", valid["wer"], self.step)
            logging.info(msg)
            if not self.steps_per_epoch_exact:
                self._set_epoch_length(self.batches_done)
            self.epoch += 1
            self.batches_done = 0
            self.save_checkpoint(self.exp_dir / f"epoch-{epoch}.pt")
            if self.dist.is_main:
                removed = remove_old_epoch_checkpoints(self.exp_dir, a.keep_last_epochs)
                logging.info("saved %s%s", self.exp_dir / f"epoch-{epoch}.pt", f" (removed {len(removed)} older)" if removed else "")
        if self.dist.is_main:
            if self.history:
                plot_curves(self.history, self.exp_dir / "curves.png")
                logging.info("curves: %s", self.exp_dir / "curves.png")
            logging.info(
                "done: %d steps, %d non-finite batches skipped, %d gradient-overflow steps skipped, "
                "%d infinite-loss utterances zeroed",
                self.step, self.counters["nonfinite_batches"], self.counters["overflow_steps"],
                self.counters["infinite_utts"],
            )
        if self.tb is not None:
            self.tb.close()

    def close(self) -> None:
        """Leave the process group."""
        if self.dist.is_distributed:
            leave_process_group(self)


def train(args: argparse.Namespace) -> None:
    """Build a Trainer from parsed options and train."""
    trainer = Trainer(args)
    try:
        trainer.run()
    finally:
        if trainer.tb is not None:
            trainer.tb.close()
    trainer.close()
