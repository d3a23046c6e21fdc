"""QuartzNet layouts: the config dataclasses and the named configurations.

A layout is a list of `BlockSpec`s, one per NeMo "jasper" entry (C1, B1..Bn, C2, C3); the CTC
decoder (C4, a 1x1 conv with bias) is added by the model. Parameter counts at 29 outputs:

| name  | layout                                                              | params     |
|-------|---------------------------------------------------------------------|------------|
| 15x5  | paper/NeMo 15x5 (B1..B5 x3, R=5, 256/256/512/512/512, k33..75)      | 18,924,381 |
| 10x5  | same, blocks x2                                                     | 12,818,781 |
| 5x5   | same, blocks x1 (NGC QuartzNet5x5LS-En)                             |  6,713,181 |
| 5x3   | NeMo 2019 quartznet5x3.yaml (WSJ): 5 blocks R=3, all 512 ch,        |  6,407,005 |
|       | kernels 63,63,75,75,75, dropout 0.2                                 |            |
| small | 5 blocks R=3, 192/192/256/256/256 ch, kernels 33,39,51,63,75;      |  1,491,229 |
|       | C1 192 k33; C2 256 k87; C3 512                                      |            |
| mini  | 3 blocks R=3, 128/128/192 ch, kernels 21,27,33; C1 128 k21;         |    404,893 |
|       | C2 192 k41; C3 256                                                  |            |
| tiny  | 2 blocks R=2, 32/48 ch, kernels 11,13; C1 32 k11; C2 64 k15; C3 96  |     26,557 |
| mini-s3 | mini with C1 stride 3 (30 ms frames) and kernels 15,19,23; C1 128 |  391,325 |
|       | k15; C2 192 k27; C3 256                                             |            |
| wide-s3 | mini-s3 with 192/192/256 ch; C1 192 k15; C2 256 k27; C3 384       |    762,013 |

"small" and "mini" are CPU configurations for small synthetic corpora: "mini" (0.4M) is meant to
learn a small TTS corpus on 2 CPU cores in ~10 minutes; "small" (1.5M) has the 5-block R=3 shape of
5x3 with 192-256 channels, for a somewhat larger corpus or more time. "tiny" (27k) exists for tests
that must run in seconds (it learns nothing useful). These are 'same'-padded QuartzNets with C1 stride 2.

"mini-s3" and "wide-s3" subsample by 3 (33 encoder frames per second, still above the 27 characters
per second, repeats included, of the fastest synthetic utterances), with the kernels shortened to keep
their span in seconds: a third less work per second of audio than a stride-2 model of the same
widths, which on 2 CPU cores is a third more training in the same time. egs/mini pretrains mini-s3 and
egs/an4 trains and fine-tunes it; wide-s3 is for more time than their budgets (it learned more slowly per
epoch in both).
"""

import copy
from dataclasses import asdict, dataclass, fields
from typing import Any, Dict, List, Sequence, Tuple, Union


@dataclass
class BlockSpec:
    """One QuartzNet/Jasper block: `repeat` sub-blocks (conv -> BN -> ReLU -> dropout), optional residual.

    Separable sub-blocks are depthwise conv (kernel, stride, dilation) + pointwise 1x1 conv; non-separable
    ones are a single full conv. 'Same' padding (dilation * (kernel - 1)) // 2, as NeMo.
    """

    filters: int
    kernel: int
    stride: int = 1
    dilation: int = 1
    repeat: int = 1
    residual: bool = False
    separable: bool = True
    dropout: float = 0.0

    def __post_init__(self):
        for name in ("filters", "kernel", "stride", "dilation", "repeat"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"BlockSpec.{name} must be a positive int, got {value!r}")
        if self.stride > 1 and self.dilation > 1:
            raise ValueError("BlockSpec: stride > 1 together with dilation > 1 is not supported (as in NeMo)")
        if self.residual and self.stride != 1:
            raise ValueError("BlockSpec: a residual block must have stride 1")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"BlockSpec.dropout must be in [0, 1), got {self.dropout}")

    @property
    def padding(self) -> int:
        """NeMo's 'same' padding."""
        return (self.dilation * (self.kernel - 1)) // 2


@dataclass
class QuartzNetConfig:
    """A whole model: input features, encoder blocks (C1 ... C3) and the number of output tokens.

    `num_tokens` includes the blank (id 0). BatchNorm uses NeMo's eps 1e-3 / momentum 0.1.
    """

    blocks: List[BlockSpec]
    num_tokens: int = 29
    feat_in: int = 64
    name: str = "custom"
    bn_eps: float = 1e-3
    bn_momentum: float = 0.1
    norm_eps: float = 1e-5  # NeMo per_feature normalization: (x - mean) / (std + 1e-5)

    def __post_init__(self):
        self.blocks = [b if isinstance(b, BlockSpec) else BlockSpec(**b) for b in self.blocks]
        if not self.blocks:
            raise ValueError("QuartzNetConfig needs at least one block")
        if self.num_tokens < 2:
            raise ValueError(f"num_tokens must be >= 2 (blank + one symbol), got {self.num_tokens}")

    @property
    def subsampling_factor(self) -> int:
        """Product of the block strides (2 for every QuartzNet)."""
        factor = 1
        for b in self.blocks:
            factor *= b.stride
        return factor

    def to_dict(self) -> Dict[str, Any]:
        """Plain dict (what checkpoints store)."""
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Dict[str, Any]) -> "QuartzNetConfig":
        """Rebuild from `to_dict()` output; unknown keys are an error."""
        known = {f.name for f in fields(cls)}
        unknown = set(d) - known
        if unknown:
            raise ValueError(f"unknown QuartzNetConfig keys: {sorted(unknown)}")
        d = dict(d)
        d["blocks"] = [BlockSpec(**b) if isinstance(b, dict) else b for b in d["blocks"]]
        return cls(**d)


