"""qnet.results / qnet.bin.make_results: wer-summary collection, LM-scale tuning, targets, RESULTS.md."""

import subprocess
import sys
from pathlib import Path

import pytest

from qnet.results import (
    PUBLISHED,
    Check,
    collect_system,
    read_stage_times,
    read_wer_summary,
    render_markdown,
    report_cell,
    result_key,
    setting_label,
    split_key,
)

ROOT = Path(__file__).resolve().parents[1]


def write_summary(path: Path, rows: dict) -> None:
    """A wer-summary file as qnet.scoring writes it (header, best first)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = sorted(rows.items(), key=lambda kv: kv[1])
    path.write_text("settings\tWER\n" + "".join(f"{k}\t{v:.2f}\n" for k, v in table))


@pytest.fixture
def system_dir(tmp_path):
    d = tmp_path / "exp" / "quartznet_tiny"
    write_summary(d / "decode_dev-clean" / "wer-summary-dev-clean.txt", {
        "greedy": 20.0, "1best": 12.0,
        "whole-lattice-rescoring_lm_scale_0.5": 11.0, "whole-lattice-rescoring_lm_scale_0.9": 10.0})
    write_summary(d / "decode_test-clean" / "wer-summary-test-clean.txt", {
        "greedy": 22.0, "1best": 14.0,
        "whole-lattice-rescoring_lm_scale_0.5": 9.0, "whole-lattice-rescoring_lm_scale_0.9": 13.0})
    return d


def test_read_wer_summary_and_errors(tmp_path):
    f = tmp_path / "wer-summary-x.txt"
    f.write_text("settings\tWER\ngreedy\t12.50\n1best\t10.00\n")
    assert read_wer_summary(f) == {"greedy": 12.5, "1best": 10.0}
    f.write_text("settings\tWER\ngreedy\tabc\n")
    with pytest.raises(ValueError, match=r"wer-summary-x.txt:2: WER 'abc'"):
        read_wer_summary(f)
    f.write_text("settings\tWER\n")
    with pytest.raises(ValueError, match="no scores"):
        read_wer_summary(f)
    f.write_text("greedy 1 2\n")
    with pytest.raises(ValueError, match="expected 'KEY WER'"):
        read_wer_summary(f)


def test_split_key():
    assert split_key("greedy") == ("greedy", None)
    assert split_key("nbest-rescoring_lm_scale_0.7") == ("nbest-rescoring", "lm_scale_0.7")
    for key in ("greedy", "1best_lm_scale_0.5_wip_-1", "nnlm-rescoring_lm_scale_0.3_nnlm_scale_0.4"):
        assert result_key(*split_key(key)) == key
    assert setting_label("lm_scale_0.3_nnlm_scale_0.4") == "s=0.3, nnlm=0.4"
    assert setting_label("lm_scale_0.5_wip_-1") == "s=0.5, wip=-1"


def test_collect_missing_and_duplicates(tmp_path, system_dir):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        collect_system("x", tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no wer-summary"):
        collect_system("x", tmp_path / "empty")
    write_summary(system_dir / "again" / "wer-summary-test-clean.txt", {"greedy": 1.0})
    with pytest.raises(ValueError, match="scored in both"):
        collect_system("x", system_dir)


def test_tuning_on_dev_versus_oracle(system_dir):
    s = collect_system("tiny", system_dir)
    tuned = report_cell(s, "whole-lattice-rescoring", "test-clean", {"test-clean": "dev-clean"})
    # dev prefers scale 0.9, so test reports 13.0 at 0.9, not its own best 9.0
    assert (tuned.wer, tuned.setting, tuned.tuned_on) == (13.0, "lm_scale_0.9", "dev-clean")
    oracle = report_cell(s, "whole-lattice-rescoring", "test-clean", {})
    assert (oracle.wer, oracle.setting, oracle.tuned_on) == (9.0, "lm_scale_0.5", "self")
    plain = report_cell(s, "greedy", "test-clean", {"test-clean": "dev-clean"})
    assert (plain.wer, plain.setting) == (22.0, None)
    assert report_cell(s, "nbest-rescoring", "test-clean", {}) is None


def test_checks_parse_and_evaluate(system_dir):
    s = collect_system("ls", system_dir)
    checks = [
        Check.parse("greedy: ls:greedy:test-clean <= 25"),
        Check.parse("lm: ls:1best:test-clean <= 0.7 * ls:greedy:test-clean"),
        Check.parse("strict: ls:1best:test-clean <= 0.5 * ls:greedy:test-clean"),
        Check.parse("missing: ls:greedy:test_eval92 <= 10"),
    ]
    text, evaluated = render_markdown("t", [s], checks=checks)
    assert [ok for _, ok, _ in evaluated] == [True, True, False, None]
    assert "36.4% relative (target >= 30%)" in text
    assert "| missing | ls:greedy:test_eval92 was not scored | MISSING |" in text
    for bad in ["no label here", "x: ls:greedy <= 3", "x: ls:a:b >= 3"]:
        with pytest.raises(ValueError, match="check"):
            Check.parse(bad)


def test_render_published_and_columns(system_dir):
    s = collect_system("15x5", system_dir)
    text, _ = render_markdown("LS", [s], sets=["dev-clean", "test-clean"], tune={"test-clean": "dev-clean"},
                              published="librispeech")
    assert "| 15x5 | greedy | 20.00 | 22.00 |" in text
    assert "| 15x5 | whole-lattice-rescoring | 10.00 (s=0.9*) | 13.00 (s=0.9) |" in text
    assert "NGC model card" in text and "4.19" in text
    # rows without a number in the shown columns are left out (dev-other only)
    assert "15.69" not in text
    with pytest.raises(ValueError, match="unknown published"):
        render_markdown("x", [s], published="timit")
    assert {"librispeech", "wsj"} <= set(PUBLISHED)


def test_cli_writes_results(tmp_path, system_dir):
    out = tmp_path / "RESULTS.md"
    cmd = [sys.executable, "-m", "qnet.bin.make_results", "--out", str(out), "--published", "librispeech",
           "--tune", "test-clean=dev-clean", "--check", "g: ls:greedy:test-clean <= 10", "--print", "true",
           f"ls={system_dir}"]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert out.read_text() == r.stdout
    assert "| g | 22.00 (target <= 10) | FAIL |" in r.stdout
    r = subprocess.run(cmd + ["--strict", "true"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 1
    r = subprocess.run(cmd[:-1] + ["no-equals-sign"], cwd=ROOT, capture_output=True, text=True)
    assert r.returncode != 0 and "is not NAME=VALUE" in r.stderr


def test_per_voice_table_and_stage_times(tmp_path, system_dir):
    """WER per speaker (TTS voice) from the decode dir's ref/hyp files; stage times with their sum."""
    decode = system_dir / "decode_test-clean"
    (decode / "ref-test-clean.txt").write_text(
        "11-100-0000 the cat sat\n11-100-0001 a dog ran\n22-200-0000 one two three four\n33-300-0000 x\n")
    (decode / "hyp-test-clean-greedy.txt").write_text(
        "11-100-0000 the cat sat\n11-100-0001 a dig ran\n22-200-0000 one two\n")
    (decode / "hyp-test-clean-1best.txt").write_text(
        "11-100-0000 the cat sat\n11-100-0001 a dog ran\n22-200-0000 one two three four\n33-300-0000 x\n")
    voices = tmp_path / "synth_voices.txt"
    voices.write_text("# split speaker set gender voice minutes\n"
                      "test 11 test-clean M flite:kal16:rate=170:pitch=0 1.0\n"
                      "test 22 test-clean F espeak-ng:en-us+f4:rate=160:pitch=50 1.0\n"
                      "train 44 train-clean-100 F espeak-ng:en+f1:rate=160:pitch=50 1.0\n")
    times = tmp_path / "stage_times.txt"
    times.write_text("0 90 synthesis\n1 600 egs/librispeech\n")
    s = collect_system("ls", system_dir)
    text, _ = render_markdown("mini", [s], voice_files={"test-clean": voices},
                              stage_times=read_stage_times(times))
    assert "## Per voice: ls, test-clean" in text
    assert "| 11 | flite:kal16:rate=170:pitch=0 | 2 | 16.67 | 0.00 |" in text
    assert "| 22 | espeak-ng:en-us+f4:rate=160:pitch=50 | 1 | 50.00 | 0.00 |" in text
    # an utterance of a speaker missing from the voice list gets its own row (no hypothesis: all deleted)
    assert "| 33 | (not in the voice list) | 1 | 100.00 | 0.00 |" in text
    assert "| 1 | egs/librispeech | 600 |" in text and "| all | sum of the stages above | 690 (11.5 min) |" in text
    times.write_text("0 abc\n")
    with pytest.raises(ValueError, match="stage_times.txt:1"):
        read_stage_times(times)


