"""qnet.augment.FreqWarp: the VTLP-style frequency warp used against unseen voices."""

import pytest
import torch

from qnet.augment import FreqWarp, build_augment
from qnet.features import mel_filterbank


def mel_of_tone(hz: float) -> torch.Tensor:
    """Log-mel (1, 1, 64) of a pure tone at `hz` (its power spectrum is one FFT bin)."""
    fb = torch.as_tensor(mel_filterbank(), dtype=torch.float64)  # (64, 257)
    spectrum = torch.zeros(257, dtype=torch.float64)
    spectrum[int(round(hz / 8000.0 * 256))] = 1.0
    return torch.log(fb @ spectrum + 1e-6).to(torch.float32)[None, None, :]


def fixed_alpha(monkeypatch, alpha: float) -> None:
    """Make FreqWarp draw `alpha` (it maps torch.rand's u to 1 + (2u - 1) * max_warp)."""
    monkeypatch.setattr(torch, "rand", lambda n, dtype=None: torch.full((n,), (alpha - 1.0) / 0.2 + 0.5, dtype=dtype))


@pytest.mark.parametrize("alpha", [0.9, 1.1])
def test_formants_move_by_alpha(monkeypatch, alpha):
    warp = FreqWarp(0.1).train()
    fixed_alpha(monkeypatch, alpha)
    for hz in (700.0, 1500.0, 3000.0):
        moved = warp(mel_of_tone(hz))
        target = int(mel_of_tone(alpha * hz).argmax())
        assert abs(int(moved.argmax()) - target) <= 1, (hz, alpha)
        assert int(mel_of_tone(hz).argmax()) != target  # the warp is large enough to see


def test_identity_cases_and_shapes(monkeypatch):
    x = torch.randn(3, 40, 64, requires_grad=True)
    warp = FreqWarp(0.1)
    assert torch.equal(warp.eval()(x), x)  # eval mode
    assert torch.equal(FreqWarp(0.0).train()(x), x)
    fixed_alpha(monkeypatch, 1.0)
    y = warp.train()(x)
    assert y.shape == x.shape and torch.allclose(y, x, atol=1e-5)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="64 mel bins"):
        warp(torch.randn(1, 5, 80))
    with pytest.raises(ValueError, match="max_warp"):
        FreqWarp(1.5)


def test_each_utterance_has_its_own_warp():
    torch.manual_seed(0)
    x = mel_of_tone(1500.0).expand(8, 5, 64).contiguous()
    y = FreqWarp(0.1).train()(x)
    assert len({int(a) for a in y[:, 0, :].argmax(dim=1)}) > 1
    assert torch.equal(y[:, 0], y[:, 4])  # the same warp on every frame of an utterance
    chain = build_augment(spec_cutout=False, freq_warp=0.1)
    assert isinstance(chain.steps[0], FreqWarp)
    assert len(build_augment(spec_cutout=False).steps) == 0
