"""WSJ preparation from LDC-style discs and flattened copies; SPHERE parsing; transcript rules."""

import gzip
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import lzw_compress, make_wsj, tone, write_sphere  # noqa: E402

from qnet.bin import prepare_wsj  # noqa: E402
from qnet.corpus.sphere import SphereError, parse_sphere_header, read_sphere_header, read_sphere_pcm  # noqa: E402
from qnet.corpus.wsj import WsjCorpus, WsjLayoutError, normalize_wsj_transcript, read_ndx, wsj_text_for_model  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SETS = ("train_si284", "test_dev93", "test_eval92")


def _load(out, kind, s):
    from lhotse import load_manifest

    return load_manifest(out / f"wsj_{kind}_{s}.jsonl.gz")


# ----------------------------------------------------------------------------- SPHERE


def test_sphere_header_and_pcm_both_byte_orders(tmp_path):
    x = tone(0.5)
    for fmt in ("01", "10"):
        p = tmp_path / f"x{fmt}.wv1"
        write_sphere(p, x, byte_format=fmt, extra="speaker_id -s3 abc\nprompt -s11 hello world")
        h = read_sphere_header(p)
        assert (h.sample_count, h.sample_rate, h.channel_count, h.sample_n_bytes) == (len(x), 16000, 1, 2)
        assert h.sample_byte_format == fmt and h.sample_coding == "pcm" and h.is_pcm and h.header_size == 1024
        assert h.fields["prompt"] == "hello world"  # -sN strings may hold spaces
        ours = read_sphere_pcm(p)
        assert ours.shape == (1, len(x))
        np.testing.assert_array_equal((ours[0] * 32768).astype(np.int16), x)
        theirs, rate = sf.read(str(p), dtype="int16")  # what lhotse's soundfile backend decodes
        np.testing.assert_array_equal(theirs, x)


def test_sphere_errors_name_the_file(tmp_path):
    p = tmp_path / "bad.wv1"
    p.write_bytes(b"RIFF....")
    with pytest.raises(SphereError, match="bad.wv1.*NIST_1A"):
        read_sphere_header(p)
    with pytest.raises(SphereError, match="end_head"):
        parse_sphere_header(b"NIST_1A\n   1024\nsample_count -i 5\n" + b" " * 1000, "x")
    write_sphere(p, tone(1.0))
    p.write_bytes(p.read_bytes()[:3000])
    with pytest.raises(SphereError, match="truncated"):
        read_sphere_pcm(p)
    write_sphere(p, tone(0.1), coding="pcm,embedded-shorten-v2.00")
    h = read_sphere_header(p)
    assert h.is_compressed and not h.is_pcm
    with pytest.raises(SphereError, match="sph2pipe"):
        read_sphere_pcm(p)


# ----------------------------------------------------------------------------- transcripts


@pytest.mark.parametrize(
    "raw, kaldi, model",
    [
        ("The [door_slam] price rose", "THE <NOISE> PRICE ROSE", "the price rose"),
        ("[<breath] a [lip_smack>] b [loud/] c [/loud] d ~ e .", "A B C D E", "a b c d e"),
        ("<uh> said %PERCENT .POINT --DASH", "UH SAID PERCENT POINT -DASH", "uh said percent point dash"),
        ("a \\'quote ,COMMA \"DOUBLE-QUOTE 'SINGLE-QUOTE", "A 'QUOTE ,COMMA \"DOUBLE-QUOTE 'SINGLE-QUOTE",
         "a quote comma double quote single quote"),
        ("*mispronounced* lengthened: 'em", "*MISPRONOUNCED* LENGTHENED: 'EM", "mispronounced lengthened 'em"),
    ],
)
def test_wsj_transcript_normalization(raw, kaldi, model):
    from qnet.tokens import normalize_text

    assert normalize_wsj_transcript(raw) == kaldi
    assert normalize_text(wsj_text_for_model(kaldi))[0] == model


