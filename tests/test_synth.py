"""Tests of the offline TTS corpus synthesizer (qnet.corpus.synth, qnet.corpus.textgen, qnet.bin.synth_corpus,
local/mini_synth.sh): determinism, layout validity, voice split, LM/test disjointness, vocabulary size."""

import hashlib
import os
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from qnet.corpus import synth, textgen
from qnet.corpus.sphere import read_sphere_header
from qnet.corpus.synth import (
    VOICE_GROUPS,
    SynthConfig,
    audio_complete,
    plan_librispeech,
    plan_wsj,
    sphere_header,
    synthesize_corpus,
    wsj_markup,
)
from qnet.corpus.textgen import generate_splits, make_generator, number_to_words

REPO = Path(__file__).resolve().parents[1]
NDX_LINE = re.compile(r"^(\d+)_(\d+)_(\d+):(\S+)$")
DOT_LINE = re.compile(r"^(.+) \(([0-9a-z]{8})\)$")
TRANS_LINE = re.compile(r"^(\d+)-(\d+)-(\d{4}) ([A-Z' ]+)$")
TTS_PROGRAMS = ("espeak-ng", "flite", "text2wave", "sox")
needs_tts = pytest.mark.skipif(any(shutil.which(p) is None for p in TTS_PROGRAMS),
                               reason="espeak-ng/flite/festival/sox not installed (tools/setup.sh)")


def tiny(layout: str, seed: int = 7, **kw) -> SynthConfig:
    """A very small config (fast tests)."""
    sizes = dict(num_train=6, num_dev=2, num_test=2, num_lm=60)
    sizes.update(kw)
    return SynthConfig.default(layout, seed=seed, **sizes)


def tree_hashes(root: Path) -> dict:
    """{relative path: sha256} of every file under root."""
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def libri_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("libri")
    if any(shutil.which(p) is None for p in TTS_PROGRAMS):
        pytest.skip("espeak-ng/flite/festival/sox not installed (tools/setup.sh)")
    plan = synthesize_corpus(out, tiny("librispeech"), num_jobs=2)
    return out, plan


@pytest.fixture(scope="module")
def wsj_corpus(tmp_path_factory):
    out = tmp_path_factory.mktemp("wsj")
    if any(shutil.which(p) is None for p in TTS_PROGRAMS):
        pytest.skip("espeak-ng/flite/festival/sox not installed (tools/setup.sh)")
    plan = synthesize_corpus(out, tiny("wsj", num_train=8), num_jobs=2)
    return out, plan


# ------------------------------------------------------------------------------------------------ text
@pytest.mark.parametrize("domain", ["narrative", "news"])
def test_vocabulary_at_least_1500_words(domain):
    gen = make_generator(domain)
    assert len(gen.vocabulary()) >= 1500
    rng = random.Random(0)
    sentences = [gen.sentence(rng, 6, 16) for _ in range(5000)]
    used = {w for s in sentences for w in s.split()}
    assert len(used) >= 1500, f"{domain}: only {len(used)} distinct words in 5000 sentences"
    assert used <= gen.vocabulary()
    assert all(re.fullmatch(r"[A-Z']+( [A-Z']+)*", s) for s in sentences)


def test_generate_splits_disjoint_and_deterministic():
    counts = {"test": 40, "dev": 40, "train": 300}
    splits, lm = generate_splits("narrative", 3, counts, 2000, 6, 16)
    again, lm_again = generate_splits("narrative", 3, counts, 2000, 6, 16)
    assert splits == again and lm == lm_again
    assert {k: len(v) for k, v in splits.items()} == counts and len(lm) == 2000
    held_out = set(splits["test"]) | set(splits["dev"])
    assert not held_out & set(lm)
    assert len(set(splits["test"]) | set(splits["dev"]) | set(splits["train"])) == 380  # distinct across splits
    assert all(6 <= len(s.split()) <= 16 for v in splits.values() for s in v)
    other, _ = generate_splits("narrative", 4, counts, 10, 6, 16)
    assert other["test"] != splits["test"]


