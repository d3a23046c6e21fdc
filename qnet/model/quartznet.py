"""QuartzNet (Kriman et al. 2019, arXiv 1910.10261) as NVIDIA NeMo builds it (JasperBlock, ConvASREncoder,
ConvASRDecoder), in small torchaudio-style modules.

Shapes: B batch, T frames, F feature bins, C channels, V output tokens (blank = 0).
Modules inside the encoder work on (B, C, T); the model's boundary is (B, T, F) -> (B, T', V).

Padding. NeMo's MaskedConv1d zeroes padded frames before *every* conv. Here the encoder zeroes them once
in its input, and every sub-block zeroes them in its output (in the block, before the ReLU, with which the
mask commutes), so every conv sees zeroed padding, which is all NeMo's mask does, with one mask per
sub-block. In training mode BatchNorm takes its batch statistics over all frames, padded ones included
(as NeMo does): a separable sub-block's pointwise conv output is then zeroed on padded frames (NeMo zeroes
its input; a 1x1 conv without bias commutes with that), a full conv's output is not (nor is NeMo's).
Outputs and gradients equal the mask-before-every-conv formulation to float rounding (tests/test_model.py
compares with it in training mode; eval mode is checked for padding invariance).

Speed (CPU). The encoder keeps its (B, C, T) tensors in (B, T, C) memory ("frame-major"): the input is
`feats.transpose(1, 2)` and every conv runs as a conv2d on the (B, C, 1, T) view, which is channels-last
and so takes oneDNN's fast paths and keeps that layout; BatchNorm uses the same view. Dilated depthwise
convs are rewritten as undilated ones over the interleaved phases (oneDNN has no fast dilated depthwise
kernel), and in eager training the depthwise weight gradient is computed as a depthwise correlation
(`depthwise_weight_grad`). bench/bench_model_cpu_profile.py measures this against an older copy.

Device-aware code. Those rewrites were measured faster on CPU only, so each is a switch (`REWRITES`),
decided per forward from the input's device: `QuartzNet.set_impl("auto")` (the default) uses all of
them on CPU tensors and plain Conv1d / BatchNorm1d (cuDNN) elsewhere; "plain" and "cpu" force one
side everywhere, and e.g. "conv2d+bn2d" uses just those rewrites on every device (for benchmarks:
bench/bench_train_cuda.py times each path on a GPU). Every path computes the same numbers
(tests/test_model.py compares outputs and gradients; tests/test_amp.py runs them under autocast).

Mixed precision. Under torch.autocast the built-in convs cast their inputs themselves; the custom
depthwise autograd Function is given inputs already cast to the autocast dtype and runs with autocast
off, so its forward and backward see one dtype (the casts carry the gradients back to the fp32
parameters, as autocast's own casts do). The decoder's logits and log-probabilities are fp32.
"""

from enum import Enum
from typing import Dict, List, Optional, Tuple

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


