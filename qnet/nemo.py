"""Import NVIDIA NeMo QuartzNet/Jasper CTC checkpoints (.nemo) into qnet models.

A .nemo file is a tar (plain, or gzip for NeMo <= 1.6) holding `model_config.yaml` and
`model_weights.ckpt` (a state_dict), with members named `./name` or `name`. Two config schemas exist:
the `_target_` one (NeMo >= 1.0rc: `encoder.jasper`, `decoder.vocabulary`, `preprocessor.*`) and the
older `cls`/`params` one of the NGC 1.0.0a5 files (`encoder.params.jasper`, `decoder.params.vocabulary`,
`preprocessor.params.*`). Both are read, and whatever block layout `jasper` lists is rebuilt.

Outputs: NeMo puts the blank last (index = number of labels); qnet puts `<blk>` at 0, so the decoder
rows are rotated (NeMo row i -> qnet id i + 1, NeMo's last row -> 0). The label ' ' becomes `<space>`.

State-dict keys understood: NeMo >= 0.9 (`encoder.encoder.N.mconv.I.conv.weight`, BN at `mconv.I`,
`res.0.0.conv.weight` / `res.0.1.*`, `decoder.decoder_layers.0.{weight,bias}`), and NeMo 0.8's
(`encoder.N.conv.I.weight`: MaskedConv1d was itself the Conv1d and the list was called `conv`).
"""

import io
import logging
import re
import tarfile
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Tuple

import torch

from qnet.model.checkpoint import torch_load
from qnet.model.configs import BlockSpec, QuartzNetConfig
from qnet.model.quartznet import QuartzNet
from qnet.tokens import BLANK, SPACE, TokenTable
from qnet.utils import PathLike

log = logging.getLogger(__name__)

_ENCODERS = ("ConvASREncoder", "JasperEncoder")
_DECODERS = ("ConvASRDecoder", "JasperDecoderForCTC")


class NemoImportError(ValueError):
    """A .nemo file cannot be imported (unreadable, or not a model qnet can represent)."""


@dataclass
class NemoArchive:
    """The parts of a .nemo file qnet uses."""

    path: Path
    config: Dict[str, Any]
    state_dict: Dict[str, torch.Tensor]
    members: List[str]


def _member_name(name: str) -> str:
    return name[2:] if name.startswith("./") else name


