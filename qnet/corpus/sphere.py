"""NIST SPHERE files (WSJ `.wv1`): header parsing, PCM reading, and how lhotse reads them.

A SPHERE file starts with an ASCII header: `NIST_1A`, the header size (normally `   1024`), then
`name -type value` lines (`-i` integer, `-r` real, `-sN` string of N bytes) up to `end_head`.
Samples follow the header, PCM or compressed (`pcm,embedded-shorten-v2.00` on most WSJ discs).

How the audio reaches lhotse (the choice, and why):
- **PCM SPHERE** is referenced in place as an `AudioSource(type="file")`: libsndfile (lhotse's
  soundfile backend) decodes NIST SPHERE PCM whatever the file extension, so nothing is copied or
  converted and no subprocess runs per read. `read_sphere_pcm` below is our own reader, used to
  validate files and to check that lhotse's decoding matches.
- **Shorten-compressed SPHERE** cannot be decoded by libsndfile, sox (silently garbage) or torchaudio,
  so it becomes `AudioSource(type="command", source="<abs path>/sph2pipe -f wav -p FILE")`, Kaldi's
  `wav.scp` pipe. The absolute sph2pipe path is written so that feature jobs do not depend on PATH.
  Features are computed once, so one subprocess per utterance is paid once. We check for sph2pipe
  before preparing anything and fail early with how to get it.
Converting everything to FLAC in the data dir was the alternative; it doubles the disk use of a
corpus that is read once, so it is not done.
"""

import os
import shlex
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Optional

import numpy as np

from qnet.utils import PathLike


class SphereError(Exception):
    """A file that is not a valid NIST SPHERE file (the message names it and the reason)."""


@dataclass
class SphereHeader:
    """The fields of a SPHERE header that matter for reading the samples."""

    sample_count: int
    sample_rate: int
    channel_count: int
    sample_n_bytes: int
    sample_byte_format: str
    sample_coding: str
    header_size: int
    fields: Dict[str, object] = field(default_factory=dict)

    @property
    def duration(self) -> float:
        return self.sample_count / self.sample_rate

    @property
    def is_pcm(self) -> bool:
        """True for uncompressed linear PCM (readable in place)."""
        return self.sample_coding.strip().lower() == "pcm"

    @property
    def is_compressed(self) -> bool:
        """True for embedded-shorten / wavpack / shortpack codings (need sph2pipe)."""
        return any(k in self.sample_coding.lower() for k in ("shorten", "wavpack", "shortpack"))

    def expected_size(self) -> int:
        """File size in bytes that a complete PCM file has."""
        return self.header_size + self.sample_count * self.channel_count * self.sample_n_bytes


def parse_sphere_header(data: bytes, name: str = "<bytes>") -> SphereHeader:
    """Parse the ASCII header at the start of `data` (at least the header's bytes)."""
    if not data.startswith(b"NIST_1A"):
        raise SphereError(f"{name}: not a NIST SPHERE file (no NIST_1A magic)")
    nl1 = data.find(b"\n")
    nl2 = data.find(b"\n", nl1 + 1)
    if nl1 < 0 or nl2 < 0:
        raise SphereError(f"{name}: truncated SPHERE header")
    try:
        header_size = int(data[nl1 + 1 : nl2].strip())
    except ValueError:
        raise SphereError(f"{name}: bad SPHERE header size {data[nl1 + 1:nl2]!r}") from None
    if header_size < 16 or header_size > len(data):
        raise SphereError(f"{name}: SPHERE header size {header_size} but only {len(data)} bytes available")
    fields: Dict[str, object] = {}
    pos = nl2 + 1
    end_seen = False
    while pos < header_size:
        nl = data.find(b"\n", pos, header_size)
        if nl < 0:
            break
        line = data[pos:nl].rstrip(b"\r")
        if line.strip() == b"end_head":
            end_seen = True
            break
        pos_line = pos
        pos = nl + 1
        if not line.strip() or line.startswith(b";"):
            continue
        parts = line.split(None, 2)
        if len(parts) < 3 or not parts[1].startswith(b"-"):
            raise SphereError(f"{name}: bad SPHERE header line {line!r}")
        key, typ, rest = parts[0].decode("ascii", "replace"), parts[1].decode("ascii", "replace"), parts[2]
        try:
            if typ == "-i":
                fields[key] = int(rest.split()[0])
            elif typ == "-r":
                fields[key] = float(rest.split()[0])
            elif typ.startswith("-s"):
                n = int(typ[2:])
                # The string is exactly n bytes after the single space following the type (may hold spaces).
                start = pos_line + line.index(typ.encode()) + len(typ) + 1
                fields[key] = data[start : start + n].decode("ascii", "replace")
            else:
                raise ValueError(typ)
        except (ValueError, IndexError):
            raise SphereError(f"{name}: bad SPHERE header field {line!r}") from None
    if not end_seen:
        raise SphereError(f"{name}: SPHERE header has no end_head")

    def need(key: str, default=None):
        if key in fields:
            return fields[key]
        if default is not None:
            return default
        raise SphereError(f"{name}: SPHERE header lacks {key}")

    n_bytes = int(need("sample_n_bytes", 2))
    return SphereHeader(
        sample_count=int(need("sample_count")),
        sample_rate=int(need("sample_rate")),
        channel_count=int(need("channel_count", 1)),
        sample_n_bytes=n_bytes,
        sample_byte_format=str(need("sample_byte_format", "01" if n_bytes > 1 else "1")),
        sample_coding=str(need("sample_coding", "pcm")),
        header_size=header_size,
        fields=fields,
    )


