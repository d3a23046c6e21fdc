"""A BPE system end to end: lang dir with --bpe-size, a few training steps, G and HLG, decoding, WER files;
and the file modes of everything that run wrote."""

import stat
import sys
from pathlib import Path

import pytest
from lhotse import CutSet

sys.path.insert(0, str(Path(__file__).parent))
from train_helpers import have_tts, make_corpus, train_args  # noqa: E402

from qnet.lang import SymbolTable  # noqa: E402
from qnet.utils import current_umask  # noqa: E402

METHODS = ("greedy", "ctc-decoding", "1best")


def test_bpe_lang_train_hlg_decode_score(tmp_path):
    if not have_tts():
        pytest.skip("espeak-ng/sox not installed")
    from qnet.bin import compile_hlg, make_lm, prepare_lang
    from qnet.bin import decode as decode_cli
    from qnet.bin import train as train_cli

    corpus = make_corpus(tmp_path / "corpus", num_train=12, num_valid=4, max_words=2)
    texts = [c.supervisions[0].text.lower() for c in CutSet.from_file(corpus["train_cuts"])]
    (tmp_path / "text.txt").write_text("\n".join(texts * 4) + "\n")
    lang = tmp_path / "lang_bpe_30"
    assert prepare_lang.main(["--unit", "bpe", "--bpe-size", "30", "--text", str(tmp_path / "text.txt"),
                              "--lang-dir", str(lang)]) in (0, None)
    assert (lang / "bpe.model").is_file()

    exp = tmp_path / "exp"
    args = train_args({**corpus, "lang_dir": lang}, exp, "--ctc-backend", "torch", "--num-epochs", "1",
                      "--max-duration", "9")
    assert train_cli.main(args) == 0
    model = exp / "epoch-1.pt"
    assert model.is_file()

    make_lm.main(["--text", str(tmp_path / "text.txt"), "--order", "2", "--discount-fallback", "true",
                  "--lang-dir", str(lang), "--out-dir", str(tmp_path / "lm"), "--name", "G_2_gram"])
    compile_hlg.main(["--lang-dir", str(lang), "--lm", str(tmp_path / "lm" / "G_2_gram.fst.txt")])
    assert (lang / "HLG.pt").is_file()

    out = tmp_path / "decode"
    assert decode_cli.main(["--model", str(model), "--cuts", str(corpus["valid_cuts"]), "--lang-dir", str(lang),
                            "--methods", ",".join(METHODS), "--out-dir", str(out), "--max-duration", "9",
                            "--test-set", "valid"]) in (0, None)
    words = SymbolTable.from_file(lang / "words.txt")
    summary = (out / "wer-summary-valid.txt").read_text().splitlines()
    assert summary[0] == "settings\tWER" and sorted(line.split("\t")[0] for line in summary[1:]) == sorted(METHODS)
    for key in METHODS:
        assert (out / f"errs-valid-{key}.txt").read_text().startswith("%WER ")
        hyps = (out / f"hyp-valid-{key}.txt").read_text().splitlines()
        assert len(hyps) == 4
        for line in hyps:
            for w in line.split()[1:]:
                assert w not in ("<unk>", "<sos/eos>", "<blk>") and "\u2047" not in w, (key, line)
                if key == "1best":
                    assert w in words, (key, line)
    # every file of the run (lang dir, checkpoints, plot, logs, LM, HLG, decode results) has the umask mode
    mode = 0o666 & ~current_umask()
    for d in (lang, exp, tmp_path / "lm", out):
        files = [p for p in d.rglob("*") if p.is_file()]
        assert files and {str(p): oct(stat.S_IMODE(p.stat().st_mode)) for p in files
                          if stat.S_IMODE(p.stat().st_mode) != mode} == {}
