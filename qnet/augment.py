"""Feature augmentation modules for `model.augment`: NeMo's SpecCutout, SpecAugment-style strips and a
VTLP-style frequency warp (a random vocal-tract length per utterance, against unseen voices); and
`RoomNoise`, an input transform of the training DataLoader on raw log-mel (reverberation and noise).

Each module is called as `augment(x, lens)` on normalized features x (B, T, F) with valid lengths
lens (B,), returns a tensor of the same shape, and does nothing in eval mode. Random numbers come
from torch's global CPU generator, so saving/restoring `torch.get_rng_state()` makes training
resumable bit for bit.
"""

from typing import List, Optional, Sequence, Union

import torch
from torch import nn


def _randint_inclusive(low: int, high: torch.Tensor) -> torch.Tensor:
    """Uniform integers in [low, high] (inclusive, like python's random.randint), elementwise over `high`."""
    span = (high - low + 1).clamp(min=1).to(torch.float64)
    return (torch.rand(high.shape, dtype=torch.float64) * span).floor().to(torch.long) + low


class SpecCutout(nn.Module):
    """NeMo's SpecCutout: `rect_masks` rectangles per utterance, each at most `rect_time` frames by
    `rect_freq` bins, set to 0.

    As NeMo (`spectr_augment.py::SpecCutout`): x0 ~ U{0..F-rect_freq}, t0 ~ U{0..T-rect_time},
    w_f ~ U{0..rect_freq}, w_t ~ U{0..rect_time}, with T the padded batch length. NeMo raises when
    T < rect_time; here t0 is then 0 (the rectangle may cover the whole utterance).
    """

    def __init__(self, rect_masks: int = 5, rect_time: int = 120, rect_freq: int = 50):
        super().__init__()
        if rect_masks < 0 or rect_time < 0 or rect_freq < 0:
            raise ValueError(f"SpecCutout needs non-negative sizes, got {rect_masks}, {rect_time}, {rect_freq}")
        self.rect_masks = rect_masks
        self.rect_time = rect_time
        self.rect_freq = rect_freq

    def extra_repr(self) -> str:
        return f"rect_masks={self.rect_masks}, rect_time={self.rect_time}, rect_freq={self.rect_freq}"

    def forward(self, x: torch.Tensor, lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, F) -> (B, T, F) with rectangles zeroed (training only)."""
        if not self.training or self.rect_masks == 0:
            return x
        batch, num_frames, num_bins = x.shape
        shape = (batch, self.rect_masks)
        f0 = _randint_inclusive(0, torch.full(shape, max(0, num_bins - self.rect_freq)))
        t0 = _randint_inclusive(0, torch.full(shape, max(0, num_frames - self.rect_time)))
        wf = _randint_inclusive(0, torch.full(shape, self.rect_freq))
        wt = _randint_inclusive(0, torch.full(shape, self.rect_time))
        dev = x.device
        f0, t0, wf, wt = f0.to(dev), t0.to(dev), wf.to(dev), wt.to(dev)
        frames = torch.arange(num_frames, device=dev)
        bins = torch.arange(num_bins, device=dev)
        in_time = (frames >= t0[..., None]) & (frames < (t0 + wt)[..., None])  # (B, n, T)
        in_freq = (bins >= f0[..., None]) & (bins < (f0 + wf)[..., None])  # (B, n, F)
        mask = torch.zeros(batch, num_frames, num_bins, dtype=torch.bool, device=dev)
        for k in range(self.rect_masks):
            mask |= in_time[:, k, :, None] & in_freq[:, k, None, :]
        return x.masked_fill(mask, 0.0)


class SpecAugment(nn.Module):
    """SpecAugment frequency and time strips (no time warp), set to 0, NeMo `SpecAugment` style.

    Per utterance: `freq_masks` strips of width U{0..freq_width} bins starting at U{0..F-freq_width};
    `time_masks` strips of width U{0..w} frames starting at U{0..max(0, len-w)}, where w is
    `time_width` frames (int) or `time_width * len` (float in (0, 1)) and len the valid length.
    """

    def __init__(self, freq_masks: int = 2, freq_width: int = 15, time_masks: int = 2, time_width: Union[int, float] = 55):
        super().__init__()
        if freq_masks < 0 or time_masks < 0 or freq_width < 0 or time_width < 0:
            raise ValueError("SpecAugment needs non-negative mask counts and widths")
        if isinstance(time_width, float) and not time_width.is_integer() and time_width >= 1.0:
            raise ValueError(f"SpecAugment time_width must be an int (frames) or a float in (0, 1), got {time_width}")
        self.freq_masks = freq_masks
        self.freq_width = freq_width
        self.time_masks = time_masks
        self.time_width = time_width

    def extra_repr(self) -> str:
        return (
            f"freq_masks={self.freq_masks}, freq_width={self.freq_width}, "
            f"time_masks={self.time_masks}, time_width={self.time_width}"
        )

    def forward(self, x: torch.Tensor, lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, F), lens: (B,) valid frames -> (B, T, F) with strips zeroed (training only)."""
        if not self.training:
            return x
        batch, num_frames, num_bins = x.shape
        lens = torch.full((batch,), num_frames) if lens is None else lens.detach().to("cpu", torch.long)
        freq_mask = torch.zeros(batch, num_bins, dtype=torch.bool)
        time_mask = torch.zeros(batch, num_frames, dtype=torch.bool)
        if self.freq_masks > 0:
            shape = (batch, self.freq_masks)
            f0 = _randint_inclusive(0, torch.full(shape, max(0, num_bins - self.freq_width)))
            wf = _randint_inclusive(0, torch.full(shape, self.freq_width))
            bins = torch.arange(num_bins)
            freq_mask = ((bins >= f0[..., None]) & (bins < (f0 + wf)[..., None])).any(dim=1)  # (B, F)
        if self.time_masks > 0:
            if isinstance(self.time_width, float) and self.time_width < 1.0:
                width = (lens.to(torch.float64) * self.time_width).floor().to(torch.long)
            else:
                width = torch.full((batch,), int(self.time_width))
            width = width[:, None].expand(batch, self.time_masks)
            t0 = _randint_inclusive(0, (lens[:, None] - width).clamp(min=0))
            wt = _randint_inclusive(0, width)
            frames = torch.arange(num_frames)
            time_mask = ((frames >= t0[..., None]) & (frames < (t0 + wt)[..., None])).any(dim=1)  # (B, T)
        freq_mask, time_mask = freq_mask.to(x.device), time_mask.to(x.device)
        return x.masked_fill(time_mask[:, :, None] | freq_mask[:, None, :], 0.0)


