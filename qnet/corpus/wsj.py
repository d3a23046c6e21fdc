"""WSJ (LDC93S6B wsj0 + LDC94S13B wsj1) from the LDC discs -> lhotse manifests, plus LM text.

Accepted layouts (searched up to three folder levels below each folder given):
- LDC discs: folders named like `11-1.1` ... `11-14.1` ... (wsj0) and `13-1.1` ... `13-34.1` (wsj1), each
  holding a `wsj0/` or `wsj1/` subfolder; `11_1.1` (wav2letter's copies) and `11_1_1` are the same disc.
  Pass their parent folder(s) (also one level further up, e.g. `LDC93S6B/` holding `csr_1/11-1.1/...`) or
  the disc folders themselves.
- Flattened copies: `CORPUS/wsj0/...` and `CORPUS/wsj1/...` (every disc merged; `CORPUS/WSJ0/wsj0/...`
  too), or the `wsj0`/`wsj1` folders themselves. Giving the same CORPUS as --wsj0 and --wsj1 is fine.
File names are matched case-insensitively (disc 13-16.1 is upper case on some copies). A folder where
nothing of this is found is an error that lists the folders searched.

Sets follow Kaldi's `local/wsj_data_prep.sh` (`WSJ_SETS`): `train_si84` = `wsj0/doc/indices/train/tr_s_wv1.ndx`
(index on disc 11-13.1, audio on 11-1.1 ... 11-3.1) minus speaker `wsj0/si_tr_s/401`; `train_si284` = that
+ `wsj1/doc/indices/si_tr_s.ndx` (index on 13-34.1); `test_dev93` = `wsj1/doc/indices/h1_p0.ndx` (index on
13-34.1, audio on 13-16.1); `test_eval92` = `wsj0/doc/indices/test/nvp/si_et_20.ndx` (index on 11-13.1,
`.wv1` appended; audio on disc 11-14.1, `wsj0/si_et_20`). Transcripts come from every `*.dot` file
(`text (uttid)` lines), normalized like Kaldi's `normalize_transcript.pl` (kept in the supervision's custom
`kaldi_text`), then filtered like Kaldi's scoring filters, word fragments cut to their spoken part
(`COM(PANY)-` -> `com`; see `spoken_part`, counted in the report), and normalized to the model's
characters with `qnet.tokens.normalize_text` (the supervision's `text`). Audio: see `qnet.corpus.sphere`
(PCM in place, shorten through sph2pipe); every set's headers are read before any manifest is written,
so a missing sph2pipe stops the run with nothing written.
"""

import gzip
import logging
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple

from tqdm import tqdm

from qnet.corpus.sphere import (
    SPH2PIPE_HELP,
    SphereError,
    SphereHeader,
    find_sph2pipe,
    is_empty_file,
    read_sphere_header,
    sphere_audio_source,
)
from qnet.corpus.validate import (
    Event,
    PrepReport,
    check_duration,
    clean_text,
    finish_part,
    is_train_part,
    part_is_done,
)
from qnet.tokens import NormalizationStats, normalize_text
from qnet.utils import PathLike, atomic_output, atomic_write_text

PREFIX = "wsj"
# LDC disc folders: 11-1.1 (Kaldi's glob), 11_1.1 (wav2letter's copies) or 11_1_1 (the .ndx disc ids)
_DISC_RE = re.compile(r"^(\d+)[-_](\d+)[._](\d+)$")
_NDX_RE = re.compile(r"^\s*(\d+)_(\d+)_(\d+)\s*:\s*/?(\S+)")
_DOT_RE = re.compile(r"^(.*)\(([^()\s]+)\)\s*$")
_FLAT_NAMES = ("wsj0", "wsj1")
# How deep below a given folder discs or wsj0/wsj1 copies are looked for (LDC93S6B/csr_1/11-1.1 is 2).
_MAX_SEARCH_DEPTH = 3


