"""Decoding: greedy, ctc-decoding, HLG 1best, rescoring on crafted log-probs; the decode CLI and
steps/decode.sh on a random tiny model."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

from decode_helpers import frame_log_probs, make_audio_cuts, make_char_lang, make_tiny_model, peaky_frames
from qnet.ctc import greedy_decode
from qnet.decode import Decoder, DecodeOptions
from qnet.tokens import CharTokenizer

REPO = Path(__file__).resolve().parents[1]
ALL_METHODS = ["greedy", "ctc-decoding", "1best", "whole-lattice-rescoring", "nbest-rescoring"]


def test_greedy_merges_repeats_and_drops_blanks():
    lp = torch.full((2, 6, 4), -10.0)
    for t, k in enumerate([1, 1, 0, 1, 2, 2]):
        lp[0, t, k] = 0.0
    for t, k in enumerate([3, 0, 3, 3, 0, 0]):
        lp[1, t, k] = 0.0
    assert greedy_decode(lp, torch.tensor([6, 3])) == [[1, 1, 2], [3, 3]]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    return make_char_lang(tmp_path_factory.mktemp("lang"))


def _decoder(lang, methods=ALL_METHODS):
    return Decoder(methods, CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt",
                   opts=DecodeOptions(lm_scales=[0.5, 1.0]))


def test_hlg_fixes_a_misspelling_greedy_makes(lang):
    # "the cat sat" with the 'a' of "cat" mostly 'q': greedy spells "cqt", the lexicon + G know "cat"
    frames = peaky_frames("the cat sat", confusions={5: {"q": 0.5, "a": 0.4}})
    lp = frame_log_probs(frames).unsqueeze(0)
    out = _decoder(lang).decode(lp, torch.tensor([lp.shape[1]]), ["u1"])
    assert out["greedy"] == ["the cqt sat"]
    assert out["ctc-decoding"] == ["the cqt sat"]  # H knows no words: same as greedy
    assert out["1best"] == ["the cat sat"]
    for scale in ("0.5", "1"):
        assert out[f"whole-lattice-rescoring_lm_scale_{scale}"] == ["the cat sat"]
        assert out[f"nbest-rescoring_lm_scale_{scale}"] == ["the cat sat"]


def test_lm_decides_between_acoustically_equal_words(lang):
    # "the ?at": 'c' and 'h' equally likely; the bigram prefers "the cat" over "the hat"
    frames = peaky_frames("the cat", confusions={4: {"c": 0.45, "h": 0.45}})
    lp = frame_log_probs(frames).unsqueeze(0)
    out = _decoder(lang, ["1best", "whole-lattice-rescoring"]).decode(lp, torch.tensor([lp.shape[1]]), ["u"])
    assert out["1best"] == ["the cat"]
    assert out["whole-lattice-rescoring_lm_scale_1"] == ["the cat"]


def test_one_best_lm_weight_and_word_penalty_sweep(lang, tmp_path):
    # "the ?at" with 'h' a little likelier than 'c': the bigram's "the cat" wins at LM weight 1, the
    # acoustics' "the hat" at weight 0; a large word penalty drops words, a bonus does not
    frames = peaky_frames("the cat", confusions={4: {"h": 0.47, "c": 0.43}})
    lp = frame_log_probs(frames).unsqueeze(0)
    lens = torch.tensor([lp.shape[1]])
    opts = DecodeOptions(hlg_scales=[0.0, 1.0], word_penalties=[-2.0, 0.0, 40.0])
    dec = Decoder(["1best"], CharTokenizer(), lang, opts=opts)
    out = dec.decode(lp, lens, ["u"])
    assert set(out) == set(dec.result_keys()) == {"1best"} | {
        f"1best_lm_scale_{w}_wip_{p}" for w in (0, 1) for p in (-2, 0, 40)} - {"1best_lm_scale_1_wip_0"}
    assert out["1best"] == ["the cat"]
    assert out["1best_lm_scale_0_wip_0"] == ["the hat"]
    assert out["1best_lm_scale_1_wip_-2"] == ["the cat"]
    assert len(out["1best_lm_scale_1_wip_40"][0].split()) < 2
    # the sweep decodes with rewritten scores: the same as a graph whose scores were scaled beforehand
    from qnet.graph import load_HLG, save_HLG, words_per_arc

    HLG = load_HLG(lang / "HLG.pt")
    assert int(words_per_arc(HLG).sum()) > 0
    HLG.scores = HLG.scores * 0.0 + 2.0 * words_per_arc(HLG).to(HLG.scores.dtype)
    save_HLG(HLG, tmp_path / "HLG_w0_p-2.pt")
    pre = Decoder(["1best"], CharTokenizer(), lang, hlg_path=tmp_path / "HLG_w0_p-2.pt").decode(lp, lens, ["u"])
    assert pre["1best"] == out["1best_lm_scale_0_wip_-2"]


def test_batch_order_and_empty_lattices_do_not_stop_decoding(lang):
    a = frame_log_probs(peaky_frames("a cat sat on the hat"))
    b = frame_log_probs(peaky_frames("the hat"))
    T = a.shape[0]
    lp = torch.full((4, T, 29), float("-inf"))
    lp[0, : b.shape[0]] = b  # shorter first: k2 needs sorted segments, results must come back in order
    lp[1] = a
    lp[3, : b.shape[0]] = b
    lens = torch.tensor([b.shape[0], T, 5, 0])  # utt 2: all -inf (empty lattice), utt 3: zero frames
    dec = _decoder(lang)
    out = dec.decode(lp, lens, ["u0", "u1", "u2", "u3"])
    assert out["1best"] == ["the hat", "a cat sat on the hat", "", ""]
    assert out["nbest-rescoring_lm_scale_0.5"] == ["the hat", "a cat sat on the hat", "", ""]
    assert out["whole-lattice-rescoring_lm_scale_1"] == ["the hat", "a cat sat on the hat", "", ""]
    assert out["ctc-decoding"][:2] == ["the hat", "a cat sat on the hat"]
    assert set(out) == set(dec.result_keys())
    assert dec.stats.empty["1best"] == ["u2"]
    assert dec.stats.empty["all graph methods (zero frames)"] == ["u3"]


def test_greedy_decoder_needs_no_lang_dir():
    lp = frame_log_probs(peaky_frames("hello world")).unsqueeze(0)
    out = Decoder(["greedy"], CharTokenizer()).decode(lp, torch.tensor([lp.shape[1]]), ["u"])
    assert out == {"greedy": ["hello world"]}


def test_unknown_method_is_rejected():
    with pytest.raises(ValueError, match="unknown decoding method"):
        Decoder(["beam"], CharTokenizer())


def test_decode_cli_end_to_end(tmp_path, lang):
    from qnet.bin.decode import main

    model = make_tiny_model(tmp_path / "model.pt")
    cuts = make_audio_cuts(tmp_path, ["the cat sat", "a hat", "the cat", "on the hat"])
    out = tmp_path / "decode"
    main(["--model", str(model), "--cuts", str(cuts), "--lang-dir", str(lang), "--G-rescore",
          str(lang.parent / "G.fst.txt"), "--methods", "greedy,ctc-decoding,1best,whole-lattice-rescoring",
          "--lm-scales", "0.5,1.0", "--out-dir", str(out), "--max-duration", "1.5", "--test-set", "test"])
    ref = (out / "ref-test.txt").read_text().splitlines()
    assert [line.split(maxsplit=1)[1] for line in ref] == ["the cat sat", "a hat", "the cat", "on the hat"]
    for key in ("greedy", "ctc-decoding", "1best", "whole-lattice-rescoring_lm_scale_0.5"):
        assert len((out / f"hyp-test-{key}.txt").read_text().splitlines()) == 4
        assert (out / f"errs-test-{key}.txt").read_text().startswith("%WER ")
        assert (out / f"recogs-test-{key}.txt").is_file()
    summary = (out / "wer-summary-test.txt").read_text().splitlines()
    assert summary[0] == "settings\tWER" and len(summary) == 1 + 5
    assert (out / "cer-summary-test.txt").is_file()


def test_decode_cli_precomputed_features_greedy(tmp_path):
    from lhotse import CutSet, LilcomChunkyWriter

    from qnet.bin.decode import main
    from qnet.features import NemoMelExtractor

    model = make_tiny_model(tmp_path / "model.pt")
    cuts = CutSet.from_file(make_audio_cuts(tmp_path, ["one two", "three"]))
    cuts = cuts.compute_and_store_features(NemoMelExtractor(), tmp_path / "feats", num_jobs=1,
                                           storage_type=LilcomChunkyWriter)
    cuts.to_file(tmp_path / "feats_cuts.jsonl.gz")
    main(["--model", str(model), "--cuts", str(tmp_path / "feats_cuts.jsonl.gz"), "--out-dir",
          str(tmp_path / "dec"), "--methods", "greedy"])
    assert len((tmp_path / "dec" / "hyp-feats_cuts-greedy.txt").read_text().splitlines()) == 2
    assert (tmp_path / "dec" / "errs-feats_cuts-greedy.txt").is_file()


def test_decode_sh_parallel_jobs(tmp_path, lang):
    model = make_tiny_model(tmp_path / "model.pt")
    cuts = make_audio_cuts(tmp_path, ["the cat sat", "a hat", "the cat", "on the hat", "the hat"])
    out = tmp_path / "decode"
    env = dict(os.environ, PATH=f"{REPO}/utils:{os.environ['PATH']}")
    proc = subprocess.run(
        ["bash", "steps/decode.sh", "--nj", "2", "--methods", "greedy,1best", "--hlg-scales", "0.5,1",
         "--word-penalties", "-1,0", str(model), str(cuts), str(lang), str(out)],
        cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    assert len((out / "ref-cuts_test.txt").read_text().splitlines()) == 5
    for key in ("1best", "1best_lm_scale_0.5_wip_-1", "1best_lm_scale_0.5_wip_0", "1best_lm_scale_1_wip_-1"):
        assert len((out / f"hyp-cuts_test-{key}.txt").read_text().splitlines()) == 5
    assert (out / "log" / "decode.2.log").is_file()
    summary = (out / "wer-summary-cuts_test.txt").read_text()
    assert "greedy" in summary and "1best_lm_scale_0.5_wip_-1" in summary


def test_greedy_decode_and_scoring_work_without_k2(tmp_path):
    import sys

    code = (
        "import sys; sys.modules['k2'] = None\n"
        "import torch\n"
        "from qnet.decode import Decoder\n"
        "from qnet.tokens import CharTokenizer\n"
        "from qnet.scoring import score_set, pair_results\n"
        "lp = torch.randn(2, 20, 29).log_softmax(-1)\n"
        "hyps = Decoder(['greedy'], CharTokenizer()).decode(lp, torch.tensor([20, 10]), ['a', 'b'])['greedy']\n"
        f"score_set({str(tmp_path)!r}, 't', {{'greedy': pair_results({{'a': 'x', 'b': 'y'}}, dict(zip('ab', hyps)))}})\n"
        "try:\n"
        "    Decoder(['1best'], CharTokenizer(), 'x')\n"
        "except Exception as e:\n"
        "    print(type(e).__name__)\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "MissingDependencyError"
    assert (tmp_path / "wer-summary-t.txt").is_file()


def test_blank_skipping_keeps_the_hypotheses_with_fewer_frames(lang):
    from qnet.decode import skip_blank_frames

    # runs of very confident blanks between the letters, as a trained CTC model emits them
    frames = []
    for spec in peaky_frames("a cat sat on the hat", confusions={3: {"c": 0.5, "h": 0.4}}):
        frames += [spec] if "<blk>" not in spec else [{"<blk>": 1000.0}] * 4  # 0.99997 after normalizing
    a = frame_log_probs(frames)
    b = frame_log_probs(peaky_frames("the hat"))  # its blank frames (0.97) stay
    lp = torch.full((2, a.shape[0], 29), -1e4)
    lp[0], lp[1, : b.shape[0]] = a, b
    lens = torch.tensor([a.shape[0], b.shape[0]])
    skipped, new_lens = skip_blank_frames(lp, lens, 0.999)
    assert new_lens.tolist() == [a.shape[0] - 3 * 20, b.shape[0]]  # each run of 4 keeps its first frame
    assert torch.equal(skipped[1, : b.shape[0]], b)
    methods = ["greedy", "ctc-decoding", "1best"]
    plain = Decoder(methods, CharTokenizer(), lang).decode(lp, lens, ["u", "v"])
    fast = Decoder(methods, CharTokenizer(), lang, opts=DecodeOptions(blank_skip_threshold=0.999)).decode(
        lp, lens, ["u", "v"])
    assert fast == plain and plain["1best"] == ["a cat sat on the hat", "the hat"]

    # a repeated letter keeps the blank that separates it: l <blk> <blk> <blk> l -> l <blk> l
    ll = frame_log_probs([{"l": 0.9}] + [{"<blk>": 1000.0}] * 3 + [{"l": 0.9}]).unsqueeze(0)
    out, n = skip_blank_frames(ll, torch.tensor([5]), 0.999)
    assert n.tolist() == [3] and greedy_decode(out, n) == greedy_decode(ll, torch.tensor([5]))
