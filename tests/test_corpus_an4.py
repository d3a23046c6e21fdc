"""AN4 preparation (an4_sphere layout): list parsing, dev split by speaker, bad items, download path."""

import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import tone, write_sphere  # noqa: E402

from qnet.bin import download_an4, prepare_an4  # noqa: E402
from qnet.corpus.an4 import (  # noqa: E402
    An4LayoutError,
    parse_transcription_line,
    pick_dev_speakers,
    verify_archive,
)
from qnet.corpus.sphere import read_sphere_pcm  # noqa: E402

TRAIN_SPEAKERS = ["fash", "fbbh", "mblb", "mcen", "mdxn", "mjgm"]
TEST_SPEAKERS = ["fcaw", "marh"]
WORDS = ["YES", "NO", "RUBOUT G M E F", "ENTER FIVE", "H I N I C H", "ERASE C Q Q F SEVEN"]


def make_an4(root: Path, utts_per_speaker: int = 3) -> Path:
    """A small corpus in the an4_sphere layout: <root>/an4/{etc,wav}; returns <root>/an4."""
    an4 = root / "an4"
    for name, sub, speakers, markers in (("train", "an4_clstk", TRAIN_SPEAKERS, True),
                                         ("test", "an4test_clstk", TEST_SPEAKERS, False)):
        fileids, trans = [], []
        for si, spk in enumerate(speakers):
            for k in range(utts_per_speaker):
                uid = f"an{100 + k}-{spk}-b"
                write_sphere(an4 / "wav" / sub / spk / f"{uid}.sph", tone(0.6 + 0.1 * k, seed=si * 10 + k))
                fileids.append(f"{sub}/{spk}/{uid}")
                words = WORDS[(si + k) % len(WORDS)]
                trans.append(f"<s> {words} </s> ({uid})" if markers else f"{words} ({uid})")
        (an4 / "etc").mkdir(parents=True, exist_ok=True)
        (an4 / "etc" / f"an4_{name}.fileids").write_text("\n".join(fileids) + "\n")
        (an4 / "etc" / f"an4_{name}.transcription").write_text("\n".join(trans) + "\n")
    return an4


def _load(out: Path, kind: str, part: str):
    from lhotse import load_manifest

    return load_manifest(out / f"an4_{kind}_{part}.jsonl.gz")


def test_transcription_lines():
    assert parse_transcription_line("<s> RUBOUT G M E F </s> (an251-fash-b)") == ("an251-fash-b", "RUBOUT G M E F")
    assert parse_transcription_line("ERASE C Q Q F SEVEN (an407-fcaw-b)") == ("an407-fcaw-b", "ERASE C Q Q F SEVEN")
    assert parse_transcription_line("<s> <sil> YES </s> (x)") == ("x", "YES")
    assert parse_transcription_line("<s> no id here </s>") is None


def test_dev_speakers_are_deterministic_and_spread():
    speakers = [f"s{i:02d}" for i in range(74)]
    picked = pick_dev_speakers(list(reversed(speakers)), 8)
    assert picked == pick_dev_speakers(speakers, 8) and len(set(picked)) == 8
    idx = [speakers.index(s) for s in picked]
    assert idx == sorted(idx) and idx[0] < 10 and idx[-1] > 64  # spread over the whole list
    assert pick_dev_speakers(speakers, 0) == []
    with pytest.raises(ValueError, match="cannot hold out"):
        pick_dev_speakers(speakers[:3], 3)


def test_prepare_clean_corpus_splits_by_speaker(tmp_path):
    an4 = make_an4(tmp_path / "corpus")
    out = tmp_path / "manifests"
    assert prepare_an4.main([str(an4.parent), str(out), "--num-dev-speakers", "2"]) == 0  # parent folder works too
    dev_speakers = (out / "an4_dev_speakers.txt").read_text().split()
    assert dev_speakers == pick_dev_speakers(TRAIN_SPEAKERS, 2)
    sups = {p: _load(out, "supervisions", p) for p in ("train", "dev", "test")}
    spk = {p: {s.speaker for s in sups[p]} for p in sups}
    assert spk["dev"] == set(dev_speakers)
    assert spk["train"] == set(TRAIN_SPEAKERS) - set(dev_speakers)
    assert spk["test"] == set(TEST_SPEAKERS)
    assert (len(sups["train"]), len(sups["dev"]), len(sups["test"])) == (12, 6, 6)
    texts = {s.id: s.text for p in sups for s in sups[p]}
    assert texts["an100-fash-b"] == "yes" and texts["an101-fcaw-b"] == "no"  # markers gone, lower case
    assert texts["an102-fash-b"] == "rubout g m e f"
    # audio is read through the .nist link, in process, and equals the SPHERE samples
    rec = _load(out, "recordings", "test")["an100-marh-b"]
    assert rec.sources[0].source.endswith(".nist") and rec.duration == pytest.approx(0.6)
    samples = rec.load_audio()
    np.testing.assert_allclose(samples, read_sphere_pcm(an4 / "wav/an4test_clstk/marh/an100-marh-b.sph"), atol=1e-6)
    report = (out / "an4_train.report.txt").read_text()
    assert "kept 12 utterances" in report and "skipped 0" in report


