"""Training checkpoints in an exp dir: naming, finding the newest, keep-last-k, RNG state, averaging,
and fine-tuning initialization.

Files (icefall's names): `epoch-{E}.pt` at the end of epoch E, `checkpoint-{S}.pt` after global step
S (every `--save-every-n` steps). Each is a qnet model checkpoint (`qnet_format`, `model_config`,
`tokens`, `model`, so `qnet.model.load_model` reads it) plus the training state::

    optimizer, scheduler, grad_scaler, sampler     state_dicts
    rng                                             per-rank python/numpy/torch(/cuda) RNG states
    step                                            batches consumed since the start (global step)
    epoch, batches_done                             where to continue: epoch `epoch` after `batches_done` batches
    history, counters, args                         curves for the plot, skip counters, the command's options

All writes are atomic (`qnet.utils.atomic_torch_save`), so a kill never leaves a half-written file
under a checkpoint's name; stale temporary files are removed on the next start.
"""

import functools
import logging
import random
import re
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch

from qnet.tokens import TokenTable
from qnet.utils import PathLike


_EPOCH_RE = re.compile(r"^epoch-(\d+)\.pt$")
_STEP_RE = re.compile(r"^checkpoint-(\d+)\.pt$")


def epoch_checkpoints(exp_dir: PathLike) -> List[Tuple[int, Path]]:
    """(epoch, path) of every epoch-E.pt in exp_dir, by epoch."""
    out = []
    for p in Path(exp_dir).glob("epoch-*.pt"):
        m = _EPOCH_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def step_checkpoints(exp_dir: PathLike) -> List[Tuple[int, Path]]:
    """(step, path) of every checkpoint-S.pt in exp_dir, by step."""
    out = []
    for p in Path(exp_dir).glob("checkpoint-*.pt"):
        m = _STEP_RE.match(p.name)
        if m:
            out.append((int(m.group(1)), p))
    return sorted(out)


def remove_stale_temporaries(exp_dir: PathLike) -> int:
    """Delete temporary files left by a save that was killed; returns how many."""
    n = 0
    for p in Path(exp_dir).glob(".*.pt.*.tmp"):
        p.unlink(missing_ok=True)
        n += 1
    return n


def latest_checkpoint(exp_dir: PathLike) -> Optional[Path]:
    """The checkpoint with the highest global step (epoch-E.pt wins a tie), or None."""
    steps = step_checkpoints(exp_dir)
    epochs = epoch_checkpoints(exp_dir)
    best: Optional[Tuple[int, int, Path]] = None
    if steps:
        best = (steps[-1][0], 0, steps[-1][1])
    if epochs:
        path = epochs[-1][1]
        from qnet.model.checkpoint import torch_load

        step = int(torch_load(path, map_location="cpu").get("step", -1))
        if best is None or (step, 1) > best[:2]:
            best = (step, 1, path)
    return None if best is None else best[2]