def test_ndx_parsing(tmp_path):
    p = tmp_path / "x.ndx"
    p.write_text(";comment\n11_14_1:wsj0/si_et_20/440/440c0201\n13_34_1: /wsj1/si_dt_20/4k0/4K0C0301.WV1\nbroken\n")
    entries, bad = read_ndx(p)
    assert [(e.utt_id, e.disc, e.rel_path) for e in entries] == [
        ("440c0201", "11-14.1", "wsj0/si_et_20/440/440c0201.wv1"),
        ("4k0c0301", "13-34.1", "wsj1/si_dt_20/4k0/4K0C0301.WV1"),
    ]
    assert len(bad) == 1 and "broken" in bad[0]


# ----------------------------------------------------------------------------- whole corpus


def test_broken_disc_layout(tmp_path):
    expected = make_wsj(tmp_path, broken=True)
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out)]) == 0
    for s in SETS:
        sups = _load(out, "supervisions", s)
        assert sorted(x.id for x in sups) == expected[s], s
        recs = _load(out, "recordings", s)
        for r in recs:
            assert r.load_audio().shape == (1, r.num_samples)
    sups = {s.id: s for s in _load(out, "supervisions", "train_si284")}
    assert sups["011c0200"].text == "the comma uh price rose percent"
    assert sups["011c0200"].custom["kaldi_text"] == "THE <NOISE> ,COMMA UH PRICE ROSE PERCENT"
    assert sups["011c0200"].speaker == "011"
    assert sups["46ac0201"].text == "a double quote word single quote naive"  # upper-case disc files found
    assert "401c0200" not in sups  # Kaldi's si_tr_s/401 filter
    rec = {r.id: r for r in _load(out, "recordings", "train_si284")}["012c0204"]
    assert rec.transforms and rec.sampling_rate == 16000  # 8 kHz SPHERE resampled on load
    report = (out / "wsj_train_si284.report.txt").read_text()
    for needle in ("SKIP 012c0201: no-transcript", "SKIP 012c0202: bad-audio", "SKIP 012c0203: empty-audio",
                   "FIX 012c0204: resampled", "SKIP 012c0205: too-long", "SKIP 012c0206: bad-audio",
                   "SKIP 012c0207: empty-text", "SKIP 012c0208: bad-encoding", "SKIP 012c0209: no-audio",
                   "SKIP 099c0201: missing-dir", "bad-index-line", "FIX 46ac0201: text-normalized"):
        assert needle in report, needle
    assert "FLAG 4k0c0302: too-long" in (out / "wsj_test_dev93.report.txt").read_text()
    assert (out / "wsj_lm_text.txt").read_text() == "the price rose\nstocks fell 's\na third line\n"
    with gzip.open(out / "wsj_ldc_lm" / "bcb20onp.arpa.gz", "rt") as f:
        arpa = f.read()
    assert arpa.startswith("\\data\\\n") and "-1.0 the" in arpa
    # rerun: nothing changes
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out)]) == 0
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_flattened_layout_and_lzw(tmp_path):
    expected = make_wsj(tmp_path, flat=True)
    out = tmp_path / "out"
    assert prepare_wsj.main(["--discs", str(tmp_path / "CORPUS"), str(out), "--sets", "train_si84", *SETS]) == 0
    for s in SETS:
        assert sorted(x.id for x in _load(out, "supervisions", s)) == expected[s]
    assert sorted(x.id for x in _load(out, "supervisions", "train_si84")) == ["011c0200", "011c0201"]
    # our test .z files really are LZW that gzip decodes
    z = tmp_path / "t.z"
    z.write_bytes(lzw_compress(b"hello lzw\n" * 500))
    assert subprocess.run(["gzip", "-dc", str(z)], capture_output=True).stdout == b"hello lzw\n" * 500
    # the wsj0/wsj1 folders themselves work too
    corpus = WsjCorpus([tmp_path / "CORPUS" / "wsj0", tmp_path / "CORPUS" / "wsj1"])
    assert corpus.resolve("11-2.1", "WSJ0/SI_TR_S/011/011C0200.WV1") is not None


