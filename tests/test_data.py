"""Data pipeline: cut filters and their counts, batches, resumable epochs, SpecCutout/SpecAugment."""

import pytest
import torch

from qnet.augment import AugmentChain, SpecAugment, SpecCutout, build_augment
from qnet.data import FilterCounts, cut_num_frames, cut_text, encoder_frames, filter_cuts, make_loader
from qnet.tokens import CharTokenizer

from train_helpers import have_tts, make_corpus


def _cut(cut_id, duration, text):
    from lhotse import MonoCut, Recording, SupervisionSegment
    from lhotse.audio import AudioSource

    rec = Recording(
        id=cut_id, sources=[AudioSource(type="file", channels=[0], source="/nonexistent.wav")],
        sampling_rate=16000, num_samples=int(duration * 16000), duration=duration,
    )
    sups = [] if text is None else [SupervisionSegment(id=cut_id, recording_id=cut_id, start=0, duration=duration, text=text)]
    return MonoCut(id=cut_id, start=0, duration=duration, channel=0, recording=rec, supervisions=sups)


def test_filter_cuts_counts_every_reason():
    from lhotse import CutSet

    cuts = CutSet.from_cuts([
        _cut("ok", 1.0, "Hello, World!"),
        _cut("long", 17.0, "far too long"),
        _cut("empty", 1.0, "?!  ..."),
        _cut("nosup", 1.0, None),
        _cut("fits", 0.06, "abc"),  # 6 frames -> 3 encoder frames: exactly 3 labels
        _cut("repeat", 0.06, "abb"),  # b b needs a blank between: 4 > 3
        _cut("tooshort", 0.1, "hello"),  # 10 frames -> 5; h e l l o needs 6
        _cut("accent", 1.0, "café\u2019s ☃"),
    ])
    kept, counts = filter_cuts(cuts, CharTokenizer(), max_utt_duration=16.7)
    assert sorted(c.id for c in kept) == ["accent", "fits", "ok"]
    assert (counts.total, counts.kept, counts.too_long, counts.empty_text, counts.too_short_for_ctc) == (8, 3, 1, 2, 2)
    assert counts.normalization.transliterated == 2 and counts.normalization.dropped == 1
    assert counts.examples["too_short_for_ctc"] == ["repeat", "tooshort"]
    assert "kept 3/8" in str(counts)
    kept_all, counts_all = filter_cuts(cuts, CharTokenizer(), max_utt_duration=None)
    assert counts_all.too_long == 0 and "long" in [c.id for c in kept_all]


def test_filter_cuts_keeps_lazy_cutsets_lazy(tmp_path):
    from lhotse import CutSet

    path = tmp_path / "cuts.jsonl.gz"
    CutSet.from_cuts([_cut("a", 1.0, "yes"), _cut("b", 20.0, "no")]).to_file(path)
    lazy = CutSet.from_jsonl_lazy(path)
    kept, counts = filter_cuts(lazy, CharTokenizer())
    assert kept.is_lazy and [c.id for c in kept] == ["a"] and counts.too_long == 1


def test_several_train_manifests_are_interleaved(tmp_path):
    from lhotse import CutSet

    from qnet.data import load_train_cuts

    for part in ("a", "b"):
        CutSet.from_cuts([_cut(f"{part}{i}", 1.0, "yes") for i in range(20)] + [_cut(f"{part}-long", 30.0, "no")]).to_file(
            tmp_path / f"{part}.jsonl.gz"
        )
    paths = [str(tmp_path / "a.jsonl.gz"), str(tmp_path / "b.jsonl.gz")]
    cuts, total, per_file = load_train_cuts(paths, CharTokenizer(), max_utt_duration=16.7, seed=1)
    ids = [c.id for c in cuts]
    assert sorted(ids) == sorted([f"a{i}" for i in range(20)] + [f"b{i}" for i in range(20)])
    assert ids[:20] != [f"a{i}" for i in range(20)]  # mixed, not one file after the other
    assert ids == [c.id for c in cuts]  # the same order on every pass (and rank)
    assert (total.kept, total.too_long) == (40, 2) and [c.kept for c in per_file] == [20, 20]


def test_frame_counts():
    assert cut_num_frames(_cut("x", 1.234, "a")) == 123  # lhotse: round(samples / 160)
    assert [encoder_frames(n) for n in (1, 2, 5, 6)] == [1, 1, 3, 3]
    assert cut_text(_cut("x", 1.0, None)) == ""


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    if not have_tts():
        pytest.skip("espeak-ng/sox not installed")
    return make_corpus(tmp_path_factory.mktemp("corpus"), num_train=10, num_valid=2)


