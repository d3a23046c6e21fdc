"""CMU AN4 (census, 1991; 16 kHz close-talking) in the layout of CMU's `an4_sphere.tar.gz` -> lhotse manifests.

Layout (the folder holding `etc/` and `wav/`):
- `etc/an4_train.fileids`, `etc/an4_test.fileids`: one `an4_clstk/<spk>/<uttid>` (or
  `an4test_clstk/<spk>/<uttid>`) per line, relative to `wav/`, without the `.sph` extension;
- `etc/an4_train.transcription`, `etc/an4_test.transcription`: `<s> WORDS </s> (uttid)` lines
  (the test file has no `<s>`/`</s>`), paired with the fileids by utterance id;
- `wav/**/<uttid>.sph`: NIST SPHERE, 16-bit PCM, 16 kHz, mono.

Parts: `train` and `test` as CMU split them (74 and 10 speakers), and `dev`, held out from CMU's
train set **by speaker**: `num_dev_speakers` speakers (default 8) picked evenly spaced over the
sorted train speaker list, so the choice is deterministic and does not depend on which utterances
survive validation (`dev_speakers` names them explicitly instead). Audio is referenced in place
through a symlink `OUT/an4_audio/<uttid>.nist` -> the `.sph` file: lhotse sends every path
ending in `.sph` to an `sph2pipe` subprocess (which AN4's plain PCM does not need and which few
machines have), while under another name its libsndfile backend decodes PCM SPHERE in process. Every
file is checked first (header, size, channels). Words are normalized to the model's characters with
`qnet.tokens.normalize_text` (spelled letters stay one-letter words). Bad items are skipped with a
report line (`OUT/an4_<part>.report.txt`), never fatal. `download_an4` fetches and verifies the archive.
"""

import logging
import os
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from tqdm import tqdm

from qnet.corpus.sphere import SphereError, read_sphere_header
from qnet.corpus.validate import (
    Event,
    PrepReport,
    check_duration,
    clean_text,
    finish_part,
    is_train_part,
    part_is_done,
)
from qnet.tokens import NormalizationStats
from qnet.utils import PathLike

PREFIX = "an4"
PARTS = ("train", "dev", "test")
# The CMU list each part is drawn from.
_SOURCE_LIST = {"train": "train", "dev": "train", "test": "test"}
_TRANSCRIPT_RE = re.compile(r"^(.*)\(([^()\s]+)\)\s*$")
# Sentence and silence markers of the Sphinx transcription format; not words.
_MARKERS = {"<s>", "</s>", "<sil>"}
DOWNLOAD_URLS = (
    "http://www.speech.cs.cmu.edu/databases/an4/an4_sphere.tar.gz",
    "https://dldata-public.s3.us-east-2.amazonaws.com/an4_sphere.tar.gz",
)

# What a complete an4_sphere.tar.gz holds (checked before it is unpacked).
ARCHIVE_REQUIRED = ("an4/etc/an4_train.fileids", "an4/etc/an4_train.transcription",
                    "an4/etc/an4_test.fileids", "an4/etc/an4_test.transcription")
ARCHIVE_MIN_SPHERE_FILES = 1078  # 948 train + 130 test utterances


class An4LayoutError(Exception):
    """The corpus folder does not have the an4_sphere layout (the message says what is missing)."""


def find_corpus_root(corpus_dir: PathLike) -> Path:
    """The folder holding `etc/an4_train.fileids`: `corpus_dir` itself or its `an4/` subfolder."""
    corpus_dir = Path(corpus_dir)
    for cand in (corpus_dir, corpus_dir / "an4"):
        if (cand / "etc" / "an4_train.fileids").is_file() and (cand / "wav").is_dir():
            return cand.resolve()
    raise An4LayoutError(
        f"{corpus_dir}: not an AN4 corpus (expected etc/an4_train.fileids and wav/ there or in an4/, "
        "as unpacked from an4_sphere.tar.gz)"
    )


def parse_transcription_line(line: str) -> Optional[Tuple[str, str]]:
    """`<s> WORDS </s> (uttid)` -> (uttid, "WORDS"); None when the line has no `(uttid)`."""
    m = _TRANSCRIPT_RE.match(line.strip())
    if not m:
        return None
    words = [w for w in m.group(1).split() if w.lower() not in _MARKERS]
    return m.group(2), " ".join(words)


