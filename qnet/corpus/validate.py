"""Checks and reporting shared by the corpus preparation tools (LibriSpeech, WSJ, CommonVoice).

Corpus preparation never stops on one bad item: every item that is skipped, fixed or flagged gets
one line naming it and the reason (logged, and written to `OUT_DIR/<prefix>_<part>.report.txt`),
and a summary count per reason closes the report. Manifests are written atomically (temporary
file + rename), so a part whose manifests exist is finished.
"""

import logging
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Tuple

from qnet.tokens import LETTERS, NormalizationStats, normalize_text
from qnet.utils import PathLike, atomic_output, atomic_write_text

SKIP, FIX, FLAG = "SKIP", "FIX", "FLAG"

# How many lines per reason go to the log; the report file always has all of them.
_MAX_LOGGED_PER_REASON = 20


class BadAudioError(Exception):
    """An audio file that cannot be used (unreadable, truncated, empty, unsupported)."""


@dataclass
class AudioInfo:
    """What a cheap probe of an audio file found."""

    sampling_rate: int
    num_samples: int
    num_channels: int

    @property
    def duration(self) -> float:
        return self.num_samples / self.sampling_rate


@dataclass
class Event:
    """One reported item: action (SKIP/FIX/FLAG), the item's name, a reason key and a message."""

    action: str
    item: str
    reason: str
    message: str

    def line(self) -> str:
        return f"{self.action} {self.item}: {self.reason}: {self.message}"


class PrepReport:
    """Collects the bad items of one prepared part and writes `<prefix>_<part>.report.txt`."""

    def __init__(self, name: str):
        self.name = name
        self.events: List[Event] = []
        self.counts: Counter = Counter()
        self.text_stats = NormalizationStats()
        self.num_kept = 0
        self.kept_seconds = 0.0
        self.tallies: Counter = Counter()  # things counted inside kept items (e.g. word fragments)

    def add(self, event: Event) -> None:
        """Record (and log, up to a limit per reason) one event."""
        self.events.append(event)
        key = (event.action, event.reason)
        self.counts[key] += 1
        if self.counts[key] <= _MAX_LOGGED_PER_REASON:
            logging.warning(f"{self.name}: {event.line()}")
        elif self.counts[key] == _MAX_LOGGED_PER_REASON + 1:
            logging.warning(f"{self.name}: more '{event.action} {event.reason}' lines are only in the report")

    def skip(self, item: str, reason: str, message: str) -> None:
        """Report an item dropped from the manifests."""
        self.add(Event(SKIP, item, reason, message))

    def fix(self, item: str, reason: str, message: str) -> None:
        """Report an item kept after a repair (resampled, text normalized, ...)."""
        self.add(Event(FIX, item, reason, message))

    def flag(self, item: str, reason: str, message: str) -> None:
        """Report an item kept as is but worth knowing about (e.g. over-long test utterance)."""
        self.add(Event(FLAG, item, reason, message))

    def extend(self, events: List[Event]) -> None:
        """Add events produced elsewhere (e.g. in a worker process), in order."""
        for e in events:
            self.add(e)

    def tally(self, what: str, n: int = 1) -> None:
        """Count something found inside the items (shown in the summary), e.g. word fragments."""
        self.tallies[what] += n

    def num(self, action: str) -> int:
        """Number of events with this action."""
        return sum(n for (a, _), n in self.counts.items() if a == action)

    def summary(self) -> str:
        """One paragraph: items kept, skipped, fixed, flagged, per reason."""
        lines = [
            f"{self.name}: kept {self.num_kept} utterances ({self.kept_seconds / 3600:.2f} h); "
            f"skipped {self.num(SKIP)}, fixed {self.num(FIX)}, flagged {self.num(FLAG)}"
        ]
        for (action, reason), n in sorted(self.counts.items()):
            lines.append(f"  {action:4s} {reason}: {n}")
        for what, n in sorted(self.tallies.items()):
            lines.append(f"  {what}: {n}")
        if self.text_stats.transliterated or self.text_stats.dropped:
            lines.append(f"  text normalization: {self.text_stats}")
        return "\n".join(lines)

    def write(self, path: PathLike) -> None:
        """Write every event line followed by the summary, atomically."""
        body = "".join(e.line() + "\n" for e in self.events)
        atomic_write_text(path, body + "# summary\n" + "".join(f"# {s}\n" for s in self.summary().splitlines()))