def quartznet_layout(
    block_channels: Sequence[int],
    block_kernels: Sequence[int],
    repeat: int,
    copies: int = 1,
    c1: Tuple[int, int] = (256, 33),
    c2: Tuple[int, int] = (512, 87),
    c3: int = 1024,
    dropout: float = 0.0,
    c1_stride: int = 2,
) -> List[BlockSpec]:
    """The QuartzNet shape: C1 (separable, stride `c1_stride`), blocks (each `copies` times), C2 (dilation 2),
    C3 (1x1)."""
    blocks = [BlockSpec(filters=c1[0], kernel=c1[1], stride=c1_stride, dropout=dropout)]
    for ch, k in zip(block_channels, block_kernels):
        for _ in range(copies):
            blocks.append(BlockSpec(filters=ch, kernel=k, repeat=repeat, residual=True, dropout=dropout))
    blocks.append(BlockSpec(filters=c2[0], kernel=c2[1], dilation=2, dropout=dropout))
    blocks.append(BlockSpec(filters=c3, kernel=1, separable=False, dropout=dropout))
    return blocks


_PAPER_CH = (256, 256, 512, 512, 512)
_PAPER_K = (33, 39, 51, 63, 75)

_CONFIGS = {
    "15x5": lambda: quartznet_layout(_PAPER_CH, _PAPER_K, repeat=5, copies=3),
    "10x5": lambda: quartznet_layout(_PAPER_CH, _PAPER_K, repeat=5, copies=2),
    "5x5": lambda: quartznet_layout(_PAPER_CH, _PAPER_K, repeat=5, copies=1),
    "5x3": lambda: quartznet_layout((512,) * 5, (63, 63, 75, 75, 75), repeat=3, dropout=0.2),
    "small": lambda: quartznet_layout((192, 192, 256, 256, 256), _PAPER_K, repeat=3, c1=(192, 33), c2=(256, 87), c3=512),
    "mini": lambda: quartznet_layout((128, 128, 192), (21, 27, 33), repeat=3, c1=(128, 21), c2=(192, 41), c3=256),
    "tiny": lambda: quartznet_layout((32, 48), (11, 13), repeat=2, c1=(32, 11), c2=(64, 15), c3=96),
    "mini-s3": lambda: quartznet_layout((128, 128, 192), (15, 19, 23), repeat=3, c1=(128, 15), c2=(192, 27), c3=256,
                                        c1_stride=3),
    "wide-s3": lambda: quartznet_layout((192, 192, 256), (15, 19, 23), repeat=3, c1=(192, 15), c2=(256, 27), c3=384,
                                        c1_stride=3),
}

_DESCRIPTIONS = {
    "15x5": "QuartzNet 15x5 (paper, NeMo quartznet_15x5.yaml)",
    "10x5": "QuartzNet 10x5 (paper)",
    "5x5": "QuartzNet 5x5 (paper, NGC QuartzNet5x5LS-En)",
    "5x3": "QuartzNet 5x3 (NeMo 2019 quartznet5x3.yaml, WSJ; dropout 0.2)",
    "small": "CPU: 5 blocks x R3, 192-256 channels (1.5M params)",
    "mini": "CPU: 3 blocks x R3, 128-192 channels, short kernels (0.4M params, synthetic mini corpus)",
    "tiny": "CPU smoke tests: 2 blocks x R2, 32-48 channels (27k params)",
    "mini-s3": "CPU: mini with C1 stride 3 and shorter kernels (0.39M params; egs/mini, egs/an4)",
    "wide-s3": "CPU: mini-s3 with 192-256 channels (0.76M params)",
}


def list_configs() -> Dict[str, str]:
    """Names of the built-in configurations and a one-line description of each."""
    return dict(_DESCRIPTIONS)


def get_config(name_or_config: Union[str, QuartzNetConfig, Dict[str, Any]], num_tokens: int = None, **overrides) -> QuartzNetConfig:
    """A `QuartzNetConfig` from a name ("15x5", "mini", ...), a config or its dict, with overrides.

    Overrides are `QuartzNetConfig` fields (e.g. `feat_in=80`) or `dropout=p`, which sets every
    block's dropout.
    """
    if isinstance(name_or_config, str):
        if name_or_config not in _CONFIGS:
            raise ValueError(f"unknown model configuration {name_or_config!r}; known: {sorted(_CONFIGS)}")
        config = QuartzNetConfig(blocks=_CONFIGS[name_or_config](), name=name_or_config)
    elif isinstance(name_or_config, QuartzNetConfig):
        config = copy.deepcopy(name_or_config)
    elif isinstance(name_or_config, dict):
        config = QuartzNetConfig.from_dict(name_or_config)
    else:
        raise TypeError(f"expected a configuration name, QuartzNetConfig or dict, got {type(name_or_config)}")
    if num_tokens is not None:
        config.num_tokens = int(num_tokens)
    dropout = overrides.pop("dropout", None)
    if dropout is not None:
        config.blocks = [BlockSpec(**{**asdict(b), "dropout": float(dropout)}) for b in config.blocks]
    known = {f.name for f in fields(QuartzNetConfig)}
    for key, value in overrides.items():
        if key not in known:
            raise ValueError(f"unknown model override {key!r}; known: {sorted(known | {'dropout'})}")
        setattr(config, key, value)
    config.__post_init__()
    return config