def test_batches_and_resumable_epochs(corpus):
    from qnet.data import load_cuts
    from qnet.tokens import load_tokenizer

    tok = load_tokenizer(corpus["lang_dir"])
    cuts = load_cuts(corpus["train_cuts"])
    loader = make_loader(cuts, tok, max_duration=3.0, train=True, num_buckets=2, seed=3)
    batches = list(loader.epoch(2))
    assert len(batches) == loader.count_batches(2) >= 3
    b = batches[0]
    assert b["feats"].dim() == 3 and b["feats"].shape[2] == 64 and b["feats"].dtype == torch.float32
    assert b["feat_lens"].dtype == torch.int64 and int(b["feat_lens"].max()) == b["feats"].shape[1]
    assert b["feat_lens"].tolist() == sorted(b["feat_lens"].tolist(), reverse=True)
    assert len(b["tokens"]) == len(b["texts"]) == len(b["cut_ids"]) == len(b["durations"]) == b["feats"].shape[0]
    assert all(t == t.lower() for t in b["texts"]) and tok.decode(b["tokens"][0]) == b["texts"][0]
    # the same epoch again, resumed after 2 batches: exactly the remaining batches (also with workers)
    again = list(loader.epoch(2, skip=2))
    assert [x["cut_ids"] for x in again] == [x["cut_ids"] for x in batches[2:]]
    with_workers = make_loader(cuts, tok, max_duration=3.0, train=True, num_buckets=2, seed=3, num_workers=2)
    assert [x["cut_ids"] for x in with_workers.epoch(2, skip=2)] == [x["cut_ids"] for x in batches[2:]]
    # another epoch is another order; all cuts appear once per epoch
    other = list(loader.epoch(3))
    ids2 = sorted(i for x in batches for i in x["cut_ids"])
    assert ids2 == sorted(i for x in other for i in x["cut_ids"]) and len(ids2) == 10
    assert [x["cut_ids"] for x in other] != [x["cut_ids"] for x in batches]


def test_on_the_fly_features_match_precomputed(corpus):
    from qnet.data import load_cuts
    from qnet.tokens import load_tokenizer

    tok = load_tokenizer(corpus["lang_dir"])
    cuts = load_cuts(corpus["valid_cuts"])
    pre = next(iter(make_loader(cuts, tok, 100.0, train=False).epoch(0)))
    fly = next(iter(make_loader(cuts, tok, 100.0, train=False, on_the_fly_feats=True).epoch(0)))
    assert pre["cut_ids"] == fly["cut_ids"] and torch.equal(pre["feat_lens"], fly["feat_lens"])
    n = int(pre["feat_lens"][-1])
    # lilcom storage is lossy (about 1/8 of a nat here)
    assert (pre["feats"][-1, :n] - fly["feats"][-1, :n]).abs().max() < 0.5
    with pytest.raises(ValueError, match="on-the-fly"):
        make_loader(cuts, tok, 100.0, train=True, perturb_speed=True)


def test_on_the_fly_speed_perturbation(corpus):
    from qnet.data import load_cuts
    from qnet.tokens import load_tokenizer

    tok = load_tokenizer(corpus["lang_dir"])
    cuts = load_cuts(corpus["train_cuts"])
    original = {c.id: c.duration for c in cuts}
    loader = make_loader(cuts, tok, 100.0, train=True, on_the_fly_feats=True, perturb_speed=True, num_buckets=2)
    seen = [(i, d, int(n)) for b in loader.epoch(1) for i, d, n in zip(b["cut_ids"], b["durations"], b["feat_lens"])]
    perturbed = [(i, d, n) for i, d, n in seen if "_sp" in i]
    assert perturbed and len(seen) == len(original)
    for cut_id, dur, frames in perturbed:
        base, factor = cut_id.rsplit("_sp", 1)
        assert dur == pytest.approx(original[base] / float(factor), abs=0.01)
        assert abs(frames - dur * 100) <= 1


def test_spec_cutout_shapes_limits_and_eval_mode():
    torch.manual_seed(0)
    x = torch.ones(8, 300, 64)
    cut = SpecCutout()
    y = cut(x, torch.full((8,), 300))
    zero = y == 0
    assert y.shape == x.shape and zero.any()
    for b in range(8):
        rows = zero[b].any(dim=1).nonzero().flatten()
        cols = zero[b].any(dim=0).nonzero().flatten()
        if rows.numel():
            assert int(cols.max()) < 64 and int(cols.min()) >= 0
    # one rectangle is at most 120 x 50: a single-mask cutout never exceeds it
    single = SpecCutout(rect_masks=1)
    for _ in range(20):
        z = single(x, None) == 0
        if z.any():
            t = z.any(dim=2)[0].nonzero().flatten()
            f = z.any(dim=1)[0].nonzero().flatten()
            assert t.max() - t.min() + 1 <= 120 and f.max() - f.min() + 1 <= 50
    cut.eval()
    assert torch.equal(cut(x, None), x)
    # shorter than 120 frames: still works (NeMo would raise)
    assert SpecCutout()(torch.ones(2, 50, 64), None).shape == (2, 50, 64)