def test_lm_disjoint_even_when_sentences_repeat(tmp_path, monkeypatch):
    # A grammar with only 9 sentences: the LM stream certainly hits the held-out ones and must skip them.
    words = tmp_path / "tiny.txt"
    words.write_text("[x]\nred green blue\n[y]\ncat dog fox\n")

    class Tiny(textgen.SentenceGenerator):
        templates = ("the {x} {y}",)

    monkeypatch.setattr(textgen, "make_generator", lambda domain: Tiny(words))
    counts = {"test": 2, "dev": 2, "train": 3}
    splits, lm = generate_splits("tiny", 0, counts, 200, 3, 3)
    held_out = set(splits["test"]) | set(splits["dev"])
    assert len(held_out) == 4 and len(set(lm)) == 5 and not held_out & set(lm)
    _, lm_unfiltered = generate_splits("tiny", 0, counts, 200, 3, 3, held_out=())
    assert held_out & set(lm_unfiltered)  # without the filter they would leak


def test_number_to_words():
    assert number_to_words(0) == "zero"
    assert number_to_words(42) == "forty two"
    assert number_to_words(300) == "three hundred"
    assert number_to_words(917) == "nine hundred seventeen"
    with pytest.raises(ValueError):
        number_to_words(1000)


def test_wsj_markup_is_undone_by_kaldi_style_normalization():
    rng = random.Random(0)
    text = "STANDARD AND POOR'S INDEX ROSE FOUR POINT FIVE PERCENT TO SIX HUNDRED TWELVE POINTS"
    seen = set()
    for _ in range(400):
        dot, spoken, n_start, n_end = wsj_markup(text, rng)
        seen.update(tok[0] for tok in dot.split() if tok[0] in "[<.")
        seen.update("\\" for tok in dot.split() if "\\" in tok)
        assert n_start == dot.startswith("[") and n_end == dot.endswith("]")
        # normalize_transcript.pl: drop \ escapes and '.' pauses, <w> -> w, [noise] -> <NOISE>.
        words = [w.replace("\\", "") for w in dot.split() if w != "."]
        words = [w[1:-1] if w.startswith("<") else w for w in words if not w.startswith("[")]
        assert " ".join(words) == text
        assert spoken.replace(",", "") == text.lower()
    assert seen == {"[", "<", ".", "\\"}


# ------------------------------------------------------------------------------------------------ voices
def _variants(groups):
    return {e.split("/")[0] for g in groups for e in VOICE_GROUPS[g]}


def _timbre(entry: str) -> str:
    """flite kal and kal16 are the same diphone speaker."""
    return entry.replace("kal16", "kal")


def test_voice_groups_split_by_voice():
    train = {_timbre(v) for v in _variants(["librispeech/train", "wsj/train"])}
    held_out = ["librispeech/dev", "librispeech/test", "wsj/dev", "wsj/test", "held-back"]
    for held in held_out:
        assert not {_timbre(v) for v in _variants([held])} & train, held
        for other in held_out:
            if other != held:
                assert not _variants([held]) & _variants([other]), (held, other)
    # every synthesizer family is in training, with many voices
    assert {v.split(":")[0] for v in train} == {"espeak", "flite", "festival"}
    assert len(train) >= 60
    # each group has both genders
    for group, entries in VOICE_GROUPS.items():
        assert {e.split("/")[1] for e in entries} == {"M", "F"}, group


@needs_tts
def test_every_voice_is_installed():
    voices = [v for g in VOICE_GROUPS for v in synth.make_speakers(g, 3 * len(VOICE_GROUPS[g]), random.Random(0))]
    assert {v.engine for v in voices} == {"espeak-ng", "flite", "festival"}
    synth.check_engines(voices)  # raises when a variant/language/flite voice is missing
    bogus = synth.Voice("espeak-ng", "en-us+nonexistent", "M", 170, 50)
    with pytest.raises(RuntimeError, match="nonexistent"):
        synth.check_engines([bogus])


