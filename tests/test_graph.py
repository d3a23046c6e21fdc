"""n-gram LMs (ARPA normalization, kaldilm G, lmplz) and HLG compilation with k2."""

import gzip
import logging
import shutil
from pathlib import Path

import pytest
import torch

from decode_helpers import BIGRAM_ARPA, TRAIN_TEXT, make_char_lang
from qnet.utils import MissingDependencyError


def test_normalize_arpa_lowercases_and_drops_collisions(tmp_path):
    from qnet.lm import arpa_order, arpa_vocab, normalize_arpa

    src = tmp_path / "lm.arpa.gz"
    # "Cat" collides with "CAT" after normalization: it and its n-grams are dropped, counts rewritten
    text = BIGRAM_ARPA.replace("ngram 1=8", "ngram 1=9").replace("-1.5\tA\t-0.3", "-1.5\tA\t-0.3\n-2.0\tCat")
    text = text.replace("ngram 2=4", "ngram 2=5").replace("-0.1\tSAT </s>", "-0.1\tSAT </s>\n-0.2\tCat SAT")
    with gzip.open(src, "wt") as f:
        f.write(text)
    info = normalize_arpa(src, tmp_path / "out.arpa")
    assert info == {"1-grams": 8, "2-grams": 4, "dropped_words": 1}
    out = (tmp_path / "out.arpa").read_text()
    assert "ngram 1=8" in out and "ngram 2=4" in out and "-0.1\tthe cat" in out and "Cat" not in out
    assert arpa_order(tmp_path / "out.arpa") == 2
    assert arpa_vocab(tmp_path / "out.arpa") == ["the", "cat", "sat", "hat", "on", "a"]


def test_hlg_compiles_and_logs_sizes(tmp_path, caplog):
    import k2

    caplog.set_level(logging.INFO)
    lang = make_char_lang(tmp_path)
    HLG = k2.Fsa.from_dict(torch.load(lang / "HLG.pt"))
    assert HLG.num_arcs > 0 and HLG.properties & k2.fsa_properties.ARC_SORTED
    # no disambiguation symbols left on either side
    assert int(HLG.labels.max()) < 29
    aux = HLG.aux_labels.values if hasattr(HLG.aux_labels, "values") and not isinstance(
        HLG.aux_labels, torch.Tensor) else HLG.aux_labels
    assert int(aux.max()) < 8  # `#0` of words.txt is 8
    text = caplog.text
    for step in ("L o G:", "det(L o G):", "HLG:"):
        assert step in text
    assert "arcs" in text and "states" in text


def test_G_for_rescoring_is_cached(tmp_path):
    from qnet.lang import SymbolTable
    from qnet.lm import load_G, with_epsilon_self_loops

    lang = make_char_lang(tmp_path, with_hlg=False)
    words = SymbolTable.from_file(lang / "words.txt")
    G = load_G(tmp_path / "G.fst.txt", words["#0"])
    assert (tmp_path / "G.pt").is_file()
    assert int(G.labels.max()) < words["#0"] and hasattr(G, "lm_scores")
    G2 = with_epsilon_self_loops(G)
    assert G2.num_arcs > G.num_arcs and hasattr(G2, "lm_scores")


def test_streaming_openfst_reader_matches_k2(tmp_path):
    """qnet.lm.read_openfst_text (line by line, bounded memory) builds the FSA k2.Fsa.from_openfst builds
    from the whole text, on kaldilm's G and on a hand-written FST whose start state is not 0."""
    import k2

    from qnet.lm import read_openfst_text

    make_char_lang(tmp_path, with_hlg=False)
    odd = tmp_path / "odd.fst.txt"
    odd.write_text("2 0 5 5 1.5\n2 1 6 6\n0 1 7 7 0.25\n1 2 8 8 2\n1 0.5\n0\n")
    for path, chunk_bytes in ((tmp_path / "G.fst.txt", 1 << 22), (tmp_path / "G.fst.txt", 64), (odd, 1 << 22)):
        ours = read_openfst_text(path, chunk_bytes=chunk_bytes)  # 64: numpy- and line-parsed chunks
        ref = k2.Fsa.from_openfst(path.read_text(), acceptor=False)
        assert ours.shape == ref.shape and ours.num_arcs == ref.num_arcs
        assert k2.is_rand_equivalent(ours, ref, log_semiring=False, treat_epsilons_specially=False)
        assert torch.equal(k2.arc_sort(ours).arcs.values()[:, :3], k2.arc_sort(ref).arcs.values()[:, :3])
        assert torch.allclose(k2.arc_sort(ours).scores, k2.arc_sort(ref).scores)
        assert torch.equal(k2.arc_sort(ours).aux_labels, k2.arc_sort(ref).aux_labels)
    bad = tmp_path / "bad.fst.txt"
    bad.write_text("0 1 5 5 1.5\n0 x 6 6\n")
    with pytest.raises(ValueError, match=r"bad.fst.txt:2: not an OpenFst text line"):
        read_openfst_text(bad)
    torch.save({"arcs": torch.zeros(1)}, tmp_path / "G.pt")
    with pytest.raises(ValueError, match="G.pt is a torch file"):
        read_openfst_text(tmp_path / "G.pt")


