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


def _fake_part(path, part, n, speed_perturb=True):
    """A cut manifest like the features stage writes for a train part: n cuts, then (speed_perturb) the
    0.9 and 1.1 copies, each factor one contiguous block."""
    from lhotse import CutSet, MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    cuts = []
    for i in range(n):
        cid = f"{part}-{i:05d}"
        rec = Recording(id=cid, sources=[AudioSource(type="file", channels=[0], source="/nonexistent.flac")],
                        sampling_rate=16000, num_samples=16000 * (2 + i % 7), duration=2.0 + i % 7)
        sup = SupervisionSegment(id=cid, recording_id=cid, start=0, duration=rec.duration, text="hello world")
        cuts.append(MonoCut(id=cid, start=0, duration=rec.duration, channel=0, recording=rec, supervisions=[sup]))
    cuts = CutSet.from_cuts(cuts)
    if speed_perturb:
        cuts = cuts + cuts.perturb_speed(0.9) + cuts.perturb_speed(1.1)
    cuts.to_file(path)
    return path


def _mix(batch):
    """(parts, speed factors) present in a batch of cuts."""
    parts = {c.id.split("-")[0] for c in batch}
    factors = {c.id.rsplit("_sp", 1)[1] if "_sp" in c.id else "1.0" for c in batch}
    return parts, factors


def test_combined_training_cuts_mix_parts_and_speed_factors(tmp_path):
    """The train-all file is a shuffled union, so one sampler batch mixes parts and perturbation factors
    even when the sampler's shuffle buffer is small next to the corpus (20k of 843k cuts at LibriSpeech size)."""
    from lhotse import CutSet

    from qnet.bin import combine_cuts
    from qnet.data import load_cuts, sampler_classes

    parts = [_fake_part(tmp_path / f"{p}.jsonl.gz", p, 200) for p in ("clean", "other")]
    out = tmp_path / "train-all-shuf.jsonl.gz"
    # 1200 cuts through buckets of 150: several buckets, as at scale
    assert combine_cuts.main([str(out), *map(str, parts), "--bucket-cuts", "150", "--seed", "3"]) == 0
    ids_in = [c.id for p in parts for c in CutSet.from_file(p)]
    ids_out = [c.id for c in CutSet.from_file(out)]
    assert sorted(ids_out) == sorted(ids_in) and ids_out != ids_in
    assert not list(tmp_path.glob(".*buckets*"))  # temporary buckets removed

    dynamic, _ = sampler_classes()

    def first_batch(cuts):
        sampler = dynamic(cuts, max_duration=100.0, num_buckets=2, shuffle=True, seed=0,
                          buffer_size=100, shuffle_buffer_size=100, num_cuts_for_bins_estimate=100)
        sampler.set_epoch(1)
        return next(iter(sampler))

    mixed_parts, mixed_factors = _mix(first_batch(load_cuts(out)))
    assert mixed_parts == {"clean", "other"} and mixed_factors == {"1.0", "0.9", "1.1"}
    # What training read before: the parts one after the other, each factor a block -> no mixing.
    old_parts, old_factors = _mix(first_batch(load_cuts(parts)))
    assert old_parts == {"clean"} and old_factors == {"1.0"}

    # Same seed, same order; another seed, another order; no shuffle keeps the order.
    again = tmp_path / "again.jsonl.gz"
    assert combine_cuts.main([str(again), *map(str, parts), "--bucket-cuts", "150", "--seed", "3"]) == 0
    assert [c.id for c in CutSet.from_file(again)] == ids_out
    assert combine_cuts.main([str(again), *map(str, parts), "--shuffle", "false"]) == 0
    assert [c.id for c in CutSet.from_file(again)] == ids_in
    # a repeated cut id or a missing input fails and writes nothing
    bad = tmp_path / "bad.jsonl.gz"
    assert combine_cuts.main([str(bad), str(parts[0]), str(parts[0])]) == 1
    assert combine_cuts.main([str(bad), str(tmp_path / "none.jsonl.gz")]) == 1
    assert not bad.exists()


def _sbatch_example_paths():
    """The data/ and exp/ paths named in conf/train_multinode.sbatch's submission example."""
    import re

    text = (REPO / "conf" / "train_multinode.sbatch").read_text()
    example = text[text.index("#   sbatch "):text.index("(--ntasks-per-node")]
    return re.findall(r"(?<![\w/.-])((?:data|exp)/[\w./-]+)", example)


def test_multinode_sbatch_names_what_the_librispeech_recipe_writes(tmp_path):
    """Stages 0-3 of egs/librispeech on a tiny corpus with two train parts: stage 2 writes the combined,
    shuffled train-all cuts, and every path of the sbatch example is one the recipe produces."""
    from lhotse import CutSet

    from corpus_helpers import tone, write_flac

    corpus = tmp_path / "corpus" / "LibriSpeech"
    parts = {"train-clean-100": "19", "train-clean-360": "20", "dev-clean": "84", "test-clean": "61"}
    for part, spk in parts.items():
        d = corpus / part / spk / "100"
        d.mkdir(parents=True)
        lines = []
        for i in range(3):
            write_flac(d / f"{spk}-100-{i:04d}.flac", tone(1.0 + 0.1 * i, seed=i))
            lines.append(f"{spk}-100-{i:04d} HELLO WORLD NUMBER {'ONE TWO THREE'.split()[i]}\n")
        (d / f"{spk}-100.trans.txt").write_text("".join(lines))
    lm_text = tmp_path / "lm.txt"
    lm_text.write_text("hello world\nnumber one two three\n")
    data, exp = tmp_path / "data", tmp_path / "exp"
    res = subprocess.run(
        ["./run.sh", "--stage", "0", "--stop-stage", "3", "--nj", "1", "--corpus-dir", str(corpus),
         "--dl-dir", str(tmp_path / "dl"), "--data-dir", str(data), "--exp-dir", str(exp),
         "--train-parts", "train-clean-100 train-clean-360", "--dev-parts", "dev-clean", "--test-parts", "test-clean",
         "--lm-source", "lmplz", "--lm-text", str(lm_text)],
        cwd=REPO / "egs" / "librispeech", capture_output=True, text=True, timeout=900)
    assert res.returncode == 0, (res.stdout + res.stderr)[-4000:]

    combined = CutSet.from_file(data / "fbank" / "librispeech_cuts_train-all-shuf.jsonl.gz")
    ids = sorted(c.id for c in combined)
    assert ids == sorted(f"{spk}-100-{i:04d}{sp}" for spk in ("19", "20") for i in range(3) for sp in ("", "_sp0.9", "_sp1.1"))

    paths = _sbatch_example_paths()
    assert len(paths) == 4, paths
    model_dir = res.stdout.split("experiments in ", 1)[1].split()[0]  # run.sh logs its stage-5 folder
    for path in paths:
        local = tmp_path / path
        if path.startswith("exp/"):
            assert str(local) == model_dir, (path, model_dir)
        else:
            assert local.exists(), f"{path} (conf/train_multinode.sbatch) is not written by egs/librispeech/run.sh"