def test_bad_items_are_skipped_and_reported(tmp_path):
    an4 = make_an4(tmp_path)
    wav = an4 / "wav" / "an4_clstk"
    (wav / "fash" / "an100-fash-b.sph").unlink()  # no audio
    p = wav / "fbbh" / "an100-fbbh-b.sph"
    p.write_bytes(p.read_bytes()[:2000])  # truncated
    write_sphere(wav / "mblb" / "an100-mblb-b.sph", tone(0.5), coding="pcm,embedded-shorten-v2.00")
    (wav / "mcen" / "an100-mcen-b.sph").write_bytes(b"RIFF not a sphere file")
    (wav / "mdxn" / "an100-mdxn-b.sph").write_bytes(b"")
    trans = an4 / "etc" / "an4_train.transcription"
    lines = trans.read_text().splitlines()
    lines = ["<s> </s> (an101-fash-b)" if ln.endswith("(an101-fash-b)") else ln for ln in lines]  # empty text
    lines.append("<s> GO </s> (an999-fash-b)")  # transcript without a fileids line
    lines.append("<s> a line without an id </s>")
    lines.append(lines[-3])  # duplicate transcript line
    trans.write_text("\n".join(lines) + "\n")
    fileids = an4 / "etc" / "an4_train.fileids"
    fileids.write_text(fileids.read_text() + "an4_clstk/mjgm/an777-mjgm-b\nbroken-line\n")  # no transcript; malformed
    out = tmp_path / "manifests"
    assert prepare_an4.main([str(an4), str(out), "--num-dev-speakers", "1"]) == 0
    report = "".join((out / f"an4_{p}.report.txt").read_text() for p in ("train", "dev"))
    for reason in ("no-audio", "bad-audio", "empty-audio", "empty-text", "no-fileid", "bad-transcript-line",
                   "duplicate-id", "no-transcript", "bad-fileid-line"):
        assert f": {reason}: " in report, reason
    assert "truncated" in report and "embedded-shorten" in report and "NIST_1A" in report
    kept = {s.id for p in ("train", "dev") for s in _load(out, "supervisions", p)}
    for bad in ("an100-fash-b", "an100-fbbh-b", "an100-mblb-b", "an100-mcen-b", "an100-mdxn-b", "an101-fash-b"):
        assert bad not in kept
    assert len(kept) == 18 - 6
    # a rerun skips the finished parts
    assert prepare_an4.main([str(an4), str(out), "--num-dev-speakers", "1"]) == 0


def test_max_speakers_and_layout_errors(tmp_path):
    an4 = make_an4(tmp_path)
    out = tmp_path / "m"
    assert prepare_an4.main([str(an4), str(out), "--max-speakers", "3", "--num-dev-speakers", "1"]) == 0
    train_like = {s.speaker for p in ("train", "dev") for s in _load(out, "supervisions", p)}
    assert train_like == set(sorted(TRAIN_SPEAKERS)[:3])
    assert {s.speaker for s in _load(out, "supervisions", "test")} == set(TEST_SPEAKERS)  # only 2 there
    assert prepare_an4.main([str(tmp_path / "nowhere"), str(tmp_path / "x")]) == 1
    assert prepare_an4.main([str(an4), str(tmp_path / "y"), "--dev-speakers", "nobody"]) == 1


def _archive(src: Path, dest: Path) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        tar.add(src, arcname="an4")
    return dest


def test_download_verifies_and_unpacks(tmp_path):
    an4 = make_an4(tmp_path / "src", utts_per_speaker=1)
    good = _archive(an4, tmp_path / "good.tar.gz")
    assert verify_archive(good, min_sphere_files=8) == 8
    with pytest.raises(An4LayoutError, match="only 8 .sph files"):
        verify_archive(good)
    truncated = tmp_path / "truncated.tar.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(An4LayoutError, match="not a complete"):
        verify_archive(truncated, min_sphere_files=8)
    # the first URL gives a broken archive, the second (the mirror) a good one: the mirror is used
    dl = tmp_path / "download"
    from qnet.corpus.an4 import download_an4 as fetch

    corpus = fetch(dl, [truncated.as_uri(), (tmp_path / "missing.tar.gz").as_uri(), good.as_uri()], min_sphere_files=8)
    assert corpus == (dl / "an4").resolve() and (corpus / "etc" / "an4_train.fileids").is_file()
    assert not list(dl.glob("*.part"))
    with pytest.raises(An4LayoutError, match="could not download AN4"):
        fetch(tmp_path / "dl2", [(tmp_path / "missing.tar.gz").as_uri()], min_sphere_files=8)
    assert download_an4.main([str(tmp_path / "dl3"), "--url", (tmp_path / "missing.tar.gz").as_uri()]) == 1
