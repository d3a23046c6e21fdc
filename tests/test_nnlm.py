"""Neural LM: training (perplexity, exact resume after kill -9, DDP on CPU), sentence scoring, and
n-best rescoring that puts the n-gram's answer right."""

import math
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from decode_helpers import frame_log_probs, make_char_lang, peaky_frames
from train_helpers import wait_for_step_checkpoint
from qnet.bin import train_nnlm
from qnet.decode import Decoder, DecodeOptions, nnlm_key
from qnet.nnlm import EOS_ID, UNK_ID, NnlmScorer, Vocab, epoch_batches, load_nnlm, pad_batch, token_nll
from qnet.tokens import CharTokenizer

ROOT = Path(__file__).resolve().parents[1]

# "the hat sat" is what this text says; the HLG/rescoring bigram of decode_helpers prefers "the cat sat".
HAT_TEXT = ["THE HAT SAT"] * 60 + ["A CAT"] * 20 + ["THE HAT"] * 20 + ["A CAT SAT ON THE HAT"] * 10


def _args(text, exp, *extra):
    return ["--text", str(text), "--exp-dir", str(exp), "--model-size", "tiny", "--max-tokens", "200",
            "--warmup-steps", "5", "--lr", "3e-3", "--valid-interval", "10", "--log-interval", "5",
            "--num-threads", "1", "--tensorboard", "false", *extra]