Entry = Tuple[str, str, str, str]  # (uttid, speaker, raw text, audio path relative to wav/ without .sph)


def read_list(corpus: Path, name: str, report: PrepReport) -> List[Entry]:
    """The entries of CMU's `name` list (train/test), pairing fileids with transcripts.

    Lines are matched by utterance id, not position; unmatched, malformed and duplicate lines are
    reported and skipped."""
    fileids_path = corpus / "etc" / f"an4_{name}.fileids"
    trans_path = corpus / "etc" / f"an4_{name}.transcription"
    for p in (fileids_path, trans_path):
        if not p.is_file():
            raise An4LayoutError(f"{p} is missing")
    texts: Dict[str, str] = {}
    for lineno, raw in enumerate(trans_path.read_bytes().split(b"\n"), 1):
        where = f"{trans_path}:{lineno}"
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            report.skip(where, "bad-encoding", f"not valid UTF-8 ({exc.reason} at byte {exc.start})")
            continue
        if not line.strip():
            continue
        parsed = parse_transcription_line(line)
        if parsed is None:
            report.skip(where, "bad-transcript-line", f"no '(uttid)' at the end of {line.strip()!r}")
            continue
        uid, words = parsed
        if uid in texts:
            report.skip(uid, "duplicate-id", f"{where}: second transcript for this utterance ignored")
            continue
        texts[uid] = words
    entries: List[Entry] = []
    listed = set()
    for lineno, line in enumerate(fileids_path.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
        rel = line.strip()
        if not rel:
            continue
        parts = rel.split("/")
        if len(parts) != 3:
            report.skip(f"{fileids_path}:{lineno}", "bad-fileid-line", f"expected <dir>/<speaker>/<uttid>, got {rel!r}")
            continue
        uid, spk = parts[2], parts[1]
        if uid in listed:
            report.skip(uid, "duplicate-id", f"{fileids_path}:{lineno}: listed twice")
            continue
        listed.add(uid)
        if uid not in texts:
            report.skip(uid, "no-transcript", f"{fileids_path}:{lineno}: no line in {trans_path.name}")
            continue
        entries.append((uid, spk, texts[uid], rel))
    for uid in sorted(set(texts) - listed):
        report.skip(uid, "no-fileid", f"transcript in {trans_path.name} but no line in {fileids_path.name}")
    return entries


def pick_dev_speakers(speakers: Sequence[str], num: int) -> List[str]:
    """`num` speakers evenly spaced over the sorted list (the middle of each of `num` equal slices)."""
    speakers = sorted(set(speakers))
    if num <= 0:
        return []
    if num >= len(speakers):
        raise ValueError(f"cannot hold out {num} dev speakers from {len(speakers)} train speakers")
    return [speakers[(2 * i + 1) * len(speakers) // (2 * num)] for i in range(num)]


def _link_audio(path: Path, link_dir: Path, uid: str) -> Path:
    """`link_dir/<uid>.nist` -> `path` (absolute), replaced atomically when it points elsewhere.
    (Not `qnet.corpus.sphere.sphere_audio_source`: it resolves the link back to the `.sph` name.)"""
    link = link_dir / f"{uid}.nist"
    target = str(path.resolve())
    if os.path.islink(link) and os.readlink(link) == target:
        return link
    link_dir.mkdir(parents=True, exist_ok=True)
    tmp = link_dir / f".{uid}.nist.tmp"
    if os.path.lexists(tmp):
        os.unlink(tmp)
    os.symlink(target, tmp)
    os.replace(tmp, link)
    return link


def prepare_part(
    corpus: Path,
    out_dir: PathLike,
    part: str,
    entries: List[Entry],
    report: PrepReport,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
) -> Optional[PrepReport]:
    """Check the audio of `entries` and write the part's manifests; None when nothing is usable."""
    from lhotse import AudioSource, Recording, SupervisionSegment

    link_dir = Path(out_dir).resolve() / f"{PREFIX}_audio"
    events: List[Event] = []
    stats = NormalizationStats()
    drop_long = is_train_part(part)
    recordings, supervisions = [], []
    for uid, spk, raw_text, rel in tqdm(entries, desc=f"an4 {part}", unit="utt"):
        path = corpus / "wav" / f"{rel}.sph"
        if not path.is_file():
            events.append(Event("SKIP", uid, "no-audio", f"{path} does not exist"))
            continue
        size = os.path.getsize(path)
        if size == 0:
            events.append(Event("SKIP", uid, "empty-audio", f"{path}: file is empty (0 bytes)"))
            continue
        try:
            header = read_sphere_header(path)
        except SphereError as exc:
            events.append(Event("SKIP", uid, "bad-audio", str(exc)))
            continue
        if header.sample_count <= 0 or size <= header.header_size:
            events.append(Event("SKIP", uid, "empty-audio", f"{path}: zero-length audio (sample_count {header.sample_count})"))
            continue
        if not header.is_pcm:
            events.append(Event("SKIP", uid, "bad-audio", f"{path}: sample_coding {header.sample_coding!r}; AN4 is PCM"))
            continue
        if size < header.expected_size():
            events.append(Event("SKIP", uid, "bad-audio", f"{path}: truncated: {size} bytes, header promises {header.expected_size()}"))
            continue
        if header.channel_count != 1:
            events.append(Event("SKIP", uid, "not-mono", f"{path} has {header.channel_count} channels, expected 1"))
            continue
        text = clean_text(uid, raw_text, events, stats)
        if text is None or not check_duration(uid, header.duration, max_duration, drop_long, events):
            continue
        rec = Recording(
            id=uid,
            sources=[AudioSource(type="file", channels=list(range(header.channel_count)), source=str(_link_audio(path, link_dir, uid)))],
            sampling_rate=header.sample_rate,
            num_samples=header.sample_count,
            duration=header.duration,
        )
        if header.sample_rate != sampling_rate:
            events.append(Event("FIX", uid, "resampled", f"{path} is {header.sample_rate} Hz; resampled to {sampling_rate} Hz on load"))
            rec = rec.resample(sampling_rate)
        recordings.append(rec)
        supervisions.append(
            SupervisionSegment(
                id=uid, recording_id=uid, start=0.0, duration=rec.duration, channel=0, text=text,
                speaker=spk, language="English", custom={"orig_text": raw_text},
            )
        )
    report.extend(events)
    report.text_stats.add(stats)
    return finish_part(out_dir, PREFIX, part, recordings, supervisions, report, f" in {corpus}")


def _limit_speakers(entries: List[Entry], max_speakers: int) -> List[Entry]:
    """Entries of the first `max_speakers` speakers in sorted order (0 = all)."""
    if max_speakers <= 0:
        return entries
    keep = set(sorted({e[1] for e in entries})[:max_speakers])
    return [e for e in entries if e[1] in keep]


def prepare_an4(
    corpus_dir: PathLike,
    out_dir: PathLike,
    parts: Sequence[str] = PARTS,
    num_dev_speakers: int = 8,
    dev_speakers: Optional[Sequence[str]] = None,
    max_speakers: int = 0,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
) -> Dict[str, str]:
    """Write `OUT/an4_{recordings,supervisions}_<part>.jsonl.gz` for `parts` (train, dev, test).

    `max_speakers` > 0 keeps only the first N speakers (sorted) of CMU's train and test lists (a quick
    subset; dev speakers are then drawn from those train speakers). The dev speakers chosen are
    written to `OUT/an4_dev_speakers.txt`. Returns {part: "done" | "skipped" | "empty"}."""
    for p in parts:
        if p not in PARTS:
            raise ValueError(f"unknown AN4 part {p!r}; known: {' '.join(PARTS)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    status = {p: "skipped" for p in parts if part_is_done(out_dir, PREFIX, p)}
    for p in status:
        logging.info(f"{PREFIX}_{p}: manifests exist in {out_dir}, skipping")
    todo = [p for p in parts if p not in status]
    if not todo:
        return status
    corpus = find_corpus_root(corpus_dir)
    lists: Dict[str, Tuple[List[Entry], PrepReport]] = {}
    for name in sorted({_SOURCE_LIST[p] for p in todo}):
        rep = PrepReport(f"{PREFIX}_{name}_lists")
        lists[name] = (_limit_speakers(read_list(corpus, name, rep), max_speakers), rep)
    held_out: List[str] = []
    if "train" in lists:
        train_speakers = sorted({e[1] for e in lists["train"][0]})
        if dev_speakers:
            unknown = sorted(set(dev_speakers) - set(train_speakers))
            if unknown:
                raise ValueError(f"dev speakers not in the train list: {' '.join(unknown)}")
            held_out = sorted(dev_speakers)
        else:
            held_out = pick_dev_speakers(train_speakers, num_dev_speakers)
        (out_dir / f"{PREFIX}_dev_speakers.txt").write_text("".join(s + "\n" for s in held_out))
        logging.info(f"dev set: {len(held_out)} of {len(train_speakers)} train speakers held out: {' '.join(held_out)}")
    for part in todo:
        entries, list_report = lists[_SOURCE_LIST[part]]
        if part == "train":
            entries = [e for e in entries if e[1] not in held_out]
        elif part == "dev":
            entries = [e for e in entries if e[1] in held_out]
        report = PrepReport(f"{PREFIX}_{part}")
        # problems of the shared list go to the report of each part drawn from it
        uids = {e[0] for e in entries}
        report.extend([e for e in list_report.events if part != "dev" or e.item in uids])
        result = prepare_part(corpus, out_dir, part, entries, report, max_duration, sampling_rate)
        status[part] = "done" if result is not None else "empty"
    return status


def verify_archive(path: PathLike, min_sphere_files: int = ARCHIVE_MIN_SPHERE_FILES) -> int:
    """Read every member of an an4_sphere.tar.gz (catches truncation and corruption) and check that
    it has the AN4 lists and at least `min_sphere_files` SPHERE files; returns their number."""
    import tarfile

    path = Path(path)
    names = set()
    num_sph = 0
    try:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                names.add(member.name.lstrip("./"))
                if member.isfile():
                    f = tar.extractfile(member)
                    while f is not None and f.read(1 << 20):
                        pass
                    num_sph += member.name.endswith(".sph")
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise An4LayoutError(f"{path}: not a complete gzip'd tar archive ({type(exc).__name__}: {exc})") from exc
    missing = [n for n in ARCHIVE_REQUIRED if n not in names]
    if missing:
        raise An4LayoutError(f"{path}: not an an4_sphere archive (missing {' '.join(missing)})")
    if num_sph < min_sphere_files:
        raise An4LayoutError(f"{path}: only {num_sph} .sph files, expected {min_sphere_files}")
    return num_sph


def download_an4(
    dl_dir: PathLike,
    urls: Sequence[str] = DOWNLOAD_URLS,
    timeout: float = 30.0,
    min_sphere_files: int = ARCHIVE_MIN_SPHERE_FILES,
) -> Path:
    """Download an4_sphere.tar.gz into `dl_dir` (the first URL that works), verify it and unpack it
    there; returns the corpus folder `dl_dir/an4`. An archive already in `dl_dir` is verified and reused."""
    import tarfile
    import urllib.request

    dl_dir = Path(dl_dir)
    dl_dir.mkdir(parents=True, exist_ok=True)
    archive = dl_dir / "an4_sphere.tar.gz"
    errors = []
    if archive.is_file():
        try:
            verify_archive(archive, min_sphere_files)
        except An4LayoutError as exc:
            logging.warning(f"{exc}; downloading it again")
            archive.unlink()
    for url in urls if not archive.is_file() else ():
        part = archive.with_name(archive.name + ".part")
        try:
            with urllib.request.urlopen(url, timeout=timeout) as r, open(part, "wb") as f:
                total = int(r.headers.get("Content-Length") or 0)
                with tqdm(total=total or None, unit="B", unit_scale=True, desc=archive.name) as bar:
                    for chunk in iter(lambda: r.read(1 << 20), b""):
                        f.write(chunk)
                        bar.update(len(chunk))
            verify_archive(part, min_sphere_files)
            os.replace(part, archive)
            logging.info(f"downloaded {url} -> {archive}")
            break
        except (OSError, An4LayoutError) as exc:  # URLError and socket timeouts are OSErrors
            errors.append(f"{url}: {exc}")
            logging.warning(f"cannot use {url}: {exc}")
            if part.exists():
                part.unlink()
    if not archive.is_file():
        raise An4LayoutError("could not download AN4: " + "; ".join(errors)
                             + ". Download an4_sphere.tar.gz by hand into " + str(dl_dir) + " or pass --corpus-dir.")
    with tarfile.open(archive, "r:gz") as tar:
        root = dl_dir.resolve()
        for member in tar.getmembers():
            target = (root / member.name).resolve()
            if root not in target.parents and target != root or member.issym() or member.islnk():
                raise An4LayoutError(f"{archive}: unsafe member {member.name!r}; not unpacking")
        tar.extractall(dl_dir)
    return find_corpus_root(dl_dir / "an4")
