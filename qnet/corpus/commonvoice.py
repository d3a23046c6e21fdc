"""Common Voice English -> lhotse manifests: a thin wrapper over lhotse's `prepare_commonvoice`.

Layout (as lhotse expects it): `CORPUS/en/{train,dev,test}.tsv` + `CORPUS/en/clips/*.mp3`.
Before calling lhotse, every clip of a split's tsv is probed (over --num-jobs processes); rows with missing, unreadable or empty
audio are reported and left out of a filtered copy of the tsv (lhotse's recipe would stop on the
first unreadable clip), which lhotse then reads through `OUT/.commonvoice_staging/en/`. Afterwards
texts are normalized to our characters (`qnet.tokens.normalize_text`), 48 kHz clips are marked for
resampling to 16 kHz on load, over-long training clips are dropped, and the manifests are written as
`OUT/commonvoice_{recordings,supervisions}_<split>.jsonl.gz` with a report per split.
"""

import csv
import logging
import os
import shutil
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from tqdm import tqdm

from qnet.corpus.validate import (
    BadAudioError,
    Event,
    PrepReport,
    check_duration,
    clean_text,
    is_train_part,
    part_is_done,
    probe_audio,
    write_part,
)
from qnet.utils import PathLike


PREFIX = "commonvoice"
DEFAULT_SPLITS = ("train", "dev", "test")


def _probe_error(clip: str) -> Optional[str]:
    """None when the clip is readable, else why not (BadAudioError's message); runs in a worker."""
    try:
        probe_audio(clip)
    except BadAudioError as exc:
        return str(exc)
    return None


