"""WSJ (LDC93S6B wsj0 + LDC94S13B wsj1) from the LDC discs -> lhotse manifests, plus LM text.

Accepted layouts (both found automatically under each directory given):
- LDC discs: folders named like `11-1.1` ... `11-13.1` (wsj0) and `13-1.1` ... `13-34.1` (wsj1), each
  holding a `wsj0/` or `wsj1/` subfolder; pass their parent folder(s) or the disc folders themselves.
- Flattened copies: `CORPUS/wsj0/...` and `CORPUS/wsj1/...` (every disc merged), or the `wsj0`/`wsj1`
  folders themselves.
File names are matched case-insensitively (disc 13-16.1 is upper case on some copies).

Sets follow Kaldi's `local/wsj_data_prep.sh`: `train_si84` = `wsj0/doc/indices/train/tr_s_wv1.ndx` (disc
11-13.1) minus speaker `wsj0/si_tr_s/401`; `train_si284` = that + `wsj1/doc/indices/si_tr_s.ndx` (disc
13-34.1); `test_dev93` = `wsj1/doc/indices/h1_p0.ndx` (13-34.1); `test_eval92` =
`wsj0/doc/indices/test/nvp/si_et_20.ndx` (11-13.1, `.wv1` appended). Transcripts come from every
`*.dot` file (`text (uttid)` lines), normalized like Kaldi's `normalize_transcript.pl` (kept in the
supervision's custom `kaldi_text`), then filtered like Kaldi's scoring filters and normalized to the
model's characters with `qnet.tokens.normalize_text` (the supervision's `text`). Audio: see
`qnet.corpus.sphere` (PCM in place, shorten through sph2pipe).
"""

import gzip
import logging
import os
import re
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Sequence, Tuple, Union

from tqdm import tqdm

from qnet.corpus.sphere import SPH2PIPE_HELP, SphereError, find_sph2pipe, read_sphere_header, sphere_audio_source
from qnet.corpus.validate import (
    Event,
    PrepReport,
    check_duration,
    clean_text,
    is_train_part,
    part_is_done,
    write_part,
)
from qnet.tokens import NormalizationStats, normalize_text
from qnet.utils import atomic_write_text

PathLike = Union[str, Path]

PREFIX = "wsj"
_DISC_RE = re.compile(r"^(\d+)-(\d+)\.(\d+)$")
_NDX_RE = re.compile(r"^\s*(\d+)_(\d+)_(\d+)\s*:\s*/?(\S+)")
_DOT_RE = re.compile(r"^(.*)\(([^()\s]+)\)\s*$")