@pytest.fixture(scope="module")
def hat_nnlm(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("nnlm")
    text = tmp / "lm.txt"
    text.write_text("\n".join(HAT_TEXT) + "\n")
    exp = tmp / "exp"
    assert train_nnlm.main(_args(text, exp, "--num-epochs", "6", "--dropout", "0", "--tensorboard", "true")) == 0
    return exp


def test_training_reports_perplexity_and_writes_everything(hat_nnlm):
    names = {p.name for p in hat_nnlm.iterdir()}
    assert {"nnlm.pt", "epoch-6.pt", "curves.png", "data.pt", "tensorboard", "log"} <= names
    log = next((hat_nnlm / "log").glob("log-train-nnlm-*.txt")).read_text()
    assert "held out" in log and "held-out perplexity" in log
    ppls = [h["ppl"] for h in torch.load(hat_nnlm / "epoch-6.pt")["history"] if h["kind"] == "valid"]
    assert len(ppls) == 6 and ppls[-1] < ppls[0] / 2 and ppls[-1] < 4.0  # 6 words + </s>, a very regular text
    model, vocab = load_nnlm(hat_nnlm / "nnlm.pt")
    assert vocab.words[:2] == ["<eos>", "<unk>"] and set(vocab.words[2:]) == {"the", "hat", "sat", "a", "cat", "on"}
    # the scorer agrees with the training loss, whatever the batching
    seqs = [vocab.encode("the hat sat".split()), vocab.encode("a cat".split()), vocab.encode(["zebra"])]
    assert seqs[2] == [UNK_ID]
    inputs, targets = pad_batch(seqs)
    assert inputs[0, 0] == EOS_ID and targets[1, 2] == EOS_ID and targets[1, 3] == -100
    expected = -token_nll(model, inputs, targets).sum(1).double()
    for max_tokens in (1, 10_000):
        got = NnlmScorer(model, vocab, max_tokens=max_tokens).score(seqs)
        assert torch.allclose(got, expected, atol=1e-4)
    assert got[0] > got[2] + 3  # the seen sentence is far likelier than an unknown word


def test_nnlm_rescoring_puts_the_ngram_answer_right(tmp_path, hat_nnlm):
    lang = make_char_lang(tmp_path)
    lp = frame_log_probs(peaky_frames("the hat sat", confusions={4: {"h": 0.5, "c": 0.4}})).unsqueeze(0)
    dec = Decoder(["1best", "nbest-rescoring", "nnlm-rescoring"], CharTokenizer(), lang,
                  G_rescore=tmp_path / "G.fst.txt", nnlm=hat_nnlm / "nnlm.pt",
                  opts=DecodeOptions(lm_scales=[0.5, 1.0], nnlm_scales=[0.0, 2.0], num_paths=50))
    out = dec.decode(lp, torch.tensor([lp.shape[1]]), ["u"])
    assert set(out) == set(dec.result_keys()) and len(dec.result_keys()) == 1 + 2 + 4
    assert out["1best"] == ["the cat sat"]
    assert out["nbest-rescoring_lm_scale_1"] == ["the cat sat"]  # the n-gram keeps the wrong word
    assert out[nnlm_key(1.0, 0.0)] == ["the cat sat"]  # nnlm scale 0 is n-gram rescoring
    assert out[nnlm_key(1.0, 2.0)] == ["the hat sat"]  # the NNLM knows better
    assert out[nnlm_key(0.5, 2.0)] == ["the hat sat"]
    assert dec.stats.fallback == {}


def test_nnlm_rescoring_needs_its_model(tmp_path):
    lang = make_char_lang(tmp_path, with_hlg=True)
    with pytest.raises(ValueError, match="needs --nnlm"):
        Decoder(["nnlm-rescoring"], CharTokenizer(), lang, G_rescore=tmp_path / "G.fst.txt")


def test_epoch_batches_cover_every_sentence_once_within_the_budget():
    lengths = torch.randint(1, 30, (500,), generator=torch.Generator().manual_seed(0))
    one = epoch_batches(lengths, 1, 7, 200)
    flat = torch.cat(one).tolist()
    assert sorted(flat) == list(range(500))
    for b in one:
        assert len(b) == 1 or int(lengths[b].max() + 1) * len(b) <= 200
    assert [b.tolist() for b in epoch_batches(lengths, 1, 7, 200)] == [b.tolist() for b in one]  # reproducible
    assert [b.tolist() for b in epoch_batches(lengths, 2, 7, 200)] != [b.tolist() for b in one]  # reshuffled
    ranks = [epoch_batches(lengths, 1, 7, 200, world_size=2, rank=r) for r in (0, 1)]
    assert len(ranks[0]) == len(ranks[1]) == len(one) // 2
    seen = [set(torch.cat(r).tolist()) for r in ranks]
    assert not seen[0] & seen[1]


def test_vocab_keeps_the_most_frequent_words():
    from collections import Counter

    v = Vocab.from_counts(Counter({"b": 5, "a": 5, "c": 1}), size=2)
    assert v.words == ["<eos>", "<unk>", "a", "b"] and v.encode(["b", "c"]) == [3, UNK_ID]


def _lm_text(tmp_path, n=300):
    import random

    rng = random.Random(0)
    words = "the cat sat on a hat dog ran in park".split()
    text = tmp_path / "lm.txt.gz"
    import gzip

    with gzip.open(text, "wt") as f:
        for _ in range(n):
            f.write(" ".join(rng.choice(words) for _ in range(rng.randint(2, 8))) + "\n")
    return text


def test_lstm_option_and_cpu_bf16_autocast(tmp_path):
    text = _lm_text(tmp_path, 100)
    exp = tmp_path / "lstm"
    assert train_nnlm.main(_args(text, exp, "--kind", "lstm", "--num-epochs", "1", "--amp", "bf16")) == 0
    model, vocab = load_nnlm(exp / "nnlm.pt")
    assert model.config.kind == "lstm"
    assert torch.isfinite(NnlmScorer(model, vocab).score([vocab.encode(["the", "cat"])])).all()


def _params(path):
    return torch.load(path)["model"]


def test_kill9_then_same_command_resumes_exactly(tmp_path):
    text = _lm_text(tmp_path)
    exp = tmp_path / "killed"
    args = _args(text, exp, "--num-epochs", "3", "--save-every-n", "1", "--keep-last-k", "2", "--dropout", "0.2")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "qnet.bin.train_nnlm", *args]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_for_step_checkpoint(exp, 4, timeout=120)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert list(exp.glob("checkpoint-*.pt")), "no checkpoint before the kill"
    assert not (exp / "epoch-3.pt").exists(), "killed too late"
    done = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    log = "".join(p.read_text() for p in (exp / "log").glob("*.txt"))
    assert "resumed from" in log
    straight = tmp_path / "straight"
    assert train_nnlm.main(_args(text, straight, "--num-epochs", "3", "--save-every-n", "0", "--dropout", "0.2")) == 0
    a, b = _params(straight / "epoch-3.pt"), _params(exp / "epoch-3.pt")
    for k in a:
        assert torch.equal(a[k], b[k]), k