def test_planned_speakers_respect_voice_split(tmp_path):
    for layout, plan_fn in (("librispeech", plan_librispeech), ("wsj", plan_wsj)):
        cfg = SynthConfig.default(layout, seed=11, num_lm=10)  # default mini sizes, plan only
        plan = plan_fn(tmp_path / layout, cfg)
        by_split = {}
        for split, spk, _, voice in plan.speakers:
            by_split.setdefault(split, set()).add(voice.variant.replace("kal16", "kal"))
        assert not by_split["test"] & by_split["train"]
        assert not by_split["dev"] & by_split["train"]
        train_spk = {spk for split, spk, _, _ in plan.speakers if split == "train"}
        held_spk = {spk for split, spk, _, _ in plan.speakers if split != "train"}
        assert not train_spk & held_spk
        if layout == "librispeech":
            libri_train = by_split["train"]
        else:
            assert not (by_split["test"] | by_split["dev"]) & libri_train
    assert len(plan.jobs) == 800  # wsj mini: 600 + 100 + 100


def test_held_back_test_voices(tmp_path):
    """--test-group held-back: the test set speaks with voices that no recipe corpus uses."""
    held = {e.split("/")[0].split(":")[1] for e in VOICE_GROUPS["held-back"]}
    for layout in ("librispeech", "wsj"):
        cfg = SynthConfig.default(layout, seed=3, num_train=20, num_dev=4, num_test=12, num_lm=10,
                                  test_group="held-back")
        plan = plan_librispeech(tmp_path, cfg) if layout == "librispeech" else plan_wsj(tmp_path, cfg)
        test_variants = {v.variant for split, _, _, v in plan.speakers if split == "test"}
        assert test_variants and test_variants <= held
        assert not {v.variant for split, _, _, v in plan.speakers if split != "test"} & held
    with pytest.raises(ValueError, match="not a dev/test/held-back group"):
        SynthConfig.default("wsj", test_group="wsj/train").voice_group("test")


# ------------------------------------------------------------------------------------------------ SPHERE
def test_sphere_header_roundtrip(tmp_path):
    pcm = (np.sin(np.arange(1600) / 5) * 1000).astype("<i2")
    path = tmp_path / "x.wv1"
    path.write_bytes(sphere_header(len(pcm), "01ic0201", int(pcm.min()), int(pcm.max())) + pcm.tobytes())
    head = read_sphere_header(path)
    assert head.header_size == 1024 and head.sample_count == 1600 and head.sample_rate == 16000
    assert head.channel_count == 1 and head.sample_n_bytes == 2 and head.sample_byte_format == "01"
    assert head.sample_coding == "pcm" and head.fields["utterance_id"] == "01ic0201"
    assert path.read_bytes()[:1024].count(b"end_head") == 1
    data, rate = sf.read(str(path), dtype="int16")
    assert rate == 16000 and np.array_equal(data, pcm)
    assert audio_complete(path, "sph")
    path.write_bytes(path.read_bytes()[:-10])  # truncated -> incomplete
    assert not audio_complete(path, "sph")


# ------------------------------------------------------------------------------------------------ corpora
def test_librispeech_layout(libri_corpus):
    out, plan = libri_corpus
    root = out / "LibriSpeech"
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["dev-clean", "test-clean", "train-clean-100"]
    texts = {}
    for trans in root.glob("*/*/*/*.trans.txt"):
        spk, chapter = trans.parent.parent.name, trans.parent.name
        assert trans.name == f"{spk}-{chapter}.trans.txt"
        for line in trans.read_text().splitlines():
            m = TRANS_LINE.match(line)
            assert m, f"{trans}: bad line {line!r}"
            assert (m.group(1), m.group(2)) == (spk, chapter)
            flac = trans.parent / f"{line.split()[0]}.flac"
            info = sf.info(str(flac))
            assert (info.samplerate, info.channels, info.subtype) == (16000, 1, "PCM_16")
            assert 1.0 < info.duration < 10.0
            texts[line.split()[0]] = (trans.parts[-4], m.group(4))
    assert len(texts) == 10 and len(list(root.glob("*/*/*/*.flac"))) == 10
    assert sum(part == "train-clean-100" for part, _ in texts.values()) == 6
    speakers_txt = (root / "SPEAKERS.TXT").read_text().splitlines()
    assert speakers_txt[0].startswith(";ID") and len(speakers_txt) == 1 + len(plan.speakers)
    lm = (out / "lm" / "librispeech-lm-norm.txt").read_text().splitlines()
    assert len(lm) == 60 and all(re.fullmatch(r"[A-Z' ]+", s) for s in lm)
    held_out = {t for part, t in texts.values() if part != "train-clean-100"}
    assert held_out and not held_out & set(lm)