@dataclass(frozen=True)
class WsjSet:
    """A set's .ndx lists as (disc, path inside the disc), and where its audio is, for messages."""

    indices: Tuple[Tuple[str, str], ...]
    audio: str


# Kaldi's lists; the index files all sit on 11-13.1 and 13-34.1, the audio on other discs.
_SI84 = (("11-13.1", "wsj0/doc/indices/train/tr_s_wv1.ndx"),)
WSJ_SETS: Dict[str, WsjSet] = {
    "train_si84": WsjSet(_SI84, "discs 11-1.1, 11-2.1, 11-3.1 (wsj0/si_tr_s)"),
    "train_si284": WsjSet(_SI84 + (("13-34.1", "wsj1/doc/indices/si_tr_s.ndx"),),
                          "discs 11-1.1, 11-2.1, 11-3.1 (wsj0/si_tr_s) and the 13-*.1 discs (wsj1/si_tr_s)"),
    "test_dev93": WsjSet((("13-34.1", "wsj1/doc/indices/h1_p0.ndx"),), "disc 13-16.1 (wsj1/si_dt_20)"),
    "test_eval92": WsjSet((("11-13.1", "wsj0/doc/indices/test/nvp/si_et_20.ndx"),), "disc 11-14.1 (wsj0/si_et_20)"),
}
DEFAULT_SETS = ("train_si284", "test_dev93", "test_eval92")
# Kaldi drops this wsj0 speaker from the SI-84 list (grep -v 11-2.1/wsj0/si_tr_s/401).
_EXCLUDED_DIR = "wsj0/si_tr_s/401/"
LM_TEXT_DIR = "wsj1/doc/lng_modl/lm_train/np_data"
LM_TEXT_YEARS = ("87", "88", "89")
BASE_LM_DIR = "wsj1/doc/lng_modl/base_lm"
# Kaldi's names for the LDC ARPAs: 20k open-vocabulary, non-verbalized punctuation.
BASE_LM_NOTES = {
    "bcb20onp": "lm_bg (20k open vocab bigram)",
    "tcb20onp": "lm_tg (20k open vocab trigram; Kaldi prunes it to lm_tgpr)",
    "bcb05onp": "lm_bg_5k", "tcb05cnp": "lm_tg_5k (closed vocab)",
}


class WsjLayoutError(Exception):
    """The given folders do not look like the WSJ discs or a flattened copy."""


# ----------------------------------------------------------------------------- transcripts

_NOISE_DELETE = [re.compile(p) for p in (r"^\[<\S+\]$", r"^\[\S+>\]$", r"^\[\S+/\]$", r"^\[/\S+\]$")]
_NOISE_OTHER = re.compile(r"^\[\S+\]$")
_VERBAL_DELETION = re.compile(r"^<([\w'.-]+)>$")
_NONSPEECH = {"<NOISE>", "<SPOKEN_NOISE>", "<UNK>"}


def normalize_wsj_transcript(text: str, noise_word: str = "<NOISE>") -> str:
    """Kaldi's normalize_transcript.pl rules: upper case, no backslash escapes, %PERCENT/.POINT
    spelled out, [<noise] [noise>] [noise/] [/noise] ~ and . deleted, other [noise] -> noise_word,
    <word> (verbal deletion) -> word, --DASH -> -DASH; verbalized punctuation words stay."""
    out = []
    for w in text.upper().replace("\\", "").split():
        if w == "%PERCENT":
            w = "PERCENT"
        elif w == ".POINT":
            w = "POINT"
        if any(p.match(w) for p in _NOISE_DELETE) or w in ("~", "."):
            continue
        if _NOISE_OTHER.match(w):
            out.append(noise_word)
            continue
        m = _VERBAL_DELETION.match(w)
        if m:
            w = m.group(1)
        if w == "--DASH":
            w = "-DASH"
        out.append(w)
    return " ".join(out)


