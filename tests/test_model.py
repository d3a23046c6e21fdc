"""QuartzNet model: layouts and parameter counts, padding invariance, NeMo-style masking in training,
normalization, TorchScript, checkpoints."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from model_helpers import randomize_batchnorm
from qnet.model import (
    BlockSpec,
    CheckpointError,
    QuartzNet,
    QuartzNetConfig,
    build_model,
    count_parameters,
    list_configs,
    load_checkpoint_dict,
    load_model,
    model_from_checkpoint_dict,
    save_model,
)
from qnet.tokens import TokenTable

# A layout touching every code path: stride-2 separable C1, residual separable blocks with a channel
# change, a non-separable kernel>1 (Jasper) block, a dilated block, an even kernel, a plain 1x1.
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
)


@pytest.mark.parametrize(
    "name, expected",
    [("5x5", 6_713_181), ("10x5", 12_818_781), ("15x5", 18_924_381), ("5x3", 6_407_005)],
)
def test_paper_parameter_counts(name, expected):
    assert count_parameters(build_model(name, 29)) == expected


def test_small_configs_exist_and_are_small():
    names = list_configs()
    assert {"tiny", "mini", "small", "5x5", "10x5", "15x5", "5x3"} <= set(names)
    assert count_parameters(build_model("tiny", 29)) < 50_000
    assert 300_000 <= count_parameters(build_model("mini", 29)) <= 1_500_000
    assert 300_000 <= count_parameters(build_model("small", 29)) <= 1_500_000


def test_5x3_has_dropout_and_wsj_layout():
    model = build_model("5x3", 29)
    blocks = model.config.blocks
    assert [b.kernel for b in blocks[1:6]] == [63, 63, 75, 75, 75]
    assert all(b.filters == 512 and b.repeat == 3 for b in blocks[1:6])
    assert all(b.dropout == 0.2 for b in blocks)


def test_structure_matches_nemo():
    model = build_model("5x5", 29)
    c1 = model.encoder.blocks[0]
    assert c1.layers[0].depthwise.stride == (2,) and c1.layers[0].depthwise.padding == (16,)
    assert c1.layers[0].depthwise.groups == 64 and c1.residual is None
    c2 = model.encoder.blocks[-2].layers[0].depthwise
    assert c2.dilation == (2,) and c2.padding == (86,) and c2.kernel_size == (87,)
    c3 = model.encoder.blocks[-1].layers[0]
    assert c3.depthwise is None and c3.conv.kernel_size == (1,)
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm1d):
            assert m.eps == 1e-3 and m.momentum == 0.1
        if isinstance(m, torch.nn.Conv1d) and m is not model.decoder.conv:
            assert m.bias is None
    assert model.decoder.conv.bias is not None
    assert model.subsampling_factor == 2


def test_overrides_and_errors():
    model = build_model("tiny", 5, dropout=0.3)
    assert model.config.num_tokens == 5 and all(b.dropout == 0.3 for b in model.config.blocks)
    assert model.decoder.conv.out_channels == 5
    with pytest.raises(ValueError, match="unknown model configuration"):
        build_model("20x5", 29)
    with pytest.raises(ValueError, match="unknown model override"):
        build_model("tiny", 29, channels=3)
    with pytest.raises(ValueError, match="residual"):
        BlockSpec(filters=8, kernel=3, stride=2, residual=True)


def test_config_dict_roundtrip():
    d = MIXED.to_dict()
    assert QuartzNetConfig.from_dict(d) == MIXED
    assert build_model(d).config == MIXED


@pytest.mark.parametrize("frames", [1, 2, 37, 38, 100])
def test_output_shape_and_lengths(frames):
    model = build_model("tiny", 29).eval()
    feats = torch.randn(2, frames, 64)
    lens = torch.tensor([frames, max(1, frames - 5)])
    with torch.no_grad():
        log_probs, out_lens = model(feats, lens)
    assert log_probs.shape == (2, math.ceil(frames / 2), 29)
    assert out_lens.tolist() == [math.ceil(n / 2) for n in lens.tolist()]
    assert out_lens.dtype == torch.int64
    assert torch.allclose(log_probs.exp().sum(-1), torch.ones(2, log_probs.size(1)), atol=1e-5)
    assert torch.equal(model.output_lengths(lens), out_lens)


@pytest.mark.parametrize("config", ["tiny", MIXED], ids=["tiny", "mixed"])
def test_padded_batch_equals_single_utterances(config):
    torch.manual_seed(0)
    model = build_model(config, 7 if config is MIXED else 29)
    randomize_batchnorm(model)
    model.eval()
    feat_dim = model.config.feat_in
    lens = [61, 33, 60, 8]
    utts = [3.0 * torch.randn(n, feat_dim) + 2.0 for n in lens]
    batch = torch.full((len(lens), max(lens), feat_dim), 123.0)  # garbage padding must not matter
    for i, u in enumerate(utts):
        batch[i, : len(u)] = u
    with torch.no_grad():
        log_probs, out_lens = model(batch, torch.tensor(lens))
        for i, u in enumerate(utts):
            alone, alone_len = model(u.unsqueeze(0), torch.tensor([len(u)]))
            assert int(out_lens[i]) == int(alone_len[0])
            n = int(alone_len[0])
            assert (log_probs[i, :n] - alone[0, :n]).abs().max() <= 1e-5


def _reference_forward_nemo(model: QuartzNet, x: torch.Tensor, lens: torch.Tensor):
    """NeMo's JasperBlock semantics written out directly: mask before *every* conv, BN in training
    mode (batch statistics over all frames), residual on the block input with the input lengths."""

    def mask(t, n):
        return t * (torch.arange(t.size(2))[None, :] < n[:, None]).unsqueeze(1).to(t.dtype)

    def conv(m, t, n):
        t = F.conv1d(mask(t, n), m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)
        k, s, d, p = m.kernel_size[0], m.stride[0], m.dilation[0], m.padding[0]
        return t, (n + 2 * p - d * (k - 1) - 1) // s + 1

    def bn(m, t):
        return F.batch_norm(t, None, None, m.weight, m.bias, True, 0.0, m.eps)

    x = model.normalize(x, lens).transpose(1, 2)
    for block in model.encoder.blocks:
        out, n = x, lens
        for i, layer in enumerate(block.layers):
            if layer.depthwise is not None:
                out, n = conv(layer.depthwise, out, n)
            out, n = conv(layer.conv, out, n)
            out = bn(layer.norm, out)
            if i < len(block.layers) - 1:
                out = F.relu(out)
        if block.residual is not None:
            res, _ = conv(block.residual.conv, x, lens)
            out = out + bn(block.residual.norm, res)
        x, lens = F.relu(out), n
    logits, _ = conv(model.decoder.conv, x, lens)
    return F.log_softmax(logits.transpose(1, 2), dim=-1), lens


def test_training_mode_matches_nemo_masking():
    torch.manual_seed(1)
    model = build_model(MIXED)
    model.train()
    lens = torch.tensor([50, 31, 12])
    feats = torch.randn(3, 50, MIXED.feat_in)
    log_probs, out_lens = model(feats, lens)
    with torch.no_grad():
        ref, ref_lens = _reference_forward_nemo(model, feats, lens)
    assert torch.equal(out_lens, ref_lens)
    for i, n in enumerate(out_lens.tolist()):
        assert (log_probs[i, :n] - ref[i, :n]).abs().max() <= 1e-4
    log_probs[0, :5].sum().backward()  # gradients flow
    assert model.encoder.blocks[0].layers[0].depthwise.weight.grad is not None


def test_normalization_is_nemo_per_feature():
    model = build_model("tiny", 29)
    feats = torch.randn(2, 20, 64) * 4 + 7
    lens = torch.tensor([20, 13])
    out = model.normalize(feats, lens)
    for i, n in enumerate(lens.tolist()):
        x = feats[i, :n]
        expected = (x - x.mean(0)) / (x.std(0, unbiased=True) + 1e-5)
        assert torch.allclose(out[i, :n], expected, atol=1e-5)
        assert torch.all(out[i, n:] == 0)


def test_augment_hook_sees_normalized_btf():
    calls = []

    class Recorder(torch.nn.Module):
        def forward(self, x, lens):
            calls.append((tuple(x.shape), lens.clone(), float(x[0, :10].mean())))
            return torch.zeros_like(x)

    model = build_model("tiny", 29).eval()
    feats = torch.randn(2, 10, 64) + 5
    lens = torch.tensor([10, 7])
    with torch.no_grad():
        plain, _ = model(feats, lens)
        model.augment = Recorder()
        zeroed, _ = model(feats, lens)
    assert calls[0][0] == (2, 10, 64) and calls[0][1].tolist() == [10, 7]
    assert abs(calls[0][2]) < 1e-4  # normalized input
    assert not torch.allclose(plain, zeroed)


def test_torchscript():
    model = build_model(MIXED)
    randomize_batchnorm(model)
    model.eval()
    scripted = torch.jit.script(model)
    feats = torch.randn(2, 40, MIXED.feat_in)
    lens = torch.tensor([40, 23])
    with torch.no_grad():
        a, al = model(feats, lens)
        b, bl = scripted(feats, lens)
        c, cl = scripted.encode_normalized(feats, lens)
        d, dl = model.encode_normalized(feats, lens)
    assert torch.equal(al, bl) and torch.allclose(a, b, atol=1e-6)
    assert torch.equal(cl, dl) and torch.allclose(c, d, atol=1e-6)
    assert torch.equal(scripted.output_lengths(lens), al)


def test_overfits_one_batch():
    torch.manual_seed(0)
    model = build_model("tiny", 29).train()
    feats = torch.randn(2, 40, 64)
    feat_lens = torch.tensor([40, 32])
    targets = torch.tensor([[3, 4, 5, 1, 6], [7, 8, 9, 0, 0]])
    target_lens = torch.tensor([5, 3])
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(25):
        log_probs, out_lens = model(feats, feat_lens)
        loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens, blank=0)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(float(loss))
    assert losses[-1] < 0.5 * losses[0]


def test_checkpoint_roundtrip(tmp_path):
    torch.manual_seed(0)
    model = build_model("tiny", 29)
    randomize_batchnorm(model)
    tokens = TokenTable.chars()
    path = tmp_path / "exp" / "model.pt"
    save_model(path, model, tokens, extra={"epoch": 3, "numpy_rng": np.random.default_rng(0).bit_generator.state,
                                           "np_array": np.arange(3)})
    ckpt = load_checkpoint_dict(path)
    assert ckpt["qnet_format"] == 1 and ckpt["epoch"] == 3 and ckpt["tokens"] == tokens.symbols
    loaded = load_model(path)
    assert not loaded.training and loaded.tokens == tokens and loaded.config == model.config
    model.eval()
    feats, lens = torch.randn(1, 30, 64), torch.tensor([30])
    with torch.no_grad():
        assert torch.equal(model(feats, lens)[0], loaded(feats, lens)[0])
    # a training checkpoint with a DDP-prefixed state_dict and extra keys
    ckpt["model"] = {f"module.{k}": v for k, v in ckpt["model"].items()}
    ckpt["optimizer"] = {"state": {}}
    assert model_from_checkpoint_dict(ckpt).config == model.config
    assert not list(path.parent.glob(".*.tmp"))  # atomic write left no temporaries


def test_checkpoint_errors(tmp_path):
    model = build_model("tiny", 29)
    with pytest.raises(ValueError, match="29 outputs"):
        save_model(tmp_path / "m.pt", model, TokenTable(["<blk>", "a"]))
    bad = tmp_path / "not_qnet.pt"
    torch.save({"encoder.encoder.0.mconv.0.conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(CheckpointError, match="not_qnet.pt.*not a qnet checkpoint.*import_nemo"):
        load_model(bad)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello")
    with pytest.raises(CheckpointError, match="garbage.pt"):
        load_model(garbage)
    with pytest.raises(CheckpointError, match="missing.pt"):
        load_model(tmp_path / "missing.pt")


def _outputs_and_grads(model, feats, lens, autocast=False):
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        log_probs, out_lens = model(feats, lens)
    valid = (torch.arange(log_probs.size(1))[None, :] < out_lens[:, None]).unsqueeze(2)
    (log_probs * valid * torch.linspace(-1.0, 1.0, log_probs.size(2))).sum().backward()
    return log_probs.detach() * valid, {n: p.grad.clone() for n, p in model.named_parameters()}


def test_every_model_code_path_gives_the_same_outputs_and_gradients():
    """Plain Conv1d/BatchNorm1d (the CUDA default), all the CPU rewrites, and each rewrite alone: same
    outputs (train and eval mode) and gradients on MIXED, which has a dilated and a strided block."""
    from qnet.model.quartznet import ALL_REWRITES, REWRITES, active_rewrites, parse_impl

    assert parse_impl("auto") == (ALL_REWRITES, 0) and parse_impl("plain") == (0, 0)
    assert active_rewrites(torch.empty(0, device="meta"), *parse_impl("auto")) == 0  # plain off the CPU
    assert active_rewrites(torch.empty(0), *parse_impl("auto")) == ALL_REWRITES
    with pytest.raises(ValueError, match="unknown model implementation 'conv3d'"):
        parse_impl("conv3d")
    torch.manual_seed(0)
    model = build_model(MIXED)
    randomize_batchnorm(model)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    lens = torch.tensor([50, 31, 12])
    feats = torch.randn(3, 50, MIXED.feat_in)

    def run(impl, train, autocast=False):
        model.load_state_dict(state)
        model.set_impl(impl).train(train)
        return _outputs_and_grads(model, feats, lens, autocast)

    for train in (True, False):
        ref_out, ref_grads = run("plain", train)
        for impl in ["auto", "cpu"] + sorted(REWRITES) + ["conv2d+dilation-phases"]:
            out, grads = run(impl, train)
            assert (out - ref_out).abs().max() <= 1e-5, (impl, train)
            for name, g in grads.items():
                assert (g - ref_grads[name]).abs().max() <= 1e-5 * max(1.0, float(ref_grads[name].abs().max())), (
                    impl, train, name)
    for impl in ["plain", "cpu"] + sorted(REWRITES):  # every path runs under bf16 autocast
        out, grads = run(impl, True, autocast=True)
        assert torch.isfinite(out).all() and all(torch.isfinite(g).all() for g in grads.values()), impl
    model.set_impl("cpu").eval()
    scripted = torch.jit.script(model)  # the switch survives TorchScript
    with torch.no_grad():
        assert torch.allclose(scripted(feats, lens)[0], model(feats, lens)[0], atol=1e-6)
