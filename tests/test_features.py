"""NeMo log-mel features: filterbank, parity with NeMo's preprocessor, batching, lhotse integration."""

import numpy as np
import pytest
import torch

from model_helpers import nemo_fixture_dir
from qnet.features import NemoMelConfig, NemoMelExtractor, compute_nemo_mel, mel_filterbank


@pytest.fixture(scope="module")
def nemo_io():
    return torch.load(nemo_fixture_dir() / "qn5x5_io.pt")


def test_filterbank_matches_nemo_buffer():
    import io
    import tarfile

    with tarfile.open(nemo_fixture_dir() / "qn5x5_random.nemo") as tar:
        state = torch.load(io.BytesIO(tar.extractfile("./model_weights.ckpt").read()), map_location="cpu")
    fb = mel_filterbank()
    assert fb.shape == (64, 257)
    assert (fb - state["preprocessor.featurizer.fb"][0]).abs().max() < 1e-6
    assert torch.equal(torch.hann_window(320, periodic=False), state["preprocessor.featurizer.window"])


def test_parity_with_nemo_logmel(nemo_io):
    """NeMo 3.0 (the fixture) zero-pads the STFT and counts floor(L/160) frames; qnet follows NeMo 1.x
    (reflect padding, floor(L/160)+1 frames). Only frame 0 (window reaching before the start) and the
    extra last frame can differ."""
    feats, lens = compute_nemo_mel(nemo_io["audio"], nemo_io["audio_len"])
    assert lens.tolist() == [n // 160 + 1 for n in nemo_io["audio_len"].tolist()]
    assert feats.shape == (2, 1001, 64)
    ref = nemo_io["logmel_raw"].transpose(1, 2)
    for b, n in enumerate(nemo_io["logmel_raw_len"].tolist()):
        assert int(lens[b]) == n + 1
        diff = (feats[b, 1:n] - ref[b, 1:n]).abs().max()
        assert diff <= 1e-3, f"clip {b}: {diff}"
        assert (feats[b, 0] - ref[b, 0]).abs().max() > 1e-2  # the edge frame really differs (reflect vs zero)
        assert torch.all(feats[b, int(lens[b]):] == 0)


@pytest.mark.parametrize("lengths", [[16000, 12345, 4000, 801], [3000, 257, 100, 2]], ids=["normal", "very-short"])
def test_batch_equals_single(lengths):
    torch.manual_seed(0)
    signals = [0.1 * torch.randn(n) for n in lengths]
    audio = torch.zeros(len(lengths), max(lengths))
    for i, s in enumerate(signals):
        audio[i, : len(s)] = s
    audio[2, lengths[2]:] = 0.5  # garbage after an utterance's end must not matter
    feats, lens = compute_nemo_mel(audio, torch.tensor(lengths))
    for i, s in enumerate(signals):
        alone, alone_len = compute_nemo_mel(s.unsqueeze(0), torch.tensor([len(s)]))
        assert int(alone_len[0]) == int(lens[i]) == len(s) // 160 + 1
        n = int(lens[i])
        assert (feats[i, :n] - alone[0, :n]).abs().max() < 1e-4


def test_lhotse_frame_count():
    from lhotse.utils import compute_num_frames_from_samples

    extractor = NemoMelExtractor()
    assert extractor.frame_shift == 0.01 and extractor.feature_dim(16000) == 64
    rng = np.random.default_rng(0)
    for n in (16000, 16079, 16080, 16159, 16160, 3333):
        feats = extractor.extract(rng.standard_normal((1, n)).astype(np.float32) * 0.1, 16000)
        assert feats.shape == (compute_num_frames_from_samples(n, 0.01, 16000), 64)
        assert feats.dtype == np.float32
    with pytest.raises(ValueError, match="8000 Hz"):
        extractor.extract(np.zeros(8000, dtype=np.float32), 8000)


def test_extractor_matches_batched_function():
    extractor = NemoMelExtractor()
    audio = 0.1 * torch.randn(1, 16100)
    ours = extractor.extract(audio.numpy(), 16000)
    ref, ref_len = compute_nemo_mel(audio, torch.tensor([16100]))
    assert int(ref_len[0]) == 101 and ours.shape[0] == 101  # 16100 % 160 = 100 >= 80: same count
    assert np.abs(ours - ref[0].numpy()).max() < 1e-5
    short = extractor.extract(audio[:, :16050].numpy(), 16000)  # 16050 % 160 = 50 < 80: last NeMo frame dropped
    ref, ref_len = compute_nemo_mel(audio[:, :16050], torch.tensor([16050]))
    assert int(ref_len[0]) == 101 and short.shape[0] == 100
    assert np.abs(short - ref[0, :100].numpy()).max() < 1e-5


def test_dither_only_when_configured():
    audio = np.zeros((1, 8000), dtype=np.float32)
    plain = NemoMelExtractor()
    assert np.array_equal(plain.extract(audio, 16000), plain.extract(audio, 16000))
    dithered = NemoMelExtractor(NemoMelConfig(dither=1e-5))
    a, b = dithered.extract(audio, 16000), dithered.extract(audio, 16000)
    assert not np.array_equal(a, b)
    assert a.mean() > plain.extract(audio, 16000).mean()  # noise adds energy to silence


def _make_cuts(tmp_path, durations):
    import soundfile as sf
    from lhotse import CutSet, Recording, RecordingSet

    rng = np.random.default_rng(1)
    recordings = []
    for i, seconds in enumerate(durations):
        n = int(round(seconds * 16000))
        t = np.arange(n) / 16000
        audio = 0.3 * np.sin(2 * np.pi * (200 + 100 * i) * t) + 0.01 * rng.standard_normal(n)
        path = tmp_path / f"utt{i}.wav"
        sf.write(path, audio.astype(np.float32), 16000)
        recordings.append(Recording.from_file(path, recording_id=f"utt{i}"))
    return CutSet.from_manifests(recordings=RecordingSet.from_recordings(recordings))


def test_lhotse_compute_and_store(tmp_path):
    from lhotse import CutSet, LilcomChunkyWriter

    # 1.005 s: 16080 samples (L % 160 = 80), 0.7231 s: 11570 samples (L % 160 = 50 < 80)
    cuts = _make_cuts(tmp_path, [1.005, 0.7231, 0.5])
    stored = cuts.compute_and_store_features(
        extractor=NemoMelExtractor(), storage_path=tmp_path / "feats", storage_type=LilcomChunkyWriter
    )
    stored.to_file(tmp_path / "cuts.jsonl.gz")
    reloaded = CutSet.from_file(tmp_path / "cuts.jsonl.gz")
    for cut in reloaded:
        assert cut.features.type == "nemo-mel"
        feats = cut.load_features()
        assert feats.shape == (cut.num_frames, 64)
        assert cut.features.num_frames == cut.num_frames  # stored exactly the count lhotse expects
        audio = torch.from_numpy(cut.load_audio())
        ref, _ = compute_nemo_mel(audio, torch.tensor([audio.shape[1]]))
        assert np.abs(feats - ref[0, : cut.num_frames].numpy()).max() < 0.05  # lilcom is lossy
    # the extractor can be rebuilt from the manifest's name + config (lhotse registry)
    from lhotse.features import create_default_feature_extractor

    assert isinstance(create_default_feature_extractor("nemo-mel"), NemoMelExtractor)


def test_lhotse_on_the_fly(tmp_path):
    from lhotse.dataset import OnTheFlyFeatures
    from lhotse.utils import compute_num_frames

    cuts = _make_cuts(tmp_path, [0.9, 0.7231, 0.31])
    expected = [compute_num_frames(c.duration, 0.01, 16000) for c in cuts]  # what a stored cut would say
    feats, lens = OnTheFlyFeatures(NemoMelExtractor())(cuts)
    assert feats.shape == (3, max(expected), 64)
    assert lens.tolist() == expected
    extractor = NemoMelExtractor()
    for i, cut in enumerate(cuts):
        alone = extractor.extract(cut.load_audio(), 16000)
        assert np.abs(feats[i, : lens[i]].numpy() - alone).max() < 1e-4
    seq_feats, seq_lens = OnTheFlyFeatures(NemoMelExtractor(), use_batch_extract=False)(cuts)
    assert torch.equal(seq_lens, lens)
    # extract_batch on a padded tensor with lengths (lhotse's other calling convention)
    audios = [torch.from_numpy(c.load_audio()[0]) for c in cuts]
    padded = torch.zeros(3, max(len(a) for a in audios))
    for i, a in enumerate(audios):
        padded[i, : len(a)] = a
    out = extractor.extract_batch(padded, 16000, lengths=torch.tensor([len(a) for a in audios]))
    assert [o.shape[0] for o in out] == expected
    assert all(torch.allclose(o, feats[i, : lens[i]], atol=1e-4) for i, o in enumerate(out))
