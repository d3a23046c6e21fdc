"""Builders of small corpora for the corpus and features tests: LibriSpeech layout and WSJ LDC
layout (discs or flattened), clean or with deliberately broken items."""

import gzip
from pathlib import Path
from typing import Dict, List

import numpy as np
import soundfile as sf

RATE = 16000


def tone(seconds: float, rate: int = RATE, freq: float = 440.0, seed: int = 0) -> np.ndarray:
    """int16 test signal: a tone plus a little noise (so features are not degenerate)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * rate)) / rate
    x = 0.3 * np.sin(2 * np.pi * freq * t) + 0.01 * rng.standard_normal(t.size)
    return (x * 32767).astype(np.int16)


def write_sphere(path: Path, samples: np.ndarray, rate: int = RATE, byte_format: str = "01",
                 coding: str = "pcm", extra: str = "") -> None:
    """Write a mono 16-bit NIST SPHERE file with a 1024-byte header."""
    fields = [
        "NIST_1A", "   1024",
        f"sample_count -i {len(samples)}", "sample_n_bytes -i 2", "channel_count -i 1",
        f"sample_byte_format -s{len(byte_format)} {byte_format}", f"sample_rate -i {rate}",
        f"sample_coding -s{len(coding)} {coding}",
    ] + ([extra] if extra else []) + ["end_head"]
    header = ("\n".join(fields) + "\n").encode("ascii")
    header += b" " * (1024 - len(header))
    dtype = ">i2" if byte_format == "10" else "<i2"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + samples.astype(dtype).tobytes())


def lzw_compress(data: bytes) -> bytes:
    """A valid Unix compress(1) stream (.Z/.z) holding `data`, for gzip -dc to decode. Only literal
    codes are emitted, but the code width follows the decoder's table growth (9 bits, then 10 once
    257 codes were read, ...), and each width change pads the bits written at the old width to a
    multiple of 8 codes, as compress(1) does."""
    out = bytearray(b"\x1f\x9d\x10")  # magic, maxbits 16, no block mode (no CLEAR code)
    n_bits, maxcode = 9, 511
    acc = nacc = region_bits = 0
    for i, byte in enumerate(data):
        free_ent = min(256 + max(0, i - 1), 1 << 16)  # one new entry per code after the first, up to 2^16
        if free_ent > maxcode:
            pad = (-region_bits) % (n_bits * 8)
            nacc += pad
            n_bits += 1
            maxcode = 1 << 16 if n_bits == 16 else (1 << n_bits) - 1
            region_bits = 0
        acc |= byte << nacc
        nacc += n_bits
        region_bits += n_bits
        while nacc >= 8:
            out.append(acc & 0xFF)
            acc >>= 8
            nacc -= 8
    if nacc:
        out.append(acc & 0xFF)
    return bytes(out)


def write_flac(path: Path, samples: np.ndarray, rate: int = RATE, fmt: str = "FLAC") -> None:
    """Write int16 samples as FLAC (or WAV)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    sf.write(str(path), samples, rate, format=fmt, subtype="PCM_16")


