"""Scale simulation: LibriSpeech 960 h with 3-fold speed perturbation (~843k cuts) through the data path.

    python bench/bench_scale.py [--num-utts 281241] [--world-sizes 1 8] [--work-dir /tmp/qnet_scale]
                                [--steps manifests combine ranks features]

Steps (each measured in its own process: wall time and peak RSS, VmHWM):
  manifests  the three train parts as the features stage writes them (every utterance followed by its
             0.9 and 1.1 copies; durations and transcripts LibriSpeech-like: mean 12.7 s, about 990 h
             before perturbation, LibriSpeech has 960 h); the features of every cut point into 8 real 40-s feature matrices stored in
             one lilcom archive, so batches load real data
  combine    qnet.bin.combine_cuts: the three parts -> one shuffled train-all file (stage 2)
  ranks      per simulated DDP rank, what qnet.bin.train does before its first step, for each world size:
             the train-cuts index (rank 0 scans and tokenizes; the others read the index), the sampler
             (DynamicBucketingSampler, max-duration 400 s, 30 buckets), then the first batch with features
             (start -> first batch); then, separately, a full pass of the sampler over the epoch (its
             per-epoch overhead, and the exact batch count next to the trainer's start-up estimate).
             Rank 0 runs first, as the others wait for its index at a barrier. The index is built by the
             first rank 0 measured (a fresh start); later processes read it, as every rank > 0 does, and as
             rank 0 does on a resume. --ranks limits the ranks measured (all ranks > 0 run the same code).
  features   the features stage's split (stream cuts from recordings/supervisions, perturb, write the
             --nj pieces) for N and 4N recordings: peak RSS should not grow with N

Targets (issue 9): first batch <= 60 s and RSS <= 4 GB per rank. Numbers go in bench/README.md.
"""

import argparse
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

from bench_g_memory import peak_rss_mb  # noqa: E402 (bench/ is this script's folder)

ROOT = Path(__file__).resolve().parents[1]
LIBRISPEECH_PARTS = {"train-clean-100": 28539, "train-clean-360": 104014, "train-other-500": 148688}
SPEED_FACTORS = (0.9, 1.1)
NUM_MATRICES = 8
MATRIX_SECONDS = 40.0


def write_feature_matrices(work: Path) -> list:
    """NUM_MATRICES 40-s (4000 x 64) log-mel-like matrices in one lilcom archive; returns their keys."""
    import numpy as np
    from lhotse import LilcomChunkyWriter

    rng = np.random.default_rng(0)
    frames = int(MATRIX_SECONDS * 100)
    with LilcomChunkyWriter(work / "feats.lca") as w:
        return [w.write(f"m{i}", (rng.standard_normal((frames, 64)) - 5).astype("float32")) for i in range(NUM_MATRICES)]


def _cut_dict(cid: str, duration: float, text: str, speaker: str, factor: float, key: str, archive: str, wav: str):
    num_samples = int(round(duration * 16000))
    rec = {"id": cid, "sources": [{"type": "file", "channels": [0], "source": wav}], "sampling_rate": 16000,
           "num_samples": num_samples, "duration": duration, "channel_ids": [0]}
    if factor != 1.0:
        rec["transforms"] = [{"name": "Speed", "kwargs": {"factor": factor}}]
    feats = {"type": "nemo-mel", "num_frames": int(MATRIX_SECONDS * 100), "num_features": 64, "frame_shift": 0.01,
             "sampling_rate": 16000, "start": 0, "duration": MATRIX_SECONDS, "storage_type": "lilcom_chunky",
             "storage_path": archive, "storage_key": key, "recording_id": cid, "channels": 0}
    sup = {"id": cid, "recording_id": cid, "start": 0, "duration": duration, "channel": 0, "text": text,
           "language": "English", "speaker": speaker}
    return {"id": cid, "start": 0, "duration": duration, "channel": 0, "supervisions": [sup], "features": feats,
            "recording": rec, "type": "MonoCut"}


