"""Every file qnet writes gets the mode an ordinary open() gives under the process umask (not mkstemp's 0600)."""

import os
import stat
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from corpus_helpers import make_wsj  # noqa: E402
from decode_helpers import BIGRAM_ARPA  # noqa: E402

from qnet.utils import atomic_output, atomic_write_text, current_umask  # noqa: E402


@pytest.fixture
def umask_002():
    """A group-writable umask (0002), so that the expected mode 0664 differs from both 0600 and 0644."""
    old = os.umask(0o002)
    yield 0o002
    os.umask(old)


def _modes(root: Path):
    return {str(p.relative_to(root)): stat.S_IMODE(p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


def test_atomic_output_gives_the_umask_mode_and_cleans_up(tmp_path, umask_002):
    assert current_umask() == 0o002
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == 0o664
    with pytest.raises(RuntimeError):
        with atomic_output(tmp_path / "b.txt") as tmp:
            tmp.write_text("half")
            raise RuntimeError("killed")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.txt"]  # no b.txt, no temporary


def test_prep_lang_lm_hlg_outputs_have_the_umask_mode(tmp_path, umask_002):
    """WSJ prep (manifests, reports, LM text, LDC ARPA), a lang dir, G and HLG: all 0664 under umask 0002."""
    from qnet.bin import compile_hlg, make_lm, prepare_lang, prepare_wsj

    make_wsj(tmp_path / "corpus")
    out = tmp_path / "out"
    manifests = out / "manifests"
    assert prepare_wsj.main(["--wsj0", str(tmp_path / "corpus" / "wsj0"), "--wsj1", str(tmp_path / "corpus" / "wsj1"),
                             "--log-file", str(out / "log" / "prep.log"), str(manifests)]) == 0
    lang = out / "lang_char"
    prepare_lang.main(["--unit", "char", "--text", str(manifests / "wsj_lm_text.txt"), "--lang-dir", str(lang)])
    (tmp_path / "ready.arpa").write_text(BIGRAM_ARPA)
    make_lm.main(["--arpa", str(tmp_path / "ready.arpa"), "--order", "1", "--lang-dir", str(lang),
                  "--out-dir", str(out / "lm"), "--name", "G_1"])
    compile_hlg.main(["--lang-dir", str(lang), "--lm", str(out / "lm" / "G_1.fst.txt")])
    modes = _modes(out)
    for name in ("manifests/wsj_supervisions_train_si284.jsonl.gz", "manifests/wsj_recordings_test_eval92.jsonl.gz",
                 "manifests/wsj_lm_text.txt", "manifests/wsj_ldc_lm/bcb20onp.arpa.gz", "lang_char/L.pt",
                 "lang_char/HLG.pt", "lm/G_1.fst.txt"):
        assert name in modes, name
    assert {k: oct(v) for k, v in modes.items() if v != 0o664} == {}
