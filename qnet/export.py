"""Deployment exports of a QuartzNet: BatchNorm folding, TorchScript and ONNX that keep lengths and masking.

NeMo's own export turns its masks off and drops the length input (NeMo issue #2317), so a padded batch
gives different outputs than one utterance at a time. Here the exported graph takes the same inputs as
`QuartzNet.forward` and reproduces its eval-mode masking exactly:

    feats (B, T, F) float32 raw log-mel, feat_lens (B,) int64
        -> log_probs (B, T', V) log-softmax, out_lens (B,) int64,   T' = ceil(T / 2)

Two graphs can be exported:
- `fold_bn=True` (default): `InferenceQuartzNet`, an inference-only rewrite with every BatchNorm folded
  into the conv before it, computing in a (B, T, C) "channels-last" layout: pointwise 1x1 convs become
  matmuls over (B*T, C), depthwise convs run as channels-last conv2d, the residual projection and the
  last pointwise conv of a block share one bias, and time masks are built once per length change.
- `fold_bn=False`: an eval-mode copy of the QuartzNet module itself (same code as training).

Why folding is exact. In eval mode BatchNorm is the affine map y -> s * (y - mean) + beta with
s = gamma / sqrt(var + eps), so `BN(W x) = (s W) x + (beta - s mean)`. Every BatchNorm in QuartzNet
directly follows a conv (pointwise or full conv in a sub-block, the 1x1 conv of the residual branch),
and the masks are applied to conv *inputs*, before the conv, so folding BN into the conv in front of
it never moves an operation across a mask. Padded output frames hold arbitrary values (as in the eager
model); every conv that mixes frames zeroes them first, so valid frames are unaffected.
"""

import copy
import json
import logging
import warnings
from dataclasses import asdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import nn

from qnet.model.quartznet import (
    ConvBN,
    FeatureNormalization,
    NoAugment,
    QuartzNet,
    QuartzNetBlock,
    ResidualProjection,
    conv_output_lengths,
)
from qnet.utils import PathLike, atomic_output

FORMATS = ("torchscript", "onnx")
INPUT_NAMES = ["feats", "feat_lens"]
OUTPUT_NAMES = ["log_probs", "out_lens"]
DEFAULT_OPSET = 13


class ExportError(RuntimeError):
    """An export could not be produced or does not reproduce the eager model."""


# ----------------------------------------------------------------------------------------------
# BatchNorm folding