def step_manifests(work: Path, num_utts: int) -> dict:
    """The three train parts' cut manifests, as the features stage writes them."""
    import numpy as np
    import soundfile as sf

    wav = work / "audio.wav"
    sf.write(str(wav), np.zeros(16000, dtype="float32"), 16000)
    keys = write_feature_matrices(work)
    rng = np.random.default_rng(1)
    vocab = np.array(["".join(rng.choice(list("abcdefghijklmnopqrstuvwxyz'"), size=rng.integers(2, 9)))
                      for _ in range(20000)], dtype=object)
    scale = num_utts / sum(LIBRISPEECH_PARTS.values())
    total_cuts, total_seconds = 0, 0.0
    for p, (part, n) in enumerate(LIBRISPEECH_PARTS.items()):
        n = max(1, int(round(n * scale)))
        durations = np.clip(rng.normal(12.7, 3.6, size=n), 1.0, 35.0)
        # gzip level 1 (lhotse's writer uses 9): the same format, written several times faster
        with gzip.open(work / f"librispeech_cuts_{part}.jsonl.gz", "wt", compresslevel=1, encoding="utf-8") as w:
            for i, d in enumerate(durations):
                d = float(round(d, 3))
                words = vocab[rng.integers(0, len(vocab), size=max(1, int(d * 2.7)))]
                text = " ".join(words).upper()
                base = f"{100 + p * 1000 + i // 500}-{i % 500}-{i:06d}"
                key = keys[i % len(keys)]
                for factor in (1.0,) + SPEED_FACTORS:
                    cid = base if factor == 1.0 else f"{base}_sp{factor}"
                    dur = round(d / factor, 6)
                    if dur > MATRIX_SECONDS:
                        dur = MATRIX_SECONDS
                    cut = _cut_dict(cid, dur, text, base.split("-")[0], factor, key, str(work / "feats.lca"), str(wav))
                    w.write(json.dumps(cut, ensure_ascii=False) + "\n")
                    total_cuts += 1
                total_seconds += d
    return {"cuts": total_cuts, "hours_before_perturbation": round(total_seconds / 3600, 1)}


def step_combine(work: Path) -> dict:
    """qnet.bin.combine_cuts on the three parts."""
    sys.path.insert(0, str(ROOT))
    from qnet.bin.combine_cuts import combine_cuts

    inputs = [work / f"librispeech_cuts_{part}.jsonl.gz" for part in LIBRISPEECH_PARTS]
    n = combine_cuts(inputs, work / "librispeech_cuts_train-all-shuf.jsonl.gz", shuffle=True, seed=0)
    return {"cuts": n}


