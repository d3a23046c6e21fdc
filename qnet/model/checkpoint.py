"""qnet model checkpoints: one `torch.save`d dict

    {"qnet_format": 1, "model_config": QuartzNetConfig.to_dict(), "tokens": [symbols],
     "model": state_dict, **extra}

Training checkpoints add optimizer/scheduler/... keys; `load_model` ignores them.
"""

import logging
from pathlib import Path
from typing import Any, Dict, Optional

import torch

from qnet.model.configs import QuartzNetConfig
from qnet.model.quartznet import QuartzNet
from qnet.tokens import TokenTable
from qnet.utils import PathLike

QNET_FORMAT = 1
_RESERVED = ("qnet_format", "model_config", "tokens", "model")


class CheckpointError(ValueError):
    """A file is not a (readable) qnet checkpoint."""


def checkpoint_dict(model: QuartzNet, tokens: TokenTable, extra: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The dict `save_model` writes (so trainers can add their own keys before saving)."""
    if len(tokens) != model.config.num_tokens:
        raise ValueError(f"token table has {len(tokens)} symbols but the model has {model.config.num_tokens} outputs")
    extra = dict(extra or {})
    clash = [k for k in _RESERVED if k in extra]
    if clash:
        raise ValueError(f"extra checkpoint keys clash with reserved ones: {clash}")
    module = model.module if hasattr(model, "module") else model  # DDP wrapper
    state = {k: v.detach().cpu() if torch.is_tensor(v) else v for k, v in module.state_dict().items()}
    return {
        "qnet_format": QNET_FORMAT,
        "model_config": module.config.to_dict(),
        "tokens": list(tokens.symbols),
        "model": state,
        **extra,
    }


def save_model(path: PathLike, model: QuartzNet, tokens: TokenTable, extra: Optional[Dict[str, Any]] = None) -> None:
    """Write a qnet checkpoint atomically (temporary file + rename)."""
    from qnet.utils import atomic_torch_save

    atomic_torch_save(checkpoint_dict(model, tokens, extra), path)


def torch_load(source: Any, map_location: Any = "cpu") -> Any:
    """torch.load with weights_only=True (tensors, dicts, lists, numbers, strings), falling back to a full
    unpickle for files that hold other objects (e.g. numpy RNG state in training checkpoints). Explicit
    so that torch 1.13 (default False) and torch >= 2.6 (default True) behave alike."""
    import pickle

    try:
        return torch.load(source, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError:
        if hasattr(source, "seek"):
            source.seek(0)
        return torch.load(source, map_location=map_location, weights_only=False)


def load_checkpoint_dict(path: PathLike, map_location: Any = "cpu") -> Dict[str, Any]:
    """torch.load a qnet checkpoint and check its format; CheckpointError names the file otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        ckpt = torch_load(path, map_location)
    except Exception as exc:
        raise CheckpointError(f"{path}: cannot be read as a torch checkpoint ({type(exc).__name__}: {exc})") from exc
    if not isinstance(ckpt, dict) or "qnet_format" not in ckpt:
        hint = ""
        if isinstance(ckpt, dict) and any(k.startswith("encoder.encoder.") for k in ckpt):
            hint = " (this looks like a NeMo state_dict: import the .nemo with `python -m qnet.bin.import_nemo`)"
        raise CheckpointError(f"{path}: not a qnet checkpoint (no 'qnet_format' key){hint}")
    if ckpt["qnet_format"] != QNET_FORMAT:
        raise CheckpointError(f"{path}: unsupported qnet_format {ckpt['qnet_format']} (this qnet reads {QNET_FORMAT})")
    missing = [k for k in ("model_config", "tokens", "model") if k not in ckpt]
    if missing:
        raise CheckpointError(f"{path}: qnet checkpoint lacks {missing}")
    return ckpt


def _strip_prefix(state: Dict[str, Any]) -> Dict[str, Any]:
    """Drop the 'module.' prefix DDP adds to every key."""
    if state and all(k.startswith("module.") for k in state):
        return {k[len("module."):]: v for k, v in state.items()}
    return state


def model_from_checkpoint_dict(ckpt: Dict[str, Any], source: str = "<checkpoint>") -> QuartzNet:
    """Rebuild the model of a checkpoint dict in eval mode, with `.tokens` and `.config` set."""
    try:
        config = QuartzNetConfig.from_dict(ckpt["model_config"])
        tokens = TokenTable(ckpt["tokens"])
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{source}: bad model_config/tokens ({exc})") from exc
    if len(tokens) != config.num_tokens:
        raise CheckpointError(f"{source}: {len(tokens)} tokens but model_config.num_tokens = {config.num_tokens}")
    model = QuartzNet(config)
    try:
        model.load_state_dict(_strip_prefix(ckpt["model"]), strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"{source}: state_dict does not match its model_config: {exc}") from exc
    model.tokens = tokens
    model.eval()
    return model


def load_model(path: PathLike, map_location: Any = "cpu") -> QuartzNet:
    """Load any qnet checkpoint (model-only or training) as a QuartzNet in eval mode with `.tokens`."""
    ckpt = load_checkpoint_dict(path, map_location)
    model = model_from_checkpoint_dict(ckpt, source=str(path))
    logging.getLogger(__name__).debug("loaded %s (%s, %d tokens)", path, model.config.name, len(model.tokens))
    return model
