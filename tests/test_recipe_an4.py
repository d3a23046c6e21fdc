"""egs/an4 on the real AN4 corpus: `./run.sh --smoke true` through every stage (4 speakers, tiny model, one
epoch per system; CI's real-speech path), and the recipe's option checks. Needs ../shared/data/an4."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPE = ROOT / "egs" / "an4"
AN4 = ROOT.parent / "shared" / "data" / "an4"

needs_an4 = pytest.mark.skipif(
    not (AN4 / "etc" / "an4_train.fileids").is_file(),
    reason=f"the AN4 corpus is not at {AN4} (an4_sphere layout: etc/ and wav/); egs/an4 is not exercised",
)


def run_an4(*args: str, timeout: float = 1800) -> subprocess.CompletedProcess:
    """Run egs/an4/run.sh from its folder and capture its output."""
    return subprocess.run(["./run.sh", *args], cwd=RECIPE, capture_output=True, text=True, timeout=timeout)


def test_options_and_bad_corpus_dir(tmp_path):
    help_text = run_an4("--help").stdout + run_an4("--help").stderr
    for opt in ("--corpus-dir", "--num-dev-speakers", "--bpe-size", "--lm-order", "--pretrained", "--smoke"):
        assert opt in help_text, opt
    res = run_an4("--corpus-dir", str(tmp_path), "--stop-stage", "0", "--dl-dir", str(tmp_path / "dl"),
                  "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp"))
    assert res.returncode != 0 and "is not AN4" in res.stderr


@needs_an4
def test_smoke_run_every_stage(tmp_path):
    dirs = ["--dl-dir", str(tmp_path / "download"), "--data-dir", str(tmp_path / "data"),
            "--exp-dir", str(tmp_path / "exp")]
    res = run_an4("--smoke", "true", "--corpus-dir", str(AN4), *dirs)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    data, exp = tmp_path / "data", tmp_path / "exp"
    # stage 1: 4 speakers of each CMU list, one train speaker held out as dev
    dev_speakers = (data / "manifests" / "an4_dev_speakers.txt").read_text().split()
    assert len(dev_speakers) == 1
    for part in ("train", "dev", "test"):
        report = (data / "manifests" / f"an4_{part}.report.txt").read_text()
        assert "skipped 0" in report, report
    # stage 2: the training part is speed perturbed
    from lhotse import load_manifest

    train_ids = [c.id for c in load_manifest(data / "fbank" / "an4_cuts_train.jsonl.gz")]
    assert any(i.endswith("_sp0.9") for i in train_ids) and any(i.endswith("_sp1.1") for i in train_ids)
    # stages 3-4: char lang dir, both LMs, HLG
    for f in ("lang_char/HLG.pt", "lang_char/words.txt", "lm/G_hlg.fst.txt", "lm/G_rescore.fst.txt"):
        assert (data / f).is_file(), f
    # stages 5-6: scratch, then fine-tuned from it (smoke: --pretrained scratch)
    scratch = exp / "quartznet_tiny_lang_char_scratch"
    finetuned = exp / "quartznet_lang_char_finetuned"
    assert "fine-tuning:" in (finetuned / "log" / "train.log").read_text()
    # stage 7: every method on dev and test for both systems
    for system in (scratch, finetuned):
        for part in ("dev", "test"):
            summary = (system / f"decode_{part}" / f"wer-summary-{part}.txt").read_text()
            for method in ("greedy", "ctc-decoding", "1best", "nbest-rescoring", "whole-lattice-rescoring"):
                assert method in summary, (system, part, method)
            assert (system / f"decode_{part}" / f"cer-summary-{part}.txt").is_file()
    # stage 8: RESULTS.md with both systems, CER rows, ESPnet's numbers and the targets
    results = (exp / "RESULTS.md").read_text()
    assert "| scratch | greedy |" in results and "| finetuned | 1best |" in results
    assert "| scratch | greedy-cer |" in results
    assert "ESPnet2 Transformer" in results and "7.40" in results and "espnet egs2/an4/asr1" in results
    assert results.count("greedy CER <= 10%") == 2 and ("| FAIL |" in results or "| PASS |" in results)
    assert "## Wall time per stage" in results
    # a rerun finds every stage done
    again = run_an4("--smoke", "true", "--corpus-dir", str(AN4), "--stage", "1", "--stop-stage", "6", *dirs)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "already trained" in again.stdout
