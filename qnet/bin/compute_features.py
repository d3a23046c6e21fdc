"""Compute NeMo log-mel features for lhotse manifests and store them as lilcom archives.

    python -m qnet.bin.compute_features --src-dir data/manifests --prefix librispeech \\
        --parts train-clean-100 dev-clean --out-dir data/fbank [--speed-perturb true] [--dither 1e-5] \\
        [--num-jobs N]                                   # everything in this process (N workers)
    ... --nj N --split                                   # step 1 of steps/make_features.sh
    ... --nj N --job J                                   # step 2: one run.pl/queue.pl job
    ... --nj N --combine                                 # step 3

Output: `OUT/<prefix>_cuts_<part>.jsonl.gz` (written atomically, last) whose cuts point into
`OUT/<prefix>_feats_<part>/feats-<J>.lca` (LilcomChunkyWriter). Parts whose cuts file exists are
skipped. Training parts (named train*) get 3-fold speed perturbation (0.9/1.0/1.1, lhotse
perturb_speed) with --speed-perturb true, and the --dither value; other parts get dither 0.
Audio that is not at --sampling-rate is resampled. A cut whose audio cannot be read is skipped
with a line naming it; a job fails only when none of its cuts could be computed.

Every step streams (lazy manifests in, lhotse's sequential writers out, each speed-perturbed copy
right after its original), so memory stays flat whatever the size of the part: bench/bench_scale.py
--features measures it.
"""

import argparse
import itertools
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, Iterator, List, Tuple

from tqdm import tqdm

from qnet.corpus.validate import is_train_part
from qnet.utils import setup_logger, str2bool

SPEED_FACTORS = (0.9, 1.1)


def get_parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--src-dir", type=Path, required=True, help="folder of <prefix>_{recordings,supervisions}_<part>.jsonl.gz")
    p.add_argument("--prefix", required=True, help="manifest prefix, e.g. librispeech, wsj")
    p.add_argument("--parts", nargs="+", required=True, help="parts (sets) to process")
    p.add_argument("--out-dir", type=Path, required=True, help="feature folder, e.g. data/fbank")
    p.add_argument("--speed-perturb", type=str2bool, default=False, help="3-fold speed perturbation of train* parts")
    p.add_argument("--dither", type=float, default=1e-5, help="dither for train* parts (other parts: 0)")
    p.add_argument("--feature-type", choices=["nemo-mel", "fbank"], default="nemo-mel",
                   help="nemo-mel (qnet.features, 64 bins) or lhotse's kaldi Fbank (64 bins, for comparisons)")
    p.add_argument("--sampling-rate", type=int, default=16000)
    p.add_argument("--num-jobs", type=int, default=1, help="worker processes when running everything here")
    p.add_argument("--nj", type=int, default=None, help="number of split pieces (with --split/--job/--combine)")
    p.add_argument("--job", type=int, default=None, help="compute piece JOB (1-based) of --nj")
    p.add_argument("--split", action="store_true", help="only build the cuts and split them into --nj pieces")
    p.add_argument("--combine", action="store_true", help="only combine the --nj computed pieces")
    p.add_argument("--log-file", type=Path, default=None)
    return p


# ----------------------------------------------------------------------------- helpers


def make_extractor(feature_type: str, dither: float):
    """The lhotse FeatureExtractor to use."""
    if feature_type == "nemo-mel":
        from qnet.features import NemoMelConfig, NemoMelExtractor

        return NemoMelExtractor(NemoMelConfig(dither=dither))
    from lhotse import Fbank, FbankConfig

    return Fbank(FbankConfig(num_mel_bins=64, dither=dither))


def cuts_path(out_dir: Path, prefix: str, part: str) -> Path:
    """Final cuts manifest of a part."""
    return out_dir / f"{prefix}_cuts_{part}.jsonl.gz"


def split_dir(out_dir: Path, prefix: str, part: str) -> Path:
    """Folder of the split pieces of a part."""
    return out_dir / f"{prefix}_split_{part}"