def test_bad_layout_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "empty"), str(tmp_path / "out")]) == 1
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "missing"), str(tmp_path / "out")]) == 1


def _shorten_corpus(tmp_path):
    """Disc layout whose audio claims to be shorten-compressed (samples are really PCM)."""
    make_wsj(tmp_path)
    for p in tmp_path.rglob("*"):
        if p.suffix.lower() == ".wv1":
            h = read_sphere_header(p)
            samples = np.frombuffer(p.read_bytes()[1024:], ">i2" if h.sample_byte_format == "10" else "<i2")
            write_sphere(p, samples, coding="pcm,embedded-shorten-v2.00")


def _hide_system_sph2pipe(monkeypatch):
    """PATH without any folder holding a real sph2pipe."""
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if not (Path(d) / "sph2pipe").exists()]
    monkeypatch.setenv("PATH", os.pathsep.join(dirs))


def test_shorten_without_sph2pipe_fails_early(tmp_path, monkeypatch):
    _shorten_corpus(tmp_path)
    _hide_system_sph2pipe(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out)]) == 1
    assert not list(out.glob("wsj_*_train_si284.jsonl.gz"))


FAKE_SPH2PIPE = """#!{python}
# Test stand-in for sph2pipe: `sph2pipe -f wav -p FILE` for files whose samples are really 16-bit PCM.
import io, sys
import numpy as np, soundfile as sf
path = sys.argv[-1]
data = open(path, "rb").read()
head = data[:1024].decode("ascii")
rate = int(head.split("sample_rate -i ")[1].split()[0])
x = np.frombuffer(data[1024:], "<i2")
buf = io.BytesIO()
sf.write(buf, x, rate, format="WAV", subtype="PCM_16")
sys.stdout.buffer.write(buf.getvalue())
"""


def test_shorten_goes_through_sph2pipe_command(tmp_path, monkeypatch):
    _shorten_corpus(tmp_path)
    tools = tmp_path / "home" / ".lhotse" / "tools" / "sph2pipe-2.5"
    tools.mkdir(parents=True)
    fake = tools / "sph2pipe"
    fake.write_text(FAKE_SPH2PIPE.format(python=sys.executable))
    fake.chmod(fake.stat().st_mode | stat.S_IXUSR)
    _hide_system_sph2pipe(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out), "--sets", "test_eval92"]) == 0
    (rec,) = list(_load(out, "recordings", "test_eval92"))
    assert rec.sources[0].type == "command" and str(fake) in rec.sources[0].source
    audio = rec.load_audio()
    assert audio.shape == (1, rec.num_samples)
    np.testing.assert_allclose(audio[0], tone(1.3) / 32768.0, atol=1e-6)