class FreqWarp(nn.Module):
    """Vocal-tract-length perturbation on mel features: each utterance's spectrum is warped as
    X'(f) = X(f / alpha), alpha ~ U[1 - max_warp, 1 + max_warp], i.e. its formants move by the factor
    alpha (speed perturbation also moves them, but changes the tempo with them).

    Works on the mel bins directly: output bin b takes the value at the (fractional) mel position of
    f_b / alpha, linearly interpolated between the neighbouring bins and clamped at the band edges. The
    bin centre frequencies are those of `qnet.features.mel_filterbank` (Slaney scale, fmin..fmax).
    """

    def __init__(self, max_warp: float = 0.1, num_bins: int = 64, sampling_rate: int = 16000,
                 fmin: float = 0.0, fmax: Optional[float] = None):
        super().__init__()
        if not 0.0 <= max_warp < 1.0:
            raise ValueError(f"FreqWarp max_warp must be in [0, 1), got {max_warp}")
        from qnet.features import _hz_to_mel_slaney, _mel_to_hz_slaney

        import numpy as np

        fmax = sampling_rate / 2.0 if fmax is None else fmax
        lo, hi = float(_hz_to_mel_slaney(np.array(fmin))), float(_hz_to_mel_slaney(np.array(fmax)))
        mel_points = np.linspace(lo, hi, num_bins + 2)
        self.max_warp = max_warp
        self.num_bins = num_bins
        self._to_mel = _hz_to_mel_slaney
        self._mel_lo = lo
        self._mel_step = (hi - lo) / (num_bins + 1)
        self._centers_hz = _mel_to_hz_slaney(mel_points[1:-1])  # (F,) float64

    def extra_repr(self) -> str:
        return f"max_warp={self.max_warp}, num_bins={self.num_bins}"

    def forward(self, x: torch.Tensor, lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, F) -> (B, T, F), each utterance warped by its own alpha (training only)."""
        if not self.training or self.max_warp == 0.0:
            return x
        batch, num_frames, num_bins = x.shape
        if num_bins != self.num_bins:
            raise ValueError(f"FreqWarp was built for {self.num_bins} mel bins, got features with {num_bins}")
        alpha = 1.0 + (2.0 * torch.rand(batch, dtype=torch.float64) - 1.0) * self.max_warp  # (B,)
        src_hz = self._centers_hz[None, :] / alpha.numpy()[:, None]  # (B, F)
        pos = (self._to_mel(src_hz) - self._mel_lo) / self._mel_step - 1.0  # fractional bin index
        pos = torch.from_numpy(pos).clamp_(0.0, num_bins - 1.0).to(x.device, torch.float32)
        lo = pos.floor().to(torch.long)
        hi = (lo + 1).clamp(max=num_bins - 1)
        frac = (pos - lo.to(pos.dtype))[:, None, :].to(x.dtype)  # (B, 1, F)
        x_lo = x.gather(2, lo[:, None, :].expand(batch, num_frames, num_bins))
        x_hi = x.gather(2, hi[:, None, :].expand(batch, num_frames, num_bins))
        return x_lo + frac * (x_hi - x_lo)


class AugmentChain(nn.Module):
    """Applies its modules in order as `m(x, lens)`; with no modules it is the identity."""

    def __init__(self, modules: Sequence[nn.Module] = ()):
        super().__init__()
        self.steps = nn.ModuleList(modules)

    def forward(self, x: torch.Tensor, lens: Optional[torch.Tensor] = None) -> torch.Tensor:
        """x: (B, T, F) -> (B, T, F)."""
        for step in self.steps:
            x = step(x, lens)
        return x


def build_augment(
    spec_cutout: bool = True,
    spec_augment: bool = False,
    rect_masks: int = 5,
    rect_time: int = 120,
    rect_freq: int = 50,
    freq_masks: int = 2,
    freq_width: int = 15,
    time_masks: int = 2,
    time_width: Union[int, float] = 55,
    freq_warp: float = 0.0,
    num_bins: int = 64,
) -> AugmentChain:
    """The augmentation chain for `model.augment` (frequency warp, SpecAugment strips, then SpecCutout)."""
    modules: List[nn.Module] = []
    if freq_warp > 0.0:
        modules.append(FreqWarp(freq_warp, num_bins))
    if spec_augment:
        modules.append(SpecAugment(freq_masks, freq_width, time_masks, time_width))
    if spec_cutout:
        modules.append(SpecCutout(rect_masks, rect_time, rect_freq))
    return AugmentChain(modules)


class RoomNoise:
    """Feature-domain reverberation and additive noise on raw log-mel features (before normalization),
    for voices whose recordings are echoic or breathy (espeak-ng's Alicia variant has an echo and breath
    noise; real rooms have both). A lhotse-style input transform: `transform(feats, lens) -> feats`.

    In the mel power domain E = exp(x):
      * reverberation (probability `p_reverb`): E'(t) = E(t) + wet * sum_k h(k) E(t - delay - k), with an
        exponential tail h(k) ~ 10^(-6 k * shift / rt60) normalized to sum 1 (rt60 and wet drawn per utterance;
        phases are ignored, as in feature-domain reverberation models);
      * noise (probability `p_noise`): a noise floor at `snr_db` below the utterance's mean band power, with
        a random spectral tilt and log-normal per-frame fluctuation (mean 1, about the spread of a mel
        band's noise power).
    Padding frames are left as they are. Random numbers come from torch's global generator.
    """

    def __init__(self, p_reverb: float = 0.5, rt60: Sequence[float] = (0.1, 0.5), wet: Sequence[float] = (0.2, 1.0),
                 max_delay_frames: int = 5, p_noise: float = 0.5, snr_db: Sequence[float] = (5.0, 30.0),
                 frame_shift: float = 0.01):
        for name, p in (("p_reverb", p_reverb), ("p_noise", p_noise)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"RoomNoise {name} must be in [0, 1], got {p}")
        if not 0.0 < rt60[0] <= rt60[1]:
            raise ValueError(f"RoomNoise rt60 must be an increasing positive range, got {rt60}")
        self.p_reverb, self.rt60, self.wet, self.max_delay = p_reverb, tuple(rt60), tuple(wet), max_delay_frames
        self.p_noise, self.snr_db, self.frame_shift = p_noise, tuple(snr_db), frame_shift
        self.taps = int(round(rt60[1] / frame_shift))  # the longest tail the kernel holds

    def __repr__(self) -> str:
        return (f"RoomNoise(p_reverb={self.p_reverb}, rt60={self.rt60}, wet={self.wet}, p_noise={self.p_noise}, "
                f"snr_db={self.snr_db})")

    @staticmethod
    def _uniform(n: int, bounds: Sequence[float]) -> torch.Tensor:
        return bounds[0] + (bounds[1] - bounds[0]) * torch.rand(n, dtype=torch.float64)

    def _reverb_kernels(self, batch: int) -> torch.Tensor:
        """(B, K) causal kernels: a delta at 0, then `wet` times a normalized exponential tail after a delay."""
        k = torch.arange(self.taps, dtype=torch.float64)
        rt60 = self._uniform(batch, self.rt60)[:, None]
        tail = 10.0 ** (-6.0 * k[None, :] * self.frame_shift / rt60)  # 60 dB power decay over rt60
        tail = tail / tail.sum(dim=1, keepdim=True) * self._uniform(batch, self.wet)[:, None]
        delay = torch.randint(1, self.max_delay + 1, (batch,))
        kernels = torch.zeros(batch, self.taps + self.max_delay + 1, dtype=torch.float64)
        kernels[:, 0] = 1.0
        for b in range(batch):
            kernels[b, delay[b]:delay[b] + self.taps] = tail[b]
        return kernels

    def __call__(self, feats: torch.Tensor, lens: torch.Tensor) -> torch.Tensor:
        """feats (B, T, F) raw log-mel, lens (B,) -> (B, T, F)."""
        batch, num_frames, num_bins = feats.shape
        valid = (torch.arange(num_frames)[None, :] < lens[:, None]).to(torch.float32)[:, :, None]  # (B, T, 1)
        energy = feats.float().exp() * valid
        out = energy
        reverb = torch.rand(batch) < self.p_reverb
        if bool(reverb.any()):
            kernels = self._reverb_kernels(batch)
            taps = kernels.size(1)
            # one causal conv per (utterance, band): groups = B * F, each band with its utterance's kernel
            x = torch.nn.functional.pad(energy.transpose(1, 2).reshape(1, batch * num_bins, num_frames), (taps - 1, 0))
            w = kernels.flip(1).float().repeat_interleave(num_bins, dim=0)[:, None, :]  # (B*F, 1, K)
            wet = torch.nn.functional.conv1d(x, w, groups=batch * num_bins).reshape(batch, num_bins, num_frames)
            out = torch.where(reverb[:, None, None], wet.transpose(1, 2), out)
        noise = torch.rand(batch) < self.p_noise
        if bool(noise.any()):
            frames = valid.sum(dim=1).clamp(min=1.0)  # (B, 1)
            band_power = energy.sum(dim=1) / frames  # (B, F)
            level = band_power.mean(dim=1, keepdim=True) * 10.0 ** (-self._uniform(batch, self.snr_db)[:, None] / 10.0)
            slope = self._uniform(batch, (-1.0, 1.0))[:, None]
            tilt = torch.exp(slope * torch.linspace(-1.5, 1.5, num_bins, dtype=torch.float64)[None, :])
            floor = (level * tilt / tilt.mean(dim=1, keepdim=True)).float()  # (B, F)
            fluct = torch.exp(0.5 * torch.randn(batch, num_frames, num_bins) - 0.125)
            added = out + floor[:, None, :] * fluct * valid
            out = torch.where(noise[:, None, None], added, out)
        changed = (reverb | noise)[:, None, None] & (valid > 0)
        from qnet.features import LOG_ZERO_GUARD

        return torch.where(changed, torch.log(out + LOG_ZERO_GUARD).to(feats.dtype), feats)