# A word fragment: the unspoken letters in parentheses and a hyphen where the word was cut off,
# `COM(PANY)-` (spoken "com") or `-(IN)COME` (spoken "come").
_FRAGMENT = re.compile(r"\([^()]*\)")


def spoken_part(word: str) -> str:
    """The spoken part of a word fragment (`COM(PANY)-` -> `COM`); other words are returned as they are.

    The choice: the model is trained on what it hears, so a fragment keeps its spoken letters, as in
    the WSJ transcription conventions. Kaldi's normalize_transcript.pl leaves `COM(PANY)-` whole (an OOV
    that its lexicon maps to <UNK>, i.e. SPN); kept that way in the supervision's `kaldi_text`."""
    if not _FRAGMENT.search(word):
        return word
    return _FRAGMENT.sub("", word).strip("-")


def wsj_text_for_model(kaldi_text: str) -> str:
    """Apply Kaldi's WSJ scoring filters (drop <NOISE>/<SPOKEN_NOISE>/<UNK>, ':' and '*'), keep only the
    spoken part of word fragments (see `spoken_part`) and strip the quote that starts
    verbalized-punctuation words ('SINGLE-QUOTE -> SINGLE-QUOTE); the result still goes through
    qnet.tokens.normalize_text."""
    words = []
    for w in kaldi_text.split():
        if w in _NONSPEECH:
            continue
        w = spoken_part(w).replace(":", "").replace("*", "")
        if w.startswith("'") and "QUOTE" in w:
            w = w[1:]
        if w:
            words.append(w)
    return " ".join(words)


# ----------------------------------------------------------------------------- corpus layout


class WsjCorpus:
    """Case-insensitive file index of the WSJ discs and/or flattened copies under some folders."""

    def __init__(self, dirs: Sequence[PathLike]):
        # disc name ("11-1.1") -> {lower-case path inside the disc: real path}
        self.discs: Dict[str, Dict[str, Path]] = {}
        # flattened roots: {lower-case path starting with wsj0/ or wsj1/: real path}
        self.flat: List[Dict[str, Path]] = []
        self._dir_cache: Dict[int, set] = {}
        self._seen: set = set()
        for d in dirs:
            d = Path(d)
            if not d.is_dir():
                raise WsjLayoutError(f"{d}: no such directory")
            searched: List[Path] = []
            if not self._search(d, 0, searched):
                raise WsjLayoutError(
                    f"{d}: no WSJ disc folder (11-1.1, 13-34.1, or 11_1.1 ...) or wsj0/wsj1 copy found; "
                    f"folders searched ({_MAX_SEARCH_DEPTH} levels deep): {' '.join(map(str, searched))}"
                )

    def _search(self, d: Path, depth: int, searched: List[Path]) -> bool:
        """Add the discs and flattened copies at or below `d`; False when there is none."""
        real = d.resolve()
        if real in self._seen:  # the same folder given twice (--wsj0 CORPUS --wsj1 CORPUS)
            return True
        searched.append(d)
        m = _DISC_RE.match(d.name)
        if m:
            self._seen.add(real)
            name = disc_name(*m.groups())
            self.discs[name] = self._walk(d)
            logging.info(f"WSJ disc {name} ({d}): {len(self.discs[name])} files")
            return True
        children = _subdirs(d)
        # a folder named wsj0 may hold the discs (the recipe's --wsj0) or be a flattened copy
        if d.name.lower() in _FLAT_NAMES and not any(_DISC_RE.match(c.name) for c in children):
            self._seen.add(real)
            # every disc merged into one folder keeps the discs' own wsj0/ (or wsj1/) level: WSJ0/wsj0/...
            inner = [c for c in children if c.name.lower() == d.name.lower()]
            root = inner[0] if inner else d
            self.flat.append(self._walk(root, d.name.lower() + "/"))
            logging.info(f"WSJ flattened copy {root}: {len(self.flat[-1])} files")
            return True
        if depth >= _MAX_SEARCH_DEPTH:
            return False
        found = False
        for c in children:
            found = self._search(c, depth + 1, searched) or found
        if found:
            self._seen.add(real)
        return found

    @staticmethod
    def _walk(root: Path, prefix: str = "") -> Dict[str, Path]:
        index: Dict[str, Path] = {}
        for dirpath, _, files in os.walk(root, followlinks=True):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for f in files:
                index[(prefix + rel_dir + f).lower()] = Path(dirpath) / f
        return index

    def _indexes(self, disc: Optional[str]) -> Iterator[Dict[str, Path]]:
        if disc is not None and disc.lower() in self.discs:
            yield self.discs[disc.lower()]
        yield from self.flat
        for name, idx in self.discs.items():
            if disc is None or name != disc.lower():
                yield idx

    def resolve(self, disc: Optional[str], rel: str) -> Optional[Path]:
        """Real path of `rel` (e.g. wsj0/si_tr_s/01i/01ic0201.wv1) on `disc`, or anywhere else."""
        key = rel.strip("/").lower()
        for idx in self._indexes(disc):
            if key in idx:
                return idx[key]
        return None

    def has_dir(self, disc: Optional[str], rel_dir: str) -> bool:
        """Whether any file lies under `rel_dir` (used to tell a missing folder from a missing file)."""
        key = rel_dir.strip("/").lower()
        for idx in self._indexes(disc):
            dirs = self._dir_cache.get(id(idx))
            if dirs is None:
                dirs = {k.rsplit("/", i)[0] for k in idx for i in range(1, k.count("/") + 1)}
                self._dir_cache[id(idx)] = dirs
            if key in dirs:
                return True
        return False

    def files(self, rel_prefix: str = "", suffix: str = "") -> List[Path]:
        """Every file whose path (inside its disc) starts with `rel_prefix` and ends with `suffix`."""
        rel_prefix, suffix = rel_prefix.lower(), suffix.lower()
        seen, out = set(), []
        for idx in list(self.discs.values()) + self.flat:
            for k, p in idx.items():
                if k.startswith(rel_prefix) and k.endswith(suffix) and k not in seen:
                    seen.add(k)
                    out.append(p)
        return sorted(out)


