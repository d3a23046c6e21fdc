"""Mixed precision: bf16 autocast on CPU (the CI proxy for CUDA AMP) through the model API and the trainer,
NaN/inf-gradient steps skipped with and without a GradScaler, and the GPU bench run on CPU."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from qnet.bin import train as train_cli
from qnet.model import build_model
from qnet.model.quartznet import autocast_dtype
from qnet.trainer import apply_gradients, autocast_works, make_grad_scaler, resolve_amp

from train_helpers import train_args

ROOT = Path(__file__).resolve().parents[1]


def _batch(batch: int = 4, frames: int = 300, seed: int = 0):
    """Random features (B, T, 64) with unequal lengths and random character targets."""
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(batch, frames, 64, generator=g) * 3 - 5
    lens = torch.randint(frames // 2, frames + 1, (batch,), generator=g)
    lens[0] = frames
    targets = torch.randint(1, 29, (batch, frames // 8), generator=g)
    return feats, lens, targets, (lens // 8).clamp(min=1)


def _loss_and_grads(model, batch, dtype=None):
    """CTC loss, log-probs and the flattened parameter gradient, under CPU autocast when `dtype` is set."""
    feats, lens, targets, target_lens = batch
    model.zero_grad(set_to_none=True)
    with torch.autocast("cpu", dtype=dtype or torch.bfloat16, enabled=dtype is not None):
        log_probs, out_lens = model(feats, lens)
    loss = F.ctc_loss(log_probs.transpose(0, 1), targets, out_lens, target_lens, zero_infinity=True)
    loss.backward()
    return loss, log_probs, torch.cat([p.grad.flatten() for p in model.parameters()])


@pytest.mark.parametrize("impl", ["auto", "plain"])
def test_bf16_autocast_training_step_is_close_to_fp32(impl):
    """"small" has C2's dilated kernel-87 conv (and every other kind of sub-block). Its gradient right at
    random init is chaotic (merely rounding the weights to bf16 moves it to cosine ~0.95 in fp32), and
    on a batch it has overfitted it is mostly noise, so the model first takes a few fp32 steps on two
    other batches, as in training; then bf16 (cosine ~0.99 here) is compared with fp32 on a new batch."""
    torch.manual_seed(0)
    model = build_model("small", 29, dropout=0.0).train().set_impl(impl)
    assert model.encoder.blocks[-2].layers[0].dilation == 2
    warmup = [_batch(seed=1), _batch(seed=2)]
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(8):
        _loss_and_grads(model, warmup[step % 2])
        opt.step()
    batch = _batch(batch=8)
    loss32, _, grad32 = _loss_and_grads(model, batch)
    loss16, log_probs, grad16 = _loss_and_grads(model, batch, torch.bfloat16)
    assert log_probs.dtype == torch.float32  # the decoder's log-softmax runs in fp32 under autocast too
    assert torch.isfinite(loss16) and torch.isfinite(grad16).all()
    assert abs(float(loss16) - float(loss32)) < 0.02 * float(loss32)
    cosine = float(F.cosine_similarity(grad32, grad16, dim=0))
    assert cosine > 0.98, cosine
    before = [p.detach().clone() for p in model.parameters()]
    opt.step()  # the bf16 gradients land on the fp32 parameters
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_bf16_autocast_inference_with_the_model_api():
    torch.manual_seed(0)
    model = build_model("mini", 29).eval()
    feats, lens, _, _ = _batch(batch=3, frames=200, seed=1)
    with torch.no_grad():
        ref, ref_lens = model(feats, lens)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            assert autocast_dtype("cpu") == torch.bfloat16
            out, out_lens = model(feats, lens)
    assert out.dtype == torch.float32 and torch.equal(out_lens, ref_lens)
    assert torch.isfinite(out).all()
    assert (out.exp() - ref.exp()).abs().max() < 0.05
    valid = torch.arange(out.size(1))[None, :] < out_lens[:, None]
    agree = (out.argmax(-1) == ref.argmax(-1))[valid].float().mean()
    assert agree > 0.9, float(agree)


def test_decoder_logits_are_fp32_under_autocast():
    """bf16 logits slowed CTC training down (bench/bench_amp_convergence.py): the decoder computes them in fp32."""
    from qnet.model.quartznet import CTCDecoder

    torch.manual_seed(0)
    decoder = CTCDecoder(16, 7)
    x = (torch.randn(2, 16, 9) * 4).bfloat16()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = decoder(x)
    assert out.dtype == torch.float32
    assert torch.allclose(out, decoder(x.float()), atol=1e-6)


class _InfGradient(torch.autograd.Function):
    """Identity whose backward returns an infinite gradient (what an fp16 overflow leaves behind)."""

    @staticmethod
    def forward(ctx, x):  # type: ignore[override]
        return x.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        return grad * float("inf")


def test_apply_gradients_skips_a_step_with_inf_gradients():
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2)
    opt = torch.optim.Adam(model.parameters(), lr=0.1)
    scaler = make_grad_scaler("cpu", enabled=False)
    x = torch.randn(3, 4)
    before = [p.detach().clone() for p in model.parameters()]
    norm, updated = apply_gradients(_InfGradient.apply(model(x).sum()), model, opt, scaler, grad_clip=1.0)
    assert not updated and not torch.isfinite(torch.tensor(norm))
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters())) and not opt.state
    norm, updated = apply_gradients(model(x).sum(), model, opt, scaler, grad_clip=1.0)
    assert updated and norm > 0 and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def _fp16_scaler_device():
    if torch.cuda.is_available():
        return "cuda"
    if hasattr(torch.amp, "GradScaler"):  # torch >= 2.3 scales CPU gradients
        return "cpu"
    return None


@pytest.mark.skipif(_fp16_scaler_device() is None, reason=f"torch {torch.__version__}: GradScaler needs CUDA")
def test_grad_scaler_fp16_skips_overflowing_steps_and_lowers_the_scale():
    device = _fp16_scaler_device()
    torch.manual_seed(0)
    model = torch.nn.Linear(4, 2).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    scaler = make_grad_scaler(device, enabled=True)
    assert scaler.is_enabled()
    x = torch.randn(3, 4, device=device)
    before = [p.detach().clone() for p in model.parameters()]
    scale = scaler.get_scale()
    with torch.autocast(device, dtype=torch.float16):
        loss = model(x).float().sum() * 1e30  # scaled by 2**16 this overflows fp16 and fp32 alike
    _, updated = apply_gradients(loss, model, opt, scaler, grad_clip=0.0)
    assert not updated and scaler.get_scale() < scale
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    with torch.autocast(device, dtype=torch.float16):
        loss = model(x).float().sum()
    _, updated = apply_gradients(loss, model, opt, scaler, grad_clip=0.0)
    assert updated and any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_resolve_amp():
    cpu = torch.device("cpu")
    assert resolve_amp("auto", cpu) == "none" and resolve_amp("none", cpu) == "none"
    assert resolve_amp("bf16", cpu) == "bf16"
    if not autocast_works("cpu", torch.float16):  # torch 1.13: CPU autocast is bf16 only
        with pytest.raises(Exception, match="--amp fp16: torch .* has no fp16 autocast on cpu; use --amp bf16"):
            resolve_amp("fp16", cpu)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    from train_helpers import have_tts, make_corpus

    if not have_tts():
        pytest.skip("espeak-ng/sox not installed")
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_train=12, num_valid=3, max_words=2)


def test_trainer_bf16_on_cpu_trains_in_bf16_and_skips_an_overflowing_step(corpus, tmp_path, monkeypatch):
    from qnet import ctc
    from qnet.model.quartznet import CTCDecoder

    seen = []
    real_decoder = CTCDecoder.forward

    def recording_decoder(self, x):
        seen.append((x.dtype, torch.is_grad_enabled()))
        return real_decoder(self, x)

    real_loss = ctc.CtcLoss.forward
    calls = {"n": 0}

    def overflow_at_step_2(self, log_probs, lens, targets):
        calls["n"] += 1
        loss, per_utt, n_inf = real_loss(self, log_probs, lens, targets)
        return (_InfGradient.apply(loss) if calls["n"] == 2 else loss), per_utt, n_inf

    monkeypatch.setattr(CTCDecoder, "forward", recording_decoder)
    monkeypatch.setattr(ctc.CtcLoss, "forward", overflow_at_step_2)
    exp = tmp_path / "bf16"
    args = train_args(corpus, exp, "--ctc-backend", "torch", "--amp", "bf16", "--num-epochs", "1",
                      "--max-duration", "5", "--save-every-n", "1", "--keep-last-k", "0")
    assert train_cli.main(args) == 0
    log = next((exp / "log").glob("*.txt")).read_text()
    assert "precision: bf16 autocast on cpu" in log and "model code path: auto" in log
    assert "gradient overflow at step 2 (NaN/inf gradient, finite loss): update skipped" in log
    assert "1 gradient-overflow steps skipped" in log and "greedy WER" in log
    assert (torch.bfloat16, True) in seen and (torch.bfloat16, False) in seen  # training and validation
    assert all(dtype == torch.bfloat16 for dtype, _ in seen)
    names = [n for n, _ in build_model("tiny", 29).named_parameters()]
    c1, c2, c3 = (torch.load(exp / f"checkpoint-{i}.pt") for i in (1, 2, 3))
    for name in names:  # step 2 changed no parameter (BatchNorm statistics do move: its forward was fine)
        assert torch.equal(c1["model"][name], c2["model"][name]), name
    assert any(not torch.equal(c2["model"][n], c3["model"][n]) for n in names)
    assert c2["counters"]["overflow_steps"] == 1 and c2["step"] == 2


def test_trainer_fp16_on_cpu(corpus, tmp_path):
    exp = tmp_path / "fp16"
    args = train_args(corpus, exp, "--ctc-backend", "torch", "--amp", "fp16", "--num-epochs", "1",
                      "--max-duration", "5", "--exit-after-steps", "2", "--save-every-n", "0")
    if autocast_works("cpu", torch.float16) and hasattr(torch.amp, "GradScaler"):
        assert train_cli.main(args) == 0
        assert "precision: fp16 autocast on cpu with a GradScaler" in next((exp / "log").glob("*.txt")).read_text()
    else:
        assert train_cli.main(args) == 1
        assert "--amp fp16: torch" in next((exp / "log").glob("*.txt")).read_text()


def test_bench_train_cuda_runs_on_cpu(tmp_path):
    """bench/bench_train_cuda.py's CPU mode: tiny model, a few steps of every precision and code path."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "bench/bench_train_cuda.py", "--device", "cpu", "--json", str(out)],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    text = proc.stdout
    assert "| train | tiny | auto | fp32 | 4 |" in text and "| train | tiny | plain | bf16 | 4 |" in text
    assert "| infer | tiny | auto | bf16 | 1 utt |" in text and "RTF" in text and "NeMo: skipped" in text
    import json

    results = json.loads(out.read_text())
    train = [r for r in results["rows"] if r["task"] == "train" and r.get("audio_s_per_s")]
    assert {r["precision"] for r in train} >= {"fp32", "bf16"}
    assert {r["impl"] for r in train} >= {"plain", "cpu"}
    assert all(r["audio_s_per_s"] > 0 for r in train)
    assert any(r["task"] == "infer" and r["rtf"] > 0 for r in results["rows"])