def _part_manifests(src_dir: Path, prefix: str, part: str) -> Tuple[Path, Path]:
    rec_path = src_dir / f"{prefix}_recordings_{part}.jsonl.gz"
    sup_path = src_dir / f"{prefix}_supervisions_{part}.jsonl.gz"
    missing = [str(p) for p in (rec_path, sup_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{part}: manifests missing: {' '.join(missing)} (run the data preparation stage first)")
    return rec_path, sup_path


def _supervisions_follow_recordings(rec_path: Path, sup_path: Path) -> bool:
    """Do the supervisions come grouped by recording, in the recordings' order? (one streaming pass)"""
    from lhotse.serialization import load_jsonl

    recs = (r["id"] for r in load_jsonl(rec_path))
    current = None
    for sup in load_jsonl(sup_path):
        while sup["recording_id"] != current:
            current = next(recs, None)
            if current is None:
                return False
    return True


def _supervisions_by_recording(rec_path: Path, sup_path: Path) -> Iterator[Tuple[object, list]]:
    """(recording, its supervisions) for every recording, streaming both manifests when the supervisions
    follow the recordings' order (as the preparation stages write them); otherwise the supervisions are
    indexed in memory first (logged)."""
    from lhotse import RecordingSet, SupervisionSet

    recordings = RecordingSet.from_jsonl_lazy(rec_path)
    supervisions = SupervisionSet.from_jsonl_lazy(sup_path)
    if not _supervisions_follow_recordings(rec_path, sup_path):
        logging.info(f"{sup_path} is not in the order of {rec_path}: indexing its supervisions in memory")
        index: Dict[str, list] = {}
        for sup in supervisions:
            index.setdefault(sup.recording_id, []).append(sup)
        for rec in recordings:
            yield rec, index.get(rec.id, [])
        return
    sups = iter(supervisions)
    pending = next(sups, None)
    for rec in recordings:
        mine = []
        while pending is not None and pending.recording_id == rec.id:
            mine.append(pending)
            pending = next(sups, None)
        yield rec, mine


def build_cuts(src_dir: Path, prefix: str, part: str, sampling_rate: int, speed_perturb: bool) -> Iterator:
    """Cuts of a part, streamed from its manifests (one cut per recording, named after it), resampled
    where needed, and for train* parts with --speed-perturb each followed by its 0.9 and 1.1 copies.
    Nothing is held in memory but the current recording."""
    from lhotse import MonoCut, MultiCut

    rec_path, sup_path = _part_manifests(src_dir, prefix, part)
    perturb = speed_perturb and is_train_part(part)
    for rec, sups in _supervisions_by_recording(rec_path, sup_path):
        if rec.num_channels == 1:
            cut = MonoCut(id=rec.id, start=0, duration=rec.duration, channel=rec.channel_ids[0], recording=rec,
                          supervisions=sups)
        else:
            cut = MultiCut(id=rec.id, start=0, duration=rec.duration, channel=rec.channel_ids, recording=rec,
                           supervisions=sups)
        if cut.sampling_rate != sampling_rate:
            cut = cut.resample(sampling_rate)
        yield cut
        if perturb:
            for factor in SPEED_FACTORS:
                yield cut.perturb_speed(factor)


def num_part_cuts(src_dir: Path, prefix: str, part: str, speed_perturb: bool) -> int:
    """How many cuts `build_cuts` yields (counts the recordings' lines; parses nothing)."""
    from qnet.data import count_lines

    rec_path, _ = _part_manifests(src_dir, prefix, part)
    return count_lines(rec_path) * (1 + len(SPEED_FACTORS) if speed_perturb and is_train_part(part) else 1)


def piece_sizes(num_cuts: int, nj: int) -> List[int]:
    """Sizes of `nj` contiguous pieces of `num_cuts` cuts, as even as possible (trailing ones may be 0)."""
    base, extra = divmod(num_cuts, nj)
    return [base + (j < extra) for j in range(nj)]


def compute_piece(cuts, extractor, storage_path: Path, out_path: Path, desc: str) -> Tuple[int, int, float, List[str]]:
    """Compute and store the features of every cut, streaming the cuts with features to `out_path`
    (atomically, last; the skipped cuts are listed in skipped.*.txt next to it first). Returns (cuts
    read, cuts done, seconds done, skipped-cut messages)."""
    from lhotse import LilcomChunkyWriter

    from qnet.data import write_cuts
    from qnet.utils import atomic_write_text

    storage_path.parent.mkdir(parents=True, exist_ok=True)
    read, seconds, skipped = [0], [0.0], []

    def computed(writer):
        for cut in tqdm(cuts, desc=desc, unit="cut", mininterval=5):
            read[0] += 1
            try:
                cut = cut.compute_and_store_features(extractor, writer)
            except Exception as exc:  # unreadable audio, decoder errors: skip this cut only
                msg = f"SKIP {cut.id}: feature extraction failed: {type(exc).__name__}: {exc}"
                logging.warning(msg)
                skipped.append(msg)
                continue
            seconds[0] += cut.duration
            yield cut
        if read[0] and len(skipped) == read[0]:
            raise RuntimeError(f"{desc}: none of its {read[0]} cuts could be computed")
        if skipped:
            atomic_write_text(skipped_path(out_path), "".join(m + "\n" for m in skipped))

    with LilcomChunkyWriter(storage_path) as writer:
        done = write_cuts(computed(writer), out_path)
    return read[0], done, seconds[0], skipped


def skipped_path(piece: Path) -> Path:
    """The list of cuts a piece's job skipped: cuts.J.jsonl.gz -> skipped.J.txt."""
    return piece.with_name(piece.name.replace("cuts.", "skipped.", 1).replace(".jsonl.gz", ".txt"))


def _job_io(out_dir: Path, prefix: str, part: str, job: int) -> Tuple[Path, Path, Path]:
    sd = split_dir(out_dir, prefix, part)
    return sd / f"raw.{job}.jsonl.gz", sd / f"cuts.{job}.jsonl.gz", out_dir / f"{prefix}_feats_{part}" / f"feats-{job}"


def run_job(out_dir: Path, prefix: str, part: str, job: int, feature_type: str, dither: float) -> Tuple[int, int]:
    """Compute split piece `job` of a part, streaming (resumable: a finished piece is skipped).
    Returns (done, skipped)."""
    import torch
    from lhotse import CutSet

    from qnet.data import count_lines

    torch.set_num_threads(1)
    raw, out, storage = _job_io(out_dir, prefix, part, job)
    if out.is_file():
        logging.info(f"{part} piece {job}: {out} exists, skipping")
        return count_lines(out), 0
    if not raw.is_file():
        raise FileNotFoundError(f"{raw} missing: run with --split first")
    extractor = make_extractor(feature_type, dither if is_train_part(part) else 0.0)
    start = time.time()
    _, done, secs, skipped = compute_piece(CutSet.from_jsonl_lazy(raw), extractor, storage, out,
                                           f"{prefix}_{part}.{job}")
    elapsed = time.time() - start
    logging.info(f"{part} piece {job}: {done} cuts ({secs / 3600:.3f} h audio) in {elapsed:.1f} s "
                 f"(RTF {elapsed / max(secs, 1e-9):.4f}), {len(skipped)} skipped")
    return done, len(skipped)


def split_part(src_dir: Path, out_dir: Path, prefix: str, part: str, nj: int, sampling_rate: int, speed_perturb: bool) -> None:
    """Write the `nj` raw pieces of a part, streaming (skipped when they all exist)."""
    import shutil

    from qnet.utils import atomic_write_text

    sd = split_dir(out_dir, prefix, part)
    conf_file = sd / "split.conf"
    conf = f"nj={nj} speed_perturb={speed_perturb} sampling_rate={sampling_rate}"
    if sd.is_dir() and (not conf_file.is_file() or conf_file.read_text().strip() != conf):
        # Pieces of an earlier run with other options must not be mixed with these.
        logging.info(f"{part}: removing pieces of an earlier split ({sd}) made with other options than {conf}")
        shutil.rmtree(sd)
        shutil.rmtree(out_dir / f"{prefix}_feats_{part}", ignore_errors=True)
    raws = [_job_io(out_dir, prefix, part, j)[0] for j in range(1, nj + 1)]
    if all(r.is_file() for r in raws):
        logging.info(f"{part}: {nj} split pieces exist, skipping the split")
        return
    from qnet.data import write_cuts

    num_cuts = num_part_cuts(src_dir, prefix, part, speed_perturb)
    cuts = build_cuts(src_dir, prefix, part, sampling_rate, speed_perturb)
    atomic_write_text(conf_file, conf + "\n")
    for r, size in zip(raws, piece_sizes(num_cuts, nj)):
        write_cuts(itertools.islice(cuts, size), r)
    logging.info(f"{part}: {num_cuts} cuts{' (with speed perturbation)' if speed_perturb and is_train_part(part) else ''} "
                 f"split into {nj} pieces in {sd}")


def combine_part(out_dir: Path, prefix: str, part: str, nj: int) -> Path:
    """Concatenate the computed pieces in order into the part's cuts file (streaming, atomically)."""
    from lhotse.serialization import load_jsonl

    from qnet.data import write_cuts

    outs = [_job_io(out_dir, prefix, part, j)[1] for j in range(1, nj + 1)]
    missing = [str(o) for o in outs if not o.is_file()]
    if missing:
        raise FileNotFoundError(f"{part}: pieces not computed yet: {' '.join(missing)}")
    seconds = [0.0]

    def cuts():
        for o in outs:
            for cut in load_jsonl(o):
                seconds[0] += cut["duration"]
                yield cut

    final = cuts_path(out_dir, prefix, part)
    n = write_cuts(cuts(), final)
    skipped = sum(len(_read_lines(skipped_path(o))) for o in outs)
    logging.info(f"{final}: {n} cuts ({seconds[0] / 3600:.2f} h), {skipped} skipped")
    return final


def _read_lines(path: Path) -> List[str]:
    return path.read_text(encoding="utf-8").splitlines() if path.is_file() else []


def _job_worker(args: tuple) -> Tuple[int, int]:
    out_dir, prefix, part, job, feature_type, dither, log_level = args
    logging.basicConfig(level=log_level)
    return run_job(out_dir, prefix, part, job, feature_type, dither)


def run_all(args: argparse.Namespace) -> None:
    """Split, compute (with --num-jobs workers) and combine every part not done yet."""
    nj = max(1, args.num_jobs)
    for part in args.parts:
        if cuts_path(args.out_dir, args.prefix, part).is_file():
            logging.info(f"{part}: {cuts_path(args.out_dir, args.prefix, part)} exists, skipping")
            continue
        start = time.time()
        split_part(args.src_dir, args.out_dir, args.prefix, part, nj, args.sampling_rate, args.speed_perturb)
        jobs = [(args.out_dir, args.prefix, part, j, args.feature_type, args.dither, logging.getLogger().level)
                for j in range(1, nj + 1)]
        if nj > 1:
            with ProcessPoolExecutor(nj) as ex:
                list(ex.map(_job_worker, jobs))
        else:
            _job_worker(jobs[0])
        combine_part(args.out_dir, args.prefix, part, nj)
        logging.info(f"{part}: features done in {time.time() - start:.1f} s")


def main(argv=None) -> int:
    """Entry point."""
    args = get_parser().parse_args(argv)
    setup_logger(args.log_file)
    import torch

    torch.set_num_threads(1)
    modes = sum([args.split, args.combine, args.job is not None])
    if modes > 1:
        logging.error("give at most one of --split, --combine, --job")
        return 1
    if modes and not args.nj:
        logging.error("--split/--job/--combine need --nj N")
        return 1
    if args.job is not None and not 1 <= args.job <= args.nj:
        logging.error(f"--job {args.job} is outside 1..{args.nj}")
        return 1
    try:
        if not modes:
            run_all(args)
            return 0
        for part in args.parts:
            if cuts_path(args.out_dir, args.prefix, part).is_file():
                logging.info(f"{part}: {cuts_path(args.out_dir, args.prefix, part)} exists, skipping")
                continue
            if args.split:
                split_part(args.src_dir, args.out_dir, args.prefix, part, args.nj, args.sampling_rate, args.speed_perturb)
            elif args.combine:
                combine_part(args.out_dir, args.prefix, part, args.nj)
            else:
                run_job(args.out_dir, args.prefix, part, args.job, args.feature_type, args.dither)
    except (FileNotFoundError, RuntimeError) as exc:
        logging.error(str(exc))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
