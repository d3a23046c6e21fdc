"""LM rescoring degrades gracefully (retries, then 1best fallback, counted) and stays memory-bounded
(per-utterance lattices pruned to a cap, n-best intersections chunked, lattice generation in frame
groups); steps/decode.sh markers decode only what is missing."""

import os
import subprocess
from pathlib import Path

import pytest
import torch

import qnet.decode as qdec
from decode_helpers import HAT_ARPA, frame_log_probs, make_audio_cuts, make_char_lang, make_tiny_model, peaky_frames
from qnet.decode import Decoder, DecodeOptions, frame_groups, nbest_chunks, num_arcs_per_fsa, prune_lattice
from qnet.tokens import SPACE, CharTokenizer

REPO = Path(__file__).resolve().parents[1]
RESCORING = ["1best", "whole-lattice-rescoring", "nbest-rescoring"]


@pytest.fixture(scope="module")
def lang(tmp_path_factory):
    return make_char_lang(tmp_path_factory.mktemp("lang"))


def _decoder(lang, **opts):
    return Decoder(RESCORING, CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt",
                   opts=DecodeOptions(lm_scales=[0.5, 1.0], **opts))


def _flat_log_probs(num_utts=2, T=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (0.5 * torch.randn(num_utts, T, 29, generator=g)).log_softmax(-1)


def test_failing_rescoring_falls_back_to_1best_and_is_counted(lang, monkeypatch):
    calls = []

    def failing_intersect(a, b, b_to_a_map):
        calls.append(b.shape[0])
        raise RuntimeError("DefaultCPUAllocator: can't allocate memory (simulated)")

    monkeypatch.setattr(qdec, "_intersect", failing_intersect)
    frames = peaky_frames("the cat sat", confusions={5: {"q": 0.5, "a": 0.4}})
    a = frame_log_probs(frames)
    b = frame_log_probs(peaky_frames("the hat"))
    lp = torch.full((2, a.shape[0], 29), -1e4)
    lp[0], lp[1, : b.shape[0]] = a, b
    dec = _decoder(lang, num_paths=8)
    out = dec.decode(lp, torch.tensor([a.shape[0], b.shape[0]]), ["u1", "u2"])
    assert out["1best"] == ["the cat sat", "the hat"]
    for key in dec.result_keys():
        assert out[key] == out["1best"], key
    assert dec.stats.fallback == {"whole-lattice-rescoring": ["u1", "u2"], "nbest-rescoring": ["u1", "u2"]}
    assert "2 fell back to 1best" in dec.stats.summary()
    # per utterance: whole-lattice tries unpruned + every prune threshold; n-best tries 8, 4, 2, 1 paths
    assert len(calls) == 2 * (1 + len(qdec.PRUNE_THRESHOLDS) + 4)


def test_nbest_retries_with_fewer_paths_before_falling_back(lang, monkeypatch):
    original = qdec.rescore_nbest
    tried = []

    def flaky(lattice, G, opts, lm_scales, num_paths=None, **kwargs):
        tried.append(num_paths)
        if num_paths > 2:
            raise RuntimeError("out of memory (simulated)")
        return original(lattice, G, opts, lm_scales, num_paths=num_paths, **kwargs)

    monkeypatch.setattr(qdec, "rescore_nbest", flaky)
    lp = frame_log_probs(peaky_frames("the cat sat")).unsqueeze(0)
    dec = Decoder(["nbest-rescoring"], CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt",
                  opts=DecodeOptions(lm_scales=[1.0], num_paths=8))
    out = dec.decode(lp, torch.tensor([lp.shape[1]]), ["u"])
    assert tried == [8, 4, 2]
    assert out["nbest-rescoring_lm_scale_1"] == ["the cat sat"]
    assert dec.stats.fallback == {}


def test_rescoring_is_bounded_on_flat_posteriors(lang, monkeypatch):
    # flat posteriors: big lattices with many distinct word sequences (what an untrained model gives)
    lp = _flat_log_probs()
    lens = torch.tensor([60, 50])
    max_arcs, max_intersect = 3000, 12000
    dec = _decoder(lang, num_paths=20, max_lattice_arcs=max_arcs, max_intersect_arcs=max_intersect)
    full = qdec.get_lattice(lp, lens, dec.HLG, dec.opts)
    assert min(num_arcs_per_fsa(full)) > max_arcs  # the cap really bites
    seen = []
    original = qdec._intersect

    def spy(a, b, b_to_a_map):
        kind = "whole" if a is dec.G_loops else "lm" if a is dec.G else "am"
        seen.append((kind, a.num_arcs, b.shape[0], b.num_arcs))
        return original(a, b, b_to_a_map)

    monkeypatch.setattr(qdec, "_intersect", spy)
    out = dec.decode(lp, lens, ["u0", "u1"])
    assert set(out) == set(dec.result_keys())
    assert dec.stats.fallback == {}
    assert dec.stats.pruned == {"whole-lattice-rescoring": ["u0", "u1"], "nbest-rescoring": ["u0", "u1"]}
    kinds = [k for k, *_ in seen]
    assert kinds.count("whole") == 2 and kinds.count("lm") == 2  # one utterance at a time
    assert kinds.count("am") >= 4  # 20 paths x a 3000-arc lattice need several chunks of <= 12000 arcs
    for kind, a_arcs, num_b, b_arcs in seen:
        if kind == "whole":  # one pruned lattice plus its epsilon self-loops (one per state)
            assert num_b == 1 and b_arcs <= 2 * max_arcs + 1
        elif kind == "am":  # a pruned lattice x a chunk of its paths
            assert a_arcs <= max_arcs and (num_b == 1 or 2 * a_arcs * num_b <= max_intersect)
    for hyp in out["nbest-rescoring_lm_scale_1"] + out["whole-lattice-rescoring_lm_scale_1"]:
        assert hyp  # flat posteriors still give some words


def test_chunked_nbest_matches_one_chunk(lang):
    frames = peaky_frames("the cat sat", confusions={5: {"q": 0.5, "a": 0.4}})
    lp = frame_log_probs(frames).unsqueeze(0)
    for max_intersect in (1, 10**9):  # one path per chunk, or all at once
        dec = Decoder(["nbest-rescoring"], CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt",
                      opts=DecodeOptions(lm_scales=[0.5, 1.0], num_paths=20, max_intersect_arcs=max_intersect))
        out = dec.decode(lp, torch.tensor([lp.shape[1]]), ["u"])
        assert out["nbest-rescoring_lm_scale_0.5"] == ["the cat sat"]
        assert out["nbest-rescoring_lm_scale_1"] == ["the cat sat"]


def test_prune_lattice_caps_arcs_without_emptying(lang):
    dec = _decoder(lang)
    lattice = qdec.get_lattice(_flat_log_probs(1), torch.tensor([60]), dec.HLG, dec.opts)
    n = lattice.num_arcs
    same, threshold = prune_lattice(lattice, n)
    assert same is lattice and threshold is None
    pruned, threshold = prune_lattice(lattice, n // 3)
    assert threshold is not None and 0 < pruned.num_arcs <= n // 3
    tiny, _ = prune_lattice(lattice, 1)  # impossible cap: pruned hard, but never to nothing
    assert tiny.num_arcs > 0


def test_lattice_generation_in_frame_groups_gives_the_same_hypotheses(lang):
    a = frame_log_probs(peaky_frames("a cat sat on the hat"))
    b = frame_log_probs(peaky_frames("the hat"))
    lp = torch.full((3, a.shape[0], 29), -1e4)
    lp[0, : b.shape[0]], lp[1], lp[2, : b.shape[0]] = b, a, b
    lens = torch.tensor([b.shape[0], a.shape[0], b.shape[0]])
    whole = _decoder(lang).decode(lp, lens, ["x", "y", "z"])
    grouped = _decoder(lang, max_lattice_frames=1).decode(lp, lens, ["x", "y", "z"])
    assert grouped == whole
    assert whole["1best"] == ["the hat", "a cat sat on the hat", "the hat"]


def test_group_and_chunk_helpers():
    assert frame_groups([5, 5, 5, 20, 1], 10) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert frame_groups([], 10) == []
    assert nbest_chunks([100, 100, 100, 100], 400) == [range(0, 2), range(2, 4)]
    assert nbest_chunks([1000], 10) == [range(0, 1)]  # one path is never split


@pytest.fixture(scope="module")
def hat_G(lang):
    from qnet.lm import arpa_to_fst_txt

    arpa = lang.parent / "hat.arpa"
    arpa.write_text(HAT_ARPA)
    return arpa_to_fst_txt(arpa, lang / "words.txt", lang.parent / "G_hat.fst.txt")


def hat_or_cat_log_probs() -> torch.Tensor:
    """(1, T, V): "the ?at sat" where the acoustics lean a little to "h" (0.5 vs 0.4 for "c")."""
    return frame_log_probs(peaky_frames("the hat sat", confusions={4: {"h": 0.5, "c": 0.4}})).unsqueeze(0)


@pytest.mark.parametrize("method", ["whole-lattice-rescoring", "nbest-rescoring"])
def test_rescoring_with_a_better_lm_changes_the_1best_to_the_truth(lang, hat_G, method):
    lp = hat_or_cat_log_probs()
    dec = Decoder(["1best", method], CharTokenizer(), lang, G_rescore=hat_G,
                  opts=DecodeOptions(lm_scales=[0.5, 1.0], num_paths=50))
    out = dec.decode(lp, torch.tensor([lp.shape[1]]), ["u"])
    assert out["1best"] == ["the cat sat"]  # the HLG bigram overrules the acoustics
    assert out[f"{method}_lm_scale_1"] == ["the hat sat"]  # the rescoring LM puts it right
    assert out[f"{method}_lm_scale_0.5"] == ["the hat sat"]
    assert dec.stats.fallback == {}


@pytest.mark.parametrize("method", ["whole-lattice-rescoring", "nbest-rescoring"])
def test_rescoring_word_penalty_sweep(lang, method):
    # "the cat sat" with a weak "sat" (its frames mostly blank): at penalty 0 the LM drops it; a bonus of 3
    # nats per word brings it back, a penalty keeps it out; (scale, 0) keys are those of an unswept decode
    weak = {i: {c: 0.3, "<blk>": 0.6} for i, c in zip((7, 8, 9, 10), (SPACE, "s", "a", "t"))}
    lp = frame_log_probs(peaky_frames("the cat sat", confusions=weak)).unsqueeze(0)
    lens = torch.tensor([lp.shape[1]])
    opts = DecodeOptions(lm_scales=[0.5, 1.0], word_penalties=[-3.0, 0.0, 3.0], num_paths=50)
    dec = Decoder([method], CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt", opts=opts)
    out = dec.decode(lp, lens, ["u"])
    assert set(out) == set(dec.result_keys()) == {
        f"{method}_lm_scale_{s}{f'_wip_{p}' if p else ''}" for s in (0.5, 1) for p in (-3, 0, 3)}
    assert out[f"{method}_lm_scale_1"] == ["the cat"]
    assert out[f"{method}_lm_scale_1_wip_-3"] == ["the cat sat"]
    assert out[f"{method}_lm_scale_1_wip_3"] == ["the cat"]
    unswept = Decoder([method], CharTokenizer(), lang, G_rescore=lang.parent / "G.fst.txt",
                      opts=DecodeOptions(lm_scales=[0.5, 1.0], num_paths=50)).decode(lp, lens, ["u"])
    assert unswept == {k: out[k] for k in unswept}


def test_nnlm_rescoring_word_penalty_is_per_word():
    # am + s * ngram + t * nnlm - p * words: the 3-word candidate wins only once the bonus pays for its
    # 2.5 nats (2 + 0.5) deficit, i.e. below p = -2.5
    cands = [qdec.NnlmCandidates([[1, 2], [1, 2, 3]], torch.tensor([0.0, -2.0], dtype=torch.float64),
                                 torch.tensor([-1.0, -1.5], dtype=torch.float64))]
    best = qdec.rescore_with_nnlm(cands, torch.tensor([-1.0, -1.0]), [1.0], [0.0, 1.0], [-3.0, -2.0, 0.0])
    assert set(best) == {(1.0, t, p) for t in (0.0, 1.0) for p in (-3.0, -2.0, 0.0)}
    for t in (0.0, 1.0):
        assert best[(1.0, t, 0.0)] == best[(1.0, t, -2.0)] == [[1, 2]]
        assert best[(1.0, t, -3.0)] == [[1, 2, 3]]
    assert qdec.nnlm_key(0.5, 0.2) == "nnlm-rescoring_lm_scale_0.5_nnlm_scale_0.2"
    assert qdec.nnlm_key(0.5, 0.2, -1.0) == "nnlm-rescoring_lm_scale_0.5_nnlm_scale_0.2_wip_-1"


def _decode_sh(model, cuts, lang, out, *opts):
    env = dict(os.environ, PATH=f"{REPO}/utils:{os.environ['PATH']}")
    proc = subprocess.run(["bash", "steps/decode.sh", *opts, str(model), str(cuts), str(lang), str(out)],
                          cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    assert proc.returncode == 0, proc.stdout
    return proc.stdout


def test_decode_sh_done_marker_and_new_methods(tmp_path, lang):
    model = make_tiny_model(tmp_path / "model.pt")
    cuts = make_audio_cuts(tmp_path, ["the cat sat", "a hat", "the cat"])
    out = tmp_path / "decode"
    _decode_sh(model, cuts, lang, out, "--nj", "2", "--methods", "greedy")
    assert (out / ".done").read_text().strip() == "methods=greedy"
    log1 = (out / "log" / "decode.1.log").read_text()

    # same methods again: nothing to do, the logs are untouched
    stdout = _decode_sh(model, cuts, lang, out, "--nj", "2", "--methods", "greedy")
    assert "nothing to do" in stdout
    assert (out / "log" / "decode.1.log").read_text() == log1

    # one more method: only it is decoded, the summary has both
    _decode_sh(model, cuts, lang, out, "--nj", "2", "--methods", "greedy,1best")
    log = (out / "log" / "decode.1.log").read_text()
    assert "part 1: decoding 1best\n" in log
    assert (out / ".done").read_text().strip() == "methods=1best,greedy"
    summary = (out / "wer-summary-cuts_test.txt").read_text()
    assert "greedy" in summary and "1best" in summary

    # another setting: everything is decoded again with it, the old hypotheses are gone
    _decode_sh(model, cuts, lang, out, "--nj", "2", "--methods", "1best", "--search-beam", "15")
    log = (out / "log" / "decode.1.log").read_text()
    assert "part 1: decoding 1best\n" in log and "'search_beam': 15.0" in log
    assert (out / ".done").read_text().strip() == "methods=1best"
    assert not (out / "hyp-cuts_test-greedy.txt").exists()
    assert "search_beam=15" in (out / "decode_opts.txt").read_text()
