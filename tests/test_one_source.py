"""Logic that once existed twice now has one home: greedy CTC decoding, word errors, SPHERE headers, PathLike."""

import re
from pathlib import Path

QNET = Path(__file__).resolve().parents[1] / "qnet"


def test_greedy_decoding_lives_in_ctc():
    import qnet.ctc
    import qnet.decode

    assert not hasattr(qnet.decode, "greedy_search")
    assert qnet.decode.greedy_decode is qnet.ctc.greedy_decode


def test_validation_word_errors_are_the_scorers():
    import qnet.scoring
    import qnet.trainer

    assert not hasattr(qnet.trainer, "word_errors")
    assert "from qnet.scoring import word_errors" in Path(qnet.trainer.__file__).read_text()
    assert qnet.scoring.word_errors("a b c", "a b c") == 0
    assert qnet.scoring.word_errors("a b c", "a x c d") == 2  # one substitution, one insertion
    assert qnet.scoring.word_errors("a b", "") == 2


def test_one_sphere_header_reader():
    from qnet.corpus import sphere, synth

    assert synth.read_sphere_header is sphere.read_sphere_header


def test_pathlike_is_defined_once():
    defined = sorted(str(p.relative_to(QNET.parent)) for p in QNET.rglob("*.py")
                     if re.search(r"^PathLike\s*=", p.read_text(encoding="utf-8"), re.M))
    assert defined == ["qnet/utils.py"]
