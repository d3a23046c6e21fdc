"""NeMo-1.x-compatible log-mel features (what the released QuartzNet checkpoints were trained on).

Recipe (NeMo 1.0-2.4 `FilterbankFeatures`, 16 kHz): optional dither (training only) -> pre-emphasis 0.97
-> STFT (n_fft 512, 20 ms symmetric Hann window zero-padded to 512, 10 ms hop, center=True with reflect
padding) -> power spectrum -> 64 Slaney-scale, Slaney-normalized mel filters (librosa's default
filterbank, computed here) -> natural log(x + 2^-24). An utterance of L samples has floor(L/160) + 1
valid frames; frame t is centred on sample 160 t. No normalization here: the model normalizes
per utterance (qnet.model.FeatureNormalization).

Batches: each utterance is reflect-padded at its own end, so a padded batch gives every utterance
exactly its stand-alone features. (NeMo 1.x pads the whole batch instead, so the last frame of a
shorter utterance depends on the batch; qnet prefers batch-independent features.)

Versus NeMo >= 2.5 (e.g. the nemo-toolkit 3.0 fixture in shared/fixtures/nemo): it uses floor(L/160)
frames, zero (not reflect) STFT padding and zeroes the pre-emphasised signal past each length. Only
frames whose 320-sample Hann window (centred on sample 160 t) reaches past an end of the clip can
differ: frame 0 (reflected vs zero samples before the start; ~2-4 nats off on the fixture) and frame
floor(L/160), which NeMo >= 2.5 does not count. All other frames agree to float rounding (~1e-6 on
the fixture, tests/test_features.py).

lhotse. `NemoMelExtractor` ("nemo-mel") returns lhotse's frame count for L samples, which is
`compute_num_frames_from_samples` = floor((L + 80) / 160), i.e. round(L/160). That is NeMo's count
floor(L/160) + 1 when L % 160 >= 80 and one less otherwise, in which case the NeMo frame centred on
the very last samples is dropped. Emitting exactly the count lhotse computes from a cut's duration
keeps stored features, `cut.num_frames`, `OnTheFlyFeatures` and the supervision frame spans
consistent with no off-by-one handling anywhere. `compute_nemo_mel` (raw audio, e.g. transcription)
returns NeMo's floor(L/160) + 1 unless `lhotse_frames=True`.
"""

import math
from dataclasses import asdict, dataclass
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lhotse.features.base import FeatureExtractor, register_extractor
from lhotse.utils import Seconds, compute_num_frames_from_samples

LOG_ZERO_GUARD = 2.0 ** -24


@dataclass
class NemoMelConfig:
    """Parameters of the NeMo log-mel; the defaults are the QuartzNet ones."""

    sampling_rate: int = 16000
    n_mels: int = 64
    n_fft: int = 512
    win_length: int = 320  # 20 ms
    hop_length: int = 160  # 10 ms
    preemph: float = 0.97
    dither: float = 0.0  # NeMo uses 1e-5 in training only
    fmin: float = 0.0
    fmax: Optional[float] = None  # None = sampling_rate / 2
    log_zero_guard: float = LOG_ZERO_GUARD

    @property
    def frame_shift(self) -> float:
        """Seconds between frames."""
        return self.hop_length / self.sampling_rate


def _hz_to_mel_slaney(hz: np.ndarray) -> np.ndarray:
    """Slaney (Auditory Toolbox) mel scale: linear below 1 kHz, logarithmic above."""
    hz = np.asanyarray(hz, dtype=np.float64)
    f_sp = 200.0 / 3
    mel = hz / f_sp
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    log_region = hz >= min_log_hz
    mel = np.where(log_region, min_log_mel + np.log(np.maximum(hz, 1e-10) / min_log_hz) / logstep, mel)
    return mel