def test_spec_augment_strips_stay_inside_valid_frames():
    torch.manual_seed(1)
    x = torch.ones(4, 200, 64)
    lens = torch.tensor([200, 150, 80, 30])
    aug = SpecAugment(freq_masks=2, freq_width=10, time_masks=2, time_width=20)
    y = aug(x, lens)
    for b in range(4):
        masked_frames = (y[b] == 0).all(dim=1).nonzero().flatten()
        if masked_frames.numel():
            assert int(masked_frames.max()) < int(lens[b])
    frac = SpecAugment(freq_masks=0, time_masks=1, time_width=0.1)
    y = frac(torch.ones(1, 100, 8), torch.tensor([100]))
    assert int((y[0] == 0).all(dim=1).sum()) <= 10
    aug.eval()
    assert torch.equal(aug(x, lens), x)


def test_build_augment_chain_and_rng_reproducibility():
    chain = build_augment(spec_cutout=True, spec_augment=True)
    assert [type(m) for m in chain.steps] == [SpecAugment, SpecCutout]
    assert len(build_augment(spec_cutout=False).steps) == 0
    x = torch.randn(3, 130, 64)
    torch.manual_seed(5)
    a = chain(x, torch.tensor([130, 100, 60]))
    torch.manual_seed(5)
    b = chain(x, torch.tensor([130, 100, 60]))
    assert torch.equal(a, b) and not torch.equal(a, x)
    assert isinstance(chain, AugmentChain) and not list(chain.state_dict())


def test_filter_counts_str_is_readable():
    c = FilterCounts(total=2, kept=1, too_long=1, kept_seconds=3600, dropped_seconds=20)
    assert "kept 1/2 cuts (1.00 h)" in str(c) and "1 longer than the limit" in str(c)


def test_importing_qnet_data_leaves_torch_sampler_alone():
    """The lhotse/torch-1.13 Sampler shim lives in qnet's own sampler classes, not in torch."""
    import subprocess
    import sys

    code = (
        "import torch; before = torch.utils.data.Sampler.__init__\n"
        "import qnet.data as d\n"
        "assert torch.utils.data.Sampler.__init__ is before, 'qnet.data patched torch.utils.data.Sampler'\n"
        "from lhotse import CutSet\n"
        "from lhotse.testing.dummies import DummyManifest\n"
        "cuts = DummyManifest(CutSet, begin_id=0, end_id=8)\n"
        "assert sum(len(b) for b in d.SimpleCutSampler(cuts, max_duration=3)) == 8\n"
        "assert sum(len(b) for b in d.DynamicBucketingSampler(cuts.to_eager(), max_duration=3, num_buckets=2)) == 8\n"
        "assert torch.utils.data.Sampler.__init__ is before\n"
    )
    res = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True)
    assert res.returncode == 0, res.stderr[-2000:]


def test_train_cuts_are_scanned_once_for_all_ranks(tmp_path):
    """Rank 0 writes the filter index; other ranks (and resumes) read the manifests lazily by it without
    tokenizing a single transcript; a changed manifest makes rank 0 index it again."""
    from lhotse import CutSet

    from qnet.data import load_train_cuts

    path = tmp_path / "train.jsonl.gz"
    CutSet.from_cuts([_cut(f"c{i}", 1.0, "yes") for i in range(30)] + [_cut("long", 30.0, "no"), _cut("e", 1.0, "?")]).to_file(path)
    index = tmp_path / "exp" / "train_cuts_index.json"
    barriers = []
    cuts, counts, _ = load_train_cuts([str(path)], CharTokenizer(), 16.7, index_path=index, is_main=True,
                                      barrier=lambda: barriers.append("rank 0"))
    assert index.is_file() and barriers == ["rank 0"]
    assert (counts.kept, counts.too_long, counts.empty_text) == (30, 1, 1)

    class NoTokenizing(CharTokenizer):
        def normalize(self, text):
            raise AssertionError("a non-main rank tokenized a transcript")

    other, other_counts, _ = load_train_cuts([str(path)], NoTokenizing(), 16.7, index_path=index, is_main=False,
                                             barrier=lambda: barriers.append("rank 1"))
    assert [c.id for c in other] == [c.id for c in cuts] and other.is_lazy
    assert str(other_counts) == str(counts) and barriers == ["rank 0", "rank 1"]

    CutSet.from_cuts([_cut(f"c{i}", 1.0, "yes") for i in range(5)]).to_file(path)  # a new manifest
    with pytest.raises(RuntimeError, match="wrote no index"):
        load_train_cuts([str(path)], NoTokenizing(), 16.7, index_path=index, is_main=False)
    cuts, counts, _ = load_train_cuts([str(path)], CharTokenizer(), 16.7, index_path=index, is_main=True)
    assert counts.kept == 5 and len(list(cuts)) == 5


