"""Recipe shells (egs/librispeech, egs/wsj, egs/mini): layout, option parsing, stage guards, and the
mini smoke recipe end to end (a few minutes; part of the default run, CI's path through every stage)."""

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
RECIPES = ["librispeech", "wsj", "mini"]


def run_recipe(recipe: str, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    """Run egs/<recipe>/run.sh from its folder (Kaldi convention) and capture its output."""
    return subprocess.run(["./run.sh", *args], cwd=ROOT / "egs" / recipe, capture_output=True, text=True,
                          timeout=timeout)


def done_markers(path: Path):
    """Every .done marker (`.done`, `.x.done`, `x.pt.done`) below `path`."""
    return sorted(p for p in path.rglob("*") if p.name == ".done" or p.name.endswith(".done"))


def make_librispeech(root: Path, parts=("train-clean-100", "dev-clean", "test-clean")) -> Path:
    """A LibriSpeech-layout folder with two 1-second noise utterances per part."""
    import soundfile as sf

    rng = np.random.default_rng(0)
    corpus = root / "LibriSpeech"
    for i, part in enumerate(parts):
        spk, chap = str(100 + i), "200"
        d = corpus / part / spk / chap
        d.mkdir(parents=True)
        lines = []
        for u, text in enumerate(["HELLO WORLD", "GOOD MORNING WORLD"]):
            uid = f"{spk}-{chap}-{u:04d}"
            sf.write(d / f"{uid}.flac", (0.1 * rng.standard_normal(16000)).astype("float32"), 16000)
            lines.append(f"{uid} {text}\n")
        (d / f"{spk}-{chap}.trans.txt").write_text("".join(lines))
    return corpus


@pytest.mark.parametrize("recipe", RECIPES)
def test_recipe_layout(recipe):
    d = ROOT / "egs" / recipe
    for name in ("steps", "utils", "local"):
        link = d / name
        assert link.is_symlink() and os.readlink(link) == f"../../{name}", link
        assert link.resolve() == (ROOT / name).resolve()
    assert os.readlink(d / "cmd.sh") == "../../conf/cmd.sh"
    assert "../../path.sh" in (d / "path.sh").read_text()
    run_sh = d / "run.sh"
    assert os.access(run_sh, os.X_OK)
    text = run_sh.read_text()
    assert "set -euo pipefail" in text and ". utils/recipe_init.sh" in text
    init = (ROOT / "utils" / "recipe_init.sh").read_text()
    assert "../../tools/setup.sh" in init
    assert ". utils/parse_options.sh" in init and ". ./path.sh" in init and ". ./cmd.sh" in init
    r = subprocess.run(["bash", "-n", str(run_sh)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr


@pytest.mark.parametrize("script", ["local/librispeech_lm.sh", "local/wsj_lm.sh"])
def test_local_scripts_parse(script):
    r = subprocess.run(["bash", "-n", str(ROOT / script)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert os.access(ROOT / script, os.X_OK)


@pytest.mark.parametrize("recipe", RECIPES)
def test_options_help_and_errors(recipe):
    r = run_recipe(recipe, "--help")
    assert r.returncode == 0 and "Usage" in r.stdout, r.stderr
    r = run_recipe(recipe, "--no-such-option", "1")
    assert r.returncode != 0 and "invalid option --no-such-option" in r.stderr
    r = run_recipe(recipe, "--stage", "3", "extra-positional")
    assert r.returncode != 0 and "Usage" in r.stderr


def test_librispeech_rerun_does_nothing(tmp_path):
    corpus = make_librispeech(tmp_path / "corpus")
    args = ["--stage", "0", "--stop-stage", "1", "--nj", "1", "--corpus-dir", str(corpus),
            "--dl-dir", str(tmp_path / "download"), "--data-dir", str(tmp_path / "data"),
            "--exp-dir", str(tmp_path / "exp"), "--train-parts", "train-clean-100",
            "--dev-parts", "dev-clean", "--test-parts", "test-clean"]
    r = run_recipe("librispeech", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    manifests = sorted((tmp_path / "data" / "manifests").glob("librispeech_*.jsonl.gz"))
    assert len(manifests) == 6
    markers = done_markers(tmp_path / "data")
    assert len(markers) == 3
    before = {p: p.stat().st_mtime_ns for p in manifests + markers}

    r = run_recipe("librispeech", *args)
    assert r.returncode == 0, r.stdout + r.stderr
    assert "manifests done for" in r.stdout and "nothing to download" in r.stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    assert "Stage 0" in r.stdout and "Stage 1" in r.stdout and "Stage 2" not in r.stdout


def test_librispeech_failed_stage_leaves_no_done(tmp_path):
    base = ["--nj", "1", "--dl-dir", str(tmp_path / "download"), "--data-dir", str(tmp_path / "data"),
            "--exp-dir", str(tmp_path / "exp"), "--train-parts", "train-clean-100", "--dev-parts", "dev-clean",
            "--test-parts", "test-clean"]
    r = run_recipe("librispeech", "--stage", "0", "--stop-stage", "1", "--corpus-dir",
                   str(tmp_path / "no-such-corpus"), *base)
    assert r.returncode != 0
    assert "does not exist" in r.stderr
    assert done_markers(tmp_path) == []

    # A corpus that lacks the test part: stage 0 refuses it; stage 1 (run alone) prepares the parts it
    # finds, marks only those, and fails for the missing one.
    corpus = make_librispeech(tmp_path / "corpus", parts=("train-clean-100", "dev-clean"))
    r = run_recipe("librispeech", "--stage", "0", "--stop-stage", "0", "--corpus-dir", str(corpus), *base)
    assert r.returncode != 0 and "test-clean" in r.stderr
    r = run_recipe("librispeech", "--stage", "1", "--stop-stage", "1", *base)
    assert r.returncode != 0 and "test-clean" in r.stderr
    names = [p.name for p in done_markers(tmp_path / "data")]
    assert names == [".librispeech_dev-clean.done", ".librispeech_train-clean-100.done"]


def test_wsj_bad_discs_fail_without_markers(tmp_path):
    base = ["--stage", "0", "--stop-stage", "1", "--data-dir", str(tmp_path / "data"),
            "--exp-dir", str(tmp_path / "exp")]
    r = run_recipe("wsj", *base)
    assert r.returncode != 0 and "give --wsj0 DIR" in r.stderr
    (tmp_path / "empty0").mkdir()
    (tmp_path / "empty1").mkdir()
    r = run_recipe("wsj", *base, "--wsj0", str(tmp_path / "empty0"), "--wsj1", str(tmp_path / "empty1"))
    assert r.returncode != 0
    assert "Stage 1" not in r.stdout
    assert done_markers(tmp_path) == []


# Not marked slow on purpose: this is CI's one fast path through every stage of every recipe.
def test_mini_smoke_end_to_end(tmp_path):
    """egs/mini/run.sh --smoke true: every stage of the librispeech and wsj code paths, then a rerun."""
    args = ["--smoke", "true", "--data-dir", str(tmp_path / "data"), "--exp-dir", str(tmp_path / "exp")]
    r = run_recipe("mini", *args, timeout=900)
    log = r.stdout + r.stderr
    assert r.returncode == 0, log[-6000:]
    results = tmp_path / "exp" / "RESULTS.md"
    text = results.read_text()
    for system in ("librispeech", "wsj-finetuned", "wsj-scratch"):
        for method in ("greedy", "ctc-decoding", "1best", "nbest-rescoring", "whole-lattice-rescoring"):
            assert f"| {system} | {method} |" in text, (system, method)
    assert "## Targets" in text
    assert "| HLG 1best WER on unseen voices |" in text and ("| PASS |" in text or "| FAIL |" in text)
    assert "## Per voice: librispeech, test-clean" in text and "## Per voice: wsj-finetuned, test_eval92" in text
    assert "## Wall time per stage" in text and "| 0 | synthesis (local/mini_synth.sh) |" in text
    assert text in r.stdout  # printed
    ls_exp = tmp_path / "exp" / "librispeech" / "quartznet_tiny_lang_char"
    for part in ("dev-clean", "test-clean"):
        assert (ls_exp / f"decode_{part}" / f"wer-summary-{part}.txt").is_file()
    for system in ("quartznet_finetuned", "quartznet_tiny_scratch"):
        for part in ("test_dev93", "test_eval92"):
            assert (tmp_path / "exp" / "wsj" / system / f"decode_{part}" / ".done").is_file()

    # Rerunning finished stages does nothing: no new checkpoints, decodes or features.
    watched = [p for p in (tmp_path / "exp").rglob("*.pt")] + list((tmp_path / "data").rglob("*.jsonl.gz"))
    before = {p: p.stat().st_mtime_ns for p in watched}
    r = run_recipe("mini", *args, "--stop-stage", "2", timeout=600)
    assert r.returncode == 0, (r.stdout + r.stderr)[-4000:]
    assert {p: p.stat().st_mtime_ns for p in watched} == before
    assert "already trained" in r.stdout and "skipping" in r.stdout


def test_mini_default_folders_per_run_kind():
    """Full, smoke and other-seed runs of egs/mini default to their own data/exp folders."""
    mini = ROOT / "egs" / "mini"
    cases = [((), "data", "exp"), (("--smoke", "true"), "data_smoke", "exp_smoke"),
             (("--seed", "1"), "data_seed1", "exp_seed1"), (("--smoke", "true", "--seed", "2"), "data_smoke_seed2",
                                                             "exp_smoke_seed2")]
    for args, data, exp in cases:
        existed = {d: (mini / d).exists() for d in (data, exp)}
        try:
            r = run_recipe("mini", *args, "--stage", "4", timeout=120)  # no stage runs
            assert r.returncode == 0, r.stderr
            assert f"data in {data}, experiments in {exp}" in r.stdout, r.stdout
        finally:
            for d, was_there in existed.items():
                if not was_there:
                    subprocess.run(["rm", "-rf", str(mini / d)], check=True)


def write_supervisions(path: Path, texts) -> None:
    """A lhotse supervision manifest with one segment per text."""
    from lhotse import SupervisionSegment, SupervisionSet

    segs = [SupervisionSegment(id=f"u{i}", recording_id=f"r{i}", start=0.0, duration=1.0, text=t)
            for i, t in enumerate(texts)]
    path.parent.mkdir(parents=True, exist_ok=True)
    SupervisionSet.from_segments(segs).to_file(path)


def run_local(script: str, *args: str) -> subprocess.CompletedProcess:
    """Run a local/ script from a recipe folder, with the recipe environment."""
    return subprocess.run(["bash", "-c", '. ./path.sh && "$@"', "_", script, *args], cwd=ROOT / "egs" / "librispeech",
                          capture_output=True, text=True, timeout=120)


def test_lm_text_phase_vocabularies(tmp_path):
    manifests = tmp_path / "manifests"
    write_supervisions(manifests / "librispeech_supervisions_train-clean-100.jsonl.gz", ["HELLO WORLD", "GOOD DAY"])
    write_supervisions(manifests / "extra_supervisions.jsonl.gz", ["EXTRA WORDS"])
    text = tmp_path / "lm.txt"
    text.write_text("b a c a\nb a\nd\n")
    lm = tmp_path / "lm_lmplz"
    common = ["--phase", "text", "--parts", "train-clean-100"]
    r = run_local("local/librispeech_lm.sh", *common, "--source", "lmplz", "--text", str(text), "--vocab-size", "2",
                  "--supervisions", str(manifests / "extra_supervisions.jsonl.gz"), str(manifests), str(lm))
    assert r.returncode == 0, r.stderr
    assert (lm / "train_text.txt").read_text() == "HELLO WORLD\nGOOD DAY\nEXTRA WORDS\n"
    assert (lm / "vocab.txt").read_text() == "a\nb\n"  # the two most frequent words
    assert (lm / "source").read_text().strip() == "lmplz"
    r = run_local("local/librispeech_lm.sh", *common, "--source", "lmplz", "--text", str(text), str(manifests), str(lm))
    assert r.returncode == 0 and "skipping" in r.stdout

    arpa = tmp_path / "g.arpa"
    arpa.write_text("\\data\\\nngram 1=4\n\n\\1-grams:\n-1.0\t<s>\t-0.5\n-1.0\t</s>\n-2.0\thello\t-0.3\n"
                    "-2.0\tworld\n\n\\2-grams:\n-0.5\thello world\n\n\\end\\\n")
    lm = tmp_path / "lm_arpa"
    r = run_local("local/librispeech_lm.sh", *common, "--source", "arpa", "--arpa-hlg", str(arpa),
                  str(manifests), str(lm))
    assert r.returncode == 0, r.stderr
    assert (lm / "vocab.txt").read_text() == "hello\nworld\n"

    lm = tmp_path / "lm_bad"
    r = run_local("local/librispeech_lm.sh", *common, "--source", "arpa", str(manifests), str(lm))
    assert r.returncode != 0 and "needs --arpa-hlg" in r.stderr
    r = run_local("local/librispeech_lm.sh", *common, "--source", "lmplz", "--text", str(tmp_path / "none.txt"),
                  str(manifests), str(lm))
    assert r.returncode != 0 and "no LM text" in r.stderr
    r = run_local("local/librispeech_lm.sh", "--phase", "text", "--parts", "train-other-500", "--source", "lmplz",
                  "--text", str(text), str(manifests), str(lm))
    assert r.returncode != 0 and "train-other-500.jsonl.gz is missing" in r.stderr
    assert not lm.exists() or done_markers(lm) == []


def test_results_stage_of_librispeech_and_wsj(tmp_path):
    """Stage 8 of both recipes collects the decode dirs of stage 7 into exp/RESULTS.md."""
    def summary(path: Path, rows: dict) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("settings\tWER\n" + "".join(f"{k}\t{v:.2f}\n" for k, v in rows.items()))

    exp = tmp_path / "ls_exp"
    model_dir = exp / "quartznet_tiny_lang_char"
    for part, wer in [("dev-clean", 5.0), ("test-clean", 6.0), ("dev-other", 15.0), ("test-other", 16.0)]:
        summary(model_dir / f"decode_{part}" / f"wer-summary-{part}.txt",
                {"greedy": wer, "whole-lattice-rescoring_lm_scale_0.5": wer - 1})
    r = run_recipe("librispeech", "--stage", "8", "--model", "tiny", "--exp-dir", str(exp),
                   "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    text = (exp / "RESULTS.md").read_text()
    assert "| tiny | greedy | 5.00 | 15.00 | 6.00 | 16.00 |" in text
    assert "NGC model card" in text and "test-clean <- dev-clean" in text

    exp = tmp_path / "wsj_exp"
    for system, wer in [("quartznet_finetuned", 5.0), ("quartznet_5x3_scratch", 9.0)]:
        for part in ("test_dev93", "test_eval92"):
            summary(exp / system / f"decode_{part}" / f"wer-summary-{part}.txt", {"greedy": wer, "1best": wer - 2})
    r = run_recipe("wsj", "--stage", "8", "--exp-dir", str(exp), "--data-dir", str(tmp_path / "data"))
    assert r.returncode == 0, r.stderr
    text = (exp / "RESULTS.md").read_text()
    assert "| finetuned | 1best | 3.00 | 3.00 |" in text and "| 5x3-scratch | greedy | 9.00 | 9.00 |" in text
    assert "could not be verified" in text
