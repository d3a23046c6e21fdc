"""lhotse CutSets -> training/validation batches for CTC: filters, dataset, samplers, loaders.

A batch is a dict::

    feats      (B, T, F) float  raw log-mel (the model normalizes), padded
    feat_lens  (B,) int64       valid frames
    tokens     list of B token-id lists (from the lang dir's tokenizer)
    texts      list of B normalized transcripts
    cut_ids    list of B cut ids
    durations  list of B durations in seconds

Cuts come longest first inside a batch. Features are either precomputed (lhotse
`PrecomputedFeatures`, e.g. LilcomChunkyWriter archives written by the features stage) or computed
on the fly with `OnTheFlyFeatures(NemoMelExtractor())`, optionally with lhotse's `PerturbSpeed`
cut transform (only possible on the fly: precomputed features cannot be re-sampled).

Resuming in the middle of an epoch: `BatchLoader.epoch(epoch, skip=k)` rebuilds the epoch's
deterministic batch order (the sampler is seeded by seed + epoch) and skips the first k batches
without loading them, so a restarted run sees exactly the batches it had not trained on, whatever
`--num-workers` prefetched before the kill.
"""

import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Union

import numpy as np
import torch

from qnet.ctc import ctc_min_frames
from qnet.tokens import NormalizationStats

FRAME_SHIFT = 0.01  # seconds; NeMo mel features (10 ms hop)


class _SamplerInitCompat(torch.utils.data.Sampler):
    """Mixin for qnet's lhotse samplers: lhotse >= 1.2x calls `torch.utils.data.Sampler.__init__()`
    without `data_source`, which torch < 2.1 requires (its body ignores it). Placed after lhotse's
    CutSampler in the MRO, it supplies the argument for these classes only; torch itself is untouched."""

    def __init__(self, data_source=None) -> None:
        torch.utils.data.Sampler.__init__(self, data_source)


def sampler_classes():
    """qnet's DynamicBucketingSampler and SimpleCutSampler (lhotse's, with the torch-1.13 init shim)."""
    global DynamicBucketingSampler, SimpleCutSampler
    if "DynamicBucketingSampler" not in globals():
        from lhotse.dataset import DynamicBucketingSampler as _Dynamic
        from lhotse.dataset import SimpleCutSampler as _Simple

        DynamicBucketingSampler = type("DynamicBucketingSampler", (_Dynamic, _SamplerInitCompat),
                                       {"__module__": __name__, "__doc__": _Dynamic.__doc__})
        SimpleCutSampler = type("SimpleCutSampler", (_Simple, _SamplerInitCompat),
                                {"__module__": __name__, "__doc__": _Simple.__doc__})
    return DynamicBucketingSampler, SimpleCutSampler


def __getattr__(name: str):
    # The sampler classes are built on first use, so importing qnet.data does not import lhotse.
    if name in ("DynamicBucketingSampler", "SimpleCutSampler"):
        return dict(zip(("DynamicBucketingSampler", "SimpleCutSampler"), sampler_classes()))[name]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def cut_text(cut) -> str:
    """The transcript of a cut: its supervisions' texts joined in time order (empty if none)."""
    sups = sorted(cut.supervisions, key=lambda s: s.start)
    return " ".join((s.text or "").strip() for s in sups if (s.text or "").strip())


def cut_num_frames(cut, frame_shift: float = FRAME_SHIFT) -> int:
    """Feature frames of a cut: the stored count when precomputed, else lhotse's count from the duration
    (what `NemoMelExtractor` emits on the fly: round(samples / hop))."""
    if cut.has_features and cut.num_frames is not None:
        return int(cut.num_frames)
    from lhotse.utils import compute_num_frames

    return compute_num_frames(cut.duration, frame_shift, cut.sampling_rate)


