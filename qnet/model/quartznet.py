"""QuartzNet (Kriman et al. 2019, arXiv 1910.10261) as NVIDIA NeMo builds it (JasperBlock, ConvASREncoder,
ConvASRDecoder), in small torchaudio-style modules.

Shapes: B batch, T frames, F feature bins, C channels, V output tokens (blank = 0).
Modules inside the encoder work on (B, C, T); the model's boundary is (B, T, F) -> (B, T', V).

Padding. NeMo's MaskedConv1d zeroes padded frames before *every* conv. Here:
- before every conv with kernel > 1 the padded frames are always zeroed: such a conv mixes neighbouring
  frames, so padding values would leak into the last valid frames;
- before 1x1 convs (pointwise, residual projection, C3, decoder) it is done only in training mode. A 1x1
  conv, eval-mode BatchNorm, ReLU and eval-mode dropout are all frame-local maps, so in eval mode the
  values in padded frames can never reach a valid frame except through a kernel > 1 conv, which zeroes
  them first; skipping the mask there changes no valid output (tests/test_model.py checks that a padded
  batch gives each utterance exactly its stand-alone output). In training mode BatchNorm takes its batch
  statistics over all frames, padded ones included (as NeMo does), so there the mask is kept to get the
  same statistics as NeMo (the test compares with a mask-everywhere reference).
"""

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import nn

from qnet.model.configs import BlockSpec, QuartzNetConfig


def lengths_to_mask(lens: torch.Tensor, max_len: int) -> torch.Tensor:
    """(B,) lengths -> (B, max_len) bool mask, True on valid frames."""
    return torch.arange(max_len, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)


def _valid_mask(x: torch.Tensor, lens: torch.Tensor, dim: int) -> torch.Tensor:
    """(B, T) bool mask on x's device for time dimension `dim` of x."""
    return lengths_to_mask(lens.to(x.device), x.size(dim))