def read_nemo_archive(path: PathLike) -> NemoArchive:
    """Read model_config.yaml and model_weights.ckpt from a plain or gzip .nemo tar."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise NemoImportError(f"{path}: no such file")
    try:
        with tarfile.open(path, "r:*") as tar:
            members = {_member_name(m.name): m for m in tar.getmembers() if m.isfile()}
            for needed in ("model_config.yaml", "model_weights.ckpt"):
                if needed not in members:
                    raise NemoImportError(
                        f"{path}: not a .nemo model archive (no {needed}; members: {sorted(members)[:10]})"
                    )
            config_text = tar.extractfile(members["model_config.yaml"]).read().decode("utf-8")
            weights = tar.extractfile(members["model_weights.ckpt"]).read()
    except NemoImportError:
        raise
    except (tarfile.TarError, EOFError, OSError, zlib.error) as exc:
        raise NemoImportError(f"{path}: corrupt or truncated .nemo archive ({type(exc).__name__}: {exc})") from exc
    try:
        config = yaml.safe_load(config_text)
    except yaml.YAMLError as exc:
        raise NemoImportError(f"{path}: model_config.yaml is not valid YAML ({exc})") from exc
    if not isinstance(config, dict):
        raise NemoImportError(f"{path}: model_config.yaml is not a mapping")
    try:
        state = torch_load(io.BytesIO(weights), map_location="cpu")
    except Exception as exc:
        raise NemoImportError(f"{path}: model_weights.ckpt cannot be loaded ({type(exc).__name__}: {exc})") from exc
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]  # a Lightning checkpoint packed in by hand
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise NemoImportError(f"{path}: model_weights.ckpt is not a state_dict of tensors")
    return NemoArchive(path=path, config=config, state_dict=state, members=sorted(members))


def _section(config: Dict[str, Any], name: str) -> Tuple[str, Dict[str, Any]]:
    """(class name, keys) of a config section in either schema (`_target_` inline or `cls` + `params`)."""
    section = config.get(name)
    if not isinstance(section, dict):
        return "", {}
    target = section.get("_target_") or section.get("cls") or ""
    keys = {k: v for k, v in section.items() if k not in ("_target_", "cls", "params")}
    if isinstance(section.get("params"), dict):
        keys.update(section["params"])
    return str(target), keys


def _short(target: str) -> str:
    return target.rsplit(".", 1)[-1]


def _scalar(value: Any, what: str, source: str) -> int:
    """NeMo writes kernel/stride/dilation as one-element lists."""
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise NemoImportError(f"{source}: {what} {value} is not a single value (2-D convs are not QuartzNet)")
        value = value[0]
    return int(value)


def _check_model_kind(config: Dict[str, Any], source: str) -> None:
    """Refuse what is not a character QuartzNet/Jasper CTC model, saying what it is instead."""
    model_target = str(config.get("target") or config.get("_target_") or "")
    enc_target, _ = _section(config, "encoder")
    dec_target, _ = _section(config, "decoder")
    if "tokenizer" in config or "BPE" in model_target:
        raise NemoImportError(
            f"{source}: a BPE/subword-tokenizer model ({_short(model_target) or 'has a tokenizer section'}); "
            f"qnet imports only character-vocabulary QuartzNet/Jasper CTC models"
        )
    if "RNNT" in model_target or "Transducer" in model_target or "joint" in config:
        raise NemoImportError(f"{source}: an RNN-T/transducer model ({_short(model_target)}); qnet imports CTC models only")
    if not enc_target:
        raise NemoImportError(f"{source}: model_config.yaml has no encoder section")
    if not _short(enc_target).endswith(_ENCODERS):
        raise NemoImportError(
            f"{source}: the encoder is {_short(enc_target)}, not a QuartzNet/Jasper ConvASREncoder; "
            f"qnet imports only QuartzNet/Jasper CTC models"
        )
    if not _short(dec_target).endswith(_DECODERS):
        raise NemoImportError(
            f"{source}: the decoder is {_short(dec_target) or 'missing'}, not a CTC ConvASRDecoder "
            f"(classification and transducer models are not supported)"
        )


def nemo_block_spec(entry: Dict[str, Any], source: str, index: int) -> BlockSpec:
    """A qnet BlockSpec from one `jasper` list entry; unsupported features raise NemoImportError."""
    where = f"{source}: encoder block {index}"
    unsupported = {
        "residual_dense": (False,),
        "se": (False,),
        "groups": (1,),
        "residual_mode": ("add",),
        "heads": (-1,),
        "kernel_size_factor": (1, 1.0),
        "future_context": (-1,),
        "stride_last": (False,),
        "normalization": ("batch",),
    }
    for key, ok in unsupported.items():
        if key in entry and entry[key] not in ok:
            raise NemoImportError(f"{where}: {key}={entry[key]!r} is not supported (qnet builds plain QuartzNet/Jasper blocks)")
    for key in ("filters", "kernel", "repeat"):
        if key not in entry:
            raise NemoImportError(f"{where}: missing {key!r}")
    try:
        return BlockSpec(
            filters=int(entry["filters"]),
            kernel=_scalar(entry["kernel"], "kernel", where),
            stride=_scalar(entry.get("stride", [1]), "stride", where),
            dilation=_scalar(entry.get("dilation", [1]), "dilation", where),
            repeat=int(entry["repeat"]),
            residual=bool(entry.get("residual", False)),
            separable=bool(entry.get("separable", False)),
            dropout=float(entry.get("dropout", 0.0)),
        )
    except ValueError as exc:
        raise NemoImportError(f"{where}: {exc}") from exc


def nemo_labels_to_tokens(labels: List[str], source: str) -> TokenTable:
    """qnet token table for NeMo labels: <blk> first, ' ' -> <space>, other labels as they are."""
    symbols = [BLANK]
    for label in labels:
        label = str(label)
        if label == " ":
            symbols.append(SPACE)
        elif not label or any(c.isspace() for c in label):
            raise NemoImportError(f"{source}: label {label!r} cannot be written to tokens.txt")
        else:
            symbols.append(label)
    try:
        return TokenTable(symbols)
    except ValueError as exc:
        raise NemoImportError(f"{source}: labels do not form a token table ({exc})") from exc


def check_preprocessor(config: Dict[str, Any], source: str, strict: bool = True) -> List[str]:
    """Compare the .nemo preprocessor with qnet's NeMo log-mel; return the mismatches.

    Mismatches raise NemoImportError when `strict` (the imported model would see other features than
    it was trained on), else they are logged as warnings.
    """
    target, pre = _section(config, "preprocessor")
    problems = []
    if target and not _short(target).endswith("AudioToMelSpectrogramPreprocessor"):
        problems.append(f"preprocessor is {_short(target)}, not AudioToMelSpectrogramPreprocessor")
    sample_rate = pre.get("sample_rate", config.get("sample_rate", 16000))
    expected = [
        ("sample_rate", sample_rate, (16000,)),
        ("features", pre.get("features", pre.get("nfilt", 64)), (64,)),
        ("window_size", pre.get("window_size", 0.02), (0.02,)),
        ("window_stride", pre.get("window_stride", 0.01), (0.01,)),
        ("window", pre.get("window", "hann"), ("hann",)),
        ("normalize", pre.get("normalize", "per_feature"), ("per_feature",)),
        ("n_fft", pre.get("n_fft", None), (None, 512)),
        ("frame_splicing", pre.get("frame_splicing", 1), (1,)),
        ("preemph", pre.get("preemph", 0.97), (0.97,)),
        ("log", pre.get("log", True), (True,)),
        ("mag_power", pre.get("mag_power", 2.0), (2.0,)),
        ("lowfreq", pre.get("lowfreq", 0), (0, 0.0, None)),
        ("highfreq", pre.get("highfreq", None), (None, 8000, 8000.0)),
        ("log_zero_guard_type", pre.get("log_zero_guard_type", "add"), ("add",)),
        ("log_zero_guard_value", pre.get("log_zero_guard_value", 2 ** -24), (2 ** -24,)),
        ("mel_norm", pre.get("mel_norm", "slaney"), ("slaney",)),
        ("exact_pad", pre.get("exact_pad", pre.get("stft_exact_pad", False)), (False,)),
    ]
    for key, value, ok in expected:
        if value in ok or (isinstance(value, float) and any(isinstance(o, float) and abs(value - o) < 1e-9 for o in ok)):
            continue
        problems.append(f"preprocessor.{key} = {value!r} (qnet computes {ok[0]!r})")
    for problem in problems:
        if strict:
            raise NemoImportError(
                f"{source}: preprocessor incompatible with qnet's features: {'; '.join(problems)} "
                f"(pass --check-preprocessor false to import anyway)"
            )
        log.warning("%s: %s", source, problem)
    return problems


def nemo_config_to_qnet(config: Dict[str, Any], source: str = "<config>") -> Tuple[QuartzNetConfig, TokenTable]:
    """QuartzNetConfig and token table described by a NeMo model_config (either schema)."""
    _check_model_kind(config, source)
    _, enc = _section(config, "encoder")
    _, dec = _section(config, "decoder")
    activation = enc.get("activation", "relu")
    if activation != "relu":
        raise NemoImportError(f"{source}: encoder activation {activation!r} is not supported (QuartzNet uses relu)")
    if str(enc.get("normalization_mode", "batch")) != "batch":
        raise NemoImportError(f"{source}: normalization_mode {enc['normalization_mode']!r} is not supported")
    if not enc.get("conv_mask", True):
        log.warning("%s: trained with conv_mask=false; qnet always masks padding (single utterances are unaffected)", source)
    jasper = enc.get("jasper")
    if not isinstance(jasper, list) or not jasper:
        raise NemoImportError(f"{source}: encoder has no 'jasper' block list")
    blocks = [nemo_block_spec(entry, source, i) for i, entry in enumerate(jasper)]
    labels = dec.get("vocabulary") or config.get("labels")
    if not labels:
        raise NemoImportError(f"{source}: no vocabulary (decoder.vocabulary / labels)")
    num_classes = dec.get("num_classes", len(labels))
    if num_classes not in (-1, None, len(labels)):
        raise NemoImportError(f"{source}: decoder.num_classes {num_classes} != {len(labels)} labels")
    if dec.get("feat_in") not in (None, blocks[-1].filters):
        raise NemoImportError(f"{source}: decoder.feat_in {dec['feat_in']} != last block's {blocks[-1].filters} filters")
    tokens = nemo_labels_to_tokens(list(labels), source)
    qconfig = QuartzNetConfig(
        blocks=blocks,
        num_tokens=len(tokens),
        feat_in=int(enc.get("feat_in", 64)),
        name=f"nemo:{Path(source).stem}" if source != "<config>" else "nemo",
    )
    return qconfig, tokens


_ENC_KEY = re.compile(r"(?:^|\.)encoder\.(\d+)\.(mconv|conv|res)\.(.+)$")
_DEC_KEY = re.compile(r"(?:^|\.)decoder_layers\.0\.(weight|bias)$")
_BN_PARAMS = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def convert_state_dict(nemo_state: Dict[str, torch.Tensor], config: QuartzNetConfig, source: str = "<state_dict>") -> Dict[str, torch.Tensor]:
    """Map a NeMo encoder/decoder state_dict onto qnet names for `config` (blank row moved to 0)."""
    # block -> {"mconv": {index: {param: tensor}}, "res": {(i, j): {param: tensor}}}
    blocks: Dict[int, Dict[str, Dict[Any, Dict[str, torch.Tensor]]]] = {}
    decoder: Dict[str, torch.Tensor] = {}
    unused = []
    for key, tensor in nemo_state.items():
        if key.startswith("preprocessor."):
            continue
        m = _ENC_KEY.search(key)
        if m:
            block, part, rest = int(m.group(1)), m.group(2), m.group(3)
            parts = rest.split(".")
            entry = blocks.setdefault(block, {"mconv": {}, "res": {}})
            if part in ("mconv", "conv"):
                index, param = int(parts[0]), parts[-1]
                entry["mconv"].setdefault(index, {})[param] = tensor
            else:
                index, param = (int(parts[0]), int(parts[1])), parts[-1]
                entry["res"].setdefault(index, {})[param] = tensor
            continue
        m = _DEC_KEY.search(key)
        if m:
            decoder[m.group(1)] = tensor
            continue
        unused.append(key)
    if unused:
        raise NemoImportError(f"{source}: unexpected state_dict keys (not a QuartzNet/Jasper CTC model?): {unused[:5]}")
    if sorted(blocks) != list(range(len(config.blocks))):
        raise NemoImportError(f"{source}: weights have encoder blocks {sorted(blocks)}, config lists {len(config.blocks)}")
    if set(decoder) != {"weight", "bias"}:
        raise NemoImportError(f"{source}: decoder weight/bias missing from the state_dict")

    out: Dict[str, torch.Tensor] = {}
    for b, spec in enumerate(config.blocks):
        prefix = f"encoder.blocks.{b}"
        # Modules with tensors, in order: conv weights (3-D) and BatchNorms (have running_mean);
        # ReLU/Dropout/GroupShuffle entries carry no tensors and do not appear.
        sequence = [blocks[b]["mconv"][i] for i in sorted(blocks[b]["mconv"])]
        expected = spec.repeat * (3 if spec.separable else 2)
        if len(sequence) != expected:
            raise NemoImportError(f"{source}: encoder block {b} has {len(sequence)} conv/BN modules, its config needs {expected}")
        it = iter(sequence)
        for r in range(spec.repeat):
            names = (["depthwise"] if spec.separable else []) + ["conv"]
            for name in names:
                params = next(it)
                if "weight" not in params or params["weight"].dim() != 3:
                    raise NemoImportError(f"{source}: encoder block {b} repeat {r}: expected a conv weight for {name}")
                out[f"{prefix}.layers.{r}.{name}.weight"] = params["weight"]
            _copy_bn(next(it), f"{prefix}.layers.{r}.norm", out, source, b)
        res = blocks[b]["res"]
        if spec.residual:
            if set(res) != {(0, 0), (0, 1)}:
                raise NemoImportError(f"{source}: encoder block {b}: residual weights {sorted(res)} (dense residuals are not supported)")
            out[f"{prefix}.residual.conv.weight"] = res[(0, 0)]["weight"]
            _copy_bn(res[(0, 1)], f"{prefix}.residual.norm", out, source, b)
        elif res:
            raise NemoImportError(f"{source}: encoder block {b} has residual weights but its config says residual: false")
    weight, bias = decoder["weight"], decoder["bias"]
    if weight.size(0) != config.num_tokens:
        raise NemoImportError(f"{source}: decoder has {weight.size(0)} outputs, vocabulary + blank is {config.num_tokens}")
    out["decoder.conv.weight"] = torch.cat([weight[-1:], weight[:-1]], dim=0)
    out["decoder.conv.bias"] = torch.cat([bias[-1:], bias[:-1]], dim=0)
    return out


def _copy_bn(params: Dict[str, torch.Tensor], prefix: str, out: Dict[str, torch.Tensor], source: str, block: int) -> None:
    if "running_mean" not in params:
        raise NemoImportError(f"{source}: encoder block {block}: expected BatchNorm tensors at {prefix}")
    for p in _BN_PARAMS:
        if p in params:
            out[f"{prefix}.{p}"] = params[p]
        elif p == "num_batches_tracked":
            out[f"{prefix}.{p}"] = torch.tensor(0, dtype=torch.long)
        else:
            raise NemoImportError(f"{source}: encoder block {block}: BatchNorm {p} missing")


def _check_filterbank(archive: NemoArchive) -> None:
    """Warn when the stored mel filterbank differs from the one qnet computes."""
    fb = archive.state_dict.get("preprocessor.featurizer.fb")
    if fb is None:
        return
    from qnet.features import mel_filterbank

    ours = mel_filterbank()
    if tuple(fb.shape[-2:]) != tuple(ours.shape) or float((fb.reshape(ours.shape) - ours).abs().max()) > 1e-5:
        log.warning("%s: the stored mel filterbank differs from qnet's (different preprocessor?)", archive.path)


def import_nemo(path: PathLike, check_preprocessor_config: bool = True) -> Tuple[QuartzNet, TokenTable, Dict[str, Any]]:
    """Read a .nemo QuartzNet/Jasper CTC model: returns (model in eval mode, token table, NeMo config)."""
    archive = read_nemo_archive(path)
    source = str(archive.path)
    qconfig, tokens = nemo_config_to_qnet(archive.config, source)
    check_preprocessor(archive.config, source, strict=check_preprocessor_config)
    _check_filterbank(archive)
    state = convert_state_dict(archive.state_dict, qconfig, source)
    model = QuartzNet(qconfig)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise NemoImportError(f"{source}: weights do not fit the configured layout: {exc}") from exc
    model.tokens = tokens
    model.eval()
    return model, tokens, archive.config