def test_G_cache_is_built_once_before_the_decode_jobs(tmp_path, monkeypatch):
    """qnet.bin.cache_lm builds G.pt (steps/decode.sh runs it before `$cmd JOB=1:N`); the jobs' load_G
    then only reads it, and one Decoder reads G once for both rescorings."""
    from qnet import lm
    from qnet.bin import cache_lm
    from qnet.decode import Decoder
    from qnet.lang import SymbolTable
    from qnet.tokens import load_tokenizer

    lang = make_char_lang(tmp_path, with_hlg=True)
    args = ["--lang-dir", str(lang), "--G", str(tmp_path / "G.fst.txt")]
    assert cache_lm.main(args + ["--hlg", str(tmp_path / "none.pt")]) == 1  # HLG missing: say so first
    assert not (tmp_path / "G.pt").exists()
    assert cache_lm.main(args) == 0
    stamp = (tmp_path / "G.pt").stat().st_mtime_ns
    assert cache_lm.main(args) == 0 and (tmp_path / "G.pt").stat().st_mtime_ns == stamp  # up to date: kept

    reads, loads = [], []
    real_read, real_load = lm.read_openfst_text, lm.load_G
    monkeypatch.setattr(lm, "read_openfst_text", lambda *a, **k: reads.append(a) or real_read(*a, **k))
    monkeypatch.setattr(lm, "load_G", lambda *a, **k: loads.append(a) or real_load(*a, **k))
    decoder = Decoder(["nbest-rescoring", "whole-lattice-rescoring"], load_tokenizer(lang), lang,
                      tmp_path / "G.fst.txt")
    assert reads == [] and len(loads) == 1  # the cache only, once
    words = SymbolTable.from_file(lang / "words.txt")
    assert decoder.G_loops.num_arcs > decoder.G.num_arcs and int(decoder.G.labels.max()) < words["#0"]
    assert (tmp_path / "G.pt").stat().st_mtime_ns == stamp

    text = (Path(__file__).resolve().parents[1] / "steps" / "decode.sh").read_text()
    assert text.index("python -m qnet.bin.cache_lm") < text.index("$cmd JOB=1:$nj")


def test_arpa_words_missing_from_lang_are_reported(tmp_path, caplog):
    from qnet.lm import arpa_to_fst_txt

    lang = make_char_lang(tmp_path, with_hlg=False)
    (tmp_path / "extra.arpa").write_text(BIGRAM_ARPA.replace("ngram 1=8", "ngram 1=9").replace(
        "-1.5\tA\t-0.3", "-1.5\tA\t-0.3\n-1.5\tZEBRA").lower())
    caplog.set_level(logging.WARNING)
    arpa_to_fst_txt(tmp_path / "extra.arpa", lang / "words.txt", tmp_path / "x.fst.txt")
    assert "1 of 7 ARPA words are not in" in caplog.text and "zebra" in caplog.text


def test_missing_lmplz_points_at_setup(tmp_path, monkeypatch):
    from qnet.lm import train_arpa

    monkeypatch.setenv("PATH", str(tmp_path))
    (tmp_path / "t.txt").write_text(TRAIN_TEXT)
    with pytest.raises(MissingDependencyError, match="tools/setup.sh"):
        train_arpa(tmp_path / "t.txt", tmp_path / "lm.arpa")