def _mel_to_hz_slaney(mel: np.ndarray) -> np.ndarray:
    """Inverse of `_hz_to_mel_slaney`."""
    mel = np.asanyarray(mel, dtype=np.float64)
    f_sp = 200.0 / 3
    min_log_hz, min_log_mel, logstep = 1000.0, 1000.0 / f_sp, math.log(6.4) / 27.0
    return np.where(mel >= min_log_mel, min_log_hz * np.exp(logstep * (mel - min_log_mel)), f_sp * mel)


def mel_filterbank(
    sampling_rate: int = 16000, n_fft: int = 512, n_mels: int = 64, fmin: float = 0.0, fmax: Optional[float] = None
) -> torch.Tensor:
    """Triangular mel filters (n_mels, n_fft // 2 + 1), Slaney scale and area normalization
    (equal to `librosa.filters.mel(sr, n_fft, n_mels, fmin, fmax)` with its defaults)."""
    fmax = sampling_rate / 2.0 if fmax is None else float(fmax)
    fft_freqs = np.linspace(0.0, sampling_rate / 2.0, n_fft // 2 + 1)
    mel_points = np.linspace(_hz_to_mel_slaney(fmin), _hz_to_mel_slaney(fmax), n_mels + 2)
    hz_points = _mel_to_hz_slaney(mel_points)
    widths = np.diff(hz_points)
    ramps = hz_points[:, None] - fft_freqs[None, :]
    weights = np.zeros((n_mels, len(fft_freqs)), dtype=np.float64)
    for i in range(n_mels):
        rising = -ramps[i] / widths[i]
        falling = ramps[i + 2] / widths[i + 1]
        weights[i] = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (hz_points[2: n_mels + 2] - hz_points[:n_mels]))[:, None]  # Slaney area norm
    return torch.from_numpy(weights.astype(np.float32))