def test_index_scan_in_processes_matches_one_process(tmp_path, monkeypatch):
    """The index scan split over processes (every k-th cut each) gives the counts and ids of one scan,
    which are those of filter_cuts on lhotse objects."""
    from lhotse import CutSet

    import qnet.data as data

    cuts = [_cut(f"c{i}", 0.5 + (i % 40) * 0.5, ["yes", "", "abb", "hello there"][i % 4]) for i in range(200)]
    path = tmp_path / "train.jsonl.gz"
    CutSet.from_cuts(cuts).to_file(path)
    one = data.build_train_index([str(path)], CharTokenizer(), 16.7, num_jobs=1)
    monkeypatch.setattr(data, "SCAN_BYTES_PER_JOB", 1)
    three = data.build_train_index([str(path)], CharTokenizer(), 16.7, num_jobs=3)
    assert three["files"][0]["dropped"] == one["files"][0]["dropped"]
    c1, c3 = (data.counts_from_dict(x["files"][0]["counts"]) for x in (one, three))
    assert (c3.kept, c3.too_long, c3.empty_text, c3.total) == (c1.kept, c1.too_long, c1.empty_text, c1.total)
    _, ref = filter_cuts(CutSet.from_file(path), CharTokenizer(), 16.7)
    assert one["files"][0]["dropped"] == ref.dropped_ids
    assert (c1.kept, c1.too_long, c1.empty_text, c1.too_short_for_ctc) == (ref.kept, ref.too_long, ref.empty_text,
                                                                           ref.too_short_for_ctc)
    assert c1.kept_seconds == pytest.approx(ref.kept_seconds)


def test_large_corpora_estimate_the_epoch_then_count_it(corpus, tmp_path, monkeypatch):
    """Above EXACT_COUNT_MAX_CUTS the trainer does not pass over every cut before its first step: it
    estimates the batches per epoch from the kept hours and sets the true count (and the schedule's
    length) after epoch 1. Also: the train-cuts index is written once in the exp dir."""
    import qnet.trainer
    from qnet.bin import train as train_cli
    from qnet.data import load_cuts
    from qnet.tokens import load_tokenizer

    from train_helpers import train_args

    monkeypatch.setattr(qnet.trainer, "EXACT_COUNT_MAX_CUTS", 0)
    exp = tmp_path / "exp"
    args = train_args(corpus, exp, "--ctc-backend", "torch", "--max-duration", "3", "--num-epochs", "2",
                      "--save-every-n", "0")
    assert train_cli.main(args) == 0
    log = next((exp / "log").glob("log-train-*.txt")).read_text()
    assert "batches per epoch (estimated from" in log and "counted in" not in log
    true = make_loader(load_cuts(corpus["train_cuts"]), load_tokenizer(corpus["lang_dir"]), 3.0, train=True,
                       num_buckets=2, num_cuts=10).count_batches(1)
    assert f"epoch 1 had {true} batches" in log
    ckpt = torch.load(exp / "epoch-2.pt")
    assert ckpt["steps_per_epoch"] == true and ckpt["steps_per_epoch_exact"]
    assert ckpt["scheduler"]["max_steps"] == 2 * true and ckpt["step"] == 2 * true
    assert (exp / "train_cuts_index.json").is_file()


def test_the_model_subsampling_decides_which_cuts_ctc_can_align(tmp_path):
    """A stride-3 model has a third of the frames: the filter and the index scan drop by its factor."""
    from lhotse import CutSet

    import qnet.data as data

    cuts = CutSet.from_cuts([_cut("fits2", 0.06, "abc"), _cut("fits3", 0.09, "abc"), _cut("ok", 1.0, "hello")])
    kept2, _ = filter_cuts(cuts, CharTokenizer(), 16.7, subsampling_factor=2)
    kept3, counts3 = filter_cuts(cuts, CharTokenizer(), 16.7, subsampling_factor=3)
    assert sorted(c.id for c in kept2) == ["fits2", "fits3", "ok"]
    assert sorted(c.id for c in kept3) == ["fits3", "ok"] and counts3.examples["too_short_for_ctc"] == ["fits2"]
    path = tmp_path / "train.jsonl.gz"
    cuts.to_file(path)
    index = data.build_train_index([str(path)], CharTokenizer(), 16.7, subsampling_factor=3)
    assert index["files"][0]["dropped"] == ["fits2"]
    # an index made for another subsampling is not reused
    assert index["key"] != data.train_index_key([str(path)], CharTokenizer(), 16.7, subsampling_factor=2)