def probe_clips(clips: Sequence[PathLike], num_jobs: int = 1, desc: str = "probing clips") -> List[Optional[str]]:
    """`_probe_error` of every clip, in order, over `num_jobs` worker processes (a release has ~1M clips)."""
    clips = [str(c) for c in clips]
    if num_jobs <= 1 or len(clips) < 2:
        return [_probe_error(c) for c in tqdm(clips, desc=desc, unit="clip", mininterval=5)]
    chunk = max(1, min(1000, len(clips) // (num_jobs * 8)))
    with ProcessPoolExecutor(num_jobs) as ex:
        return list(tqdm(ex.map(_probe_error, clips, chunksize=chunk), total=len(clips), desc=desc, unit="clip",
                         mininterval=5))


def _filter_tsv(lang_dir: Path, split: str, staging: Path, report: PrepReport, num_jobs: int = 1) -> int:
    """Write staging/<split>.tsv holding only rows whose clip is readable (probed over `num_jobs`
    processes); returns rows kept."""
    src = lang_dir / f"{split}.tsv"
    with open(src, "r", encoding="utf-8", errors="replace", newline="") as f:
        reader = csv.DictReader(f, delimiter="\t", quoting=csv.QUOTE_NONE)
        fieldnames = reader.fieldnames or []
        rows = list(reader)
    for col in ("path", "sentence", "client_id"):
        if col not in fieldnames:
            raise ValueError(f"{src}: no '{col}' column (columns: {fieldnames})")
    kept = []
    errors = probe_clips([lang_dir / "clips" / row["path"] for row in rows], num_jobs, f"{split}: probing clips")
    for row, error in zip(rows, errors):
        if error is not None:
            reason = "no-audio" if "no such file" in error else (
                "empty-audio" if ("zero-length" in error or "0 bytes" in error) else "bad-audio")
            report.skip(Path(row["path"]).stem, reason, error)
            continue
        # lhotse reads these columns with no default
        for col in ("gender", "age", "accents", "variant"):
            row.setdefault(col, "")
        kept.append(row)
    out_fields = list(dict.fromkeys(list(fieldnames) + ["gender", "age", "accents", "variant"]))
    with open(staging / f"{split}.tsv", "w", encoding="utf-8", newline="") as f:
        w = csv.DictWriter(f, fieldnames=out_fields, delimiter="\t", quoting=csv.QUOTE_NONE, escapechar="\\")
        w.writeheader()
        for row in kept:
            w.writerow({k: (v if v is not None else "") for k, v in row.items() if k in out_fields})
    return len(kept)


def prepare_commonvoice_en(
    corpus_dir: PathLike,
    out_dir: PathLike,
    splits: Sequence[str] = DEFAULT_SPLITS,
    num_jobs: int = 1,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
    language: str = "en",
) -> Dict[str, str]:
    """Prepare English Common Voice splits (skipping those already written).
    Returns {split: "done" | "skipped" | "missing" | "empty"}."""
    from lhotse.recipes.commonvoice import prepare_commonvoice

    corpus_dir = Path(corpus_dir).resolve()
    out_dir = Path(out_dir)
    lang_dir = corpus_dir / language
    if not lang_dir.is_dir():
        raise FileNotFoundError(f"{lang_dir} does not exist (expected CORPUS/{language}/{{train,dev,test}}.tsv + clips/)")
    status: Dict[str, str] = {}
    staging_root = out_dir / ".commonvoice_staging"
    for split in splits:
        if part_is_done(out_dir, PREFIX, split):
            logging.info(f"{PREFIX}_{split}: manifests exist in {out_dir}, skipping")
            status[split] = "skipped"
            continue
        if not (lang_dir / f"{split}.tsv").is_file():
            logging.error(f"SKIP {split}: missing-tsv: {lang_dir / split}.tsv does not exist")
            status[split] = "missing"
            continue
        report = PrepReport(f"{PREFIX}_{split}")
        shutil.rmtree(staging_root, ignore_errors=True)
        staging = staging_root / language
        staging.mkdir(parents=True)
        os.symlink(lang_dir / "clips", staging / "clips")
        n = _filter_tsv(lang_dir, split, staging, report, num_jobs)
        manifests = {}
        if n:
            manifests = prepare_commonvoice(staging_root, staging_root / "out", languages=[language], splits=[split], num_jobs=num_jobs)
        recordings, supervisions = _normalize(manifests.get(language, {}).get(split), split, report, max_duration,
                                              sampling_rate, lang_dir / "clips")
        shutil.rmtree(staging_root, ignore_errors=True)
        if not supervisions:
            logging.error(f"{PREFIX}_{split}: no usable utterance; nothing written")
            report.write(out_dir / f"{PREFIX}_{split}.report.txt")
            status[split] = "empty"
            continue
        write_part(out_dir, PREFIX, split, recordings, supervisions, report)
        status[split] = "done"
    return status


def _normalize(manifests, split: str, report: PrepReport, max_duration: float, sampling_rate: int, clips_dir: Path):
    """Normalize texts, resample, drop long training clips, point audio at the real clips folder
    (not the staging link); returns (recordings, supervisions)."""
    from lhotse.utils import fastcopy

    if not manifests:
        return [], []
    recs = {r.id: r for r in manifests["recordings"]}
    events: List[Event] = []
    out_recs, out_sups = [], []
    seen = set()
    for sup in manifests["supervisions"]:
        rec = recs.get(sup.recording_id)
        if rec is None or sup.id in seen:
            continue
        seen.add(sup.id)
        text = clean_text(sup.id, sup.text or "", events, report.text_stats)
        if text is None or not check_duration(sup.id, rec.duration, max_duration, is_train_part(split), events):
            continue
        if rec.num_channels != 1:
            events.append(Event("SKIP", sup.id, "not-mono", f"{rec.num_channels} channels, expected 1"))
            continue
        if rec.sampling_rate != sampling_rate:
            rec = rec.resample(sampling_rate)
        rec = fastcopy(rec, sources=[fastcopy(src, source=str(clips_dir / Path(src.source).name)) for src in rec.sources])
        custom = dict(sup.custom or {})
        custom["orig_text"] = sup.text
        out_recs.append(rec)
        out_sups.append(fastcopy(sup, text=text, duration=rec.duration, language="English", custom=custom))
    n_resampled = sum(r.transforms is not None for r in out_recs)
    if n_resampled:
        logging.info(f"{PREFIX}_{split}: {n_resampled} clips resampled to {sampling_rate} Hz on load")
    report.extend(events)
    return out_recs, out_sups