class NemoMelSpectrogram(nn.Module):
    """Batched NeMo log-mel: audio (B, L) float, audio_lens (B,) -> (feats (B, T, n_mels), lens (B,)).

    T = floor(max L / hop) + 1; lens = floor(L / hop) + 1 (or lhotse's round(L / hop) when
    `lhotse_frames`). Frames past a length are 0. Dither is applied only when `config.dither > 0`
    and the module is in training mode. TorchScript-able; ONNX export of torch.stft needs opset >= 17.
    """

    def __init__(self, config: Optional[NemoMelConfig] = None, lhotse_frames: bool = False):
        super().__init__()
        config = config or NemoMelConfig()
        self.n_fft = config.n_fft
        self.hop_length = config.hop_length
        self.win_length = config.win_length
        self.preemph = config.preemph
        self.dither = config.dither
        self.log_zero_guard = config.log_zero_guard
        self.lhotse_frames = lhotse_frames
        self.register_buffer("window", torch.hann_window(config.win_length, periodic=False), persistent=False)
        fb = mel_filterbank(config.sampling_rate, config.n_fft, config.n_mels, config.fmin, config.fmax)
        self.register_buffer("fb", fb, persistent=False)

    def num_frames(self, audio_lens: torch.Tensor) -> torch.Tensor:
        """Valid frames for (B,) sample counts."""
        if self.lhotse_frames:
            return torch.div(audio_lens + self.hop_length // 2, self.hop_length, rounding_mode="floor")
        return torch.div(audio_lens, self.hop_length, rounding_mode="floor") + 1

    def _reflect_pad(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> torch.Tensor:
        """Reflect-pad n_fft // 2 samples at the start and at *each utterance's own end* (torch.stft's
        center=True, per utterance): (B, L) -> (B, L + n_fft)."""
        pad = self.n_fft // 2
        max_len = audio.size(1)
        if int(audio_lens.min()) <= pad:
            # An utterance shorter than the padding (< 17 ms): reflect by indexing every position, then
            # clamp (the only case where F.pad's reflect cannot be used; cheap at these sizes).
            pos = torch.arange(-pad, max_len + pad, device=audio.device).unsqueeze(0).abs()
            last = (audio_lens - 1).unsqueeze(1)
            pos = torch.where(pos > last, 2 * last - pos, pos).clamp(min=0, max=max_len - 1)
            return torch.gather(audio, 1, pos.expand(audio.size(0), -1))
        padded = F.pad(audio.unsqueeze(1), (pad, pad), mode="reflect").squeeze(1)
        # Overwrite the `pad` samples after each utterance's end with its own reflection.
        offsets = torch.arange(pad, device=audio.device).unsqueeze(0)
        src = (audio_lens.unsqueeze(1) - 2 - offsets).clamp(min=0)
        dst = (audio_lens.unsqueeze(1) + offsets).clamp(max=max_len + pad - 1) + pad
        return padded.scatter(1, dst, torch.gather(audio, 1, src))

    def forward(self, audio: torch.Tensor, audio_lens: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
        audio = audio.float()
        if self.dither > 0 and self.training:
            audio = audio + self.dither * torch.randn_like(audio)
        if self.preemph > 0:
            audio = torch.cat([audio[:, :1], audio[:, 1:] - self.preemph * audio[:, :-1]], dim=1)
        padded = self._reflect_pad(audio, audio_lens.to(audio.device))
        spec = torch.stft(
            padded, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
            window=self.window, center=False, return_complex=True,
        )
        power = spec.real.pow(2) + spec.imag.pow(2)  # (B, n_fft // 2 + 1, T)
        mel = torch.matmul(self.fb, power)  # (B, n_mels, T)
        feats = torch.log(mel + self.log_zero_guard).transpose(1, 2)  # (B, T, n_mels)
        lens = self.num_frames(audio_lens.to(audio.device))
        valid = torch.arange(feats.size(1), device=feats.device).unsqueeze(0) < lens.unsqueeze(1)
        return feats.masked_fill(~valid.unsqueeze(2), 0.0), lens


_DEFAULT_MODULES = {}


def compute_nemo_mel(
    audio: torch.Tensor,
    audio_lens: Optional[torch.Tensor] = None,
    config: Optional[NemoMelConfig] = None,
    lhotse_frames: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Raw NeMo log-mel of a padded batch: audio (B, L) float at 16 kHz, audio_lens (B,) ->
    (feats (B, T, 64), feat_lens (B,) int64). No dither. See `NemoMelSpectrogram`."""
    if audio.dim() == 1:
        audio = audio.unsqueeze(0)
    if audio_lens is None:
        audio_lens = torch.full((audio.size(0),), audio.size(1), dtype=torch.int64)
    audio_lens = audio_lens.to(torch.int64)
    if audio.size(1) < 2:
        raise ValueError(f"audio too short for log-mel features ({audio.size(1)} samples)")
    key = (asdict(config) if config is not None else None, lhotse_frames)
    key = repr(key)
    module = _DEFAULT_MODULES.get(key)
    if module is None:
        cfg = NemoMelConfig(**{**asdict(config), "dither": 0.0}) if config is not None else NemoMelConfig()
        module = _DEFAULT_MODULES[key] = NemoMelSpectrogram(cfg, lhotse_frames=lhotse_frames).eval()
    module = module.to(audio.device)
    with torch.no_grad():
        return module(audio, audio_lens)


@register_extractor
class NemoMelExtractor(FeatureExtractor):
    """lhotse feature extractor "nemo-mel": raw NeMo-1.x log-mel (T, 64), 10 ms frames,
    T = lhotse's round(L / 160) (see the module docstring)."""

    name = "nemo-mel"
    config_type = NemoMelConfig

    def __init__(self, config: Optional[NemoMelConfig] = None):
        super().__init__(config)
        self._module = NemoMelSpectrogram(self.config, lhotse_frames=True)
        self._module.train(self.config.dither > 0)  # dither is applied only in training mode

    @property
    def frame_shift(self) -> Seconds:
        return self.config.frame_shift

    def feature_dim(self, sampling_rate: int) -> int:
        return self.config.n_mels

    def _check_rate(self, sampling_rate: int) -> None:
        if sampling_rate != self.config.sampling_rate:
            raise ValueError(
                f"nemo-mel features need {self.config.sampling_rate} Hz audio, got {sampling_rate} Hz "
                f"(resample the cuts first, e.g. cuts.resample({self.config.sampling_rate}))"
            )

    def _batch(self, signals: Sequence[torch.Tensor]) -> List[torch.Tensor]:
        """Features of 1-D signals, computed as one padded batch; each trimmed to its lhotse length."""
        lens = torch.tensor([s.numel() for s in signals], dtype=torch.int64)
        if int(lens.min()) < 2:
            raise ValueError("audio too short for nemo-mel features (fewer than 2 samples)")
        audio = torch.zeros(len(signals), int(lens.max()))
        for i, s in enumerate(signals):
            audio[i, : s.numel()] = s
        with torch.no_grad():
            feats, feat_lens = self._module(audio, lens)
        # For lhotse's count, compute_num_frames_from_samples is the reference; assert we agree with it.
        for n_samples, n_frames in zip(lens.tolist(), feat_lens.tolist()):
            assert n_frames == compute_num_frames_from_samples(n_samples, self.frame_shift, self.config.sampling_rate)
        return [feats[i, : int(feat_lens[i])] for i in range(len(signals))]

    @staticmethod
    def _as_1d(samples: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        x = torch.as_tensor(np.asarray(samples) if not torch.is_tensor(samples) else samples, dtype=torch.float32)
        if x.dim() == 2:
            if x.size(0) != 1:
                raise ValueError(f"nemo-mel expects mono audio, got shape {tuple(x.shape)}")
            x = x[0]
        if x.dim() != 1:
            raise ValueError(f"nemo-mel expects (N,) or (1, N) audio, got shape {tuple(x.shape)}")
        return x

    def extract(self, samples: Union[np.ndarray, torch.Tensor], sampling_rate: int) -> np.ndarray:
        """(T, 64) float32 log-mel of one mono signal."""
        self._check_rate(sampling_rate)
        return self._batch([self._as_1d(samples)])[0].numpy()

    def extract_batch(self, samples, sampling_rate: int, lengths=None):
        """Features of several signals in one batched computation (same return types as lhotse's default)."""
        self._check_rate(sampling_rate)
        input_is_torch = torch.is_tensor(samples) or (
            isinstance(samples, (list, tuple)) and any(torch.is_tensor(s) for s in samples)
        )
        if lengths is not None:
            lengths = [int(n) for n in lengths]
            signals = [torch.as_tensor(samples[i], dtype=torch.float32).reshape(-1)[:n] for i, n in enumerate(lengths)]
        elif isinstance(samples, (list, tuple)):
            signals = [self._as_1d(s) for s in samples]
        elif samples.ndim > 1:
            signals = [self._as_1d(s) for s in samples]
        else:
            signals = [self._as_1d(samples)]
        feats = self._batch(signals)
        result = feats if input_is_torch else [f.numpy() for f in feats]
        if isinstance(samples, (list, tuple)) or lengths is not None:
            return result
        if len(result) == 1:
            return result[0]
        if all(r.shape == result[0].shape for r in result[1:]):
            return torch.stack(result) if input_is_torch else np.stack(result)
        return result

    @staticmethod
    def mix(features_a: np.ndarray, features_b: np.ndarray, energy_scaling_factor_b: float) -> np.ndarray:
        """Feature-domain mix: add the mel energies (the log guard is removed from b before scaling)."""
        energy = np.exp(features_a) + energy_scaling_factor_b * np.maximum(np.exp(features_b) - LOG_ZERO_GUARD, 0.0)
        return np.log(np.maximum(energy, LOG_ZERO_GUARD))

    @staticmethod
    def compute_energy(features: np.ndarray) -> float:
        """Total mel energy."""
        return float(np.sum(np.exp(features)))

    @staticmethod
    def scale(features: np.ndarray, energy_scaling_factor: float) -> np.ndarray:
        """Scale the energy (log domain: add log of the factor)."""
        return features + np.log(energy_scaling_factor)