def mask_time(x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
    """Zero the frames of x (B, C, T) at or past each utterance's length."""
    return x.masked_fill(~_valid_mask(x, lens, 2).unsqueeze(1), 0.0)


def conv_output_lengths(lens: torch.Tensor, kernel: int, stride: int, dilation: int, padding: int) -> torch.Tensor:
    """Frames out of a Conv1d for (B,) input lengths (NeMo's MaskedConv1d.get_seq_len)."""
    if stride == 1 and 2 * padding == dilation * (kernel - 1):
        return lens
    return torch.div(lens + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1


class FeatureNormalization(nn.Module):
    """NeMo 'per_feature' normalization: per utterance and bin over the valid frames,
    (x - mean) / (std + eps) with the N-1 std; padded frames become 0.

    Input x (B, T, F), lens (B,); output (B, T, F).
    """

    def __init__(self, eps: float = 1e-5):
        super().__init__()
        self.eps = eps

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if x.dtype == torch.float16 or x.dtype == torch.bfloat16:
            x = x.float()  # statistics in fp32 (NeMo's preprocessor runs outside autocast)
        valid = _valid_mask(x, lens, 1).unsqueeze(2)  # (B, T, 1)
        x = x.masked_fill(~valid, 0.0)
        n = lens.to(device=x.device, dtype=x.dtype).clamp(min=1.0).view(-1, 1, 1)
        mean = x.sum(dim=1, keepdim=True) / n
        centered = (x - mean).masked_fill(~valid, 0.0)
        # NeMo errors on single-frame utterances (N-1 = 0); clamping gives them all-zero features instead.
        var = centered.pow(2).sum(dim=1, keepdim=True) / (n - 1.0).clamp(min=1.0)
        return centered / (var.sqrt() + self.eps)


class NoAugment(nn.Module):
    """Identity augmentation: x (B, T, F), lens (B,) -> x. The trainer swaps in SpecCutout/SpecAugment."""

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        return x


class ConvBN(nn.Module):
    """One sub-block without its activation: [depthwise conv] -> conv -> BatchNorm.

    Separable: depthwise (C_in groups, kernel/stride/dilation) then pointwise 1x1 (C_in -> C_out).
    Not separable: a single (C_in -> C_out) conv with the kernel. No conv biases (as NeMo).
    Input x (B, C_in, T), lens (B,); output (B, C_out, T'), lens (B,).
    """

    def __init__(self, in_channels: int, out_channels: int, spec: BlockSpec, bn_eps: float, bn_momentum: float):
        super().__init__()
        pad = spec.padding
        self.kernel = spec.kernel
        self.stride = spec.stride
        self.dilation = spec.dilation
        self.padding = pad
        if spec.separable:
            self.depthwise: Optional[nn.Conv1d] = nn.Conv1d(
                in_channels, in_channels, spec.kernel, stride=spec.stride, padding=pad,
                dilation=spec.dilation, groups=in_channels, bias=False,
            )
            self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        else:
            self.depthwise = None
            self.conv = nn.Conv1d(
                in_channels, out_channels, spec.kernel, stride=spec.stride, padding=pad,
                dilation=spec.dilation, bias=False,
            )
        self.norm = nn.BatchNorm1d(out_channels, eps=bn_eps, momentum=bn_momentum)
        # Whether `conv` mixes frames (then its input must always be masked).
        self.conv_mixes_frames = self.depthwise is None and spec.kernel > 1

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        if self.depthwise is not None:
            if self.kernel > 1 or self.training:
                x = mask_time(x, lens)
            x = self.depthwise(x)
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
            if self.training:
                x = mask_time(x, lens)
        else:
            if self.conv_mixes_frames or self.training:
                x = mask_time(x, lens)
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
        x = self.conv(x)
        return self.norm(x), lens


class ResidualProjection(nn.Module):
    """Residual branch: 1x1 conv (no bias) -> BatchNorm on the block input. (B, C_in, T) -> (B, C_out, T)."""

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float, bn_momentum: float):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.norm = nn.BatchNorm1d(out_channels, eps=bn_eps, momentum=bn_momentum)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        if self.training:  # frame-local: masking only matters for BatchNorm's batch statistics
            x = mask_time(x, lens)
        return self.norm(self.conv(x))


class QuartzNetBlock(nn.Module):
    """`repeat` ConvBN sub-blocks, each followed by ReLU + dropout; with a residual, the projected block
    input is added after the last BatchNorm, before the last ReLU + dropout (NeMo JasperBlock, mode 'add').

    Input x (B, C_in, T), lens (B,); output (B, C_out, T'), lens (B,).
    """

    def __init__(self, in_channels: int, spec: BlockSpec, bn_eps: float = 1e-3, bn_momentum: float = 0.1):
        super().__init__()
        layers = []
        channels = in_channels
        for _ in range(spec.repeat):
            layers.append(ConvBN(channels, spec.filters, spec, bn_eps, bn_momentum))
            channels = spec.filters
        self.layers = nn.ModuleList(layers)
        self.num_layers = spec.repeat
        self.residual: Optional[ResidualProjection] = (
            ResidualProjection(in_channels, spec.filters, bn_eps, bn_momentum) if spec.residual else None
        )
        self.dropout = nn.Dropout(spec.dropout)

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, out_lens = x, lens
        for i, layer in enumerate(self.layers):
            out, out_lens = layer(out, out_lens)
            if i < self.num_layers - 1:
                out = self.dropout(F.relu(out))
        if self.residual is not None:
            out = out + self.residual(x, lens)
        return self.dropout(F.relu(out)), out_lens


class QuartzNetEncoder(nn.Module):
    """The stack of blocks C1, B1..Bn, C2, C3 (NeMo ConvASREncoder).

    Input x (B, F, T), lens (B,); output (B, C_last, T / subsampling), lens (B,).
    """

    def __init__(self, feat_in: int, blocks: List[BlockSpec], bn_eps: float = 1e-3, bn_momentum: float = 0.1):
        super().__init__()
        modules = []
        channels = feat_in
        for spec in blocks:
            modules.append(QuartzNetBlock(channels, spec, bn_eps, bn_momentum))
            channels = spec.filters
        self.blocks = nn.ModuleList(modules)
        self.out_channels = channels

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        for block in self.blocks:
            x, lens = block(x, lens)
        return x, lens


class CTCDecoder(nn.Module):
    """C4: 1x1 conv with bias to the token logits, then log-softmax (NeMo ConvASRDecoder).

    Input (B, C, T'); output log-probs (B, T', V).
    """

    def __init__(self, in_channels: int, num_tokens: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, num_tokens, 1, bias=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.log_softmax(self.conv(x).transpose(1, 2), dim=-1)


class QuartzNet(nn.Module):
    """QuartzNet CTC acoustic model.

    forward(feats (B, T, F) raw log-mel, feat_lens (B,) int64) -> (log_probs (B, T', V), out_lens (B,)),
    T' = ceil(T / 2). The input path is: per-utterance normalization -> `self.augment(x, lens)` (identity
    unless the trainer sets one; augmenters act only in training) -> encoder -> decoder.
    `encode_normalized` skips normalization and augmentation (for already-normalized features).
    """

    def __init__(self, config: QuartzNetConfig):
        super().__init__()
        self.config = config
        self.num_tokens = config.num_tokens
        self.feat_in = config.feat_in
        self.subsampling_factor = config.subsampling_factor
        self.normalize = FeatureNormalization(config.norm_eps)
        self.augment: nn.Module = NoAugment()
        self.encoder = QuartzNetEncoder(config.feat_in, config.blocks, config.bn_eps, config.bn_momentum)
        self.decoder = CTCDecoder(self.encoder.out_channels, config.num_tokens)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """NeMo 'xavier_uniform' init: conv weights xavier-uniform, BatchNorm 1/0, decoder bias default."""
        for module in self.modules():
            if isinstance(module, nn.Conv1d):
                nn.init.xavier_uniform_(module.weight, gain=1.0)
            elif isinstance(module, nn.BatchNorm1d):
                module.reset_parameters()

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(feats, feat_lens)
        x = self.augment(x, feat_lens)
        return self.encode_normalized(x, feat_lens)

    @torch.jit.export
    def encode_normalized(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        """Encoder + decoder on already-normalized features (B, T, F) -> (log_probs (B, T', V), out_lens)."""
        x, lens = self.encoder(feats.transpose(1, 2), feat_lens)
        return self.decoder(x), lens

    @torch.jit.export
    def output_lengths(self, feat_lens: torch.Tensor) -> torch.Tensor:
        """Output frames for (B,) input frame counts."""
        lens = feat_lens
        for block in self.encoder.blocks:
            for layer in block.layers:
                lens = conv_output_lengths(lens, layer.kernel, layer.stride, layer.dilation, layer.padding)
        return lens


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters (conv weights, BN scale/shift, decoder weight and bias)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
