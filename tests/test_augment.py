"""qnet.augment: FreqWarp (the VTLP-style frequency warp) and RoomNoise (reverberation and noise on raw
log-mel), used against unseen voices."""

import pytest
import torch

from qnet.augment import FreqWarp, RoomNoise, build_augment
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


def _click_features(num_frames: int = 200, click_at: int = 50) -> torch.Tensor:
    """Raw log-mel (1, T, 64) of near silence (power 1e-12) with one loud frame (power 1) at `click_at`."""
    energy = torch.full((1, num_frames, 64), 1e-12)
    energy[0, click_at] = 1.0
    return torch.log(energy)


def test_room_noise_reverb_is_a_decaying_causal_tail():
    torch.manual_seed(0)
    x = _click_features()
    y = RoomNoise(p_reverb=1.0, rt60=(0.3, 0.3), wet=(0.5, 0.5), max_delay_frames=2, p_noise=0.0)(x, torch.tensor([200]))
    power = y[0, :, 0].exp()
    assert float(power[:50].max()) < 1e-7  # causal: nothing before the click (1e-7: the log guard 2^-24)
    assert abs(float(power[50]) - 1.0) < 1e-3  # the dry click itself is kept
    tail = power[53:80]
    assert bool((tail[1:] < tail[:-1]).all())  # decays after the delay
    total_wet = float(power[51:].sum())
    assert abs(total_wet - 0.5) < 0.01  # the tail carries `wet` of the click's energy


def test_room_noise_noise_floor_snr_and_padding():
    torch.manual_seed(0)
    x = torch.zeros(2, 300, 64)  # power 1 everywhere
    lens = torch.tensor([300, 120])
    x[1, 120:] = -23.0  # padding
    y = RoomNoise(p_reverb=0.0, p_noise=1.0, snr_db=(10.0, 10.0))(x, lens)
    added = y[0].exp() - 1.0
    assert abs(float(added.mean()) - 0.1) < 0.01  # 10 dB below the signal power, on average over bands
    assert bool((y >= x - 1e-5).all())  # noise only adds energy
    assert torch.equal(y[1, 120:], x[1, 120:])  # padding frames are untouched


def test_room_noise_probability_zero_is_identity_and_checks_its_arguments():
    x = torch.randn(3, 50, 64)
    assert torch.equal(RoomNoise(p_reverb=0.0, p_noise=0.0)(x, torch.tensor([50, 40, 30])), x)
    with pytest.raises(ValueError, match="p_noise"):
        RoomNoise(p_noise=1.5)