def test_shell_wrapper(tmp_path):
    expected = make_wsj(tmp_path)
    recipe = tmp_path / "recipe"
    recipe.mkdir()
    (recipe / "utils").symlink_to(REPO / "utils")
    (recipe / "local").symlink_to(REPO / "local")
    env = dict(os.environ, PYTHONPATH=str(REPO), PATH=f"{Path(sys.executable).parent}:{os.environ['PATH']}")
    cmd = ["local/wsj_data_prep.sh", "--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), "data/manifests"]
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    out = recipe / "data" / "manifests"
    assert (out / ".wsj.done").is_file()
    assert sorted(x.id for x in _load(out, "supervisions", "test_dev93")) == expected["test_dev93"]
    res = subprocess.run(cmd, cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode == 0 and "nothing to do" in res.stdout
    shutil.rmtree(out)
    res = subprocess.run(cmd[:2] + [str(tmp_path / "nowhere")] + cmd[3:], cwd=recipe, env=env, capture_output=True, text=True)
    assert res.returncode != 0 and not (out / ".wsj.done").exists()


# ----------------------------------------------------------------------------- real-disc quirks


def test_word_fragments_keep_the_spoken_part(tmp_path):
    # `com(pany)-`: "com" was spoken, "pany" was not; `-(in)come`: "come" was spoken
    kaldi = normalize_wsj_transcript("The com(pany)- company's -(in)come (huh)- rose")
    assert kaldi == "THE COM(PANY)- COMPANY'S -(IN)COME (HUH)- ROSE"  # Kaldi's text is left as Kaldi has it
    from qnet.tokens import normalize_text

    assert normalize_text(wsj_text_for_model(kaldi))[0] == "the com company's come rose"
    expected = make_wsj(tmp_path)
    dot = next(tmp_path.rglob("011c0200.dot"))
    dot.write_text("The com(pany)- company's -(in)come rose (011c0200)\nA plain one (011c0201)\n")
    out = tmp_path / "out"
    args = ["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out), "--sets", "train_si284"]
    assert prepare_wsj.main(args) == 0
    sups = {s.id: s for s in _load(out, "supervisions", "train_si284")}
    assert sorted(sups) == expected["train_si284"]
    assert sups["011c0200"].text == "the com company's come rose"
    report = (out / "wsj_train_si284.report.txt").read_text()
    assert "FIX 011c0200: word-fragment: 2 fragments" in report
    assert "FIX  word-fragment: 1\n" in report  # utterances with fragments, in the summary
    assert "#   word fragments: 2\n" in report  # and the fragments themselves


def _rename_discs_with_underscores(root):
    for d in sorted(root.rglob("1[13]-*.1"), reverse=True):
        d.rename(d.with_name(d.name.replace("-", "_")))


def _discs_one_level_deeper(root):
    for sub, ldc, csr in (("wsj0", "LDC93S6B", "csr_1"), ("wsj1", "LDC94S13B", "csr_2_comp")):
        (root / ldc).mkdir()
        (root / sub).rename(root / ldc / csr)


def _flat_copy_of_merged_discs(root):
    """Every disc's contents copied into one folder per corpus: CORPUS/WSJ0/wsj0/si_tr_s/... (upper-case
    top folders, as on some copies)."""
    for sub in ("wsj0", "wsj1"):
        (root / "CORPUS" / sub).rename(root / "CORPUS" / "tmp")
        (root / "CORPUS" / sub.upper()).mkdir()
        (root / "CORPUS" / "tmp").rename(root / "CORPUS" / sub.upper() / sub)


LAYOUTS = ["underscore", "extra-level", "flat-pair", "flat-same-dir-twice", "flat-merged-discs"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_disc_layouts_seen_in_the_wild(tmp_path, layout):
    expected = make_wsj(tmp_path, flat=layout.startswith("flat"))
    if layout == "underscore":  # 13_34.1, as wav2letter's scripts name them
        _rename_discs_with_underscores(tmp_path)
        dirs = [tmp_path / "wsj0", tmp_path / "wsj1"]
    elif layout == "extra-level":  # LDC93S6B/csr_1/11-1.1/...
        _discs_one_level_deeper(tmp_path)
        dirs = [tmp_path / "LDC93S6B", tmp_path / "LDC94S13B"]
    elif layout == "flat-pair":  # a merged copy: CORPUS/wsj0/..., CORPUS/wsj1/...
        dirs = [tmp_path / "CORPUS" / "wsj0", tmp_path / "CORPUS" / "wsj1"]
    elif layout == "flat-merged-discs":
        _flat_copy_of_merged_discs(tmp_path)
        dirs = [tmp_path / "CORPUS", tmp_path / "CORPUS"]
    else:  # the recipe wants --wsj0 and --wsj1; a merged copy gives the same folder to both
        dirs = [tmp_path / "CORPUS", tmp_path / "CORPUS"]
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(dirs[0]), "--wsj1", str(dirs[1]), str(out)]) == 0
    for s in SETS:
        assert sorted(x.id for x in _load(out, "supervisions", s)) == expected[s], (layout, s)
    assert (out / "wsj_lm_text.txt").read_text() == "the price rose\nstocks fell 's\na third line\n"
    assert (out / "wsj_ldc_lm" / "bcb20onp.arpa.gz").is_file()


def test_unreadable_layout_names_the_folders_searched(tmp_path):
    for d in ("corpus/LDC93S6B/csr_1/docs", "corpus/LDC93S6B/readme", "corpus/other"):
        (tmp_path / d).mkdir(parents=True)
    with pytest.raises(WsjLayoutError) as err:
        WsjCorpus([tmp_path / "corpus"])
    msg = str(err.value)
    for d in ("corpus", "corpus/LDC93S6B", "corpus/LDC93S6B/csr_1", "corpus/other"):
        assert str(tmp_path / d) in msg, d
    assert "11-1.1" in msg and "wsj0" in msg  # says what it looked for


def test_sph2pipe_check_covers_every_set_before_writing(tmp_path, monkeypatch, capfd):
    make_wsj(tmp_path)
    # only eval92's audio (disc 11-14.1) is shorten-compressed; train and dev are PCM
    (wv1,) = list((tmp_path / "wsj0" / "11-14.1").rglob("*.wv1"))
    samples = np.frombuffer(wv1.read_bytes()[1024:], "<i2")
    write_sphere(wv1, samples, coding="pcm,embedded-shorten-v2.00")
    _hide_system_sph2pipe(monkeypatch)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out)]) == 1
    assert not list(out.glob("wsj_*.jsonl.gz"))  # not even the PCM sets
    err = capfd.readouterr().err
    assert f"{wv1} (test_eval92) is shorten-compressed" in err and "lhotse install-sph2pipe" in err