def remove_old_step_checkpoints(exp_dir: PathLike, keep_last_k: int) -> List[Path]:
    """Keep the newest `keep_last_k` checkpoint-S.pt files (all when keep_last_k <= 0)."""
    if keep_last_k <= 0:
        return []
    removed = [p for _, p in step_checkpoints(exp_dir)[:-keep_last_k]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def save_step_checkpoint(save: Callable[[Path], None], exp_dir: Path, step: int, keep_last_k: int,
                         is_main: bool) -> None:
    """Write exp_dir/checkpoint-<step>.pt with `save` and (main rank) keep only the newest `keep_last_k`."""
    path = exp_dir / f"checkpoint-{step}.pt"
    save(path)
    if is_main:
        removed = remove_old_step_checkpoints(exp_dir, keep_last_k)
        logging.info("saved %s%s", path, f" (removed {len(removed)} older)" if removed else "")


def remove_old_epoch_checkpoints(exp_dir: PathLike, keep_last_epochs: int) -> List[Path]:
    """Keep the newest `keep_last_epochs` epoch-E.pt files (all when keep_last_epochs <= 0)."""
    if keep_last_epochs <= 0:
        return []
    removed = [p for _, p in epoch_checkpoints(exp_dir)[:-keep_last_epochs]]
    for p in removed:
        p.unlink(missing_ok=True)
    return removed


def get_rng_state() -> Dict[str, Any]:
    """This process's python, numpy, torch CPU (and CUDA) RNG states."""
    state = {
        "python": random.getstate(),
        "numpy": np.random.get_state(),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, Any]) -> None:
    """Restore what get_rng_state returned."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        cuda_states = state["cuda"]
        if len(cuda_states) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(cuda_states)
        else:
            logging.warning("checkpoint has CUDA RNG states for %d devices, this machine has %d: not restored",
                            len(cuda_states), torch.cuda.device_count())


def strip_ddp_prefix(state: Dict[str, Any]) -> Dict[str, Any]:
    """Drop the 'module.' prefix DDP puts on every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def average_state_dicts(states: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Element-wise mean of model state_dicts; integer tensors (BatchNorm's num_batches_tracked) get
    the floor of the mean, as icefall does. Keys and shapes must agree."""
    if not states:
        raise ValueError("nothing to average")
    keys = list(states[0].keys())
    for i, s in enumerate(states[1:], 1):
        if list(s.keys()) != keys:
            missing = set(keys) ^ set(s.keys())
            raise ValueError(f"state_dict {i} has different keys than state_dict 0: {sorted(missing)[:5]}")
    n = len(states)
    out: Dict[str, torch.Tensor] = {}
    for k in keys:
        first = states[0][k]
        if not torch.is_tensor(first):
            out[k] = first
            continue
        for i, s in enumerate(states[1:], 1):
            if s[k].shape != first.shape:
                raise ValueError(f"{k}: shape {tuple(s[k].shape)} in state_dict {i} vs {tuple(first.shape)} in 0")
        if first.is_floating_point():
            acc = torch.zeros_like(first, dtype=torch.float64)
            for s in states:
                acc += s[k].to(torch.float64)
            out[k] = (acc / n).to(first.dtype)
        else:
            acc = torch.zeros_like(first, dtype=torch.int64)
            for s in states:
                acc += s[k].to(torch.int64)
            out[k] = torch.div(acc, n, rounding_mode="floor").to(first.dtype)
    return out


def average_checkpoints(paths: Sequence[PathLike], out_path: PathLike) -> Dict[str, Any]:
    """Average the models of qnet checkpoints (same config and tokens) and save a model-only
    checkpoint to `out_path`; returns the saved dict."""
    from qnet.model import load_checkpoint_dict, model_from_checkpoint_dict, save_model

    if not paths:
        raise ValueError("no checkpoints to average")
    states, config, tokens = [], None, None
    for p in paths:
        ckpt = load_checkpoint_dict(p)
        if config is None:
            config, tokens = ckpt["model_config"], ckpt["tokens"]
        elif ckpt["model_config"] != config or ckpt["tokens"] != tokens:
            raise ValueError(f"{p}: model_config/tokens differ from {paths[0]}; cannot average")
        states.append(strip_ddp_prefix(ckpt["model"]))
        del ckpt
    averaged = {"qnet_format": 1, "model_config": config, "tokens": tokens, "model": average_state_dicts(states)}
    model = model_from_checkpoint_dict(averaged, source=f"average of {len(paths)} checkpoints")
    extra = {"averaged_from": [str(p) for p in paths]}
    save_model(out_path, model, model.tokens, extra)
    return {**averaged, **extra}


def init_from_checkpoint(model: torch.nn.Module, path: PathLike, tokens: TokenTable) -> str:
    """Load weights (only) from a qnet checkpoint or a .nemo into `model` for fine-tuning.

    Same token table: encoder and decoder are kept. Different table: the encoder is kept and the
    decoder keeps its fresh initialization. Returns a one-line summary for the log.
    """
    path = Path(path)
    if path.suffix == ".nemo":
        src_state, src_tokens = _nemo_state(path)
    else:
        from qnet.model import load_checkpoint_dict

        ckpt = load_checkpoint_dict(path)
        src_state, src_tokens = strip_ddp_prefix(ckpt["model"]), TokenTable(ckpt["tokens"])
    own = model.state_dict()
    if src_tokens == tokens:
        wanted = dict(src_state)
        summary = f"initialized encoder and decoder from {path} (same {len(tokens)}-symbol token table)"
    else:
        wanted = {k: v for k, v in src_state.items() if not k.startswith("decoder.")}
        summary = (
            f"initialized the encoder from {path}; its token table ({len(src_tokens)} symbols) differs from "
            f"this lang dir's ({len(tokens)} symbols), so the decoder was re-initialized"
        )
    missing = [k for k in own if k not in wanted and not (src_tokens != tokens and k.startswith("decoder."))]
    unexpected = [k for k in wanted if k not in own]
    mismatched = [k for k in wanted if k in own and tuple(wanted[k].shape) != tuple(own[k].shape)]
    if missing or unexpected or mismatched:
        raise ValueError(
            f"{path}: weights do not fit this model (missing {missing[:5]}, unexpected {unexpected[:5]}, "
            f"shape mismatch {mismatched[:5]}); build the same architecture (omit --model to take the checkpoint's)"
        )
    model.load_state_dict(wanted, strict=False)
    return summary


@functools.lru_cache(maxsize=1)
def _import_nemo(path: str):
    """qnet.nemo.import_nemo, remembered for the last path (the trainer asks for config, then weights)."""
    from qnet.nemo import import_nemo

    return import_nemo(path)


def _nemo_state(path: Path) -> Tuple[Dict[str, torch.Tensor], TokenTable]:
    """A .nemo archive's weights as a qnet state_dict and its token table (via qnet.nemo)."""
    model, tokens, _ = _import_nemo(str(path))
    return model.state_dict(), tokens


def nemo_config(path: PathLike):
    """The QuartzNetConfig of a .nemo archive (via qnet.nemo)."""
    return _import_nemo(str(path))[0].config