def _subdirs(d: Path) -> List[Path]:
    """Sub-folders of `d`, sorted; an unreadable folder has none."""
    try:
        return sorted(c for c in d.iterdir() if c.is_dir())
    except OSError:
        return []


def disc_name(a: str, b: str, c: str) -> str:
    """The canonical disc name of an .ndx disc id or a disc folder: 11_1_1, 11_1.1 -> 11-1.1."""
    return f"{int(a)}-{int(b)}.{int(c)}"


@dataclass
class NdxEntry:
    """One utterance listed in an .ndx index."""

    utt_id: str
    disc: str
    rel_path: str
    source: str  # "<index file>:<line>" for messages


def read_ndx(path: Path) -> Tuple[List[NdxEntry], List[str]]:
    """Entries of an .ndx file (comments `;` skipped, `.wv1` appended when there is no extension),
    and messages for lines that could not be parsed."""
    entries, bad = [], []
    for lineno, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        line = raw.decode("latin-1").strip()
        if not line or line.startswith(";"):
            continue
        m = _NDX_RE.match(line)
        if not m:
            bad.append(f"{path}:{lineno}: unparsable index line {line!r}")
            continue
        rel = m.group(4)
        if not os.path.splitext(rel)[1]:
            rel += ".wv1"
        utt = os.path.splitext(os.path.basename(rel))[0].lower()
        entries.append(NdxEntry(utt, disc_name(*m.group(1, 2, 3)), rel, f"{path}:{lineno}"))
    return entries, bad


