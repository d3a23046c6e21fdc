"""LibriSpeech (and Mini LibriSpeech) -> lhotse manifests, robust to bad items.

Layout, as lhotse's recipe reads it: `CORPUS/<part>/<speaker>/<chapter>/<speaker>-<chapter>.trans.txt`
with lines `<utt-id> TEXT`, next to `<utt-id>.flac` (`.wav` is accepted too). Output:
`OUT/librispeech_{recordings,supervisions}_<part>.jsonl.gz` plus `OUT/librispeech_<part>.report.txt`.
Unlike lhotse's recipe, every audio file is probed (header + first/last samples), transcripts are
normalized with `qnet.tokens.normalize_text`, and bad items are skipped or fixed with a report line
instead of failing the whole part.
"""

import logging
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Union

from tqdm import tqdm

from qnet.corpus.validate import (
    BadAudioError,
    Event,
    FIX,
    PrepReport,
    SKIP,
    check_duration,
    clean_text,
    finish_part,
    is_train_part,
    part_is_done,
    probe_audio,
)
from qnet.tokens import NormalizationStats
from qnet.utils import PathLike


PREFIX = "librispeech"
LIBRISPEECH_PARTS = (
    "dev-clean",
    "dev-other",
    "test-clean",
    "test-other",
    "train-clean-100",
    "train-clean-360",
    "train-other-500",
)
MINI_LIBRISPEECH_PARTS = ("dev-clean-2", "train-clean-5")
AUDIO_SUFFIXES = (".flac", ".wav")


@dataclass
class ChapterResult:
    """What one chapter folder yielded: recordings, supervisions, events, text statistics."""

    recordings: list = field(default_factory=list)
    supervisions: list = field(default_factory=list)
    events: List[Event] = field(default_factory=list)
    text_stats: NormalizationStats = field(default_factory=NormalizationStats)


def find_parts(corpus_dir: PathLike) -> List[str]:
    """Parts present in `corpus_dir`: folders holding at least one *.trans.txt two levels down."""
    corpus_dir = Path(corpus_dir)
    known = LIBRISPEECH_PARTS + MINI_LIBRISPEECH_PARTS
    found = []
    for d in sorted(p for p in corpus_dir.iterdir() if p.is_dir()):
        if next(d.glob("*/*/*.trans.txt"), None) is not None:
            found.append(d.name)
    # Known parts first in their canonical order, then any other folder with the same layout.
    return [p for p in known if p in found] + [p for p in found if p not in known]


def _read_transcripts(chapter_dir: Path, res: ChapterResult) -> Dict[str, str]:
    """utt-id -> raw text from every *.trans.txt of a chapter, reporting undecodable/empty lines."""
    texts: Dict[str, str] = {}
    for trans in sorted(chapter_dir.glob("*.trans.txt")):
        try:
            raw_lines = trans.read_bytes().split(b"\n")
        except OSError as exc:
            res.events.append(Event(SKIP, str(trans), "unreadable-transcript", str(exc)))
            continue
        for lineno, raw in enumerate(raw_lines, 1):
            where = f"{trans}:{lineno}"
            try:
                line = raw.decode("utf-8").strip()
            except UnicodeDecodeError as exc:
                uid = raw.split(b" ", 1)[0].decode("ascii", "replace")
                res.events.append(Event(SKIP, uid, "bad-encoding", f"{where}: not valid UTF-8 ({exc.reason} at byte {exc.start})"))
                texts.setdefault(uid, "")  # reported; keeps its audio from being reported again
                continue
            if not line:
                if lineno != len(raw_lines):  # the final newline gives one empty trailing piece
                    res.events.append(Event(FIX, where, "empty-line", "blank transcript line ignored"))
                continue
            parts = line.split(maxsplit=1)
            uid = parts[0]
            if len(parts) == 1:
                res.events.append(Event(SKIP, uid, "empty-text", f"{where}: transcript line has no text"))
                texts.setdefault(uid, "")
                continue
            if uid in texts:
                res.events.append(Event(SKIP, uid, "duplicate-id", f"{where}: second transcript for this utterance ignored"))
                continue
            texts[uid] = parts[1]
    return texts


