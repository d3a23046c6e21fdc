"""Kaldi-style scoring: counts, errs-/recogs-/wer-summary- files, CER, the score CLI (no k2 needed)."""

from qnet.scoring import (
    ErrorCounts,
    error_stats,
    pair_results,
    read_text,
    score_set,
    write_error_stats,
)


def test_counts_and_kaldi_line():
    results = [
        ("u1", "a b c d".split(), "a x c d e".split()),  # 1 sub, 1 ins
        ("u2", "hello world".split(), "hello".split()),  # 1 del
        ("u3", "same".split(), "same".split()),
    ]
    counts, _ = error_stats(results)
    assert (counts.ins, counts.dels, counts.subs, counts.ref_words) == (1, 1, 1, 7)
    assert counts.sentence_errors == 2
    assert counts.kaldi_line() == "%WER 42.86 [ 3 / 7, 1 ins, 1 del, 1 sub ]"


def test_empty_reference_counts_insertions():
    counts = ErrorCounts(ins=2, ref_words=0)
    assert counts.rate == 200.0


def test_errs_file_sections(tmp_path):
    results = [("u1", "the cat sat".split(), "the cap sat down".split()),
               ("u2", "a big dog".split(), "a".split())]
    counts = write_error_stats(tmp_path / "errs.txt", "x", results)
    text = (tmp_path / "errs.txt").read_text()
    lines = text.splitlines()
    assert lines[0] == "%WER 66.67 [ 4 / 6, 1 ins, 2 del, 1 sub ]" and counts.errors == 4
    assert "u1:\tthe (cat->cap) sat (*->down)" in text
    assert "u2:\ta (big dog->* *)" in text
    for section in ("SUBSTITUTIONS: count ref -> hyp", "DELETIONS: count ref", "INSERTIONS: count hyp",
                    "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"):
        assert section in lines
    assert "1   cat -> cap" in lines and "1   down" in lines
    # per-word: "the" 1 correct, no errors, once in ref and hyp
    assert "the   1 0 1 1" in lines and "cat   0 1 1 0" in lines


def test_score_set_summary_sorted_and_cer(tmp_path):
    refs = {"u1": "the cat sat", "u2": "on the hat"}
    by_key = {
        "greedy": pair_results(refs, {"u1": "the cqt sat", "u2": "on the hat"}),
        "1best": pair_results(refs, {"u1": "the cat sat", "u2": "on the hat"}),
        "bad": pair_results(refs, {"u1": "cat"}),  # u2 missing: scored as empty
    }
    wers = score_set(tmp_path, "test", by_key, compute_cer=True)
    assert wers["1best"] == 0.0 and round(wers["greedy"], 2) == 16.67
    summary = (tmp_path / "wer-summary-test.txt").read_text().splitlines()
    assert summary == ["settings\tWER", "1best\t0.00", "greedy\t16.67", "bad\t83.33"]
    cer = (tmp_path / "cer-summary-test.txt").read_text().splitlines()
    assert cer[0] == "settings\tCER" and cer[2] == "greedy\t5.88"  # 1 of 17 letters (spaces not counted)
    recogs = (tmp_path / "recogs-test-greedy.txt").read_text().splitlines()
    assert recogs[:2] == ["u1:\tref=['the', 'cat', 'sat']", "u1:\thyp=['the', 'cqt', 'sat']"]
    assert (tmp_path / "cer-errs-test-greedy.txt").read_text().startswith("%CER 5.88 [ 1 / 17")


def test_score_cli_dir_and_files(tmp_path):
    from qnet.bin.score import main

    (tmp_path / "ref-dev.txt").write_text("u1 a b\nu2 c\n")
    (tmp_path / "hyp-dev-greedy.txt").write_text("u1 a x\nu2\n")
    (tmp_path / "hyp-dev-1best.txt").write_text("u1 a b\nu2 c\n")
    main(["--dir", str(tmp_path), "--test-set", "dev"])
    assert (tmp_path / "wer-summary-dev.txt").read_text().splitlines()[1:] == ["1best\t0.00", "greedy\t66.67"]
    assert read_text(tmp_path / "hyp-dev-greedy.txt") == {"u1": "a x", "u2": ""}

    out = tmp_path / "one"
    main(["--ref", str(tmp_path / "ref-dev.txt"), "--hyp", str(tmp_path / "hyp-dev-greedy.txt"),
          "--out-dir", str(out), "--test-set", "dev", "--key", "mine", "--cer", "true"])
    assert (out / "errs-dev-mine.txt").read_text().startswith("%WER 66.67 [ 2 / 3, 0 ins, 1 del, 1 sub ]")
    assert (out / "cer-summary-dev.txt").is_file()