def encoder_frames(num_frames: int, subsampling_factor: int = 2) -> int:
    """Encoder output frames T' = ceil(T / subsampling) (QuartzNet's strided C1 with 'same' padding)."""
    return -(-num_frames // subsampling_factor)


@dataclass
class FilterCounts:
    """What `filter_cuts` kept and dropped, and what text normalization changed."""

    total: int = 0
    kept: int = 0
    too_long: int = 0
    too_short_for_ctc: int = 0
    empty_text: int = 0
    kept_seconds: float = 0.0
    dropped_seconds: float = 0.0
    normalization: NormalizationStats = field(default_factory=NormalizationStats)
    examples: Dict[str, List[str]] = field(default_factory=dict)
    dropped_ids: List[str] = field(default_factory=list, repr=False)

    def add(self, other: "FilterCounts") -> None:
        """Accumulate another manifest's counts into these."""
        for name in ("total", "kept", "too_long", "too_short_for_ctc", "empty_text", "kept_seconds", "dropped_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.normalization.add(other.normalization)
        self.dropped_ids.extend(other.dropped_ids)
        for reason, ids in other.examples.items():
            for cut_id in ids:
                self._note(reason, cut_id)

    def _note(self, reason: str, cut_id: str) -> None:
        ids = self.examples.setdefault(reason, [])
        if len(ids) < 5:
            ids.append(cut_id)

    def __str__(self) -> str:
        return (
            f"kept {self.kept}/{self.total} cuts ({self.kept_seconds / 3600:.2f} h); dropped "
            f"{self.too_long} longer than the limit, {self.too_short_for_ctc} too short for their labels "
            f"(CTC), {self.empty_text} with empty transcripts ({self.dropped_seconds / 3600:.2f} h); "
            f"text normalization: {self.normalization}"
            + (f"; examples: {self.examples}" if self.examples else "")
        )


class _KeepIds:
    """Picklable predicate: is the cut's id not in the dropped set?"""

    def __init__(self, dropped: set):
        self.dropped = dropped

    def __call__(self, cut) -> bool:
        return cut.id not in self.dropped


class _TextCheck:
    """Tokenizes transcripts for `filter_cuts`, each distinct text once (a cut's speed-perturbed copies
    share its text): (normalization stats, CTC's minimum encoder frames or None when empty)."""

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.seen: Dict[str, tuple] = {}

    def __call__(self, cut_id: str, raw_text: str) -> tuple:
        hit = self.seen.get(raw_text)
        if hit is None:
            text, stats = self.tokenizer.normalize(raw_text)
            min_frames = None
            if text:
                try:
                    tokens = self.tokenizer.encode(text)
                except KeyError as exc:
                    raise ValueError(f"cut {cut_id}: transcript {text!r} cannot be tokenized: {exc}") from None
                min_frames = ctc_min_frames(tokens) if tokens else None
            hit = self.seen[raw_text] = (stats, min_frames)
        return hit


def _cut_summaries(cuts, frame_shift: float) -> Iterator[tuple]:
    """(id, duration, feature frames, transcript) of lhotse cuts."""
    for cut in cuts:
        yield cut.id, cut.duration, cut_num_frames(cut, frame_shift), cut_text(cut)


def _manifest_summaries(path, frame_shift: float, shard: int = 0, num_shards: int = 1) -> Iterator[tuple]:
    """`_cut_summaries` of every num_shards-th cut (from `shard`) of a jsonl manifest, read as JSON
    dicts: MonoCuts need no lhotse objects (half the time); other cut types are deserialized."""
    import json

    from lhotse.serialization import deserialize_item, open_best
    from lhotse.utils import compute_num_frames

    def dicts():
        with open_best(path, "r") as f:
            for i, line in enumerate(f):
                if i % num_shards == shard and line.strip():
                    yield json.loads(line)

    for d in dicts():
        if d.get("type") != "MonoCut":
            yield from _cut_summaries([deserialize_item(d)], frame_shift)
            continue
        duration = d["duration"]
        feats = d.get("features")
        if feats is not None:
            num_frames = compute_num_frames(duration, feats["frame_shift"], feats["sampling_rate"])
        else:
            num_frames = compute_num_frames(duration, frame_shift, d["recording"]["sampling_rate"])
        sups = sorted(d.get("supervisions") or [], key=lambda s: s["start"])
        text = " ".join((s.get("text") or "").strip() for s in sups if (s.get("text") or "").strip())
        yield d["id"], duration, num_frames, text


def _filter_summaries(summaries, tokenizer, max_utt_duration, subsampling_factor) -> FilterCounts:
    """The counting pass of `filter_cuts`, over (id, duration, frames, text) tuples."""
    counts = FilterCounts()
    dropped = set()
    check = _TextCheck(tokenizer)
    for cut_id, duration, num_frames, raw_text in summaries:
        counts.total += 1
        reason = None
        if max_utt_duration is not None and duration > max_utt_duration:
            reason = "too_long"
        else:
            stats, min_frames = check(cut_id, raw_text)
            counts.normalization.add(stats)
            if min_frames is None:
                reason = "empty_text"
            elif min_frames > encoder_frames(num_frames, subsampling_factor):
                reason = "too_short_for_ctc"
        if reason is None:
            counts.kept += 1
            counts.kept_seconds += duration
        else:
            setattr(counts, reason, getattr(counts, reason) + 1)
            counts.dropped_seconds += duration
            counts._note(reason, cut_id)
            dropped.add(cut_id)
    counts.dropped_ids = sorted(dropped)
    return counts


def filter_cuts(
    cuts,
    tokenizer,
    max_utt_duration: Optional[float] = 16.7,
    subsampling_factor: int = 2,
    frame_shift: float = FRAME_SHIFT,
):
    """Drop cuts longer than `max_utt_duration` (None = no limit), cuts with empty transcripts
    (after normalization), and cuts whose encoder frames ceil(T/2) cannot hold a CTC alignment of
    their tokens (len(tokens) + adjacent repeats). Returns (cuts, FilterCounts).

    One pass over `cuts` computes the counts; the result filters by the dropped ids, so a lazy
    CutSet stays lazy (memory holds only the dropped ids).
    """
    counts = _filter_summaries(_cut_summaries(cuts, frame_shift), tokenizer, max_utt_duration, subsampling_factor)
    if counts.dropped_ids:
        cuts = cuts.filter(_KeepIds(set(counts.dropped_ids)))
    return cuts, counts


class AsrDataset(torch.utils.data.Dataset):
    """Map a CutSet (one sampler batch) to the batch dict described in the module docstring."""

    def __init__(self, tokenizer, input_strategy=None, cut_transforms: Sequence[Callable] = (),
                 input_transforms: Sequence[Callable] = ()):
        from lhotse.dataset import PrecomputedFeatures

        self.tokenizer = tokenizer
        self.input_strategy = input_strategy if input_strategy is not None else PrecomputedFeatures()
        self.cut_transforms = list(cut_transforms)
        # lhotse's idiom: transforms of the collated raw features, `t(feats (B, T, F), lens (B,)) -> feats`
        self.input_transforms = list(input_transforms)

    def __getitem__(self, cuts) -> Dict[str, Any]:
        for transform in self.cut_transforms:
            cuts = transform(cuts)
        cuts = cuts.sort_by_duration(ascending=False)
        try:
            feats, feat_lens = self.input_strategy(cuts)[:2]
        except Exception as exc:
            ids = [c.id for c in cuts]
            raise RuntimeError(f"could not load features for the batch of cuts {ids[:10]}...: {exc}") from exc
        feats = feats.float()
        for transform in self.input_transforms:
            feats = transform(feats, feat_lens)
        texts, tokens = [], []
        for cut in cuts:
            text, _ = self.tokenizer.normalize(cut_text(cut))
            texts.append(text)
            tokens.append(self.tokenizer.encode(text))
        return {
            "feats": feats,
            "feat_lens": feat_lens.to(torch.int64),
            "tokens": tokens,
            "texts": texts,
            "cut_ids": [c.id for c in cuts],
            "durations": [float(c.duration) for c in cuts],
        }


def make_input_strategy(on_the_fly_feats: bool):
    """PrecomputedFeatures, or OnTheFlyFeatures(NemoMelExtractor()) when `on_the_fly_feats`."""
    from lhotse.dataset import OnTheFlyFeatures, PrecomputedFeatures

    if not on_the_fly_feats:
        return PrecomputedFeatures()
    from qnet.features import NemoMelExtractor

    return OnTheFlyFeatures(NemoMelExtractor())


def make_cut_transforms(perturb_speed: bool, on_the_fly_feats: bool) -> List[Callable]:
    """[lhotse PerturbSpeed(0.9/1.1, p=2/3)] when asked (needs on-the-fly features), else []."""
    if not perturb_speed:
        return []
    if not on_the_fly_feats:
        raise ValueError(
            "on-the-fly speed perturbation needs --on-the-fly-feats true (precomputed features cannot be "
            "re-sampled; perturb offline in the features stage instead)"
        )
    from lhotse.dataset import PerturbSpeed

    return [PerturbSpeed(factors=[0.9, 1.1], p=2 / 3)]


class _SkipFirst:
    """Iterable over a sampler's batches that skips the first `skip` (without loading them).

    Every `iter()` skips again: torch's multi-worker DataLoader calls iter() twice on start-up.
    """

    def __init__(self, sampler, skip: int):
        self.sampler = sampler
        self.skip = skip

    def __iter__(self) -> Iterator:
        it = iter(self.sampler)
        for _ in range(self.skip):
            if next(it, None) is None:
                break
        return it


def _seed_worker(worker_id: int) -> None:
    """Seed python/numpy in a DataLoader worker from torch's per-worker seed."""
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


class BatchLoader:
    """A lhotse sampler (by total duration) + AsrDataset, with deterministic epochs: for training a
    shuffling DynamicBucketingSampler, for validation a SimpleCutSampler in manifest order.

    `epoch(e, skip)` returns a DataLoader over epoch e's batches (this rank's share under DDP)
    starting after the first `skip`. With `sorta_grad`, epoch 1 goes through the cuts shortest first
    (SortaGrad, as DeepSpeech 2: short utterances get a CTC model off the all-blank plateau sooner).
    `state_dict()` records the sampler's configuration for the checkpoint; the position itself is
    (epoch, batches done), kept by the trainer.
    """

    def __init__(
        self,
        cuts,
        dataset: AsrDataset,
        max_duration: float,
        shuffle: bool,
        num_buckets: int = 30,
        num_workers: int = 0,
        seed: int = 0,
        world_size: Optional[int] = None,
        rank: Optional[int] = None,
        drop_last: bool = False,
        sorta_grad: bool = False,
    ):
        self.cuts = cuts
        self.sorta_grad = sorta_grad
        self._shortest_first = None
        self.dataset = dataset
        self.num_workers = num_workers
        self.seed = seed
        self._sampler_args = dict(
            max_duration=max_duration,
            shuffle=shuffle,
            drop_last=drop_last,
            seed=seed,
            world_size=world_size,
            rank=rank,
        )
        # Bucketing needs at least as many cuts as buckets (lhotse estimates the bins from them).
        self.num_buckets = num_buckets if shuffle else 0
        self.sampler = self._new_sampler()

    def _new_sampler(self):
        DynamicBucketingSampler, SimpleCutSampler = sampler_classes()
        if self.num_buckets >= 2:
            return DynamicBucketingSampler(self.cuts, num_buckets=self.num_buckets, **self._sampler_args)
        return SimpleCutSampler(self.cuts, **self._sampler_args)

    def _sampler_for(self, epoch: int, fresh: bool = False):
        """The sampler of `epoch`: the shuffling one, or for SortaGrad's epoch 1 one over the sorted cuts."""
        if not (self.sorta_grad and epoch == 1):
            return self._new_sampler() if fresh else self.sampler
        _, SimpleCutSampler = sampler_classes()
        if self._shortest_first is None:
            self._shortest_first = self.cuts.to_eager().sort_by_duration(ascending=True)
        return SimpleCutSampler(self._shortest_first, **{**self._sampler_args, "shuffle": False})

    def epoch(self, epoch: int, skip: int = 0) -> torch.utils.data.DataLoader:
        """DataLoader over epoch `epoch`'s batches after skipping the first `skip`."""
        sampler = self._sampler_for(epoch)
        sampler.set_epoch(epoch)
        # The DataLoader's own generator keeps its per-iterator seed draw off torch's global RNG,
        # so creating a loader mid-epoch on resume consumes the same random numbers as not doing so.
        generator = torch.Generator()
        generator.manual_seed(self.seed * 100003 + epoch)
        return torch.utils.data.DataLoader(
            self.dataset,
            sampler=_SkipFirst(sampler, skip),
            batch_size=None,
            num_workers=self.num_workers,
            worker_init_fn=_seed_worker if self.num_workers > 0 else None,
            generator=generator,
            persistent_workers=False,
        )

    def count_batches(self, epoch: int = 1) -> int:
        """Batches in one epoch for this rank (iterates a copy of the sampler; loads no features)."""
        sampler = self._sampler_for(epoch, fresh=True)
        sampler.set_epoch(epoch)
        return sum(1 for _ in sampler)

    def state_dict(self) -> Dict[str, Any]:
        """The sampler's lhotse state (configuration, epoch, diagnostics) for the checkpoint."""
        return self.sampler.state_dict()


def make_loader(
    cuts,
    tokenizer,
    max_duration: float,
    train: bool,
    on_the_fly_feats: bool = False,
    perturb_speed: bool = False,
    num_workers: int = 0,
    num_buckets: int = 30,
    seed: int = 0,
    world_size: Optional[int] = None,
    rank: Optional[int] = None,
    num_cuts: Optional[int] = None,
    sorta_grad: bool = False,
    input_transforms: Sequence[Callable] = (),
) -> BatchLoader:
    """A BatchLoader for training (shuffled, bucketed, optional speed perturbation, optional SortaGrad
    first epoch, optional `input_transforms` of the raw features such as `qnet.augment.RoomNoise`) or
    validation (in order). `num_cuts`, when known, caps the buckets at half the cuts."""
    if num_cuts is not None:
        num_buckets = min(num_buckets, num_cuts // 2)
    dataset = AsrDataset(
        tokenizer,
        make_input_strategy(on_the_fly_feats),
        make_cut_transforms(perturb_speed and train, on_the_fly_feats),
        list(input_transforms) if train else [],
    )
    return BatchLoader(
        cuts,
        dataset,
        max_duration=max_duration,
        shuffle=train,
        num_buckets=num_buckets,
        num_workers=num_workers,
        seed=seed,
        world_size=world_size,
        rank=rank,
        sorta_grad=sorta_grad and train,
    )


# Dynamic bucketing fills batches to about this share of --max-duration (measured: bench/bench_scale.py).
BUCKET_FILL = 0.95


def estimate_batches_per_epoch(kept_seconds: float, max_duration: float, world_size: int = 1) -> int:
    """Batches one rank draws per epoch, estimated from the kept audio (no pass over the cuts)."""
    import math

    return max(1, math.ceil(kept_seconds / (max_duration * BUCKET_FILL) / max(1, world_size)))


def counts_to_dict(counts: FilterCounts) -> Dict[str, Any]:
    """FilterCounts as plain JSON data (without the dropped ids)."""
    import dataclasses

    data = dataclasses.asdict(counts)
    del data["dropped_ids"]
    return data


def counts_from_dict(data: Dict[str, Any]) -> FilterCounts:
    """The inverse of `counts_to_dict`."""
    data = dict(data)
    data["normalization"] = NormalizationStats(**data["normalization"])
    return FilterCounts(**data)


def tokenizer_fingerprint(tokenizer) -> str:
    """What decides how a tokenizer filters cuts: its token table (and sentencepiece model)."""
    import hashlib

    h = hashlib.sha1("\n".join(tokenizer.table.symbols).encode("utf-8"))
    model_path = getattr(tokenizer, "model_path", None)
    if model_path is not None:
        h.update(Path(model_path).read_bytes())
    return h.hexdigest()


def train_index_key(paths: Sequence[str], tokenizer, max_utt_duration: Optional[float],
                    subsampling_factor: int = 2) -> Dict[str, Any]:
    """What a train-cuts index depends on: the manifests (path, size, mtime), tokenizer, duration limit
    and the model's subsampling (which decides the CTC-feasible cuts)."""
    files = []
    for p in paths:
        st = Path(p).stat()
        files.append([str(p), st.st_size, st.st_mtime_ns])
    return {"files": files, "tokenizer": tokenizer_fingerprint(tokenizer), "max_utt_duration": max_utt_duration,
            "subsampling_factor": subsampling_factor}


# A manifest smaller than this (bytes, about 20k compressed cuts) is scanned in one process.
SCAN_BYTES_PER_JOB = 4 << 20


def _scan_shard(path: str, shard: int, num_shards: int, tokenizer, max_utt_duration: Optional[float],
                subsampling_factor: int = 2) -> FilterCounts:
    """`_filter_summaries` of every num_shards-th cut of a manifest, starting at `shard`."""
    import itertools

    if str(path).endswith((".jsonl", ".jsonl.gz")):
        summaries = _manifest_summaries(path, FRAME_SHIFT, shard, num_shards)
    else:
        summaries = itertools.islice(_cut_summaries(load_cuts(path), FRAME_SHIFT), shard, None, num_shards)
    return _filter_summaries(summaries, tokenizer, max_utt_duration, subsampling_factor=subsampling_factor)


def build_train_index(paths: Sequence[str], tokenizer, max_utt_duration: Optional[float],
                      num_jobs: int = 1, subsampling_factor: int = 2) -> Dict[str, Any]:
    """Scan every training manifest once (`filter_cuts`' counting): per-file counts and the dropped
    cut ids. `num_jobs` processes scan every num_jobs-th cut each (843k LibriSpeech cuts take ~50 s
    of one CPU core)."""
    from concurrent.futures import ProcessPoolExecutor

    files = []
    for path in paths:
        if not Path(path).is_file():
            raise FileNotFoundError(f"cut manifest not found: {path}")
        jobs = min(num_jobs, 1 + Path(path).stat().st_size // SCAN_BYTES_PER_JOB)
        if jobs > 1:
            with ProcessPoolExecutor(jobs) as ex:
                shards = list(ex.map(_scan_shard, *zip(*[(str(path), k, jobs, tokenizer, max_utt_duration,
                                                           subsampling_factor) for k in range(jobs)])))
        else:
            shards = [_scan_shard(str(path), 0, 1, tokenizer, max_utt_duration, subsampling_factor)]
        counts = FilterCounts()
        for shard in shards:
            counts.add(shard)
        files.append({"path": str(path), "counts": counts_to_dict(counts), "dropped": sorted(counts.dropped_ids)})
    return {"key": train_index_key(paths, tokenizer, max_utt_duration, subsampling_factor), "files": files}


def read_train_index(index_path, key: Dict[str, Any]) -> Optional[Dict[str, Any]]:
    """The index at `index_path` when it was built for `key`, else None."""
    import json

    index_path = Path(index_path)
    if not index_path.is_file():
        return None
    try:
        index = json.loads(index_path.read_text(encoding="utf-8"))
    except ValueError:
        return None
    return index if index.get("key") == key else None


def open_indexed_train_cuts(index: Dict[str, Any], seed: int = 0):
    """The training cuts an index describes, without tokenizing anything: each manifest opened lazily
    and filtered by its dropped ids; several are interleaved at random in proportion to their kept
    cuts (lazy `CutSet.mux`, the same order on every rank). Returns (cuts, total FilterCounts,
    per-manifest FilterCounts)."""
    from lhotse import CutSet

    parts, per_file, total = [], [], FilterCounts()
    for entry in index["files"]:
        counts = counts_from_dict(entry["counts"])
        cuts = load_cuts(entry["path"])
        if entry["dropped"]:
            cuts = cuts.filter(_KeepIds(set(entry["dropped"])))
        if counts.kept:
            parts.append((cuts, counts.kept))
        per_file.append(counts)
        total.add(counts)
    if len(parts) == 1:
        return parts[0][0], total, per_file
    if not parts:
        return CutSet.from_cuts([]), total, per_file
    mixed = CutSet.mux(*[c for c, _ in parts], weights=[n for _, n in parts], seed=seed)
    return mixed, total, per_file


def load_train_cuts(paths: Sequence[str], tokenizer, max_utt_duration: Optional[float], seed: int = 0,
                    index_path=None, is_main: bool = True, barrier: Optional[Callable[[], None]] = None,
                    num_jobs: int = 1, subsampling_factor: int = 2):
    """Training cuts, filtered (see `filter_cuts`), with their counts: (cuts, total, per-manifest counts).

    With `index_path` the scan happens once: the main process (DDP rank 0) writes the index there
    (counts and dropped ids; reused on resume while the manifests, tokenizer and limit are the same),
    `barrier()` waits for it, and every process then opens the manifests lazily, filtered by the ids,
    instead of each rank reading and tokenizing all training cuts at start-up. The scan runs in
    `num_jobs` processes."""
    from qnet.utils import atomic_write_text

    index = None
    if index_path is not None:
        key = train_index_key(paths, tokenizer, max_utt_duration, subsampling_factor)
        index = read_train_index(index_path, key)
        if index is None and is_main:
            import json

            index = build_train_index(paths, tokenizer, max_utt_duration, num_jobs, subsampling_factor)
            atomic_write_text(index_path, json.dumps(index))
        if barrier is not None:
            barrier()
        if index is None:
            index = read_train_index(index_path, key)
            if index is None:
                raise RuntimeError(f"{index_path}: the main process wrote no index for {list(paths)}")
    else:
        index = build_train_index(paths, tokenizer, max_utt_duration, num_jobs, subsampling_factor)
    return open_indexed_train_cuts(index, seed)


def write_cuts(cuts: Iterable, path) -> int:
    """Stream cuts (Cut objects or lhotse's JSON dicts of them) into a manifest, atomically (a killed
    job leaves no half file); returns how many. Memory holds one cut at a time."""
    from lhotse import CutSet

    from qnet.utils import atomic_output

    n = 0
    with atomic_output(path, suffix=".tmp.jsonl.gz") as tmp:
        with CutSet.open_writer(tmp, overwrite=True) as writer:
            for cut in cuts:
                writer.write(cut)
                n += 1
        if n == 0:  # the writer opens its file on the first cut: write a valid empty manifest
            CutSet.from_cuts([]).to_file(tmp)
    return n


def count_lines(path) -> int:
    """Lines (cuts) of a jsonl or jsonl.gz manifest, without parsing them."""
    from lhotse.serialization import open_best

    with open_best(path, "rb") as f:
        return sum(1 for _ in f)


def load_cuts(paths: Union[str, Sequence[str]]):
    """Lazily open one or more lhotse cut manifests (jsonl/jsonl.gz) as one CutSet."""
    from pathlib import Path

    from lhotse import CutSet

    if isinstance(paths, (str, Path)):
        paths = [paths]
    missing = [str(p) for p in paths if not Path(p).is_file()]
    if missing:
        raise FileNotFoundError(f"cut manifest(s) not found: {missing}")
    sets = [CutSet.from_jsonl_lazy(p) if str(p).endswith((".jsonl", ".jsonl.gz")) else CutSet.from_file(p) for p in paths]
    if len(sets) == 1:
        return sets[0]
    # One after the other: the sampler's shuffle buffer mixes only nearby cuts, so several train
    # manifests should be shuffled together beforehand for a well-mixed epoch.
    from lhotse.lazy import LazyIteratorChain

    return CutSet(LazyIteratorChain(*[s.data for s in sets]))
