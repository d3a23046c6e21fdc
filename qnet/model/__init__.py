"""QuartzNet CTC models: named configurations, construction and checkpoints.

    model = build_model("mini", num_tokens=29)
    log_probs, out_lens = model(feats, feat_lens)   # (B, T, 64) raw log-mel -> (B, ceil(T/2), 29)
    save_model("exp/model.pt", model, TokenTable.chars())
    model = load_model("exp/model.pt")                # eval mode, model.tokens, model.config
"""

from typing import Any, Dict, Union

from qnet.model.checkpoint import (
    CheckpointError,
    checkpoint_dict,
    load_checkpoint_dict,
    load_model,
    model_from_checkpoint_dict,
    save_model,
    torch_load,
)
from qnet.model.configs import BlockSpec, QuartzNetConfig, get_config, list_configs
from qnet.model.quartznet import (
    CTCDecoder,
    FeatureNormalization,
    NoAugment,
    QuartzNet,
    QuartzNetBlock,
    QuartzNetEncoder,
    count_parameters,
)


def build_model(name_or_config: Union[str, QuartzNetConfig, Dict[str, Any]], num_tokens: int = None, **overrides) -> QuartzNet:
    """A freshly initialized QuartzNet from a configuration name ("15x5", "mini", ...) or config.

    `num_tokens` (blank included) overrides the config's; other overrides are QuartzNetConfig fields or
    `dropout=p` for every block.
    """
    return QuartzNet(get_config(name_or_config, num_tokens, **overrides))


__all__ = [
    "BlockSpec",
    "CTCDecoder",
    "CheckpointError",
    "FeatureNormalization",
    "NoAugment",
    "QuartzNet",
    "QuartzNetBlock",
    "QuartzNetConfig",
    "QuartzNetEncoder",
    "build_model",
    "checkpoint_dict",
    "count_parameters",
    "get_config",
    "list_configs",
    "load_checkpoint_dict",
    "load_model",
    "model_from_checkpoint_dict",
    "save_model",
    "torch_load",
]