def fold_conv_bn(
    weight: torch.Tensor, bias: Optional[torch.Tensor], bn: nn.BatchNorm1d
) -> Tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the conv `BN(conv(x))` in eval mode: weight (C_out, ...) scaled per output channel."""
    if bn.running_mean is None or bn.running_var is None:
        raise ExportError("cannot fold a BatchNorm without running statistics (track_running_stats=False)")
    scale = torch.rsqrt(bn.running_var.double() + bn.eps)
    if bn.weight is not None:
        scale = scale * bn.weight.double()
    shift = -bn.running_mean.double() * scale
    if bn.bias is not None:
        shift = shift + bn.bias.double()
    if bias is not None:
        shift = shift + bias.double() * scale
    shape = (-1,) + (1,) * (weight.dim() - 1)
    new_weight = (weight.double() * scale.view(shape)).to(weight.dtype)
    return new_weight, shift.to(weight.dtype)


def _folded_conv(conv: nn.Conv1d, bn: nn.Module) -> nn.Conv1d:
    """A copy of `conv` with the eval-mode BatchNorm `bn` folded in (identity `bn` is allowed)."""
    new = copy.deepcopy(conv)
    if isinstance(bn, nn.Identity):
        return new
    if not isinstance(bn, nn.BatchNorm1d):
        raise ExportError(f"expected BatchNorm1d after {conv}, found {type(bn).__name__}")
    weight, bias = fold_conv_bn(conv.weight.detach(), None if conv.bias is None else conv.bias.detach(), bn)
    new.weight = nn.Parameter(weight, requires_grad=False)
    new.bias = nn.Parameter(bias, requires_grad=False)
    return new


def fold_batchnorm(model: QuartzNet) -> QuartzNet:
    """An eval-mode deep copy of `model` with every BatchNorm folded into its conv (norm -> Identity).

    The copy has the same module structure and code as `model` (only the `norm` modules became
    `nn.Identity` and the convs before them got a bias); augmentation is removed. The input model is
    left untouched.
    """
    folded = copy.deepcopy(model).eval()
    folded.augment = NoAugment()
    for module in folded.modules():
        if isinstance(module, (ConvBN, ResidualProjection)):
            module.conv = _folded_conv(module.conv, module.norm)
            module.norm = nn.Identity()
    for p in folded.parameters():
        p.requires_grad_(False)
    return folded


# ----------------------------------------------------------------------------------------------
# the inference graph


def time_mask(lens: torch.Tensor, num_frames: int, dtype: torch.dtype) -> torch.Tensor:
    """(B,) lengths -> (B, num_frames, 1) float mask, 1 on valid frames (for (B, T, C) tensors)."""
    frames = torch.arange(num_frames, device=lens.device)
    return (frames.unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(2).to(dtype)


class FoldedSubBlock(nn.Module):
    """One sub-block with BN folded, on (B, T, C): [depthwise conv] -> conv + bias (ReLU is the caller's).

    The depthwise conv runs as a conv2d over a (B, C, 1, T) channels-last view of the (B, T, C) tensor
    (oneDNN's fast depthwise path on CPU; a (B, C, T) conv1d with groups is 10-50x slower there); a 1x1
    conv is a matmul; a full conv with kernel > 1 is a channels-last conv2d too.
    Input x (B, T, C_in) with padded frames already zeroed if this sub-block mixes frames;
    output (B, T', C_out) without bias when `add_bias` is False (the block adds a shared one).
    """

    def __init__(self, layer: ConvBN, channels_last: bool = True):
        super().__init__()
        self.kernel = layer.kernel
        self.stride = layer.stride
        self.dilation = layer.dilation
        self.padding = layer.padding
        self.channels_last = channels_last
        conv = _folded_conv(layer.conv, layer.norm)
        self.separable = layer.depthwise is not None
        # (C_in, 1, 1, K) depthwise weight, or an empty placeholder for non-separable sub-blocks
        if self.separable:
            depthwise = layer.depthwise.weight.detach().clone()
            self.register_buffer("depthwise_weight", depthwise.unsqueeze(2))
        else:
            self.register_buffer("depthwise_weight", torch.zeros(0))
        weight = conv.weight.detach()
        self.pointwise = weight.size(2) == 1
        # 1x1 conv: (C_out, C_in) for F.linear; full conv: (C_out, C_in, 1, K) for conv2d
        self.register_buffer("weight", weight.squeeze(2) if self.pointwise else weight.unsqueeze(2))
        self.register_buffer("bias", conv.bias.detach().clone())
        self.mixes_frames = self.kernel > 1
        # static, so that tracing records no shape-dependent python branch
        self.changes_length = not (self.stride == 1 and 2 * self.padding == self.dilation * (self.kernel - 1))

    def _conv_over_time(self, x: torch.Tensor, weight: torch.Tensor, groups: int) -> torch.Tensor:
        """conv over time of x (B, T, C) -> (B, T', C_out) with this sub-block's stride/dilation/padding."""
        if self.channels_last:
            y = F.conv2d(
                x.transpose(1, 2).unsqueeze(2), weight, None, (1, self.stride), (0, self.padding),
                (1, self.dilation), groups,
            )
            return y.squeeze(2).transpose(1, 2)
        y = F.conv1d(x.transpose(1, 2), weight.squeeze(2), None, self.stride, self.padding, self.dilation, groups)
        return y.transpose(1, 2)

    def forward(self, x: torch.Tensor, add_bias: bool = True) -> torch.Tensor:
        if self.separable:
            x = self._conv_over_time(x, self.depthwise_weight, x.size(2))
            x = F.linear(x, self.weight, self.bias if add_bias else None)
        elif self.pointwise:
            x = F.linear(x, self.weight, self.bias if add_bias else None)
        else:
            x = self._conv_over_time(x, self.weight, 1)
            if add_bias:
                x = x + self.bias
        return x

    def output_lengths(self, lens: torch.Tensor) -> torch.Tensor:
        """Valid output frames for (B,) input frames."""
        return conv_output_lengths(lens, self.kernel, self.stride, self.dilation, self.padding)


class FoldedBlock(nn.Module):
    """A QuartzNet block with BN folded, on (B, T, C): sub-blocks with ReLU, residual added before the last ReLU.

    The residual projection is a matmul whose bias carries both its own folded BN shift and the last
    sub-block's, so the sum gets a single bias add. Input x (B, T, C_in), lens (B,) -> (B, T', C_out), lens.
    """

    def __init__(self, block: QuartzNetBlock, channels_last: bool = True):
        super().__init__()
        self.layers = nn.ModuleList([FoldedSubBlock(layer, channels_last) for layer in block.layers])
        self.num_layers = len(self.layers)
        self.has_residual = block.residual is not None
        if block.residual is not None:
            res = _folded_conv(block.residual.conv, block.residual.norm)
            self.register_buffer("res_weight", res.weight.detach().squeeze(2).clone())
            self.register_buffer("res_bias", (res.bias.detach() + self.layers[-1].bias).clone())
        else:
            self.register_buffer("res_weight", torch.zeros(0))
            self.register_buffer("res_bias", torch.zeros(0))

    def forward(
        self, x: torch.Tensor, lens: torch.Tensor, mask: torch.Tensor
    ) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`mask` (B, T, 1) belongs to `lens`; returns the output, its lengths and its mask."""
        block_input = x
        out = x
        for i, layer in enumerate(self.layers):
            if layer.mixes_frames:
                out = out * mask
            last = i == self.num_layers - 1
            out = layer(out, not (last and self.has_residual))
            if layer.changes_length:
                lens = layer.output_lengths(lens)
                mask = time_mask(lens, out.size(1), out.dtype)
            if not last:
                out = torch.relu(out)
        if self.has_residual:
            out = out + F.linear(block_input, self.res_weight, self.res_bias)
        return torch.relu(out), lens, mask


class InferenceQuartzNet(nn.Module):
    """Inference-only QuartzNet with BatchNorm folded, computing in (B, T, C); exports to TorchScript/ONNX.

    forward(feats (B, T, F) raw log-mel, feat_lens (B,) int64) -> (log_probs (B, T', V), out_lens (B,)),
    equal (to float rounding) to the source model's eval-mode output on every valid frame, for any
    padding. `channels_last=False` runs the time convs as ordinary (B, C, T) conv1d (same numbers).
    """

    def __init__(self, model: QuartzNet, channels_last: bool = True):
        super().__init__()
        model = copy.deepcopy(model).eval()
        self.normalize = copy.deepcopy(model.normalize)
        self.blocks = nn.ModuleList([FoldedBlock(b, channels_last) for b in model.encoder.blocks])
        self.register_buffer("decoder_weight", model.decoder.conv.weight.detach().squeeze(2).clone())
        self.register_buffer("decoder_bias", model.decoder.conv.bias.detach().clone())
        self.num_tokens = int(model.num_tokens)
        self.feat_in = int(model.feat_in)
        self.subsampling_factor = int(model.subsampling_factor)
        self.eval()

    def forward(self, feats: torch.Tensor, feat_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        x = self.normalize(feats, feat_lens)
        lens = feat_lens
        mask = time_mask(lens, x.size(1), x.dtype)
        for block in self.blocks:
            x, lens, mask = block(x, lens, mask)
        logits = F.linear(x, self.decoder_weight, self.decoder_bias)
        return torch.log_softmax(logits, dim=-1), lens


# ----------------------------------------------------------------------------------------------
# export


def deploy_module(model: QuartzNet, fold_bn: bool = True, channels_last: bool = True) -> nn.Module:
    """The eval-mode module that gets exported: `InferenceQuartzNet` (fold_bn) or a copy of `model`."""
    if not isinstance(model, QuartzNet):
        raise ExportError(f"expected a qnet QuartzNet, got {type(model).__name__}")
    if fold_bn:
        return InferenceQuartzNet(model, channels_last=channels_last)
    plain = copy.deepcopy(model).eval()
    plain.augment = NoAugment()
    for p in plain.parameters():
        p.requires_grad_(False)
    return plain


def example_inputs(feat_in: int = 64, lengths: Sequence[int] = (160, 97, 33)) -> Tuple[torch.Tensor, torch.Tensor]:
    """A padded batch of random features (B, max(lengths), feat_in) and its lengths (int64)."""
    gen = torch.Generator().manual_seed(1234)
    lens = torch.tensor(list(lengths), dtype=torch.long)
    feats = torch.randn(len(lengths), int(lens.max()), feat_in, generator=gen) * 3.0 - 5.0
    feats = feats * (torch.arange(feats.size(1)).unsqueeze(0) < lens.unsqueeze(1)).unsqueeze(2)
    return feats, lens


def to_torchscript(module: nn.Module, method: str = "auto") -> torch.jit.ScriptModule:
    """TorchScript of an eval-mode module: "script", "trace", or "auto" (script, else trace).

    Tracing records the lengths and masks as tensor ops of the inputs (arange over the traced time
    size, comparisons with feat_lens), so a traced graph also handles other batch sizes and lengths;
    `verify` checks that on a batch shaped unlike the tracing one.
    """
    module = module.eval()
    if method not in ("auto", "script", "trace"):
        raise ValueError(f"unknown TorchScript method {method!r} (auto, script, trace)")
    if method in ("auto", "script"):
        try:
            return torch.jit.script(module)
        except Exception as exc:
            if method == "script":
                raise ExportError(f"torch.jit.script failed: {exc}") from exc
            logging.warning("torch.jit.script failed (%s: %s); tracing instead", type(exc).__name__,
                            str(exc).splitlines()[0] if str(exc) else "")
    feats, lens = example_inputs(getattr(module, "feat_in", 64))
    with torch.no_grad():
        return torch.jit.trace(module, (feats, lens), check_trace=False)


def export_onnx(module: nn.Module, path: PathLike, opset: int = DEFAULT_OPSET) -> Path:
    """Write `module` as ONNX with inputs feats/feat_lens, outputs log_probs/out_lens, dynamic batch and time."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    feats, lens = example_inputs(getattr(module, "feat_in", 64))
    dynamic_axes = {
        "feats": {0: "batch", 1: "frames"},
        "feat_lens": {0: "batch"},
        "log_probs": {0: "batch", 1: "out_frames"},
        "out_lens": {0: "batch"},
    }
    with atomic_output(path) as tmp:
        # torch 1.13 warns about shape inference of constants on every export; the graph is checked below
        with torch.no_grad(), warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="The shape inference of prim::Constant")
            torch.onnx.export(
                module.eval(), (feats, lens), str(tmp), input_names=INPUT_NAMES, output_names=OUTPUT_NAMES,
                dynamic_axes=dynamic_axes, opset_version=opset, do_constant_folding=True,
            )
        import onnx

        onnx.checker.check_model(onnx.load(str(tmp)))
    return path


def _valid_max_diff(ref: Tuple[torch.Tensor, torch.Tensor], out: Tuple[torch.Tensor, torch.Tensor]) -> float:
    """Max |difference| of log-probs over valid frames; raises ExportError when shapes or lengths differ."""
    ref_lp, ref_lens = ref
    lp, lens = out
    if tuple(lp.shape) != tuple(ref_lp.shape):
        raise ExportError(f"log_probs shape {tuple(lp.shape)} != eager {tuple(ref_lp.shape)}")
    if not torch.equal(lens.to(torch.long), ref_lens.to(torch.long)):
        raise ExportError(f"out_lens {lens.tolist()} != eager {ref_lens.tolist()}")
    valid = torch.arange(lp.size(1)).unsqueeze(0) < ref_lens.unsqueeze(1)
    return float((lp - ref_lp).abs()[valid].max()) if bool(valid.any()) else 0.0


def run_onnx(path: PathLike, feats: torch.Tensor, feat_lens: torch.Tensor, threads: int = 0):
    """Run an exported ONNX file with onnxruntime (CPU); returns (log_probs, out_lens) tensors."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    if threads:
        options.intra_op_num_threads = threads
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    lp, lens = session.run(OUTPUT_NAMES, {"feats": feats.numpy(), "feat_lens": feat_lens.numpy()})
    return torch.from_numpy(lp), torch.from_numpy(lens)


def verify(
    model: QuartzNet,
    exported: Dict[str, Union[torch.jit.ScriptModule, PathLike]],
    lengths: Sequence[int] = (211, 150, 64, 17),
    atol: float = 1e-4,
) -> Dict[str, float]:
    """Compare exports with the eager eval-mode model on a padded batch (other sizes than the export used).

    `exported` maps "torchscript" to a ScriptModule and "onnx" to a file. Returns the max abs
    log-prob difference over valid frames per format; raises ExportError above `atol`.
    """
    feats, lens = example_inputs(model.feat_in, lengths)
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            ref = model(feats, lens)
    finally:
        model.train(was_training)
    diffs = {}
    for fmt, obj in exported.items():
        if fmt == "torchscript":
            with torch.no_grad():
                out = obj(feats, lens)
        elif fmt == "onnx":
            out = run_onnx(obj, feats, lens)
        else:
            raise ValueError(f"unknown export format {fmt!r}")
        diffs[fmt] = _valid_max_diff(ref, out)
        if diffs[fmt] > atol:
            raise ExportError(f"{fmt} export differs from the eager model by {diffs[fmt]:.3g} (> {atol})")
    return diffs


def deploy_config(model: QuartzNet, fold_bn: bool, formats: Sequence[str], opset: int) -> Dict:
    """What a deployment needs besides the graph: I/O contract, tokens, feature settings, model config."""
    from qnet.features import NemoMelConfig

    features = asdict(NemoMelConfig(n_mels=model.feat_in))
    return {
        "qnet_export_format": 1,
        "formats": list(formats),
        "files": {"torchscript": "model.pt", "onnx": "model.onnx", "tokens": "tokens.txt"},
        "inputs": {
            "feats": "float32 (batch, frames, %d): raw NeMo log-mel (see features); the model normalizes "
                     "per utterance itself" % model.feat_in,
            "feat_lens": "int64 (batch,): valid frames per utterance",
        },
        "outputs": {
            "log_probs": "float32 (batch, ceil(frames/%d), num_tokens): log-softmax" % model.subsampling_factor,
            "out_lens": "int64 (batch,): valid output frames",
        },
        "num_tokens": model.num_tokens,
        "blank_id": 0,
        "subsampling_factor": model.subsampling_factor,
        "frame_shift_s": features["hop_length"] / features["sampling_rate"],
        "output_frame_shift_s": model.subsampling_factor * features["hop_length"] / features["sampling_rate"],
        "features": {"type": "nemo-mel", **features, "normalize": "per_feature (inside the model)"},
        "fold_bn": fold_bn,
        "onnx_opset": opset if "onnx" in formats else None,
        "torch_version": torch.__version__,
        "model_config": model.config.to_dict(),
    }


def export_model(
    model: QuartzNet,
    out_dir: PathLike,
    formats: Sequence[str] = FORMATS,
    fold_bn: bool = True,
    tokens=None,
    opset: int = DEFAULT_OPSET,
    torchscript_method: str = "auto",
    atol: float = 1e-4,
) -> Dict[str, object]:
    """Export `model` to `out_dir` (model.pt, model.onnx, tokens.txt, deploy.json) and verify the exports.

    `tokens` (TokenTable) defaults to `model.tokens`. Returns {"files": [...], "max_diff": {fmt: diff}}.
    Every file is written atomically; deploy.json last, after the checks passed.
    """
    from qnet.utils import atomic_write_text

    unknown = [f for f in formats if f not in FORMATS]
    if unknown or not formats:
        raise ValueError(f"unknown export formats {unknown}; choose from {FORMATS}")
    tokens = tokens if tokens is not None else getattr(model, "tokens", None)
    if tokens is None:
        raise ExportError("the model has no token table: pass tokens= (a TokenTable)")
    if len(tokens) != model.num_tokens:
        raise ExportError(f"token table has {len(tokens)} symbols but the model has {model.num_tokens} outputs")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    module = deploy_module(model, fold_bn=fold_bn)
    exported: Dict[str, object] = {}
    files: List[Path] = []
    if "torchscript" in formats:
        scripted = to_torchscript(module, torchscript_method)
        path = out_dir / "model.pt"
        with atomic_output(path) as tmp:
            scripted.save(str(tmp))
        exported["torchscript"] = torch.jit.load(str(path))
        files.append(path)
    if "onnx" in formats:
        exported["onnx"] = export_onnx(deploy_module(model, fold_bn=fold_bn, channels_last=False)
                                       if fold_bn else module, out_dir / "model.onnx", opset)
        files.append(out_dir / "model.onnx")
    diffs = verify(model, exported, atol=atol)
    tokens.to_file(out_dir / "tokens.txt")
    files.append(out_dir / "tokens.txt")
    config = deploy_config(model, fold_bn, formats, opset)
    config["max_abs_diff_vs_eager"] = diffs
    atomic_write_text(out_dir / "deploy.json", json.dumps(config, indent=2) + "\n")
    files.append(out_dir / "deploy.json")
    return {"files": [str(f) for f in files], "max_diff": diffs}