@pytest.mark.skipif(shutil.which("lmplz") is None, reason="kenlm lmplz not built (tools/setup.sh)")
def test_make_lm_with_lmplz_and_compile_hlg_cli(tmp_path):
    from qnet.bin.compile_hlg import main as compile_main
    from qnet.bin.make_lm import main as make_lm_main

    lang = make_char_lang(tmp_path, with_hlg=False)
    (tmp_path / "lm.txt").write_text(TRAIN_TEXT.upper() * 3)
    make_lm_main(["--text", str(tmp_path / "lm.txt"), "--order", "3", "--lang-dir", str(lang),
                  "--out-dir", str(tmp_path / "lm"), "--name", "G_3_gram", "--binary", "true"])
    arpa = (tmp_path / "lm" / "G_3_gram.arpa").read_text()
    assert "ngram 3=" in arpa and "the cat" in arpa
    assert (tmp_path / "lm" / "G_3_gram.bin").is_file()
    compile_main(["--lang-dir", str(lang), "--lm", str(tmp_path / "lm" / "G_3_gram.fst.txt"),
                  "--out", str(tmp_path / "HLG3.pt")])
    assert (tmp_path / "HLG3.pt").is_file()


def test_make_lm_ready_arpa_and_modified_topo_cli(tmp_path):
    from qnet.bin.compile_hlg import main as compile_main
    from qnet.bin.make_lm import main as make_lm_main

    lang = make_char_lang(tmp_path, with_hlg=False)
    (tmp_path / "ready.arpa").write_text(BIGRAM_ARPA)
    make_lm_main(["--arpa", str(tmp_path / "ready.arpa"), "--order", "1", "--lang-dir", str(lang),
                  "--out-dir", str(tmp_path / "lm"), "--name", "G_1"])
    fst = (tmp_path / "lm" / "G_1.fst.txt").read_text()
    assert fst.strip()
    compile_main(["--lang-dir", str(lang), "--lm", str(tmp_path / "lm" / "G_1.fst.txt"), "--modified", "true"])
    assert (lang / "HLG.pt").is_file()


def test_bpe_hlg(tmp_path):
    from qnet.graph import compile_HLG
    from qnet.lang import prepare_lang
    from qnet.lm import arpa_to_fst_txt, normalize_arpa

    text = tmp_path / "text"
    text.write_text("\n".join(["the cat sat on the hat", "a cat", "the quick brown fox jumps over the lazy dog"] * 10))
    prepare_lang(tmp_path / "lang", "bpe", [text], bpe_size=30)
    (tmp_path / "raw.arpa").write_text(BIGRAM_ARPA)
    normalize_arpa(tmp_path / "raw.arpa", tmp_path / "G.arpa")
    arpa_to_fst_txt(tmp_path / "G.arpa", tmp_path / "lang" / "words.txt", tmp_path / "G.fst.txt")
    HLG = compile_HLG(tmp_path / "lang", tmp_path / "G.fst.txt")
    assert HLG.num_arcs > 0


def test_shell_steps_lang_lm_hlg(tmp_path):
    import os
    import subprocess
    from pathlib import Path

    repo = Path(__file__).resolve().parents[1]
    env = dict(os.environ, PATH=f"{repo}/utils:{os.environ['PATH']}")

    def run(*args):
        proc = subprocess.run(["bash", *args], cwd=repo, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
        assert proc.returncode == 0, proc.stdout
        return proc.stdout

    (tmp_path / "text").write_text(TRAIN_TEXT)
    (tmp_path / "ready.arpa").write_text(BIGRAM_ARPA)
    lang, lm = tmp_path / "lang", tmp_path / "lm"
    run("steps/prepare_lang.sh", "--unit", "char", str(tmp_path / "text"), str(lang))
    assert (lang / ".done").is_file() and (lang / "L_disambig.pt").is_file()
    assert "already prepared" in run("steps/prepare_lang.sh", str(tmp_path / "text"), str(lang))
    run("steps/train_lm.sh", "--name", "G_2_gram", str(tmp_path / "ready.arpa"), str(lang), str(lm))
    assert (lm / "G_2_gram.fst.txt").is_file() and (lm / ".G_2_gram.done").is_file()
    run("steps/make_hlg.sh", str(lang), str(lm / "G_2_gram.fst.txt"))
    assert (lang / "HLG.pt").is_file() and (lang / ".HLG.pt.done").is_file()
    assert "up to date" in run("steps/make_hlg.sh", str(lang), str(lm / "G_2_gram.fst.txt"))