def frame_mask(lens: torch.Tensor, num_frames: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) lengths -> (B, 1, num_frames) mask of `dtype`, 1 on valid frames (multiplies (B, C, T))."""
    return lengths_to_mask(lens, num_frames).unsqueeze(1).to(dtype)


def conv_output_lengths(lens: torch.Tensor, kernel: int, stride: int, dilation: int, padding: int) -> torch.Tensor:
    """Frames out of a Conv1d for (B,) input lengths (NeMo's MaskedConv1d.get_seq_len)."""
    if stride == 1 and 2 * padding == dilation * (kernel - 1):
        return lens
    return torch.div(lens + 2 * padding - dilation * (kernel - 1) - 1, stride, rounding_mode="floor") + 1


class Rewrite(Enum):
    """The CPU rewrites, as bits of a module's `cpu_rewrites` / `other_rewrites` (see `parse_impl`)."""

    CONV2D = 1  # convs as conv2d on the (B, C, 1, T) view, which keeps frame-major memory channels-last
    DW_WEIGHT_GRAD = 2  # eager training: depthwise weight gradient as a depthwise correlation (own autograd)
    DILATION_PHASES = 4  # dilated depthwise convs as undilated ones over the interleaved phases
    BN_2D = 8  # BatchNorm on the (B, C, 1, T) view


REWRITES: Dict[str, Rewrite] = {
    "conv2d": Rewrite.CONV2D, "dw-weight-grad": Rewrite.DW_WEIGHT_GRAD,
    "dilation-phases": Rewrite.DILATION_PHASES, "bn2d": Rewrite.BN_2D,
}
ALL_REWRITES = sum(r.value for r in Rewrite)
IMPLS = ("auto", "plain", "cpu")


def parse_impl(impl: str) -> Tuple[int, int]:
    """(rewrites used on CPU tensors, rewrites used on other devices) for an implementation choice.

    "auto": every rewrite on CPU, none elsewhere (they were measured faster on CPU only); "plain": none;
    "cpu": every rewrite on every device; names from `REWRITES` joined by "+": those on every device.
    """
    if impl == "auto":
        return ALL_REWRITES, 0
    if impl == "plain":
        return 0, 0
    if impl == "cpu":
        return ALL_REWRITES, ALL_REWRITES
    bits = 0
    for name in impl.split("+"):
        if name not in REWRITES:
            raise ValueError(
                f"unknown model implementation {impl!r}: expected one of {IMPLS} or rewrites from "
                f"{sorted(REWRITES)} joined by '+'"
            )
        bits |= REWRITES[name].value
    return bits, bits


def uses(rewrites: int, rewrite: Rewrite) -> bool:
    """Whether the rewrite bits `rewrites` include `rewrite`."""
    return rewrites & rewrite.value != 0


def active_rewrites(x: torch.Tensor, on_cpu: int, elsewhere: int) -> int:
    """The rewrite bits that apply to tensor x: `on_cpu` for a CPU tensor, else `elsewhere`."""
    return on_cpu if x.device.type == "cpu" else elsewhere


def autocast_dtype(device_type: str) -> Optional[torch.dtype]:
    """The dtype autocast gives convs on `device_type` ("cuda", "cpu") here and now; None when it is off."""
    if hasattr(torch, "get_autocast_dtype"):  # torch >= 2.4
        return torch.get_autocast_dtype(device_type) if torch.is_autocast_enabled(device_type) else None
    if device_type == "cuda":
        return torch.get_autocast_gpu_dtype() if torch.is_autocast_enabled() else None
    if device_type == "cpu":
        return torch.get_autocast_cpu_dtype() if torch.is_autocast_cpu_enabled() else None
    return None


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


def conv_over_time(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int, dilation: int,
    groups: int,
) -> torch.Tensor:
    """Conv1d of x (B, C_in, T) with a (C_out, C_in / groups, K) weight -> (B, C_out, T').

    Runs as a conv2d over the (B, C_in, 1, T) view: when x is stored frame-major ((B, T, C) memory, as the
    encoder keeps it) that view is channels-last, which oneDNN computes several times faster than a
    (B, C, T) conv1d on CPU (depthwise and 1x1 alike, forward and backward), and the output stays
    frame-major. Same numbers as F.conv1d.
    """
    y = F.conv2d(x.unsqueeze(2), weight.unsqueeze(2), bias, (1, stride), (0, padding), (1, dilation), groups)
    return y.squeeze(2)


def depthwise_weight_grad(
    x: torch.Tensor, grad_out: torch.Tensor, kernel: int, stride: int, padding: int, dilation: int
) -> torch.Tensor:
    """Gradient (C, 1, K) of a depthwise conv1d's weight, for its input x (B, C, T) and grad_out (B, C, T').

    dW[c, k] = sum over b, t of grad_out[b, c, t] * x_padded[b, c, t * stride + k * dilation], i.e. a
    depthwise conv of x_padded (B * C channels, one batch) with grad_out as the kernels, with stride and
    dilation swapped. oneDNN runs that on its fast channels-last depthwise path, 1.5-7x faster than its own
    depthwise backward-weights kernel at QuartzNet's shapes (which dominates the training step otherwise).
    """
    batch, channels, _ = x.shape
    x_tbc = F.pad(x.permute(2, 0, 1), (0, 0, 0, 0, padding, padding))  # (T + 2p, B, C), contiguous
    frames = x_tbc.size(0)
    image = x_tbc.reshape(frames, batch * channels).t().unsqueeze(0).unsqueeze(2)  # (1, B*C, 1, T+2p), ch.-last
    kernels = grad_out.reshape(batch * channels, 1, 1, grad_out.size(2))
    corr = F.conv2d(image, kernels, None, (1, dilation), 0, (1, stride), batch * channels)  # (1, B*C, 1, >= K)
    return corr[:, :, 0, :kernel].reshape(batch, channels, kernel).sum(0).unsqueeze(1)


class _DepthwiseConvFunction(torch.autograd.Function):
    """`conv_over_time` for a depthwise weight, with its weight gradient from `depthwise_weight_grad`."""

    @staticmethod
    def forward(ctx, x, weight, stride: int, padding: int, dilation: int):  # type: ignore[override]
        ctx.save_for_backward(x, weight)
        ctx.conv_args = (stride, padding, dilation)
        return conv_over_time(x, weight, None, stride, padding, dilation, x.size(1))

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        x, weight = ctx.saved_tensors
        stride, padding, dilation = ctx.conv_args
        grad_x = grad_weight = None
        if ctx.needs_input_grad[0]:
            grad_x = torch.ops.aten.convolution_backward(
                grad_out.unsqueeze(2), x.unsqueeze(2), weight.unsqueeze(2), None, [1, stride], [0, padding],
                [1, dilation], False, [0, 0], x.size(1), [True, False, False],
            )[0].squeeze(2)
        if ctx.needs_input_grad[1]:
            grad_weight = depthwise_weight_grad(x, grad_out, weight.size(2), stride, padding, dilation)
        return grad_x, grad_weight, None, None, None


@torch.jit.unused
def _depthwise_conv_autograd(x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int):
    """Eager-only: `_DepthwiseConvFunction` (TorchScript cannot compile autograd Functions).

    Under autocast the Function gets x and weight cast to the autocast dtype and runs with autocast off:
    otherwise autocast would cast only its forward conv, and the backward would mix the fp32 tensors it
    saved with a half-precision gradient.
    """
    dtype = autocast_dtype(x.device.type)
    if dtype is None:
        return _DepthwiseConvFunction.apply(x, weight, stride, padding, dilation)
    with torch.autocast(x.device.type, enabled=False):
        return _DepthwiseConvFunction.apply(x.to(dtype), weight.to(dtype), stride, padding, dilation)


def time_conv(
    x: torch.Tensor, weight: torch.Tensor, bias: Optional[torch.Tensor], stride: int, padding: int, dilation: int,
    groups: int, rewrites: int,
) -> torch.Tensor:
    """Conv1d of x (B, C_in, T) -> (B, C_out, T'): `conv_over_time` with the CONV2D rewrite, else F.conv1d."""
    if uses(rewrites, Rewrite.CONV2D):
        return conv_over_time(x, weight, bias, stride, padding, dilation, groups)
    return F.conv1d(x, weight, bias, stride, padding, dilation, groups)


def _depthwise_conv(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int, rewrites: int
) -> torch.Tensor:
    """Depthwise `time_conv`; with the DW_WEIGHT_GRAD rewrite and a weight that needs a gradient (eager),
    with the faster weight gradient."""
    if not torch.jit.is_scripting():
        if uses(rewrites, Rewrite.DW_WEIGHT_GRAD) and torch.is_grad_enabled() and weight.requires_grad:
            return _depthwise_conv_autograd(x, weight, stride, padding, dilation)
    return time_conv(x, weight, None, stride, padding, dilation, x.size(1), rewrites)


def depthwise_conv_over_time(
    x: torch.Tensor, weight: torch.Tensor, stride: int, padding: int, dilation: int, rewrites: int = ALL_REWRITES
) -> torch.Tensor:
    """Depthwise conv1d of x (B, C, T) with a (C, 1, K) weight -> (B, C, T'), with the given rewrites.

    oneDNN's fast depthwise kernels do not cover dilation (a dilated depthwise conv is ~10x slower than an
    undilated one here, its backward ~30x), so with the DILATION_PHASES rewrite a dilation-D conv with
    stride 1 and padding divisible by D runs as an undilated one: frame t = s * D + r only sees frames of
    phase r, so the D phases of the zero-padded (B, T, C) memory, viewed as (B, T / D, D * C), are D * C
    independent channels, each convolved with the undilated kernel (padding / D). Same numbers as the
    dilated conv.
    """
    if not uses(rewrites, Rewrite.DILATION_PHASES) or dilation == 1 or stride != 1 or padding % dilation != 0:
        return _depthwise_conv(x, weight, stride, padding, dilation, rewrites)
    batch, channels, frames = x.shape
    phase_frames = (frames + dilation - 1) // dilation
    x_btc = x.transpose(1, 2)
    # Zero frames up to a multiple of D (the conv pads with zeros anyway). Unconditional, even when the pad is
    # empty, so that a traced model (export) stays right for frame counts of the other parity.
    x_btc = F.pad(x_btc, (0, 0, 0, phase_frames * dilation - frames))
    phases = x_btc.reshape(batch, phase_frames, dilation * channels).transpose(1, 2)  # (B, D * C, T / D)
    y = _depthwise_conv(phases, weight.repeat(dilation, 1, 1), 1, padding // dilation, 1, rewrites)
    y = y.transpose(1, 2).reshape(batch, phase_frames * dilation, channels)  # (B, T_padded, C)
    return y[:, :frames].transpose(1, 2)


class TimeBatchNorm(nn.BatchNorm1d):
    """nn.BatchNorm1d over (B, C, T); with the BN_2D rewrite computed on the (B, C, 1, T) view (same
    parameters, buffers, numbers).

    For frame-major x ((B, T, C) memory) the 4-D view is channels-last, which has fast CPU kernels and keeps
    the layout; BatchNorm1d on the strided 3-D tensor is ~3x slower there and returns (B, C, T) memory.
    Input (B, C, T); output (B, C, T).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.cpu_rewrites, self.other_rewrites = parse_impl("auto")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 3:
            raise ValueError(f"TimeBatchNorm expects (B, C, T) input, got {x.dim()}-D")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:  # cumulative moving average, as nn.BatchNorm1d
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        view_2d = uses(active_rewrites(x, self.cpu_rewrites, self.other_rewrites), Rewrite.BN_2D)
        y = F.batch_norm(
            x.unsqueeze(2) if view_2d else x, self.running_mean if track else None,
            self.running_var if track else None, self.weight, self.bias, use_batch_stats, momentum, self.eps,
        )
        return y.squeeze(2) if view_2d else y


class ConvBN(nn.Module):
    """One sub-block without its activation: [depthwise conv] -> conv -> BatchNorm.

    Separable: depthwise (C_in groups, kernel/stride/dilation) then pointwise 1x1 (C_in -> C_out).
    Not separable: a single (C_in -> C_out) conv with the kernel. No conv biases (as NeMo).
    Input x (B, C_in, T) whose padded frames (at or past `lens`) are zero; output (B, C_out, T'), lens (B,).
    The output's padded frames are not zeroed (the block does that, fused with its ReLU).
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
        self.norm = TimeBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.cpu_rewrites, self.other_rewrites = parse_impl("auto")
        # Whether `conv` mixes frames; whether the sub-block changes the number of frames.
        self.conv_mixes_frames = self.depthwise is None and spec.kernel > 1
        self.changes_length = not (spec.stride == 1 and 2 * pad == spec.dilation * (spec.kernel - 1))

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        rewrites = active_rewrites(x, self.cpu_rewrites, self.other_rewrites)
        if self.depthwise is not None:
            x = depthwise_conv_over_time(x, self.depthwise.weight, self.stride, self.padding, self.dilation, rewrites)
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
            x = time_conv(x, self.conv.weight, self.conv.bias, 1, 0, 1, 1, rewrites)
            if self.training and self.kernel > 1:
                # NeMo masks the pointwise conv's input, so BatchNorm's batch statistics see zeros on the
                # padded frames; a 1x1 conv without bias commutes with the mask, so its output is masked
                # instead (the depthwise output is not needed elsewhere).
                x = x * frame_mask(lens, x.size(2), x.dtype)
        else:
            # The input is already zero on padded frames, which is all NeMo's mask-before-conv does.
            lens = conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)
            x = time_conv(x, self.conv.weight, self.conv.bias, self.stride, self.padding, self.dilation, 1, rewrites)
        return self.norm(x), lens


class ResidualProjection(nn.Module):
    """Residual branch: 1x1 conv (no bias) -> BatchNorm on the block input. (B, C_in, T) -> (B, C_out, T).

    The block input is zero on padded frames, so the conv output is too (as NeMo's masked conv gives).
    """

    def __init__(self, in_channels: int, out_channels: int, bn_eps: float, bn_momentum: float):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, out_channels, 1, bias=False)
        self.norm = TimeBatchNorm(out_channels, eps=bn_eps, momentum=bn_momentum)
        self.cpu_rewrites, self.other_rewrites = parse_impl("auto")

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        rewrites = active_rewrites(x, self.cpu_rewrites, self.other_rewrites)
        return self.norm(time_conv(x, self.conv.weight, self.conv.bias, 1, 0, 1, 1, rewrites))


class QuartzNetBlock(nn.Module):
    """`repeat` ConvBN sub-blocks, each followed by ReLU + dropout; with a residual, the projected block
    input is added after the last BatchNorm, before the last ReLU + dropout (NeMo JasperBlock, mode 'add').

    Input x (B, C_in, T) zero on padded frames, lens (B,); output (B, C_out, T') zero on padded frames,
    lens (B,). Every sub-block output is zeroed on padded frames before its ReLU (they commute): that is
    NeMo's mask before the next conv, done once per sub-block. (Out of place: in-place ops on these conv /
    BatchNorm output views make autograd copy them back in backward, which costs more than it saves.)
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
        self.dropout_p = spec.dropout

    def _activation(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Zero padded frames, ReLU, dropout."""
        x = torch.relu(x * mask)
        if self.training and self.dropout_p > 0.0:
            x = self.dropout(x)
        return x

    def forward(self, x: torch.Tensor, lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        out, out_lens = x, lens
        mask = torch.empty(0)
        for i, layer in enumerate(self.layers):
            out, out_lens = layer(out, out_lens)
            if i == 0 or layer.changes_length:
                mask = frame_mask(out_lens, out.size(2), out.dtype)
            if i < self.num_layers - 1:
                out = self._activation(out, mask)
        if self.residual is not None:
            out = out + self.residual(x, lens)
        return self._activation(out, mask), out_lens


class QuartzNetEncoder(nn.Module):
    """The stack of blocks C1, B1..Bn, C2, C3 (NeMo ConvASREncoder).

    Input x (B, F, T), lens (B,); output (B, C_last, T / subsampling) zero on padded frames, lens (B,).
    Fastest when x is a (B, T, F) tensor transposed (frame-major memory): every layer keeps that layout.
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
        lens = lens.to(x.device)
        x = x * frame_mask(lens, x.size(2), x.dtype)  # the blocks expect zeroed padding (and keep it)
        for block in self.blocks:
            x, lens = block(x, lens)
        return x, lens


class CTCDecoder(nn.Module):
    """C4: 1x1 conv with bias to the token logits, then log-softmax (NeMo ConvASRDecoder).

    Input (B, C, T'); output log-probs (B, T', V). A half-precision input (autocast) gets its logits
    computed in fp32: the conv is small, and bf16 logits (8-bit mantissa) slowed CTC training down
    (bench/bench_amp_convergence.py; see bench/README.md).
    """

    def __init__(self, in_channels: int, num_tokens: int):
        super().__init__()
        self.conv = nn.Conv1d(in_channels, num_tokens, 1, bias=True)
        self.cpu_rewrites, self.other_rewrites = parse_impl("auto")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rewrites = active_rewrites(x, self.cpu_rewrites, self.other_rewrites)
        if not torch.jit.is_scripting() and x.dtype != torch.float32:
            logits = self._fp32_logits(x, rewrites)
        else:
            logits = time_conv(x, self.conv.weight, self.conv.bias, 1, 0, 1, 1, rewrites)
        if logits.dtype != torch.float32:
            logits = logits.float()
        return F.log_softmax(logits.transpose(1, 2), dim=-1)

    @torch.jit.unused
    def _fp32_logits(self, x: torch.Tensor, rewrites: int) -> torch.Tensor:
        """Logits of a half-precision x, computed in fp32 outside autocast."""
        bias = None if self.conv.bias is None else self.conv.bias.float()
        with torch.autocast(x.device.type, enabled=False):
            return time_conv(x.float(), self.conv.weight.float(), bias, 1, 0, 1, 1, rewrites)


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
        self.impl = "auto"
        self.reset_parameters()

    @torch.jit.unused
    def set_impl(self, impl: str) -> "QuartzNet":
        """Choose the model code path (`parse_impl`): "auto" (default), "plain", "cpu" or "rewrite+...".

        Outputs are the same on every path (to float rounding); only speed differs. Returns self.
        """
        on_cpu, elsewhere = parse_impl(impl)
        for module in self.modules():
            if hasattr(module, "cpu_rewrites"):
                module.cpu_rewrites, module.other_rewrites = on_cpu, elsewhere
        self.impl = impl
        return self

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
