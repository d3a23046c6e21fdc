"""Exports: BatchNorm folding, the folded (B, T, C) inference graph, TorchScript (script and trace) and
ONNX (onnxruntime) that keep lengths and masking, the export CLI."""

import json

import pytest
import torch

from model_helpers import randomize_batchnorm
from qnet import export
from qnet.model import BlockSpec, QuartzNetConfig, build_model, save_model
from qnet.tokens import TokenTable

# Every code path of the graph: stride-2 separable C1 (odd kernel), residual blocks with a channel
# change, a non-separable kernel>1 residual block, an even kernel (length changes by one frame at
# stride 1), a dilated separable block, a plain 1x1 block.
MIXED = QuartzNetConfig(
    blocks=[
        BlockSpec(filters=16, kernel=7, stride=2),
        BlockSpec(filters=16, kernel=5, repeat=2, residual=True),
        BlockSpec(filters=24, kernel=9, repeat=3, residual=True),
        BlockSpec(filters=24, kernel=3, repeat=2, residual=True, separable=False),
        BlockSpec(filters=24, kernel=4),
        BlockSpec(filters=32, kernel=11, dilation=2),
        BlockSpec(filters=40, kernel=1, separable=False),
    ],
    num_tokens=7,
    feat_in=10,
    name="mixed",
)

LENGTHS = (83, 60, 31, 9)  # differ from export.example_inputs' (160, 97, 33), the tracing/export batch


def make_model(config="tiny", seed=0):
    """A model with random weights and non-trivial BatchNorm statistics, in eval mode."""
    torch.manual_seed(seed)
    model = build_model(config) if isinstance(config, str) else build_model(config)
    randomize_batchnorm(model, seed)
    return model.eval()


def padded_batch(model, lengths=LENGTHS, seed=3):
    """Random raw features (B, T, F), zero past each length, and the lengths."""
    gen = torch.Generator().manual_seed(seed)
    lens = torch.tensor(lengths, dtype=torch.long)
    feats = torch.randn(len(lengths), max(lengths), model.feat_in, generator=gen) * 2.0 - 4.0
    feats = feats * (torch.arange(feats.size(1))[None, :] < lens[:, None]).unsqueeze(2)
    return feats, lens


def assert_same_valid(ref, out, atol=1e-4):
    """Same shapes and lengths, log-probs within atol on valid frames."""
    ref_lp, ref_lens = ref
    lp, lens = out
    assert tuple(lp.shape) == tuple(ref_lp.shape)
    assert torch.equal(torch.as_tensor(lens).long(), ref_lens.long())
    for b, n in enumerate(ref_lens.tolist()):
        assert n > 0
        diff = (torch.as_tensor(lp)[b, :n] - ref_lp[b, :n]).abs().max().item()
        assert diff <= atol, f"utterance {b}: max diff {diff}"


def eager(model, feats, lens):
    with torch.no_grad():
        return model(feats, lens)


def test_fold_conv_bn_matches_bn_of_conv():
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(6, 5, 3, padding=1, bias=True)
    bn = torch.nn.BatchNorm1d(5, eps=1e-3)
    randomize_batchnorm(bn)
    bn.eval()
    weight, bias = export.fold_conv_bn(conv.weight.detach(), conv.bias.detach(), bn)
    x = torch.randn(2, 6, 20)
    with torch.no_grad():
        ref = bn(conv(x))
        out = torch.nn.functional.conv1d(x, weight, bias, padding=1)
    assert torch.allclose(out, ref, atol=1e-5)
    # without a conv bias, as in QuartzNet
    weight, bias = export.fold_conv_bn(conv.weight.detach(), None, bn)
    with torch.no_grad():
        ref = bn(torch.nn.functional.conv1d(x, conv.weight, None, padding=1))
    assert torch.allclose(torch.nn.functional.conv1d(x, weight, bias, padding=1), ref, atol=1e-5)


@pytest.mark.parametrize("config", ["tiny", MIXED])
def test_fold_batchnorm_is_exact_and_leaves_model_alone(config):
    model = make_model(config)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    model.train()
    folded = export.fold_batchnorm(model)
    assert model.training, "fold_batchnorm must not change the source model's mode"
    model.eval()
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in folded.modules())
    assert not folded.training
    feats, lens = padded_batch(model)
    assert_same_valid(eager(model, feats, lens), eager(folded, feats, lens))


@pytest.mark.parametrize("channels_last", [True, False])
@pytest.mark.parametrize("config", ["tiny", "mini", MIXED])
def test_inference_graph_matches_eager_on_padded_batch(config, channels_last):
    model = make_model(config)
    fast = export.InferenceQuartzNet(model, channels_last=channels_last)
    assert not any(isinstance(m, torch.nn.BatchNorm1d) for m in fast.modules())
    feats, lens = padded_batch(model)
    assert_same_valid(eager(model, feats, lens), eager(fast, feats, lens))


def test_padded_batch_equals_single_utterances():
    """The point of keeping lengths (NeMo #2317): padding does not change any utterance's output."""
    model = make_model(MIXED)
    fast = torch.jit.script(export.InferenceQuartzNet(model))
    feats, lens = padded_batch(model)
    batch_lp, batch_lens = eager(fast, feats, lens)
    for b, n in enumerate(lens.tolist()):
        lp, out_len = eager(fast, feats[b:b + 1, :n], lens[b:b + 1])
        m = int(out_len[0])
        assert m == int(batch_lens[b])
        assert torch.allclose(lp[0, :m], batch_lp[b, :m], atol=1e-4)


