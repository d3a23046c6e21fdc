"""LibriSpeech preparation: clean and deliberately broken corpora, reports, reruns."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import make_librispeech  # noqa: E402

from qnet.bin import prepare_librispeech  # noqa: E402
from qnet.corpus.librispeech import find_parts  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _load(out, kind, part):
    from lhotse import load_manifest

    return load_manifest(out / f"librispeech_{kind}_{part}.jsonl.gz")


def test_broken_corpus_is_reported_and_rest_prepared(tmp_path):
    expected = make_librispeech(tmp_path, broken=True)
    out = tmp_path / "manifests"
    rc = prepare_librispeech.main([str(tmp_path / "LibriSpeech"), str(out), "--parts", "train-clean-5", "dev-clean-2", "no-such-part"])
    assert rc == 0
    for part, ids in expected.items():
        sups = _load(out, "supervisions", part)
        recs = _load(out, "recordings", part)
        assert sorted(s.id for s in sups) == ids
        assert sorted(r.id for r in recs) == ids
        assert all(s.text == s.text.lower() and s.text for s in sups)
    sups = {s.id: s for s in _load(out, "supervisions", "train-clean-5")}
    assert sups["20-300-0008"].text == "naive cafe done"  # ï é transliterated, ½ dropped
    assert sups["19-198-0001"].text == "hello world number two"
    recs = {r.id: r for r in _load(out, "recordings", "train-clean-5")}
    r = recs["20-300-0000"]  # 8 kHz wav -> resampled on load
    assert r.sampling_rate == 16000 and r.transforms and r.load_audio().shape == (1, 16000)
    assert Path(r.sources[0].source).is_absolute()

    report = (out / "librispeech_train-clean-5.report.txt").read_text()
    for needle in (
        "SKIP 20-300-0001: bad-audio",  # truncated flac
        "SKIP 20-300-0002: empty-audio",  # zero samples
        "SKIP 20-300-0003: bad-audio",  # not audio
        "SKIP 20-300-0004: no-audio",  # transcript without audio
        "SKIP 20-300-0005: no-transcript",  # audio without transcript
        "SKIP 20-300-0006: empty-text",
        "SKIP 20-300-0007: bad-encoding",
        "SKIP 20-300-0009: too-long",
        "FIX 20-300-0000: resampled",
        "FIX 20-300-0008: text-normalized",
        "# summary",
        "skipped 8",
    ):
        assert needle in report, needle
    assert "20-300-0007: no-transcript" not in report  # reported once, as bad-encoding
    dev_report = (out / "librispeech_dev-clean-2.report.txt").read_text()
    assert "FLAG 84-121-0009: too-long" in dev_report
    assert not (out / "librispeech_recordings_no-such-part.jsonl.gz").exists()
    assert not [p for p in os.listdir(out) if p.endswith(".tmp.jsonl.gz") or ".tmp" in p]


def test_rerun_does_nothing_and_auto_parts(tmp_path):
    make_librispeech(tmp_path)
    corpus, out = tmp_path / "LibriSpeech", tmp_path / "m"
    assert find_parts(corpus) == ["dev-clean-2", "train-clean-5"]
    assert prepare_librispeech.main([str(corpus), str(out)]) == 0
    stamps = {p: p.stat().st_mtime_ns for p in out.iterdir()}
    assert len(stamps) == 6  # 2 parts x (recordings, supervisions, report)
    assert prepare_librispeech.main([str(corpus), str(out), "--parts", "auto"]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.iterdir()} == stamps


def test_nothing_usable_fails_and_writes_no_manifest(tmp_path):
    part = tmp_path / "LibriSpeech" / "train-clean-5" / "1" / "2"
    part.mkdir(parents=True)
    (part / "1-2.trans.txt").write_text("1-2-0000 NO AUDIO ANYWHERE\n")
    out = tmp_path / "m"
    assert prepare_librispeech.main([str(tmp_path / "LibriSpeech"), str(out)]) == 1
    assert not (out / "librispeech_supervisions_train-clean-5.jsonl.gz").exists()
    assert "SKIP 1-2-0000: no-audio" in (out / "librispeech_train-clean-5.report.txt").read_text()
    assert prepare_librispeech.main([str(tmp_path / "nope"), str(out)]) == 1


def test_parallel_scan_and_shell_wrapper(tmp_path):
    expected = make_librispeech(tmp_path, broken=True)
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    for d in ("utils", "steps", "local"):
        (recipe / d).symlink_to(REPO / d)
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = ["local/librispeech_data_prep.sh", "--nj", "2", str(tmp_path / "LibriSpeech"), "data/manifests"]
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = recipe / "data" / "manifests"
    for part, ids in expected.items():
        assert (out / f".librispeech_{part}.done").is_file()
        assert sorted(s.id for s in _load(out, "supervisions", part)) == ids
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "manifests done for" in res.stdout
    # an existing copy is used in place of a download
    res = subprocess.run(["local/librispeech_download.sh", "--mini", "true", "--corpus-dir", str(tmp_path / "LibriSpeech"), "dl"],
                         cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert (recipe / "dl" / "LibriSpeech" / "train-clean-5").is_dir()
    res = subprocess.run(["local/librispeech_download.sh", "--corpus-dir", str(tmp_path / "LibriSpeech"), "dl"],
                         cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 1 and "parts missing" in res.stderr  # full corpus asked, mini copy given


@pytest.mark.parametrize("bad_arg", [["--parts"], ["-j", "x"]])
def test_cli_rejects_bad_arguments(bad_arg, tmp_path):
    with pytest.raises(SystemExit):
        prepare_librispeech.main([str(tmp_path), str(tmp_path / "o")] + bad_arg)