def read_dot_transcripts(corpus: WsjCorpus) -> Tuple[Dict[str, str], Dict[str, str], List[str]]:
    """All `text (uttid)` lines of every *.dot file: ({uttid: text}, {uttid: why its line is bad},
    [problems not tied to an utterance])."""
    texts: Dict[str, str] = {}
    bad: Dict[str, str] = {}
    problems: List[str] = []
    for dot in tqdm(corpus.files(suffix=".dot"), desc="reading .dot transcripts", unit="file"):
        try:
            data = dot.read_bytes()
        except OSError as exc:
            problems.append(f"{dot}: unreadable ({exc})")
            continue
        for lineno, raw in enumerate(data.split(b"\n"), 1):
            if not raw.strip():
                continue
            try:
                line = raw.decode("utf-8").rstrip("\r")
            except UnicodeDecodeError as exc:
                m = re.search(rb"\(([^()\s]+)\)\s*$", raw)
                msg = f"{dot}:{lineno}: not valid UTF-8 ({exc.reason} at byte {exc.start})"
                if m:
                    bad[m.group(1).decode("ascii", "replace").lower()] = msg
                else:
                    problems.append(msg)
                continue
            m = _DOT_RE.match(line)
            if not m:
                problems.append(f"{dot}:{lineno}: no '(uttid)' at the end of {line!r}")
                continue
            utt = m.group(2).lower()
            if utt in texts and texts[utt] != m.group(1).strip():
                problems.append(f"{dot}:{lineno}: {utt} transcribed twice, first one kept")
                continue
            texts[utt] = m.group(1).strip()
    return texts, bad, problems


# ----------------------------------------------------------------------------- sets


def set_entries(corpus: WsjCorpus, name: str, report: PrepReport) -> List[NdxEntry]:
    """The utterances of a set from its .ndx lists, 401 filter applied to training sets."""
    entries: List[NdxEntry] = []
    seen = set()
    for disc, rel in WSJ_SETS[name].indices:
        ndx = corpus.resolve(disc, rel)
        if ndx is None:
            report.skip(f"{disc}/{rel}", "missing-index", f"index file not found (disc {disc} missing?); its utterances are left out")
            continue
        items, bad = read_ndx(ndx)
        for msg in bad:
            report.skip(str(ndx), "bad-index-line", msg)
        for e in items:
            if is_train_part(name) and e.rel_path.lower().startswith(_EXCLUDED_DIR):
                continue
            if e.utt_id in seen:
                report.skip(e.utt_id, "duplicate-id", f"{e.source}: listed twice")
                continue
            seen.add(e.utt_id)
            entries.append(e)
    return entries


@dataclass
class ScannedSet:
    """A set whose utterances were found and whose SPHERE headers were read, before anything is written."""

    name: str
    report: PrepReport
    candidates: List[Tuple[NdxEntry, Path, SphereHeader]]
    missing_discs: Dict[str, int]  # disc -> utterances left out because its folder was not given


def scan_set(corpus: WsjCorpus, name: str, bad_texts: Dict[str, str], texts: Dict[str, str]) -> ScannedSet:
    """Find a set's audio and transcripts and read every header; bad items go to the report."""
    report = PrepReport(f"{PREFIX}_{name}")
    candidates = []
    missing_discs: Dict[str, int] = {}
    for e in tqdm(set_entries(corpus, name, report), desc=f"{name}: headers", unit="utt"):
        path = corpus.resolve(e.disc, e.rel_path)
        if path is None:
            parent = os.path.dirname(e.rel_path)
            if e.disc.lower() not in corpus.discs and not corpus.has_dir(e.disc, parent):
                missing_discs[e.disc] = missing_discs.get(e.disc, 0) + 1
                report.skip(e.utt_id, "missing-dir", f"{e.source}: disc {e.disc} (folder {parent}) not found")
            elif not corpus.has_dir(e.disc, parent):
                report.skip(e.utt_id, "missing-dir", f"{e.source}: folder {e.disc}/{parent} not found")
            else:
                report.skip(e.utt_id, "no-audio", f"{e.source}: {e.disc}/{e.rel_path} not found")
            continue
        if e.utt_id in bad_texts:
            report.skip(e.utt_id, "bad-encoding", bad_texts[e.utt_id])
            continue
        if e.utt_id not in texts:
            report.skip(e.utt_id, "no-transcript", f"{path} has no line in any .dot file")
            continue
        try:
            header = read_sphere_header(path)
        except SphereError as exc:
            report.skip(e.utt_id, "empty-audio" if is_empty_file(path) else "bad-audio", str(exc))
            continue
        if header.sample_count <= 0 or os.path.getsize(path) <= header.header_size:
            report.skip(e.utt_id, "empty-audio", f"{path}: zero-length audio (sample_count {header.sample_count})")
            continue
        if header.is_pcm and os.path.getsize(path) < header.expected_size():
            report.skip(e.utt_id, "bad-audio", f"{path}: truncated: {os.path.getsize(path)} bytes, header promises {header.expected_size()}")
            continue
        if not header.is_pcm and not header.is_compressed:
            report.skip(e.utt_id, "bad-audio", f"{path}: unsupported sample_coding {header.sample_coding!r}")
            continue
        if header.channel_count != 1:
            report.skip(e.utt_id, "not-mono", f"{path} has {header.channel_count} channels, expected 1")
            continue
        candidates.append((e, path, header))
    return ScannedSet(name, report, candidates, missing_discs)