def test_ddp_two_processes_on_cpu(tmp_path):
    """steps/train_nnlm.sh --num-gpus 0 --cpu-procs 2: two one-thread gloo ranks (utils/torchrun_local.sh)."""
    text = _lm_text(tmp_path)
    exp = tmp_path / "ddp"
    env = {**os.environ, "PYTHONPATH": str(ROOT),
           "PATH": f"{Path(sys.executable).parent}:{ROOT / 'utils'}:{os.environ['PATH']}"}
    train_opts = " ".join(_args(text, exp)[6:] + ["--save-every-n", "0"])  # past --text/--exp-dir/--model-size
    cmd = ["bash", "steps/train_nnlm.sh", "--num-gpus", "0", "--cpu-procs", "2", "--model-size", "tiny",
           "--num-epochs", "1", "--max-tokens", "200", "--lr", "3e-3", "--train-opts", train_opts, str(text), str(exp)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    run_log = exp / "log" / "train_nnlm.log"
    assert proc.returncode == 0, proc.stderr[-2000:] + (run_log.read_text()[-3000:] if run_log.exists() else "")
    assert (exp / ".done").exists()
    log = next((exp / "log").glob("*.txt")).read_text()
    assert "world size 2" in log and "held-out perplexity" in log
    ckpt = torch.load(exp / "epoch-1.pt")
    assert len(ckpt["rng"]) == 2 and ckpt["world_size"] == 2
    ppl = ckpt["best"]["ppl"]
    assert math.isfinite(ppl) and ppl < 30  # 10 words + </s>: learned something in one epoch


def test_decode_sh_nnlm_rescoring_and_results(tmp_path, hat_nnlm):
    from decode_helpers import make_audio_cuts, make_tiny_model
    from qnet.results import collect_system, report_cell

    lang = make_char_lang(tmp_path)
    model = make_tiny_model(tmp_path / "model.pt")
    cuts = make_audio_cuts(tmp_path, ["the hat sat", "a cat"])
    out = tmp_path / "exp" / "decode"
    env = dict(os.environ, PATH=f"{ROOT}/utils:{os.environ['PATH']}", OMP_NUM_THREADS="1")
    cmd = ["bash", "steps/decode.sh", "--methods", "1best,nnlm-rescoring", "--G-rescore", str(tmp_path / "G.fst.txt"),
           "--nnlm", str(hat_nnlm / "nnlm.pt"), "--lm-scales", "0.5,1", "--nnlm-scales", "0,1", "--num-paths", "5",
           "--search-beam", "8", "--output-beam", "4", "--max-active-states", "200", "--blank-skip-threshold", "0.999",
           str(model), str(cuts), str(lang), str(out)]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout[-3000:]
    log = (out / "log" / "decode.1.log").read_text()
    assert "'nnlm_scales': '0,1'" in log and "'blank_skip_threshold': 0.999" in log
    for key in ("1best", nnlm_key(0.5, 0), nnlm_key(1, 1)):
        assert len((out / f"hyp-cuts_test-{key}.txt").read_text().splitlines()) == 2, key
    system = collect_system("s", tmp_path / "exp")
    cell = report_cell(system, "nnlm-rescoring", "cuts_test", {})
    assert cell is not None and cell.setting.startswith("lm_scale_") and "_nnlm_scale_" in cell.setting
    missing = subprocess.run(cmd[:6] + ["--nnlm", str(tmp_path / "none.pt")] + cmd[8:], cwd=ROOT, env=env,
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert missing.returncode == 1 and "none.pt is missing" in missing.stdout