def test_wsj_layout(wsj_corpus):
    out, plan = wsj_corpus
    for disc in ("LDC93S6B/11-13.1", "LDC93S6B/11-2.1", "LDC94S13B/13-34.1", "LDC93S6B/11-14.1",
                 "LDC94S13B/13-16.1"):
        assert (out / disc).is_dir(), disc
    indices = {
        "si84": "LDC93S6B/11-13.1/wsj0/doc/indices/train/tr_s_wv1.ndx",
        "si200": "LDC94S13B/13-34.1/wsj1/doc/indices/si_tr_s.ndx",
        "dev93": "LDC94S13B/13-34.1/wsj1/doc/indices/h1_p0.ndx",
        "eval92": "LDC93S6B/11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx",
    }
    discs = {p.name: p for p in out.glob("LDC*/*-*.*")}
    utts = {}
    for name, rel in indices.items():
        lines = (out / rel).read_text().splitlines()
        assert lines[0].startswith(";")
        entries = [l for l in lines if not l.startswith(";")]
        assert entries, name
        for line in entries:
            m = NDX_LINE.match(line)
            assert m, f"{rel}: bad line {line!r}"
            path = m.group(4) if m.group(4).endswith(".wv1") else m.group(4) + ".wv1"
            assert (name == "eval92") != m.group(4).endswith(".wv1")  # as in the real si_et_20.ndx
            wv1 = discs[f"{m.group(1)}-{m.group(2)}.{m.group(3)}"] / path
            utt = wv1.stem
            assert len(utt) == 8 and wv1.parent.name == utt[:3]
            head = read_sphere_header(wv1)
            assert head.header_size == 1024 and head.sample_rate == 16000 and head.channel_count == 1
            assert head.sample_n_bytes == 2 and head.sample_byte_format == "01"
            assert head.sample_coding == "pcm" and head.fields["utterance_id"] == utt
            assert wv1.stat().st_size == 1024 + 2 * head.sample_count
            assert 1.0 < head.sample_count / 16000 < 12.0
            utts[utt] = name
    assert len(utts) == 12
    transcripts = {}
    for dot in out.rglob("*.dot"):
        for line in dot.read_text().splitlines():
            m = DOT_LINE.match(line)
            assert m, f"{dot}: bad line {line!r}"
            assert dot.name == m.group(2)[:6] + "00.dot"
            transcripts[m.group(2)] = m.group(1)
    assert set(transcripts) == set(utts)
    for dot_text in transcripts.values():
        assert re.fullmatch(r"[A-Z'\\<>\[\]_a-z. ]+", dot_text)
    # LM text: gzip -dc reads it (compress or gzip format), lines starting with '<' are article headers.
    z_files = sorted(out.glob("LDC94S13B/13-32.1/wsj1/doc/lng_modl/lm_train/np_data/*/*.z"))
    assert [p.parent.name for p in z_files] == ["87", "88", "89"]
    lm = []
    for z in z_files:
        text = subprocess.run(["gzip", "-dc", str(z)], check=True, stdout=subprocess.PIPE).stdout.decode()
        lm += [l for l in text.splitlines() if not l.startswith("<")]
    assert len(lm) == 60
    held_out = {s for split in ("dev", "test") for s in plan.sentences[split]}
    assert held_out and not held_out & set(lm)