def check_sph2pipe(scanned: Sequence[ScannedSet], sph2pipe: Optional[str]) -> None:
    """Raise SphereError naming the first compressed file when any set needs sph2pipe and it is missing."""
    if sph2pipe is not None:
        return
    compressed = [(s.name, path) for s in scanned for _, path, h in s.candidates if h.is_compressed]
    if compressed:
        first_set, first = compressed[0]
        total = sum(len(s.candidates) for s in scanned)
        raise SphereError(f"{first} ({first_set}) is shorten-compressed SPHERE, as are {len(compressed)} of the {total} "
                          f"files of {' '.join(s.name for s in scanned)} in all; nothing was written. {SPH2PIPE_HELP}")


def write_set(
    scanned: ScannedSet,
    out_dir: PathLike,
    texts: Dict[str, str],
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
    sph2pipe: Optional[str] = None,
) -> Optional[PrepReport]:
    """Normalize the transcripts of a scanned set and write its manifests; None when nothing usable
    was found (only the report is written)."""
    from lhotse import Recording, SupervisionSegment

    name, report = scanned.name, scanned.report
    events: List[Event] = []
    stats = NormalizationStats()
    drop_long = is_train_part(name)
    recordings, supervisions = [], []
    for e, path, header in scanned.candidates:
        kaldi_text = normalize_wsj_transcript(texts[e.utt_id])
        fragments = [w for w in kaldi_text.split() if _FRAGMENT.search(w)]
        model_text = wsj_text_for_model(kaldi_text)
        if fragments:
            events.append(Event("FIX", e.utt_id, "word-fragment", f"{len(fragments)} fragments, spoken part kept: "
                                + ", ".join(f"{w} -> {spoken_part(w) or '(nothing)'}" for w in fragments)))
            report.tally("word fragments", len(fragments))
        if not model_text:
            events.append(Event("SKIP", e.utt_id, "empty-text", f"no words left after normalization of {texts[e.utt_id]!r}"))
            continue
        text = clean_text(e.utt_id, model_text, events, stats)
        if text is None or not check_duration(e.utt_id, header.duration, max_duration, drop_long, events):
            continue
        rec = Recording(
            id=e.utt_id,
            sources=[sphere_audio_source(path, header, sph2pipe)],
            sampling_rate=header.sample_rate,
            num_samples=header.sample_count,
            duration=header.duration,
        )
        if header.sample_rate != sampling_rate:
            events.append(Event("FIX", e.utt_id, "resampled", f"{path} is {header.sample_rate} Hz; resampled to {sampling_rate} Hz on load"))
            rec = rec.resample(sampling_rate)
        recordings.append(rec)
        supervisions.append(
            SupervisionSegment(
                id=e.utt_id, recording_id=e.utt_id, start=0.0, duration=rec.duration, channel=0, text=text,
                speaker=e.utt_id[:3], language="English", custom={"kaldi_text": kaldi_text},
            )
        )
    report.extend(events)
    report.text_stats.add(stats)
    log = logging.warning if supervisions else logging.error
    for disc, n in sorted(scanned.missing_discs.items()):
        log(f"{name}: its audio disc {disc} was not found in the given folders ({n} utterances left out; "
            f"{name} is on {WSJ_SETS[name].audio})")
    return finish_part(out_dir, PREFIX, name, recordings, supervisions, report)