def probe_audio(path: PathLike) -> AudioInfo:
    """Read an audio file's header and decode its first and last samples (catches truncated FLAC
    without decoding everything); raise BadAudioError naming the file and the reason."""
    import soundfile as sf

    path = Path(path)
    if not path.is_file():
        raise BadAudioError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise BadAudioError(f"{path}: file is empty (0 bytes)")
    try:
        with sf.SoundFile(str(path)) as f:
            info = AudioInfo(int(f.samplerate), int(f.frames), int(f.channels))
            if info.num_samples <= 0:
                raise BadAudioError(f"{path}: zero-length audio (0 samples)")
            head = f.read(min(1024, info.num_samples), dtype="int16")
            if len(head) == 0:
                raise BadAudioError(f"{path}: no samples could be decoded")
            tail_start = max(0, info.num_samples - 1024)
            f.seek(tail_start)
            tail = f.read(info.num_samples - tail_start, dtype="int16")
            if len(tail) != info.num_samples - tail_start:
                raise BadAudioError(
                    f"{path}: truncated: header says {info.num_samples} samples, "
                    f"only {tail_start + len(tail)} decodable"
                )
    except BadAudioError:
        raise
    except Exception as exc:  # soundfile.LibsndfileError, RuntimeError, ...
        raise BadAudioError(f"{path}: unreadable audio ({type(exc).__name__}: {exc})") from exc
    return info


def clean_text(
    item: str, text: str, events: List[Event], stats: NormalizationStats, alphabet: str = LETTERS
) -> Optional[str]:
    """Normalize `text` with qnet.tokens.normalize_text; record a FIX event when characters were
    dropped or transliterated (beyond lowercasing/punctuation) and a SKIP when nothing is left."""
    normalized, st = normalize_text(text, alphabet)
    stats.add(st)
    if st.dropped or st.transliterated:
        dropped = "".join(sorted(st.dropped_chars))
        events.append(
            Event(
                FIX,
                item,
                "text-normalized",
                f"{st.transliterated} chars transliterated, {st.dropped} dropped {dropped!r}: {text!r} -> {normalized!r}",
            )
        )
    if not normalized:
        events.append(Event(SKIP, item, "empty-text", f"transcript is empty after normalization (was {text!r})"))
        return None
    return normalized


def check_duration(
    item: str, duration: float, max_duration: float, drop_long: bool, events: List[Event]
) -> bool:
    """True when the item stays: items longer than `max_duration` (> 0) are dropped when
    `drop_long` (training parts), flagged and kept otherwise (test parts)."""
    if max_duration and max_duration > 0 and duration > max_duration:
        if drop_long:
            events.append(Event(SKIP, item, "too-long", f"{duration:.2f} s > max {max_duration} s (training part)"))
            return False
        events.append(Event(FLAG, item, "too-long", f"{duration:.2f} s > max {max_duration} s, kept (not a training part)"))
    return True


def is_train_part(part: str) -> bool:
    """Training parts are named train*, e.g. train-clean-100, train_si284, train."""
    return part.lower().startswith("train")


def atomic_to_file(manifest, path: PathLike) -> None:
    """Write a lhotse manifest (RecordingSet, SupervisionSet, CutSet) through a temporary file in the
    same folder and a rename, so a killed job never leaves a half-written manifest."""
    path = Path(path)
    suffix = "".join(path.suffixes[-2:]) if path.name.endswith(".jsonl.gz") else path.suffix
    with atomic_output(path, suffix=f".tmp{suffix}") as tmp:
        manifest.to_file(tmp)


def manifest_paths(out_dir: PathLike, prefix: str, part: str) -> Tuple[Path, Path]:
    """(recordings, supervisions) manifest paths of a part."""
    out_dir = Path(out_dir)
    return (
        out_dir / f"{prefix}_recordings_{part}.jsonl.gz",
        out_dir / f"{prefix}_supervisions_{part}.jsonl.gz",
    )


def part_is_done(out_dir: PathLike, prefix: str, part: str) -> bool:
    """A part is done when both of its manifests exist (they are written atomically, last)."""
    return all(p.is_file() for p in manifest_paths(out_dir, prefix, part))


def write_part(out_dir: PathLike, prefix: str, part: str, recordings, supervisions, report: PrepReport) -> None:
    """Validate and write a part's report and manifests (recordings last, so both exist only on success)."""
    from lhotse import RecordingSet, SupervisionSet
    from lhotse.qa import validate_recordings_and_supervisions

    recs = RecordingSet.from_recordings(recordings)
    sups = SupervisionSet.from_segments(supervisions)
    validate_recordings_and_supervisions(recs, sups)
    report.num_kept = len(sups)
    report.kept_seconds = sum(s.duration for s in sups)
    out_dir = Path(out_dir)
    report.write(out_dir / f"{prefix}_{part}.report.txt")
    rec_path, sup_path = manifest_paths(out_dir, prefix, part)
    atomic_to_file(sups, sup_path)
    atomic_to_file(recs, rec_path)
    for line in report.summary().splitlines():
        logging.info(line)


def finish_part(out_dir: PathLike, prefix: str, part: str, recordings, supervisions, report: PrepReport,
                where: str = "") -> Optional[PrepReport]:
    """`write_part` and return the report; with no supervisions, log why, write only the report and
    return None (no manifests, so the part is not done). `where` names the source in the message."""
    if not supervisions:
        logging.error(f"{prefix}_{part}: no usable utterance{where}; nothing written")
        for line in report.summary().splitlines():
            logging.error(line)
        report.write(Path(out_dir) / f"{prefix}_{part}.report.txt")
        return None
    write_part(out_dir, prefix, part, recordings, supervisions, report)
    return report