# (disc, index path inside the disc) per set; see the module docstring.
_SI84 = [("11-13.1", "wsj0/doc/indices/train/tr_s_wv1.ndx")]
WSJ_SETS: Dict[str, List[Tuple[str, str]]] = {
    "train_si84": _SI84,
    "train_si284": _SI84 + [("13-34.1", "wsj1/doc/indices/si_tr_s.ndx")],
    "test_dev93": [("13-34.1", "wsj1/doc/indices/h1_p0.ndx")],
    "test_eval92": [("11-13.1", "wsj0/doc/indices/test/nvp/si_et_20.ndx")],
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


def wsj_text_for_model(kaldi_text: str) -> str:
    """Apply Kaldi's WSJ scoring filters (drop <NOISE>/<SPOKEN_NOISE>/<UNK>, ':' and '*') and strip
    the quote that starts verbalized-punctuation words ('SINGLE-QUOTE -> SINGLE-QUOTE); the result
    still goes through qnet.tokens.normalize_text."""
    words = []
    for w in kaldi_text.split():
        if w in _NONSPEECH:
            continue
        w = w.replace(":", "").replace("*", "")
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
        for d in dirs:
            self._add(Path(d))
        if not self.discs and not self.flat:
            raise WsjLayoutError(f"no WSJ disc (11-*.*, 13-*.*) or wsj0/wsj1 folder found under: {' '.join(map(str, dirs))}")

    @staticmethod
    def _walk(root: Path, prefix: str = "") -> Dict[str, Path]:
        index: Dict[str, Path] = {}
        for dirpath, _, files in os.walk(root, followlinks=True):
            rel_dir = os.path.relpath(dirpath, root)
            rel_dir = "" if rel_dir == "." else rel_dir.replace(os.sep, "/") + "/"
            for f in files:
                index[(prefix + rel_dir + f).lower()] = Path(dirpath) / f
        return index

    def _add(self, d: Path) -> None:
        if not d.is_dir():
            raise WsjLayoutError(f"{d}: no such directory")
        if _DISC_RE.match(d.name):
            self.discs[d.name.lower()] = self._walk(d)
            logging.info(f"WSJ disc {d.name}: {len(self.discs[d.name.lower()])} files")
            return
        children = [c for c in d.iterdir() if c.is_dir()]
        discs = [c for c in children if _DISC_RE.match(c.name)]
        flats = [c for c in children if c.name.lower() in ("wsj0", "wsj1")]
        for c in sorted(discs):
            self._add(c)
        for c in sorted(flats):
            self.flat.append(self._walk(c, c.name.lower() + "/"))
            logging.info(f"WSJ flattened copy {c}: {len(self.flat[-1])} files")
        if not discs and not flats:
            if d.name.lower() in ("wsj0", "wsj1"):
                self.flat.append(self._walk(d, d.name.lower() + "/"))
                logging.info(f"WSJ flattened copy {d}: {len(self.flat[-1])} files")
            else:
                raise WsjLayoutError(f"{d}: neither an LDC disc folder (like 11-1.1) nor a folder holding discs or wsj0/wsj1")

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


def disc_name(a: str, b: str, c: str) -> str:
    """The disc folder of an .ndx disc id: 11_1_1 -> 11-1.1."""
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
    for disc, rel in WSJ_SETS[name]:
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


def prepare_set(
    corpus: WsjCorpus,
    name: str,
    out_dir: PathLike,
    transcripts: Tuple[Dict[str, str], Dict[str, str]],
    max_duration: float = 16.7,
    sampling_rate: int = 16000,
    sph2pipe: Optional[str] = None,
) -> Optional[PrepReport]:
    """Build and write one set's manifests; None when nothing usable was found (nothing written).
    Raises SphereError (before writing anything) when shorten audio appears and sph2pipe is missing."""
    from lhotse import Recording, SupervisionSegment

    texts, bad_texts = transcripts
    report = PrepReport(f"{PREFIX}_{name}")
    entries = set_entries(corpus, name, report)
    events: List[Event] = []
    stats = NormalizationStats()
    drop_long = is_train_part(name)
    candidates = []
    for e in tqdm(entries, desc=f"{name}: headers", unit="utt"):
        path = corpus.resolve(e.disc, e.rel_path)
        if path is None:
            parent = os.path.dirname(e.rel_path)
            if e.disc.lower() not in corpus.discs and not corpus.has_dir(e.disc, parent):
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
            report.skip(e.utt_id, "bad-audio", str(exc))
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
    if any(h.is_compressed for _, _, h in candidates) and sph2pipe is None:
        n = sum(h.is_compressed for _, _, h in candidates)
        raise SphereError(f"{name}: {n} of {len(candidates)} files are compressed SPHERE; {SPH2PIPE_HELP}")

    recordings, supervisions = [], []
    for e, path, header in candidates:
        kaldi_text = normalize_wsj_transcript(texts[e.utt_id])
        model_text = wsj_text_for_model(kaldi_text)
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
    if not supervisions:
        logging.error(f"{PREFIX}_{name}: no usable utterance; nothing written")
        for line in report.summary().splitlines():
            logging.error(line)
        report.write(Path(out_dir) / f"{PREFIX}_{name}.report.txt")
        return None
    write_part(out_dir, PREFIX, name, recordings, supervisions, report)
    return report


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
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
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
        os.replace(tmp, out_path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    logging.info(f"{out_path}: {n_lines} sentences, {n_words} words from {len(files) - n_bad} files "
                 f"({n_bad} unreadable); {stats}")
    return out_path


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
        out_dir.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out_dir, prefix=f".{dst.name}.", suffix=".tmp")
        os.close(fd)
        try:
            seen_data = False
            with gzip.open(tmp, "wt", encoding="utf-8") as out:
                for raw in _decompress_lines(p):
                    line = raw.decode("latin-1")
                    if not seen_data:
                        if line.strip() != "\\data\\":
                            continue
                        seen_data = True
                    out.write(line.lower())
            if not seen_data:
                logging.warning(f"SKIP {p}: no \\data\\ section, not an ARPA file")
                os.unlink(tmp)
                continue
            os.replace(tmp, dst)
        except RuntimeError as exc:  # gzip -dc failed: a damaged file, not a reason to stop
            logging.warning(f"SKIP {p}: bad-lm-file: {exc}")
            if os.path.exists(tmp):
                os.unlink(tmp)
            continue
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
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
        for s in todo:
            rep = prepare_set(corpus, s, out_dir, (texts, bad_texts), max_duration, sampling_rate, sph2pipe)
            status[s] = "done" if rep is not None else "empty"
    if need_lm:
        extract_lm_text(corpus, lm_path)
    if need_arpa:
        arpas = extract_ldc_arpas(corpus, arpa_dir)
        if not arpas:
            logging.info(f"no LDC ARPAs ({BASE_LM_DIR}/*.z, disc 13-32.1) found")
        notes = "".join(f"{p.name}: {BASE_LM_NOTES.get(p.name.split('.')[0], 'LDC WSJ LM')}\n" for p in arpas)
        atomic_write_text(arpa_dir / "README.txt", "LDC WSJ ARPA LMs (words lower-cased)\n" + (notes or "none found on the given discs\n"))
    return status
