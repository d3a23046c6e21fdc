"""Common Voice wrapper: fake tsv with wav and mp3 clips, broken clips, text normalization."""

import shutil
import subprocess
import sys
from pathlib import Path

import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import tone  # noqa: E402

from qnet.bin import prepare_commonvoice  # noqa: E402

HEADER = "client_id\tpath\tsentence\tup_votes\tdown_votes\tage\tgender\taccents\tvariant\tlocale\tsegment"


def _corpus(tmp_path, with_mp3: bool):
    clips = tmp_path / "cv" / "en" / "clips"
    clips.mkdir(parents=True)
    sf.write(str(clips / "c2.wav"), tone(1.0, rate=48000), 48000)
    (clips / "c3.mp3").write_bytes(b"not an mp3" * 50)
    (clips / "c5.wav").write_bytes(b"")
    rows = [HEADER,
            "u2\tc2.wav\tCafé au lait\t2\t0\ttwenties\tmale\t\t\ten\t",
            "u3\tc3.mp3\tbroken clip\t2\t0\t\t\t\t\ten\t",
            "u4\tc4.mp3\tmissing clip\t2\t0\t\t\t\t\ten\t",
            "u5\tc5.wav\tempty file\t2\t0\t\t\t\t\ten\t"]
    if with_mp3:
        sf.write(str(tmp_path / "a.wav"), tone(1.0, rate=48000), 48000)
        subprocess.run(["ffmpeg", "-loglevel", "error", "-y", "-i", str(tmp_path / "a.wav"), str(clips / "c1.mp3")], check=True)
        rows.append("u1\tc1.mp3\tHello, “world”!\t2\t0\t\t\t\t\ten\t")
    (tmp_path / "cv" / "en" / "train.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    (tmp_path / "cv" / "en" / "test.tsv").write_text("\n".join(rows[:2]) + "\n", encoding="utf-8")


def test_commonvoice_wrapper(tmp_path):
    from lhotse import load_manifest

    with_mp3 = shutil.which("ffmpeg") is not None
    _corpus(tmp_path, with_mp3)
    out = tmp_path / "out"
    assert prepare_commonvoice.main([str(tmp_path / "cv"), str(out), "--splits", "train", "test", "dev"]) == 0
    sups = {s.id: s for s in load_manifest(out / "commonvoice_supervisions_train.jsonl.gz")}
    assert sups["c2"].text == "cafe au lait" and sups["c2"].custom["orig_text"] == "Café au lait"
    if with_mp3:
        assert sups["c1"].text == "hello world"
    assert set(sups) == ({"c1", "c2"} if with_mp3 else {"c2"})
    recs = load_manifest(out / "commonvoice_recordings_train.jsonl.gz")
    for r in recs:
        assert r.sampling_rate == 16000 and r.load_audio().shape[0] == 1
        assert (tmp_path / "cv" / "en" / "clips") in Path(r.sources[0].source).parents
    report = (out / "commonvoice_train.report.txt").read_text()
    for needle in ("SKIP c3: bad-audio", "SKIP c4: no-audio", "SKIP c5: empty-audio", "FIX c2: text-normalized"):
        assert needle in report
    assert (out / "commonvoice_supervisions_test.jsonl.gz").is_file()
    assert not (out / ".commonvoice_staging").exists()
    assert prepare_commonvoice.main([str(tmp_path / "nope"), str(out)]) == 1


def test_clips_are_probed_over_num_jobs_processes(tmp_path, monkeypatch):
    """--num-jobs probes the clips in worker processes (a release has ~1M clips) with the same verdicts."""
    import concurrent.futures

    from qnet.corpus import commonvoice

    _corpus(tmp_path, with_mp3=False)
    clips = sorted((tmp_path / "cv" / "en" / "clips").iterdir()) + [tmp_path / "cv" / "en" / "clips" / "none.wav"]
    serial = commonvoice.probe_clips(clips, num_jobs=1)
    assert [e is None for e in serial] == [True, False, False, False]  # c2.wav ok; c3, c5, none bad
    pools = []

    class CountingPool(concurrent.futures.ProcessPoolExecutor):
        def __init__(self, n):
            pools.append(n)
            super().__init__(n)

    monkeypatch.setattr(commonvoice, "ProcessPoolExecutor", CountingPool)
    assert commonvoice.probe_clips(clips, num_jobs=2) == serial
    assert pools == [2]
    out = tmp_path / "out"
    assert prepare_commonvoice.main([str(tmp_path / "cv"), str(out), "--splits", "train", "-j", "2"]) == 0
    assert pools == [2, 2]
    assert "SKIP c3: bad-audio" in (out / "commonvoice_train.report.txt").read_text()
