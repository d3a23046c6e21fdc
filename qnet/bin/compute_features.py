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
"""

import argparse
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import List, Tuple

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


def _resample_if_needed(cut, sampling_rate: int):
    return cut if cut.sampling_rate == sampling_rate else cut.resample(sampling_rate)


def build_cuts(src_dir: Path, prefix: str, part: str, sampling_rate: int, speed_perturb: bool):
    """CutSet of a part from its manifests: resampled where needed, speed-perturbed for train*."""
    from lhotse import CutSet, load_manifest

    rec_path = src_dir / f"{prefix}_recordings_{part}.jsonl.gz"
    sup_path = src_dir / f"{prefix}_supervisions_{part}.jsonl.gz"
    missing = [str(p) for p in (rec_path, sup_path) if not p.is_file()]
    if missing:
        raise FileNotFoundError(f"{part}: manifests missing: {' '.join(missing)} (run the data preparation stage first)")
    from lhotse.utils import fastcopy

    cuts = CutSet.from_manifests(recordings=load_manifest(rec_path), supervisions=load_manifest(sup_path))
    # One supervision per recording here: name each cut after its recording (lhotse appends "-<index>").
    cuts = CutSet.from_cuts(fastcopy(c, id=c.recording_id) if len(c.supervisions) == 1 else c for c in cuts)
    n_resampled = sum(c.sampling_rate != sampling_rate for c in cuts)
    if n_resampled:
        logging.info(f"{part}: resampling {n_resampled} cuts to {sampling_rate} Hz")
        cuts = CutSet.from_cuts(_resample_if_needed(c, sampling_rate) for c in cuts)
    if speed_perturb and is_train_part(part):
        cuts = (cuts + cuts.perturb_speed(SPEED_FACTORS[0]) + cuts.perturb_speed(SPEED_FACTORS[1])).to_eager()
        logging.info(f"{part}: speed perturbation {SPEED_FACTORS} -> {len(cuts)} cuts")
    return cuts


def split_cuts(cuts, nj: int) -> list:
    """`nj` contiguous pieces (CutSet.split); pieces past the number of cuts are empty."""
    from lhotse import CutSet

    n = min(nj, len(cuts))
    pieces = list(cuts.split(n)) if n > 0 else []
    return pieces + [CutSet.from_cuts([]) for _ in range(nj - len(pieces))]


def compute_piece(cuts, extractor, storage_path: Path, desc: str) -> Tuple[list, List[str]]:
    """Compute and store features of every cut; returns (cuts with features, skipped-cut messages)."""
    from lhotse import LilcomChunkyWriter

    storage_path.parent.mkdir(parents=True, exist_ok=True)
    done, skipped = [], []
    with LilcomChunkyWriter(storage_path) as writer:
        for cut in tqdm(cuts, desc=desc, unit="cut", mininterval=5):
            try:
                done.append(cut.compute_and_store_features(extractor, writer))
            except Exception as exc:  # unreadable audio, decoder errors: skip this cut only
                msg = f"SKIP {cut.id}: feature extraction failed: {type(exc).__name__}: {exc}"
                logging.warning(msg)
                skipped.append(msg)
    return done, skipped


def _job_io(out_dir: Path, prefix: str, part: str, job: int) -> Tuple[Path, Path, Path]:
    sd = split_dir(out_dir, prefix, part)
    return sd / f"raw.{job}.jsonl.gz", sd / f"cuts.{job}.jsonl.gz", out_dir / f"{prefix}_feats_{part}" / f"feats-{job}"


def run_job(out_dir: Path, prefix: str, part: str, job: int, feature_type: str, dither: float) -> Tuple[int, int]:
    """Compute split piece `job` of a part (resumable: a finished piece is skipped). Returns (done, skipped)."""
    import torch
    from lhotse import CutSet, load_manifest

    from qnet.corpus.validate import atomic_to_file
    from qnet.utils import atomic_write_text

    torch.set_num_threads(1)
    raw, out, storage = _job_io(out_dir, prefix, part, job)
    if out.is_file():
        logging.info(f"{part} piece {job}: {out} exists, skipping")
        return len(load_manifest(out)), 0
    if not raw.is_file():
        raise FileNotFoundError(f"{raw} missing: run with --split first")
    cuts = load_manifest(raw)
    extractor = make_extractor(feature_type, dither if is_train_part(part) else 0.0)
    start = time.time()
    done, skipped = compute_piece(cuts, extractor, storage, f"{prefix}_{part}.{job}")
    if len(cuts) and not done:
        raise RuntimeError(f"{part} piece {job}: none of its {len(cuts)} cuts could be computed")
    if skipped:
        atomic_write_text(out.with_name(f"skipped.{job}.txt"), "".join(m + "\n" for m in skipped))
    atomic_to_file(CutSet.from_cuts(done), out)
    secs = sum(c.duration for c in done)
    elapsed = time.time() - start
    logging.info(f"{part} piece {job}: {len(done)} cuts ({secs / 3600:.3f} h audio) in {elapsed:.1f} s "
                 f"(RTF {elapsed / max(secs, 1e-9):.4f}), {len(skipped)} skipped")
    return len(done), len(skipped)


def split_part(src_dir: Path, out_dir: Path, prefix: str, part: str, nj: int, sampling_rate: int, speed_perturb: bool) -> None:
    """Write the `nj` raw pieces of a part (skipped when they all exist)."""
    from qnet.corpus.validate import atomic_to_file

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
    cuts = build_cuts(src_dir, prefix, part, sampling_rate, speed_perturb)
    atomic_write_text(conf_file, conf + "\n")
    for r, piece in zip(raws, split_cuts(cuts, nj)):
        atomic_to_file(piece, r)
    logging.info(f"{part}: {len(cuts)} cuts split into {nj} pieces in {split_dir(out_dir, prefix, part)}")


def combine_part(out_dir: Path, prefix: str, part: str, nj: int) -> Path:
    """Concatenate the computed pieces in order into the part's cuts file (atomically)."""
    from lhotse import CutSet, load_manifest

    from qnet.corpus.validate import atomic_to_file

    outs = [_job_io(out_dir, prefix, part, j)[1] for j in range(1, nj + 1)]
    missing = [str(o) for o in outs if not o.is_file()]
    if missing:
        raise FileNotFoundError(f"{part}: pieces not computed yet: {' '.join(missing)}")
    cuts = CutSet.from_cuts(c for o in outs for c in load_manifest(o))
    skipped = sum(len(_read_lines(o.with_name(f"skipped.{j}.txt"))) for j, o in enumerate(outs, 1))
    final = cuts_path(out_dir, prefix, part)
    atomic_to_file(cuts, final)
    logging.info(f"{final}: {len(cuts)} cuts ({sum(c.duration for c in cuts) / 3600:.2f} h), {skipped} skipped")
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