def test_resume_and_settings_guard(tmp_path, libri_corpus):
    _, _ = libri_corpus  # skips when the TTS programs are missing
    cfg = tiny("librispeech", seed=3, num_train=3, num_dev=1, num_test=1, num_lm=10)
    plan = synthesize_corpus(tmp_path, cfg, num_jobs=1)
    before = tree_hashes(tmp_path)
    flacs = sorted(Path(j.path) for j in plan.jobs)
    flacs[0].unlink()
    flacs[1].write_bytes(flacs[1].read_bytes()[:100])  # a broken file is synthesized again
    assert synth.run_jobs(plan.jobs, num_jobs=1) == 2
    assert tree_hashes(tmp_path) == before
    assert synth.run_jobs(plan.jobs, num_jobs=1) == 0
    with pytest.raises(RuntimeError, match="other settings"):
        synthesize_corpus(tmp_path, tiny("librispeech", seed=4, num_train=3, num_dev=1, num_test=1, num_lm=10))


@needs_tts
@pytest.mark.parametrize("layout", ["librispeech", "wsj"])
def test_same_seed_gives_identical_files(tmp_path, layout):
    cfg = tiny(layout, seed=5, num_train=4, num_dev=1, num_test=1, num_lm=30)
    synthesize_corpus(tmp_path / "a", cfg, num_jobs=2)
    synthesize_corpus(tmp_path / "b", cfg, num_jobs=1)  # other scheduling, same bytes
    a, b = tree_hashes(tmp_path / "a"), tree_hashes(tmp_path / "b")
    assert len(a) > 8 and a == b
    synthesize_corpus(tmp_path / "c", tiny(layout, seed=6, num_train=4, num_dev=1, num_test=1, num_lm=30))
    c = tree_hashes(tmp_path / "c")
    audio = [k for k in a if k.endswith((".flac", ".wv1"))]
    assert audio and all(a[k] != c.get(k) for k in audio)


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_help():
    proc = subprocess.run([sys.executable, "-m", "qnet.bin.synth_corpus", "--help"], cwd=REPO,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    assert proc.returncode == 0 and "--layout" in proc.stdout and "--smoke" in proc.stdout


@needs_tts
def test_mini_synth_script_smoke(tmp_path):
    out = tmp_path / "corpus"
    env = dict(os.environ)
    cmd = ["bash", str(REPO / "local" / "mini_synth.sh"), "--smoke", "true", "--seed", "2", str(out)]
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    assert (out / ".librispeech.done").is_file() and (out / ".wsj.done").is_file()
    assert len(list((out / "LibriSpeech").glob("*/*/*/*.flac"))) == 30
    assert len(list((out / "wsj").rglob("*.wv1"))) == 30
    assert (out / "lm" / "librispeech-lm-norm.txt").is_file()
    before = tree_hashes(out / "wsj")
    proc = subprocess.run(cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0 and proc.stdout.count("already synthesized") == 2
    assert tree_hashes(out / "wsj") == before
    bad = subprocess.run(cmd[:-1] + ["--seed", "3", str(out)], cwd=REPO, env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.STDOUT, text=True)
    assert bad.returncode != 0


@needs_tts
def test_real_corpus_readers_accept_synthetic_corpora(libri_corpus, wsj_corpus, tmp_path):
    wsj_mod = pytest.importorskip("qnet.corpus.wsj")
    libri_mod = pytest.importorskip("qnet.corpus.librispeech")
    libri_out, _ = libri_corpus
    status = libri_mod.prepare_librispeech(libri_out / "LibriSpeech", tmp_path / "libri")
    assert set(status.values()) == {"done"}, status
    wsj_out, _ = wsj_corpus
    status = wsj_mod.prepare_wsj([wsj_out / "LDC93S6B", wsj_out / "LDC94S13B"], tmp_path / "wsj", ldc_arpa=False)
    assert status and all(v == "done" for k, v in status.items() if k.startswith(("train", "test"))), status