def step_rank(work: Path, world_size: int, rank: int, max_duration: float, index_jobs: int = 1) -> dict:
    """What one rank of qnet.bin.train does before its first step (Trainer._setup_data + counting)."""
    sys.path.insert(0, str(ROOT))
    import torch

    torch.set_num_threads(1)
    from qnet.data import estimate_batches_per_epoch, load_train_cuts, make_loader
    from qnet.tokens import CharTokenizer
    from qnet.trainer import EXACT_COUNT_MAX_CUTS

    t0, c0 = time.time(), cpu_seconds()
    tokenizer = CharTokenizer()
    index = work / "exp" / "train_cuts_index.json"  # the index does not depend on the world size
    cuts, counts, _ = load_train_cuts([str(work / "librispeech_cuts_train-all-shuf.jsonl.gz")], tokenizer, 16.7,
                                      index_path=index, is_main=rank == 0, num_jobs=index_jobs)
    t_index, c_index = time.time() - t0, cpu_seconds() - c0
    loader = make_loader(cuts, tokenizer, max_duration, train=True, num_buckets=30, seed=0,
                         world_size=world_size, rank=rank, num_cuts=counts.kept)
    estimate = estimate_batches_per_epoch(counts.kept_seconds, max_duration, world_size)
    counted_at_start = counts.kept <= EXACT_COUNT_MAX_CUTS  # what the trainer does
    if counted_at_start:
        t1, c1 = time.time(), cpu_seconds()
        batches = loader.count_batches(1)
        t_count, c_count = time.time() - t1, cpu_seconds() - c1
    t2 = time.time()
    batch = next(iter(loader.epoch(1)))
    t_batch = time.time() - t2
    t_first, c_first = time.time() - t0, cpu_seconds() - c0
    if not counted_at_start:  # the sampler's per-epoch overhead: one pass over the manifest
        t1, c1 = time.time(), cpu_seconds()
        batches = loader.count_batches(1)
        t_count, c_count = time.time() - t1, cpu_seconds() - c1
    return {"world_size": world_size, "rank": rank, "kept_cuts": counts.kept, "index_s": round(t_index, 1),
            "index_cpu_s": round(c_index, 1), "start_to_first_batch_cpu_s": round(c_first, 1),
            "sampler_pass_cpu_s": round(c_count, 1),
            "counted_at_start": counted_at_start, "estimated_batches": estimate,
            "count_batches_s": round(t_count, 1), "batches_per_epoch": batches, "first_batch_s": round(t_batch, 1),
            "start_to_first_batch_s": round(t_first, 1), "batch_shape": list(batch["feats"].shape)}


def cpu_seconds() -> float:
    """CPU time (user + sys) of this process and its finished children."""
    import resource

    own, children = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


def step_features(work: Path, num_recordings: int) -> dict:
    """The features stage's streaming split of a train part with num_recordings recordings (3-fold perturbed)."""
    sys.path.insert(0, str(ROOT))
    from lhotse import RecordingSet, SupervisionSet

    from qnet.bin.compute_features import split_part

    src = work / f"split_src_{num_recordings}"
    out = work / f"split_out_{num_recordings}"
    src.mkdir(parents=True, exist_ok=True)
    wav = str(work / "audio.wav")
    rec_path = src / "librispeech_recordings_train-x.jsonl.gz"
    sup_path = src / "librispeech_supervisions_train-x.jsonl.gz"
    if not rec_path.is_file():
        with RecordingSet.open_writer(rec_path, overwrite=True) as rw, SupervisionSet.open_writer(sup_path, overwrite=True) as sw:
            for i in range(num_recordings):
                rid = f"r{i:07d}"
                rw.write({"id": rid, "sources": [{"type": "file", "channels": [0], "source": wav}],
                          "sampling_rate": 16000, "num_samples": 16000 * 12, "duration": 12.0, "channel_ids": [0]})
                sw.write({"id": rid, "recording_id": rid, "start": 0, "duration": 12.0, "channel": 0,
                          "text": "some words of a transcript " * 6, "speaker": "1"})
    base = peak_rss_mb()
    t0 = time.time()
    split_part(src, out, "librispeech", "train-x", 8, 16000, True)
    return {"recordings": num_recordings, "cuts": 3 * num_recordings, "seconds": round(time.time() - t0, 1),
            "rss_before_mb": round(base, 1)}