def is_empty_file(path: PathLike) -> bool:
    """True for a file of 0 bytes (a failed copy, not a broken header)."""
    try:
        return os.path.getsize(path) == 0
    except OSError:
        return False


def read_sphere_header(path: PathLike) -> SphereHeader:
    """Parse the header of a SPHERE file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:
            head = f.read(1024)
            if not head:
                raise SphereError(f"{path}: file is empty (0 bytes)")
            if head.startswith(b"NIST_1A"):
                try:
                    size = int(head.split(b"\n", 2)[1].strip())
                except (IndexError, ValueError):
                    size = 1024
                if size > len(head):
                    head += f.read(size - len(head))
    except OSError as exc:
        raise SphereError(f"{path}: cannot read ({exc})") from exc
    return parse_sphere_header(head, str(path))


def read_sphere_pcm(path: PathLike) -> np.ndarray:
    """Samples of a PCM SPHERE file as float32 (channels, samples) in [-1, 1)."""
    path = Path(path)
    h = read_sphere_header(path)
    if not h.is_pcm:
        raise SphereError(f"{path}: sample_coding {h.sample_coding!r} is not plain PCM (needs sph2pipe)")
    if h.sample_n_bytes not in (1, 2, 4):
        raise SphereError(f"{path}: unsupported sample_n_bytes {h.sample_n_bytes}")
    size = os.path.getsize(path)
    if size < h.expected_size():
        raise SphereError(f"{path}: truncated: {size} bytes, header promises {h.expected_size()}")
    order = ">" if h.sample_byte_format.startswith("10") or h.sample_byte_format == "3210" else "<"
    dtype = np.dtype({1: "i1", 2: f"{order}i2", 4: f"{order}i4"}[h.sample_n_bytes])
    with open(path, "rb") as f:
        f.seek(h.header_size)
        raw = np.frombuffer(f.read(h.sample_count * h.channel_count * h.sample_n_bytes), dtype=dtype)
    scale = float(2 ** (8 * h.sample_n_bytes - 1))
    return (raw.astype(np.float32) / scale).reshape(-1, h.channel_count).T.copy()


def find_sph2pipe() -> Optional[str]:
    """Absolute path of sph2pipe: on PATH, or where `lhotse install-sph2pipe` puts it."""
    found = shutil.which("sph2pipe")
    if found:
        return os.path.abspath(found)
    for cand in sorted(Path.home().glob(".lhotse/tools/sph2pipe*/sph2pipe")):
        if os.access(cand, os.X_OK):
            return str(cand)
    return None


SPH2PIPE_HELP = (
    "shorten-compressed SPHERE audio needs sph2pipe, which was not found on PATH or in "
    "~/.lhotse/tools/sph2pipe-*/. Install it with `lhotse install-sph2pipe` (downloads "
    "https://github.com/burrmill/sph2pipe and builds it with make/gcc; needs network), or build "
    "sph2pipe 2.5 from source and put it on PATH (Kaldi: tools/extras/install_sph2pipe.sh)."
)


def sphere_audio_source(path: PathLike, header: SphereHeader, sph2pipe: Optional[str] = None):
    """A lhotse AudioSource that decodes this file: in place for PCM, through sph2pipe otherwise."""
    from lhotse import AudioSource

    path = Path(path).resolve()
    channels = list(range(header.channel_count))
    if header.is_pcm:
        return AudioSource(type="file", channels=channels, source=str(path))
    if sph2pipe is None:
        raise SphereError(f"{path}: {SPH2PIPE_HELP}")
    return AudioSource(type="command", channels=channels, source=f"{shlex.quote(sph2pipe)} -f wav -p {shlex.quote(str(path))}")
