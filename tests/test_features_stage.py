"""Feature stage: compute_features (in process and split/job/combine) and steps/make_features.sh."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import make_librispeech  # noqa: E402

from qnet.bin import compute_features, prepare_librispeech  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture
def manifests(tmp_path):
    make_librispeech(tmp_path, broken=True)
    out = tmp_path / "manifests"
    assert prepare_librispeech.main([str(tmp_path / "LibriSpeech"), str(out)]) == 0
    return out


def _cuts(path):
    from lhotse import load_manifest

    return load_manifest(path)


def test_in_process_with_speed_perturbation(manifests, tmp_path):
    fb = tmp_path / "fbank"
    args = ["--src-dir", str(manifests), "--prefix", "librispeech", "--parts", "train-clean-5", "dev-clean-2",
            "--out-dir", str(fb), "--speed-perturb", "true"]
    assert compute_features.main(args) == 0
    train = _cuts(fb / "librispeech_cuts_train-clean-5.jsonl.gz")
    dev = _cuts(fb / "librispeech_cuts_dev-clean-2.jsonl.gz")
    assert len(train) == 3 * 5 and len(dev) == 4  # 3-fold perturbation of train only
    ids = {c.id for c in train}
    assert {"19-198-0000", "19-198-0000_sp0.9", "19-198-0000_sp1.1"} <= ids
    for c in list(train) + list(dev):
        f = c.load_features()
        assert f.shape == (c.num_frames, 64) and c.features.type == "nemo-mel"
        assert abs(c.num_frames - round(c.duration * 100)) <= 1
        assert np.isfinite(f).all()
        assert c.supervisions[0].text
    sp = {c.id: c for c in train}
    assert sp["19-198-0000_sp0.9"].duration == pytest.approx(1.0 / 0.9, abs=1e-3)
    resampled = sp["20-300-0000"]  # the 8 kHz wav
    assert resampled.sampling_rate == 16000 and resampled.num_frames == 100
    assert Path(train[0].features.storage_path).parent == fb / "librispeech_feats_train-clean-5"
    # dev: no dither -> recomputing gives identical features
    from qnet.features import NemoMelConfig, NemoMelExtractor

    c = dev[0]
    np.testing.assert_allclose(c.load_features(), NemoMelExtractor(NemoMelConfig()).extract(c.load_audio(), 16000), atol=0.02)
    # rerun does nothing
    stamp = (fb / "librispeech_cuts_dev-clean-2.jsonl.gz").stat().st_mtime_ns
    assert compute_features.main(args) == 0
    assert (fb / "librispeech_cuts_dev-clean-2.jsonl.gz").stat().st_mtime_ns == stamp


def test_split_jobs_combine_resume_and_bad_audio(manifests, tmp_path):
    fb = tmp_path / "fbank"
    # make one recording unreadable after preparation: the job skips that cut and goes on
    from lhotse import load_manifest

    rec = next(r for r in load_manifest(manifests / "librispeech_recordings_dev-clean-2.jsonl.gz") if r.id == "84-121-0001")
    Path(rec.sources[0].source).write_bytes(b"broken")
    base = ["--src-dir", str(manifests), "--prefix", "librispeech", "--parts", "dev-clean-2", "--out-dir", str(fb), "--nj", "3"]
    assert compute_features.main(base + ["--combine"]) == 1  # nothing computed yet
    assert compute_features.main(base + ["--split"]) == 0
    for j in (1, 2, 3):
        assert compute_features.main(base + ["--job", str(j)]) == 0
    piece = fb / "librispeech_split_dev-clean-2" / "cuts.1.jsonl.gz"
    stamp = piece.stat().st_mtime_ns
    assert compute_features.main(base + ["--job", "1"]) == 0  # finished piece: skipped
    assert piece.stat().st_mtime_ns == stamp
    assert compute_features.main(base + ["--combine"]) == 0
    cuts = _cuts(fb / "librispeech_cuts_dev-clean-2.jsonl.gz")
    assert sorted(c.id for c in cuts) == ["84-121-0000", "84-121-0002", "84-121-0009"]
    skipped = "".join(p.read_text() for p in (fb / "librispeech_split_dev-clean-2").glob("skipped.*.txt"))
    assert "SKIP 84-121-0001" in skipped
    assert compute_features.main(base + ["--job", "4"]) == 1
    assert compute_features.main(["--src-dir", str(tmp_path), "--prefix", "x", "--parts", "p", "--out-dir", str(fb)]) == 1


def test_more_jobs_than_cuts(manifests, tmp_path):
    fb = tmp_path / "fbank"
    args = ["--src-dir", str(manifests), "--prefix", "librispeech", "--parts", "dev-clean-2", "--out-dir", str(fb),
            "--feature-type", "fbank", "--nj", "6"]
    assert compute_features.main(args + ["--split"]) == 0
    for j in range(1, 7):
        assert compute_features.main(args + ["--job", str(j)]) == 0
    assert compute_features.main(args + ["--combine"]) == 0
    cuts = _cuts(fb / "librispeech_cuts_dev-clean-2.jsonl.gz")
    assert len(cuts) == 4 and cuts[0].features.type == "kaldi-fbank" and cuts[0].num_features == 64


@pytest.mark.slow
def test_make_features_sh_with_run_pl(manifests, tmp_path):
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    for d in ("utils", "steps"):
        (recipe / d).symlink_to(REPO / d)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = ["steps/make_features.sh", "--cmd", "run.pl", "--nj", "2", "--prefix", "librispeech",
           "--parts", "train-clean-5 dev-clean-2", "--speed-perturb", "true", str(manifests), "data/fbank"]
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr
    fb = recipe / "data" / "fbank"
    assert len(_cuts(fb / "librispeech_cuts_train-clean-5.jsonl.gz")) == 15
    assert len(_cuts(fb / "librispeech_cuts_dev-clean-2.jsonl.gz")) == 4
    assert (fb / ".librispeech_train-clean-5.features.done").is_file()
    log = (fb / "log" / "feats_librispeech_train-clean-5.1.log").read_text()
    assert "# Ended (code 0)" in log
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and res.stdout.count("skipping") == 2
    # a part without manifests fails and leaves no marker
    res = subprocess.run(cmd[:8] + ["nope"] + cmd[9:], cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and not (fb / ".librispeech_nope.features.done").exists()