def run_child(work: Path, args: list) -> dict:
    """One step in a fresh process (its peak RSS is its own); returns the step's numbers."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    res = subprocess.run([sys.executable, __file__, "--work-dir", str(work), "--child", *args], capture_output=True,
                         text=True, env=env)
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args)}: FAILED\n{res.stderr[-4000:]}")
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--num-utts", type=int, default=sum(LIBRISPEECH_PARTS.values()),
                   help="utterances before perturbation (LibriSpeech 960 h: 281241)")
    p.add_argument("--world-sizes", type=int, nargs="+", default=[1, 8])
    p.add_argument("--max-duration", type=float, default=400.0, help="seconds per batch and rank (the recipe's)")
    p.add_argument("--index-jobs", type=int, default=1,
                   help="processes of rank 0's index scan (qnet.bin.train uses min(8, CPUs))")
    p.add_argument("--ranks", type=int, nargs="+", default=None,
                   help="only these ranks of each world size (default all; ranks > 0 all run the same code)")
    p.add_argument("--feature-recordings", type=int, default=20000, help="N of the features step (N and 4N)")
    p.add_argument("--work-dir", type=Path, default=Path("/tmp/qnet_scale"))
    p.add_argument("--steps", nargs="+", default=["manifests", "combine", "ranks", "features"])
    p.add_argument("--child", nargs="+", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    work = args.work_dir
    if args.child:
        start = time.time()
        kind, *rest = args.child
        if kind == "manifests":
            info = step_manifests(work, int(rest[0]))
        elif kind == "combine":
            info = step_combine(work)
        elif kind == "rank":
            info = step_rank(work, int(rest[0]), int(rest[1]), float(rest[2]), int(rest[3]) if len(rest) > 3 else 1)
        elif kind == "features":
            info = step_features(work, int(rest[0]))
        else:
            raise ValueError(kind)
        info.update(wall_s=round(time.time() - start, 1), cpu_s=round(cpu_seconds(), 1),
                    peak_rss_mb=round(peak_rss_mb(), 1))
        with open(work / "results.jsonl", "a") as f:  # every number, also those not printed
            f.write(json.dumps({"step": args.child, **info}) + "\n")
        print(json.dumps(info))
        return
    work.mkdir(parents=True, exist_ok=True)
    print(f"work dir {work}; {os.cpu_count()} CPUs; python {sys.version.split()[0]}", flush=True)
    if "manifests" in args.steps:
        info = run_child(work, ["manifests", str(args.num_utts)])
        print(f"manifests: {info['cuts']} cuts ({info['hours_before_perturbation']} h before perturbation) "
              f"written in {info['wall_s']} s ({info['cpu_s']} s CPU), peak RSS {info['peak_rss_mb']:.0f} MB", flush=True)
    if "combine" in args.steps:
        info = run_child(work, ["combine"])
        print(f"combine (shuffled train-all): {info['cuts']} cuts in {info['wall_s']} s ({info['cpu_s']} s CPU), "
              f"peak RSS {info['peak_rss_mb']:.0f} MB", flush=True)
    if "ranks" in args.steps:
        index = work / "exp" / "train_cuts_index.json"
        if index.exists():
            index.unlink()  # the first rank 0 builds it, as on a fresh start; later ones read it (as on resume)
        for ws in args.world_sizes:
            for rank in (range(ws) if args.ranks is None else [r for r in args.ranks if r < ws]):
                r = run_child(work, ["rank", str(ws), str(rank), str(args.max_duration), str(args.index_jobs)])
                print(f"world {ws} rank {rank} ({r['wall_s']} s, {r['cpu_s']} s CPU in all): start -> first batch "
                      f"{r['start_to_first_batch_s']} s, {r['start_to_first_batch_cpu_s']} s CPU (index "
                      f"{r['index_s']} s, first batch {r['first_batch_s']} s {r['batch_shape']}"
                      f"{', batch count included' if r['counted_at_start'] else ''}); peak RSS {r['peak_rss_mb']:.0f} MB; "
                      f"sampler pass over the epoch {r['count_batches_s']} s, {r['sampler_pass_cpu_s']} s CPU: "
                      f"{r['batches_per_epoch']} batches "
                      f"(estimated {r['estimated_batches']}); {r['kept_cuts']} cuts kept", flush=True)
    if "features" in args.steps:
        for n in (args.feature_recordings, 4 * args.feature_recordings):
            r = run_child(work, ["features", str(n)])
            print(f"features split: {n} recordings -> {r['cuts']} cuts in {r['seconds']} s ({r['cpu_s']} s CPU), "
                  f"peak RSS {r['peak_rss_mb']:.0f} MB (after imports {r['rss_before_mb']:.0f} MB)", flush=True)


if __name__ == "__main__":
    main()