def test_one_best_weight_and_penalty_tuned_on_dev_in_table_and_per_voice(tmp_path):
    """1best's (LM weight, word penalty) setting is picked on dev like an LM scale; the per-voice table reads
    the hypotheses of that setting and names it."""
    d = tmp_path / "exp" / "sys"
    write_summary(d / "decode_dev" / "wer-summary-dev.txt", {"1best": 30.0, "1best_lm_scale_0.5_wip_-2": 20.0})
    write_summary(d / "decode_test" / "wer-summary-test.txt", {"1best": 25.0, "1best_lm_scale_0.5_wip_-2": 50.0})
    decode = d / "decode_test"
    (decode / "ref-test.txt").write_text("11-1-0 the cat sat\n")
    (decode / "hyp-test-1best.txt").write_text("11-1-0 the cat sat\n")
    (decode / "hyp-test-1best_lm_scale_0.5_wip_-2.txt").write_text("11-1-0 the cat\n")
    voices = tmp_path / "synth_voices.txt"
    voices.write_text("test 11 test F espeak-ng:en 1.0\n")
    s = collect_system("sys", d)
    cell = report_cell(s, "1best", "test", {"test": "dev"})
    assert (cell.wer, cell.setting, cell.tuned_on) == (50.0, "lm_scale_0.5_wip_-2", "dev")
    text, _ = render_markdown("t", [s], tune={"test": "dev"}, voice_files={"test": voices})
    assert "| sys | 1best | 20.00 (s=0.5, wip=-2*) | 50.00 (s=0.5, wip=-2) |" in text
    assert "| speaker | voice | utterances | 1best (s=0.5, wip=-2) |" in text
    assert "| 11 | espeak-ng:en | 1 | 33.33 |" in text