def make_librispeech(root: Path, broken: bool = False) -> Dict[str, List[str]]:
    """LibriSpeech layout under root/LibriSpeech with parts train-clean-5 and dev-clean-2.
    Returns {part: ids expected in the manifests}. With broken=True, adds one item per failure kind."""
    ls = root / "LibriSpeech"
    expected: Dict[str, List[str]] = {}
    for part, spk, chap in (("train-clean-5", "19", "198"), ("dev-clean-2", "84", "121")):
        d = ls / part / spk / chap
        d.mkdir(parents=True, exist_ok=True)
        lines, ids = [], []
        for i in range(3):
            uid = f"{spk}-{chap}-{i:04d}"
            write_flac(d / f"{uid}.flac", tone(1.0 + 0.2 * i, seed=i))
            lines.append(f"{uid} HELLO WORLD NUMBER {'ONE TWO THREE'.split()[i]}".encode())
            ids.append(uid)
        if broken and part == "train-clean-5":
            b = ls / part / "20" / "300"
            b.mkdir(parents=True)
            bl = []
            # wav at another rate -> resampled, kept
            write_flac(b / "20-300-0000.wav", tone(1.0, rate=8000), rate=8000, fmt="WAV")
            bl.append(b"20-300-0000 RESAMPLED ITEM")
            # truncated flac -> skipped
            write_flac(b / "20-300-0001.flac", tone(3.0, seed=5))
            data = (b / "20-300-0001.flac").read_bytes()
            (b / "20-300-0001.flac").write_bytes(data[: len(data) // 2])
            bl.append(b"20-300-0001 TRUNCATED AUDIO")
            # zero-length audio (valid header, no samples) -> skipped
            write_flac(b / "20-300-0002.wav", np.zeros(0, np.int16), fmt="WAV")
            bl.append(b"20-300-0002 ZERO LENGTH")
            # garbage bytes -> skipped
            (b / "20-300-0003.flac").write_bytes(b"this is not audio at all" * 10)
            bl.append(b"20-300-0003 GARBAGE")
            # transcript without audio -> skipped
            bl.append(b"20-300-0004 NO AUDIO FOR THIS LINE")
            # audio without transcript -> skipped
            write_flac(b / "20-300-0005.flac", tone(1.0))
            # empty transcript line, non-UTF-8 line -> skipped
            write_flac(b / "20-300-0006.flac", tone(1.0))
            bl.append(b"20-300-0006")
            write_flac(b / "20-300-0007.flac", tone(1.0))
            bl.append(b"20-300-0007 CAF\xe9 LATIN ONE")
            bl.append(b"")
            # characters outside the token set -> normalized, kept
            write_flac(b / "20-300-0008.flac", tone(1.0))
            bl.append("20-300-0008 NAÏVE CAFÉ ½ DONE".encode())
            # over-long utterance -> dropped from train
            write_flac(b / "20-300-0009.flac", tone(17.5))
            bl.append(b"20-300-0009 A VERY LONG ONE")
            (b / "20-300.trans.txt").write_bytes(b"\n".join(bl) + b"\n")
            ids += ["20-300-0000", "20-300-0008"]
        if broken and part == "dev-clean-2":
            write_flac(d / f"{spk}-{chap}-0009.flac", tone(17.5))
            lines.append(f"{spk}-{chap}-0009 LONG BUT KEPT IN DEV".encode())
            ids.append(f"{spk}-{chap}-0009")
        (d / f"{spk}-{chap}.trans.txt").write_bytes(b"\n".join(lines) + b"\n")
        expected[part] = sorted(ids)
    return expected


def make_wsj(root: Path, flat: bool = False, broken: bool = False) -> Dict[str, List[str]]:
    """A tiny WSJ in the LDC disc layout (root/wsj0/11-*.*, root/wsj1/13-*.*) or flattened
    (root/CORPUS/wsj0, root/CORPUS/wsj1). Returns {set: expected utterance ids}."""

    def disc(name: str, sub: str) -> Path:
        return (root / "CORPUS" / sub) if flat else (root / sub / name / sub)

    def ndx_line(name: str, rel: str) -> str:
        a, b = name.split("-")
        return f"{a}_{b.replace('.', '_')}:{rel}"

    expected = {"train_si284": [], "test_dev93": [], "test_eval92": []}
    # wsj0 training: speakers 011 and 401 (the latter is excluded), disc 11-2.1
    tr = []
    for spk in ("011", "401"):
        d = disc("11-2.1", "wsj0") / "si_tr_s" / spk
        dot = []
        for i in range(2):
            utt = f"{spk}c02{i:02d}"
            write_sphere(d / f"{utt}.wv1", tone(1.0, seed=i), byte_format="01" if i == 0 else "10")
            dot.append(f"The [door_slam] ,COMMA <uh> price ~ rose . %PERCENT ({utt})")
            tr.append(ndx_line("11-2.1", f"wsj0/si_tr_s/{spk}/{utt}.wv1"))
            if spk == "011":
                expected["train_si284"].append(utt)
        (d / f"{spk}c0200.dot").write_text("\n".join(dot) + "\n")
    if broken:
        d = disc("11-2.1", "wsj0") / "si_tr_s" / "012"
        dot = []
        write_sphere(d / "012c0201.wv1", tone(1.0))  # no transcript
        write_sphere(d / "012c0202.wv1", tone(2.0))
        data = (d / "012c0202.wv1").read_bytes()
        (d / "012c0202.wv1").write_bytes(data[:2000])  # truncated
        dot.append("TRUNCATED (012c0202)")
        write_sphere(d / "012c0203.wv1", np.zeros(0, np.int16))  # zero-length
        dot.append("EMPTY AUDIO (012c0203)")
        write_sphere(d / "012c0204.wv1", tone(1.0, rate=8000), rate=8000)  # resampled
        dot.append("EIGHT KILOHERTZ (012c0204)")
        write_sphere(d / "012c0205.wv1", tone(17.0))  # too long for train
        dot.append("TOO LONG (012c0205)")
        (d / "012c0206.wv1").write_bytes(b"RIFF not sphere" * 100)  # bad header
        dot.append("NOT SPHERE (012c0206)")
        write_sphere(d / "012c0207.wv1", tone(1.0))
        dot.append("[noise] ~ . (012c0207)")  # empty after normalization
        write_sphere(d / "012c0208.wv1", tone(1.0))
        (d / "012c0200.dot").write_bytes(("\n".join(dot) + "\n").encode() + b"CAF\xc9 AU LAIT (012c0208)\n")
        for i in range(1, 9):
            tr.append(ndx_line("11-2.1", f"wsj0/si_tr_s/012/012c02{i:02d}.wv1"))
        tr.append(ndx_line("11-2.1", "wsj0/si_tr_s/012/012c0209.wv1"))  # transcript-less & audio-less
        tr.append(ndx_line("11-5.1", "wsj0/si_tr_s/099/099c0201.wv1"))  # missing disc/dir
        tr.append("garbage line without a disc id")
        expected["train_si284"].append("012c0204")
    ndx = disc("11-13.1", "wsj0") / "doc" / "indices" / "train" / "tr_s_wv1.ndx"
    ndx.parent.mkdir(parents=True, exist_ok=True)
    ndx.write_text(";\n; header comment\n;\n" + "\n".join(tr) + "\n")
    # wsj1 training on an upper-case disc (13-16.1 style names)
    d1 = disc("13-16.1", "wsj1") / "SI_TR_S" / "46A"
    write_sphere(d1 / "46AC0201.WV1", tone(1.2))
    (d1 / "46AC0200.DOT").write_text("A \"DOUBLE-QUOTE WORD 'SINGLE-QUOTE [<breath] NAÏVE (46ac0201)\n")
    ndx1 = disc("13-34.1", "wsj1") / "doc" / "indices" / "si_tr_s.ndx"
    ndx1.parent.mkdir(parents=True, exist_ok=True)
    ndx1.write_text(ndx_line("13-16.1", "wsj1/si_tr_s/46a/46ac0201.wv1") + "\n")
    expected["train_si284"].append("46ac0201")
    # dev93 and eval92 (eval92 index without the .wv1 extension, as on the disc)
    dd = disc("13-16.1", "wsj1") / "si_dt_20" / "4k0"
    write_sphere(dd / "4k0c0301.wv1", tone(1.5))
    (dd / "4k0c0300.dot").write_text("DEV SENTENCE ONE (4k0c0301)\n")
    if broken:
        write_sphere(dd / "4k0c0302.wv1", tone(17.0))
        (dd / "4k0c0300.dot").write_text("DEV SENTENCE ONE (4k0c0301)\nLONG DEV SENTENCE (4k0c0302)\n")
        expected["test_dev93"].append("4k0c0302")
    (disc("13-34.1", "wsj1") / "doc" / "indices" / "h1_p0.ndx").write_text(
        "\n".join(ndx_line("13-16.1", f"wsj1/si_dt_20/4k0/{u}.wv1") for u in (["4k0c0301", "4k0c0302"] if broken else ["4k0c0301"])) + "\n"
    )
    expected["test_dev93"].append("4k0c0301")
    de = disc("11-14.1", "wsj0") / "si_et_20" / "440"
    write_sphere(de / "440c0201.wv1", tone(1.3))
    (de / "440c0200.dot").write_text("EVAL SENTENCE (440c0201)\n")
    nv = disc("11-13.1", "wsj0") / "doc" / "indices" / "test" / "nvp" / "si_et_20.ndx"
    nv.parent.mkdir(parents=True, exist_ok=True)
    nv.write_text(ndx_line("11-14.1", "wsj0/si_et_20/440/440c0201") + "\n")
    expected["test_eval92"].append("440c0201")
    # LM text (compress'd .z) and an LDC ARPA
    lm = disc("13-32.1", "wsj1") / "doc" / "lng_modl"
    for year, text in (("87", b"<art.870101>\nTHE PRICE ROSE.\n<p>\nSTOCKS FELL 'S\n"), ("89", b"A THIRD LINE\n")):
        p = lm / "lm_train" / "np_data" / year / f"w{year}_001.z"
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(lzw_compress(text))
    arpa = b"junk header\n\\data\\\nngram 1=3\n\n\\1-grams:\n-1.0 <s>\n-1.0 </s>\n-1.0 THE\n\n\\end\\\n"
    p = lm / "base_lm" / "bcb20onp.z"
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_bytes(lzw_compress(arpa))
    for k in expected:
        expected[k].sort()
    return expected


def read_gz_lines(path: Path) -> List[str]:
    """Lines of a gzip text file."""
    with gzip.open(path, "rt") as f:
        return f.read().splitlines()