def scan_chapter(chapter_dir: PathLike, part: str, max_duration: float, sampling_rate: int) -> ChapterResult:
    """Build recordings and supervisions of one `<speaker>/<chapter>` folder (runs in a worker)."""
    from lhotse import Recording, SupervisionSegment

    chapter_dir = Path(chapter_dir)
    res = ChapterResult()
    texts = _read_transcripts(chapter_dir, res)
    audio: Dict[str, Path] = {}
    for p in sorted(chapter_dir.iterdir()):
        if p.suffix.lower() in AUDIO_SUFFIXES and p.stem not in audio:
            audio[p.stem] = p
    for stem in sorted(set(audio) - set(texts)):
        res.events.append(Event(SKIP, stem, "no-transcript", f"{audio[stem]} has no line in the chapter's *.trans.txt"))
    drop_long = is_train_part(part)
    for uid, raw_text in texts.items():
        if not raw_text:
            continue  # already reported as empty-text
        if uid not in audio:
            res.events.append(Event(SKIP, uid, "no-audio", f"transcript line but no {uid}.flac/.wav in {chapter_dir}"))
            continue
        path = audio[uid]
        try:
            info = probe_audio(path)
        except BadAudioError as exc:
            reason = "empty-audio" if ("zero-length" in str(exc) or "0 bytes" in str(exc)) else "bad-audio"
            res.events.append(Event(SKIP, uid, reason, str(exc)))
            continue
        if info.num_channels != 1:
            res.events.append(Event(SKIP, uid, "not-mono", f"{path} has {info.num_channels} channels, expected 1"))
            continue
        text = clean_text(uid, raw_text, res.events, res.text_stats)
        if text is None:
            continue
        if not check_duration(uid, info.duration, max_duration, drop_long, res.events):
            continue
        try:
            rec = Recording.from_file(path, recording_id=uid)
        except Exception as exc:
            res.events.append(Event(SKIP, uid, "bad-audio", f"{path}: lhotse cannot read it ({exc})"))
            continue
        if rec.sampling_rate != sampling_rate:
            res.events.append(Event(FIX, uid, "resampled", f"{path} is {rec.sampling_rate} Hz; resampled to {sampling_rate} Hz on load"))
            rec = rec.resample(sampling_rate)
        speaker = uid.split("-")[0]
        res.recordings.append(rec)
        res.supervisions.append(
            SupervisionSegment(
                id=uid,
                recording_id=uid,
                start=0.0,
                duration=rec.duration,
                channel=0,
                text=text,
                speaker=speaker,
                language="English",
                custom={"orig_text": raw_text} if raw_text.lower() != text else None,
            )
        )
    return res


def _chapter_dirs(part_dir: Path) -> List[Path]:
    """Every <speaker>/<chapter> folder of a part, sorted."""
    return sorted(c for s in part_dir.iterdir() if s.is_dir() for c in s.iterdir() if c.is_dir())


def prepare_part(
    corpus_dir: PathLike,
    out_dir: PathLike,
    part: str,
    num_jobs: int = 1,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
) -> Optional[PrepReport]:
    """Prepare one part; returns its report, or None when the part yielded no usable utterance
    (then nothing is written and the reason is logged)."""
    part_dir = Path(corpus_dir) / part
    report = PrepReport(f"{PREFIX}_{part}")
    chapters = _chapter_dirs(part_dir)
    results: List[ChapterResult] = []
    args = (part, max_duration, sampling_rate)
    if num_jobs > 1 and len(chapters) > 1:
        with ProcessPoolExecutor(num_jobs) as ex:
            futures = [ex.submit(scan_chapter, c, *args) for c in chapters]
            results = [f.result() for f in tqdm(futures, desc=f"{part}", unit="chapter")]
    else:
        results = [scan_chapter(c, *args) for c in tqdm(chapters, desc=f"{part}", unit="chapter")]
    recordings, supervisions, seen = [], [], set()
    for r in results:
        report.extend(r.events)
        report.text_stats.add(r.text_stats)
        for rec, sup in zip(r.recordings, r.supervisions):
            if rec.id in seen:
                report.skip(rec.id, "duplicate-id", "utterance id already seen in another chapter")
                continue
            seen.add(rec.id)
            recordings.append(rec)
            supervisions.append(sup)
    return finish_part(out_dir, PREFIX, part, recordings, supervisions, report, where=f" in {part_dir}")


def prepare_librispeech(
    corpus_dir: PathLike,
    out_dir: PathLike,
    parts: Union[str, Sequence[str]] = "auto",
    num_jobs: int = 1,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
) -> Dict[str, str]:
    """Prepare the requested parts ("auto" = all found); parts whose manifests exist are skipped.
    Returns {part: "done" | "skipped" | "missing" | "empty"}."""
    corpus_dir = Path(corpus_dir).resolve()  # manifests hold absolute audio paths
    if not corpus_dir.is_dir():
        raise FileNotFoundError(f"LibriSpeech corpus directory {corpus_dir} does not exist")
    if parts == "auto" or parts == ["auto"]:
        parts = find_parts(corpus_dir)
        if not parts:
            raise FileNotFoundError(f"{corpus_dir}: no LibriSpeech part (<part>/<spk>/<chapter>/*.trans.txt) found")
        logging.info(f"found parts: {' '.join(parts)}")
    status: Dict[str, str] = {}
    for part in parts:
        if part_is_done(out_dir, PREFIX, part):
            logging.info(f"{PREFIX}_{part}: manifests exist in {out_dir}, skipping")
            status[part] = "skipped"
            continue
        if not (corpus_dir / part).is_dir():
            logging.error(f"SKIP {part}: missing-dir: {corpus_dir / part} does not exist")
            status[part] = "missing"
            continue
        report = prepare_part(corpus_dir, out_dir, part, num_jobs, max_duration, sampling_rate)
        status[part] = "done" if report is not None else "empty"
    return status