# ----------------------------------------------------------------------------- LM text and ARPAs


def _decompress_lines(path: Path) -> Iterator[bytes]:
    """Lines of a compress(1) .Z/.z, gzip or plain file (gzip -dc handles LZW and gzip)."""
    with open(path, "rb") as f:
        magic = f.read(2)
    if magic not in (b"\x1f\x9d", b"\x1f\x8b"):
        with open(path, "rb") as f:
            yield from f
        return
    if shutil.which("gzip") is None:
        raise RuntimeError(f"{path}: needs `gzip -dc` to decompress, and gzip is not on PATH")
    proc = subprocess.Popen(["gzip", "-dc", str(path)], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None
    yield from proc.stdout
    proc.stdout.close()
    err = proc.stderr.read().decode("utf-8", "replace") if proc.stderr else ""
    if proc.wait() != 0:
        raise RuntimeError(f"{path}: gzip -dc failed: {err.strip()}")


def extract_lm_text(corpus: WsjCorpus, out_path: PathLike) -> Optional[Path]:
    """Write the normalized WSJ LM training text (np_data 87-89, tag lines dropped, one sentence
    per line) to `out_path` atomically; None when the LM text is not on the given discs."""
    out_path = Path(out_path)
    files = [
        p for p in corpus.files(LM_TEXT_DIR + "/", ".z")
        if any(f"/np_data/{y}/" in p.as_posix().lower() for y in LM_TEXT_YEARS)
    ]
    if not files:
        logging.warning(f"no {LM_TEXT_DIR}/{{87,88,89}}/*.z found (disc 13-32.1); {out_path} not written")
        return None
    stats = NormalizationStats()
    n_lines = n_words = n_bad = 0
    with atomic_output(out_path) as tmp, open(tmp, "w", encoding="utf-8") as out:
        for p in tqdm(files, desc="WSJ LM text", unit="file"):
            try:
                for raw in _decompress_lines(p):
                    if b"<" in raw:
                        continue  # SGML-style markup lines (<art.>, <p>, <s>) as ESPnet drops them
                    text, st = normalize_text(raw.decode("utf-8", "replace"))
                    stats.add(st)
                    if text:
                        out.write(text + "\n")
                        n_lines += 1
                        n_words += text.count(" ") + 1
            except RuntimeError as exc:
                n_bad += 1
                logging.warning(f"SKIP {p}: bad-lm-file: {exc}")
    logging.info(f"{out_path}: {n_lines} sentences, {n_words} words from {len(files) - n_bad} files "
                 f"({n_bad} unreadable); {stats}")
    return out_path


class _NotAnArpa(Exception):
    """An LDC base_lm file without a \\data\\ line."""


def _write_arpa_from_data_section(src: Path, dst: Path) -> bool:
    """gzip `src` (compress'd ARPA) into `dst` from its `\\data\\` line on, words lower-cased;
    False when there is no such line."""
    seen_data = False
    with gzip.open(dst, "wt", encoding="utf-8") as out:
        for raw in _decompress_lines(src):
            line = raw.decode("latin-1")
            if not seen_data:
                if line.strip() != "\\data\\":
                    continue
                seen_data = True
            out.write(line.lower())
    return seen_data


def extract_ldc_arpas(corpus: WsjCorpus, out_dir: PathLike) -> List[Path]:
    """Decompress the LDC ARPAs (base_lm/*.z), dropping everything before `\\data\\` and lower-casing
    words to match our lexicon, into out_dir/<name>.arpa.gz; returns the files written or present."""
    out_dir = Path(out_dir)
    written = []
    for p in corpus.files(BASE_LM_DIR + "/", ".z"):
        stem = p.name.split(".")[0].lower()
        dst = out_dir / f"{stem}.arpa.gz"
        if dst.is_file():
            written.append(dst)
            continue
        try:
            with atomic_output(dst) as tmp:
                if not _write_arpa_from_data_section(p, tmp):
                    raise _NotAnArpa()
        except _NotAnArpa:
            logging.warning(f"SKIP {p}: no \\data\\ section, not an ARPA file")
            continue
        except RuntimeError as exc:  # gzip -dc failed: a damaged file, not a reason to stop
            logging.warning(f"SKIP {p}: bad-lm-file: {exc}")
            continue
        written.append(dst)
        logging.info(f"LDC ARPA {p} -> {dst}: {BASE_LM_NOTES.get(stem, 'see the WSJ LM docs')}")
    return written


def prepare_wsj(
    dirs: Sequence[PathLike],
    out_dir: PathLike,
    sets: Sequence[str] = DEFAULT_SETS,
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
    lm_text: bool = True,
    ldc_arpa: bool = True,
) -> Dict[str, str]:
    """Prepare the requested sets (skipping those already written), the LM text and the LDC ARPAs.
    Returns {set: "done" | "skipped" | "empty"}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for s in sets:
        if s not in WSJ_SETS:
            raise ValueError(f"unknown WSJ set {s!r}; known: {' '.join(WSJ_SETS)}")
    todo = [s for s in sets if not part_is_done(out_dir, PREFIX, s)]
    status = {s: "skipped" for s in sets if s not in todo}
    for s in status:
        logging.info(f"{PREFIX}_{s}: manifests exist in {out_dir}, skipping")
    lm_path = out_dir / "wsj_lm_text.txt"
    need_lm = lm_text and not lm_path.is_file()
    arpa_dir = out_dir / "wsj_ldc_lm"
    need_arpa = ldc_arpa and not (arpa_dir / "README.txt").is_file()
    if not todo and not need_lm and not need_arpa:
        return status
    corpus = WsjCorpus(dirs)
    if todo:
        sph2pipe = find_sph2pipe()
        texts, bad_texts, problems = read_dot_transcripts(corpus)
        if problems:
            atomic_report = PrepReport(f"{PREFIX}_transcripts")
            for msg in problems:
                atomic_report.skip(msg.split(":", 1)[0], "bad-dot-line", msg)
            atomic_report.write(out_dir / f"{PREFIX}_transcripts.report.txt")
        logging.info(f"{len(texts)} transcripts in .dot files ({len(problems)} problem lines)")
        # every set's headers are read before anything is written, so a missing sph2pipe stops the
        # run before the first manifest, whichever set holds the compressed files
        scanned = [scan_set(corpus, s, bad_texts, texts) for s in todo]
        check_sph2pipe(scanned, sph2pipe)
        for sc in scanned:
            rep = write_set(sc, out_dir, texts, max_duration, sampling_rate, sph2pipe)
            status[sc.name] = "done" if rep is not None else "empty"
    if need_lm:
        extract_lm_text(corpus, lm_path)
    if need_arpa:
        arpas = extract_ldc_arpas(corpus, arpa_dir)
        if not arpas:
            logging.info(f"no LDC ARPAs ({BASE_LM_DIR}/*.z, disc 13-32.1) found")
        notes = "".join(f"{p.name}: {BASE_LM_NOTES.get(p.name.split('.')[0], 'LDC WSJ LM')}\n" for p in arpas)
        atomic_write_text(arpa_dir / "README.txt", "LDC WSJ ARPA LMs (words lower-cased)\n" + (notes or "none found on the given discs\n"))
    return status