@pytest.mark.parametrize("fold_bn", [True, False])
@pytest.mark.parametrize("method", ["script", "trace"])
def test_torchscript_roundtrip_other_lengths(tmp_path, fold_bn, method):
    model = make_model(MIXED)
    scripted = export.to_torchscript(export.deploy_module(model, fold_bn=fold_bn), method)
    path = tmp_path / "model.pt"
    scripted.save(str(path))
    loaded = torch.jit.load(str(path))
    # another batch size and other lengths than example_inputs (the traced batch)
    for lengths in (LENGTHS, (45,), (44,), (46,), (200, 200)):  # both parities after the stride-2 C1
        feats, lens = padded_batch(model, lengths)
        assert_same_valid(eager(model, feats, lens), eager(loaded, feats, lens))


@pytest.mark.parametrize("fold_bn", [True, False])
def test_onnx_onnxruntime_dynamic_axes(tmp_path, fold_bn):
    ort = pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    model = make_model(MIXED)
    module = export.deploy_module(model, fold_bn=fold_bn, channels_last=False)
    path = export.export_onnx(module, tmp_path / "model.onnx")
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["feats", "feat_lens"]
    assert [o.name for o in graph.output] == ["log_probs", "out_lens"]
    feats_dims = graph.input[0].type.tensor_type.shape.dim
    assert feats_dims[0].dim_param and feats_dims[1].dim_param and feats_dims[2].dim_value == MIXED.feat_in
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    for lengths in (LENGTHS, (45,), (200, 200, 12)):
        feats, lens = padded_batch(model, lengths)
        lp, out_lens = session.run(None, {"feats": feats.numpy(), "feat_lens": lens.numpy()})
        assert_same_valid(eager(model, feats, lens), (torch.from_numpy(lp), torch.from_numpy(out_lens)))


def test_onnx_channels_last_graph_also_exports(tmp_path):
    pytest.importorskip("onnxruntime")
    model = make_model("tiny")
    path = export.export_onnx(export.InferenceQuartzNet(model, channels_last=True), tmp_path / "cl.onnx")
    feats, lens = padded_batch(model)
    assert_same_valid(eager(model, feats, lens), export.run_onnx(path, feats, lens))


def test_verify_raises_on_a_wrong_export():
    model = make_model("tiny")
    other = make_model("tiny", seed=1)
    wrong = torch.jit.script(export.InferenceQuartzNet(other))
    with pytest.raises(export.ExportError, match="differs"):
        export.verify(model, {"torchscript": wrong})


def test_export_model_writes_everything(tmp_path):
    pytest.importorskip("onnxruntime")
    model = make_model("tiny")
    model.tokens = TokenTable.chars()
    result = export.export_model(model, tmp_path / "out")
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["deploy.json", "model.onnx", "model.pt", "tokens.txt"]
    assert set(result["max_diff"]) == {"torchscript", "onnx"}
    assert max(result["max_diff"].values()) <= 1e-4
    assert TokenTable.from_file(out / "tokens.txt") == model.tokens
    config = json.loads((out / "deploy.json").read_text())
    assert config["num_tokens"] == 29 and config["blank_id"] == 0 and config["subsampling_factor"] == 2
    assert config["features"]["n_mels"] == 64 and config["features"]["hop_length"] == 160
    assert config["model_config"]["name"] == "tiny" and config["fold_bn"] is True
    with pytest.raises(export.ExportError, match="token table"):
        export.export_model(model, tmp_path / "bad", tokens=TokenTable(["<blk>", "a"]))


def test_cli(tmp_path):
    pytest.importorskip("onnxruntime")
    from qnet.bin.export import main

    model = make_model("tiny")
    ckpt = tmp_path / "model.pt"
    save_model(ckpt, model, TokenTable.chars())
    out = tmp_path / "exp"
    assert main(["--model", str(ckpt), "--out-dir", str(out), "--formats", "onnx", "--fold-bn", "false"]) == 0
    assert (out / "model.onnx").is_file() and not (out / "model.pt").exists()
    assert json.loads((out / "deploy.json").read_text())["fold_bn"] is False
    assert main(["--model", str(ckpt), "--out-dir", str(out), "--formats", "torchscript"]) == 0
    loaded = torch.jit.load(str(out / "model.pt"))
    feats, lens = padded_batch(model)
    assert_same_valid(eager(model, feats, lens), eager(loaded, feats, lens))
    assert main(["--model", str(ckpt), "--out-dir", str(out), "--formats", "tflite"]) == 1
    assert main(["--model", str(tmp_path / "missing.pt"), "--out-dir", str(out)]) == 1


def test_export_imported_nemo_fixture(tmp_path):
    """NeMo's 5x5 (calibrated BN statistics) exported with folding matches the eager model on the
    fixture's padded feature batch (lengths 1000, 700, 333)."""
    pytest.importorskip("onnxruntime")
    from model_helpers import nemo_fixture_dir
    from qnet.nemo import import_nemo

    fixtures = nemo_fixture_dir()
    model, tokens, _ = import_nemo(fixtures / "qn5x5_random.nemo")
    io = torch.load(fixtures / "qn5x5_io.pt")
    feats, lens = io["feats"].transpose(1, 2).contiguous(), io["feats_len"].long()
    ref = eager(model, feats, lens)
    result = export.export_model(model, tmp_path / "nemo5x5", tokens=tokens)
    assert max(result["max_diff"].values()) <= 1e-4
    loaded = torch.jit.load(str(tmp_path / "nemo5x5" / "model.pt"))
    assert_same_valid(ref, eager(loaded, feats, lens))
    assert_same_valid(ref, export.run_onnx(tmp_path / "nemo5x5" / "model.onnx", feats, lens))


def test_export_15x5(tmp_path):
    model = make_model("15x5")
    model.tokens = TokenTable.chars()
    result = export.export_model(model, tmp_path / "qn15x5")
    assert max(result["max_diff"].values()) <= 1e-4