def test_zero_byte_audio_is_reported_empty(tmp_path):
    p = tmp_path / "x.wv1"
    p.write_bytes(b"")
    with pytest.raises(SphereError, match="x.wv1: file is empty"):
        read_sphere_header(p)
    make_wsj(tmp_path)
    (wv1,) = list((tmp_path / "wsj1" / "13-16.1").rglob("4k0c0301.wv1"))
    wv1.write_bytes(b"")
    out = tmp_path / "out"
    prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out), "--sets", "test_dev93"])
    report = (out / "wsj_test_dev93.report.txt").read_text()
    assert "SKIP 4k0c0301: empty-audio" in report and "NIST" not in report


def test_eval92_audio_disc_is_11_14(tmp_path, capfd):
    from qnet.corpus.wsj import WSJ_SETS

    assert "disc 11-14.1" in WSJ_SETS["test_eval92"].audio
    assert "11-14.1" in (REPO / "local" / "wsj_data_prep.sh").read_text()
    # without disc 11-14.1 the error says which disc eval92 needs
    make_wsj(tmp_path)
    shutil.rmtree(tmp_path / "wsj0" / "11-14.1")
    out = tmp_path / "out"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "wsj0"), "--wsj1", str(tmp_path / "wsj1"), str(out), "--sets", "test_eval92"]) == 1
    assert "test_eval92: its audio disc 11-14.1 was not found" in capfd.readouterr().err



def test_wsj_recipe_bpe_size(tmp_path):
    """egs/wsj/run.sh --bpe-size N builds a BPE lang dir (stage 2 on stage 0's manifests; no features needed)."""
    make_wsj(tmp_path / "corpus")
    prep = ["--wsj0", str(tmp_path / "corpus" / "wsj0"), "--wsj1", str(tmp_path / "corpus" / "wsj1")]
    assert prepare_wsj.main(prep + [str(tmp_path / "data" / "manifests")]) == 0  # what stage 0 runs
    r = subprocess.run(["./run.sh", "--stage", "2", "--stop-stage", "2", "--bpe-size", "30", "--data-dir",
                        str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp")],
                       cwd=REPO / "egs" / "wsj", capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    lang = tmp_path / "data" / "lang_bpe_30"
    assert (lang / "bpe.model").is_file() and (lang / "L.pt").is_file()
    assert not (tmp_path / "data" / "lang_char").exists()
