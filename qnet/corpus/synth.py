"""Offline, deterministic TTS synthesis of two small corpora in the layouts of the real ones.

* LibriSpeech layout (NARRATIVE text): `<out>/LibriSpeech/<part>/<spk>/<chapter>/<spk>-<chapter>-<utt>.flac`,
  `<spk>-<chapter>.trans.txt`, `SPEAKERS.TXT`, parts train-clean-100 / dev-clean / test-clean, and the LM text
  `<out>/lm/librispeech-lm-norm.txt`.
* WSJ LDC layout (NEWS text): `<out>/LDC93S6B/11-*.1/wsj0/...` and `<out>/LDC94S13B/13-*.1/wsj1/...` with
  `.ndx` indices, `.dot` transcripts (occasional WSJ markup), 1024-byte NIST_1A SPHERE `.wv1` PCM files and the
  LM text `13-32.1/wsj1/doc/lng_modl/lm_train/np_data/{87,88,89}/*.z`.

Speakers are TTS voices (espeak-ng language x variant, a flite voice or a festival voice) with their own rate
and pitch. Variants are split into disjoint groups, so dev/test voices never occur in any training set (either
layout), and a few "held-back" voices occur in no corpus at all unless asked for (`test_group`). Every random choice (text, voice parameters, padding, gain, channel, noise) derives from the seed
and the utterance id, so the same seed gives byte-identical files regardless of process scheduling.
Audio and text files are written atomically; a rerun skips the audio files that are already complete.
"""

import dataclasses
import gzip
import hashlib
import io
import json
import logging
import multiprocessing
import os
import random
import shutil
import subprocess
import tempfile
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Sequence, Tuple

import numpy as np

from qnet.corpus.sphere import read_sphere_header
from qnet.corpus.textgen import generate_splits
from qnet.utils import PathLike, atomic_write_bytes, atomic_write_text
SAMPLE_RATE = 16000
SPHERE_HEADER_BYTES = 1024

# espeak-ng English languages/accents (the mbrola "mb-*" voices are not used: they need mbrola).
ESPEAK_LANGS = ("en", "en-us", "en-gb-scotland", "en-gb-x-gbclan", "en-gb-x-rp", "en-gb-x-gbcwmd",
                "en-029", "en-us-nyc")

# Training voices: every espeak-ng variant that no dev/test group and no held-back voice uses (the whispering
# ones excepted: unvoiced speech is another task), flite's awb and slt, and festival's ked (an LPC diphone
# voice, the same family as the test voice flite kal16, which is another speaker) and HTS slt. Voice
# diversity is the main guard against unseen voices: the model must not learn a handful of timbres.
_TRAIN_POOL = (
    "espeak:m1/M", "espeak:m2/M", "espeak:m3/M", "espeak:m6/M", "espeak:m8/M", "espeak:f1/F", "espeak:f2/F",
    "espeak:klatt/M", "espeak:klatt2/M", "espeak:klatt3/M", "espeak:adam/M", "espeak:Alex/M", "espeak:Andy/M",
    "espeak:Annie/F", "espeak:antonio/M", "espeak:aunty/F", "espeak:benjamin/M",
    "espeak:boris/M", "espeak:caleb/M", "espeak:david/M", "espeak:Demonic/M", "espeak:Diogo/M", "espeak:ed/M",
    "espeak:edward/M", "espeak:Gene/M", "espeak:gustave/M", "espeak:announcer/M", "espeak:Henrique/M",
    "espeak:iven/M", "espeak:iven2/M", "espeak:iven3/M", "espeak:Jacky/M", "espeak:john/M", "espeak:kaukovalta/M",
    "espeak:linda/F", "espeak:marcelo/M", "espeak:Mario/M", "espeak:max/M", "espeak:michel/M", "espeak:miguel/M",
    "espeak:Mike/M", "espeak:Nguyen/M", "espeak:pablo/M", "espeak:paul/M", "espeak:pedro/M", "espeak:quincy/M",
    "espeak:RicishayMax/M", "espeak:RicishayMax2/M", "espeak:rob/M", "espeak:robert/M", "espeak:robosoft/M",
    "espeak:robosoft3/M", "espeak:robosoft5/M", "espeak:robosoft7/M", "espeak:steph/F", "espeak:steph2/F",
    "espeak:Tweaky/M", "espeak:UniRobot/M", "espeak:anikaRobot/F", "espeak:AnxiousAndy/M", "espeak:fast/M",
    "espeak:grandpa/M", "espeak:grandma/F", "espeak:croak/M", "espeak:sandro/M",
    "flite:awb/M", "flite:slt/F", "flite:rms/M", "festival:ked_diphone/M", "festival:cmu_us_slt_arctic_hts/F",
)

# Disjoint voice groups: "engine:variant/gender". A dev/test group shares no variant with any train group,
# and the WSJ dev/test voices are unseen in the LibriSpeech train set as well. flite's kal16 (test only) and
# kal are the same diphone speaker; kal (8 kHz, band-limited) is not used. "held-back" voices are in no
# corpus the recipe makes: they are for checking that a model generalizes beyond the test voices too
# (qnet.bin.synth_corpus --test-group held-back).
VOICE_GROUPS: Dict[str, Tuple[str, ...]] = {
    "librispeech/train": _TRAIN_POOL,
    "librispeech/dev": ("espeak:m4/M", "espeak:f3/F", "espeak:Denis/M", "espeak:Alicia/F"),
    "librispeech/test": ("espeak:m5/M", "espeak:f4/F", "espeak:Hugo/M", "espeak:Andrea/F", "flite:kal16/M"),
    "wsj/train": _TRAIN_POOL,
    "wsj/dev": ("espeak:m7/M", "espeak:f5/F", "espeak:Lee/M", "espeak:anika/F", "espeak:travis/M"),
    "wsj/test": ("espeak:klatt4/M", "espeak:Marco/M", "espeak:steph3/F", "espeak:zac/M", "espeak:victor/M"),
    "held-back": ("espeak:klatt5/M", "espeak:klatt6/M", "espeak:norbert/M", "espeak:shelby/M", "espeak:Gene2/M",
                  "espeak:edward2/M", "espeak:iven4/M", "espeak:Michael/M", "espeak:robosoft2/M", "espeak:belinda/F"),
}

LIBRI_PARTS = {"train": "train-clean-100", "dev": "dev-clean", "test": "test-clean"}
WSJ_NOISES = ("loud_breath", "lip_smack", "breath", "door_slam", "tongue_click", "throat_clear")


@dataclass(frozen=True)
class Voice:
    """One synthetic speaker: engine + voice/variant + speaking rate and pitch."""

    engine: str  # "espeak-ng", "flite" or "festival"
    voice: str  # espeak-ng "lang+variant", flite voice name or festival voice (e.g. ked_diphone)
    gender: str  # "M" or "F"
    rate: float  # espeak-ng words per minute; flite/festival: 1 / duration_stretch * 175
    pitch: int  # espeak-ng -p (0..99); flite/festival: sox pitch shift in cents

    @property
    def name(self) -> str:
        """Readable voice description, e.g. 'espeak-ng en-us+f3 rate 172 pitch 48'."""
        return f"{self.engine} {self.voice} rate {self.rate:.0f} pitch {self.pitch}"

    @property
    def identity(self) -> str:
        """The voice without rate/pitch (what must not cross the train/test border)."""
        return f"{self.engine}:{self.voice}"

    @property
    def variant(self) -> str:
        """The espeak-ng variant or the flite/festival voice (the speaker's timbre)."""
        return self.voice.split("+")[-1]


@dataclass(frozen=True)
class UttJob:
    """Everything needed to synthesize one utterance file, independent of any other job."""

    utt_id: str
    spoken: str  # text given to the TTS engine (lowercase, commas for pauses)
    path: str
    fmt: str  # "flac" or "sph"
    voice: Voice
    seed: int
    noise_start: bool = False  # a breath/noise event before the speech (WSJ [noise] markup)
    noise_end: bool = False


# ----------------------------------------------------------------------------------------------------------
# voices
# ----------------------------------------------------------------------------------------------------------
def make_speakers(group: str, num: int, rng: random.Random) -> List[Voice]:
    """`num` voices from a VOICE_GROUPS group: variants round-robin (shuffled), language and rate/pitch random.

    Rates span slow to fast speech (espeak-ng 130-205 words per minute) and pitches most of espeak-ng's range,
    so that a group's voices differ in more than their variant's timbre.
    """
    entries = list(VOICE_GROUPS[group])
    rng.shuffle(entries)
    voices: List[Voice] = []
    used = set()
    for i in range(num):
        engine_variant, gender = entries[i % len(entries)].split("/")
        engine, variant = engine_variant.split(":")
        for _ in range(20):
            if engine in ("flite", "festival"):
                v = Voice(engine, variant, gender, rate=round(rng.uniform(145, 200)), pitch=rng.randint(-300, 300))
            else:
                lang = rng.choice(ESPEAK_LANGS)
                v = Voice("espeak-ng", f"{lang}+{variant}", gender, rate=round(rng.uniform(130, 205)),
                          pitch=rng.randint(20, 80))
            if (v.voice, v.pitch) not in used:
                break
        used.add((v.voice, v.pitch))
        voices.append(v)
    return voices


FESTIVAL_VOICE_DIRS = ("/usr/share/festival/voices", "/usr/local/share/festival/voices")
ENGINE_PROGRAMS = {"espeak-ng": "espeak-ng", "flite": "flite", "festival": "text2wave"}
DEBIAN_PACKAGES = "espeak-ng flite festival festvox-kdlpc16k festvox-us-slt-hts sox"


def installed_voices() -> Dict[str, set]:
    """What this machine offers: {"espeak-lang": ..., "espeak-variant": ..., "flite": ..., "festival": ...}."""
    def out(cmd: List[str]) -> str:
        return subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True).stdout

    langs = {line.split()[1] for line in out(["espeak-ng", "--voices=en"]).splitlines()[1:] if line.split()}
    variants = {line.split()[-1][3:] for line in out(["espeak-ng", "--voices=variant"]).splitlines()[1:]
                if line.split() and line.split()[-1].startswith("!v/")}
    # espeak-ng prints the file column last for variants; names with spaces ("Mr serious") are not used.
    flite = set(out(["flite", "-lv"]).split(":", 1)[-1].split()) if shutil.which("flite") else set()
    # festival voices are folders <voices>/<language>/<voice>/
    festival = {p.name for d in FESTIVAL_VOICE_DIRS if Path(d).is_dir() for p in Path(d).glob("*/*") if p.is_dir()}
    return {"espeak-lang": langs, "espeak-variant": variants, "flite": flite, "festival": festival}


def check_engines(voices: Sequence[Voice]) -> None:
    """Fail early when espeak-ng/flite/sox or a voice is missing (espeak-ng silently ignores unknown variants)."""
    needed = {"sox"} | {ENGINE_PROGRAMS[v.engine] for v in voices}
    missing = sorted(p for p in needed if shutil.which(p) is None)
    if missing:
        raise RuntimeError(f"synthesis needs {missing} on PATH (Debian: apt-get install {DEBIAN_PACKAGES})")
    have = installed_voices()
    absent = set()
    for v in voices:
        if v.engine in ("flite", "festival") and v.voice not in have[v.engine]:
            absent.add(f"{v.engine} voice {v.voice}")
        if v.engine == "espeak-ng":
            lang, variant = v.voice.split("+")
            if lang not in have["espeak-lang"]:
                absent.add(f"espeak-ng language {lang}")
            if variant not in have["espeak-variant"]:
                absent.add(f"espeak-ng variant {variant}")
    if absent:
        raise RuntimeError(f"TTS voices not installed here: {sorted(absent)}")


# ----------------------------------------------------------------------------------------------------------
# audio
# ----------------------------------------------------------------------------------------------------------
def _utt_rng(seed: int, utt_id: str) -> np.random.Generator:
    """A numpy generator that depends only on (seed, utt_id)."""
    digest = hashlib.sha256(f"qnet-synth/{seed}/{utt_id}".encode()).digest()
    return np.random.default_rng(int.from_bytes(digest[:16], "little"))


def _run(cmd: List[str], what: str, stdout=subprocess.DEVNULL) -> bytes:
    """Run a command; on failure raise with its stderr and `what` (the utterance)."""
    proc = subprocess.run(cmd, stdout=subprocess.PIPE if stdout is None else stdout, stderr=subprocess.PIPE)
    if proc.returncode != 0:
        raise RuntimeError(f"{what}: {' '.join(cmd[:3])} ... failed ({proc.returncode}): "
                           f"{proc.stderr.decode(errors='replace').strip()[:500]}")
    return proc.stdout if stdout is None else b""


def tts_waveform(job: UttJob, rng: np.random.Generator) -> np.ndarray:
    """Run the TTS engine and sox; return float32 mono samples at 16 kHz."""
    voice = job.voice
    rate = voice.rate * rng.uniform(0.94, 1.06)  # per-utterance jitter
    with tempfile.TemporaryDirectory(prefix="qnet-synth-") as tmp:
        wav = os.path.join(tmp, "tts.wav")
        effects: List[str] = []
        if voice.engine == "espeak-ng":
            pitch = int(np.clip(voice.pitch + rng.integers(-4, 5), 0, 99))
            gap = int(rng.integers(0, 3))
            _run(["espeak-ng", "-v", voice.voice, "-s", str(int(round(rate))), "-p", str(pitch), "-g", str(gap),
                  "-w", wav, job.spoken], job.utt_id)
        elif voice.engine == "flite":
            stretch = 175.0 / rate
            _run(["flite", "-voice", voice.voice, "--setf", f"duration_stretch={stretch:.3f}", "-t", job.spoken,
                  "-o", wav], job.utt_id)
        elif voice.engine == "festival":
            text = os.path.join(tmp, "text.txt")
            with open(text, "w", encoding="utf-8") as f:
                f.write(job.spoken + "\n")
            _run(["text2wave", "-eval", f"(voice_{voice.voice})", "-eval",
                  f"(Parameter.set 'Duration_Stretch {175.0 / rate:.3f})", "-o", wav, text], job.utt_id)
        else:
            raise ValueError(f"{job.utt_id}: unknown TTS engine {voice.engine!r}")
        if voice.engine != "espeak-ng":  # espeak-ng sets the pitch itself; the others get sox's pitch shift
            cents = voice.pitch + int(rng.integers(-30, 31))
            if cents != 0:
                effects = ["pitch", str(cents)]
        raw = _run(["sox", "-R", "-V1", wav, "-t", "raw", "-e", "floating-point", "-b", "32", "-c", "1",
                    "-r", str(SAMPLE_RATE), "-"] + effects, job.utt_id, stdout=None)
    samples = np.frombuffer(raw, dtype=np.float32).astype(np.float64)
    if samples.size == 0 or not np.any(samples):
        raise RuntimeError(f"{job.utt_id}: {voice.engine} produced no audio for {job.spoken!r}")
    return samples


def _noise_event(rng: np.random.Generator, level: float) -> np.ndarray:
    """A short breath-like burst (low-passed noise with a smooth envelope)."""
    n = int(rng.uniform(0.15, 0.35) * SAMPLE_RATE)
    white = rng.standard_normal(n + 16)
    smooth = np.convolve(white, np.hanning(16) / 8.0, mode="valid")[:n]
    return smooth * np.hanning(n) * level


def postprocess(samples: np.ndarray, job: UttJob, rng: np.random.Generator) -> np.ndarray:
    """Trim/pad silence, noise events, channel tilt, gain and background noise; return int16 samples."""
    peak = np.max(np.abs(samples))
    loud = np.nonzero(np.abs(samples) > 0.02 * peak)[0]
    samples = samples[loud[0]: loud[-1] + 1] / peak
    lead = np.zeros(int(rng.uniform(0.12, 0.35) * SAMPLE_RATE))
    tail = np.zeros(int(rng.uniform(0.12, 0.35) * SAMPLE_RATE))
    parts = [lead, samples, tail]
    if job.noise_start:
        parts.insert(0, _noise_event(rng, rng.uniform(0.05, 0.15)))
    if job.noise_end:
        parts.append(_noise_event(rng, rng.uniform(0.05, 0.15)))
        parts.append(np.zeros(int(0.1 * SAMPLE_RATE)))
    x = np.concatenate(parts)
    # Microphone/channel colour: a random short FIR (gentle tilt either way).
    tilt = rng.uniform(-0.5, 0.5)
    x = np.convolve(x, np.array([1.0, tilt, rng.uniform(-0.1, 0.1)]), mode="same")
    x *= rng.uniform(0.2, 0.85) / max(np.max(np.abs(x)), 1e-9)
    # Background noise: white noise through a random 8-tap low-pass, at 22..45 dB SNR.
    speech_rms = np.sqrt(np.mean(x[len(lead):len(lead) + len(samples)] ** 2) + 1e-12)
    snr_db = rng.uniform(22.0, 45.0)
    noise = np.convolve(rng.standard_normal(len(x) + 7), rng.uniform(0.2, 1.0, size=8), mode="valid")
    noise *= speech_rms / (np.sqrt(np.mean(noise ** 2)) * 10 ** (snr_db / 20))
    x = x + noise
    return np.clip(np.round(x * 32767.0), -32768, 32767).astype("<i2")


def sphere_header(num_samples: int, utt_id: str, sample_min: int, sample_max: int) -> bytes:
    """A 1024-byte NIST_1A header for 16 kHz mono 16-bit little-endian PCM."""
    fields = [
        ("database_id", "-s7", "CSR-WSJ"),
        ("database_version", "-s3", "1.0"),
        ("utterance_id", f"-s{len(utt_id)}", utt_id),
        ("channel_count", "-i", "1"),
        ("sample_count", "-i", str(num_samples)),
        ("sample_rate", "-i", str(SAMPLE_RATE)),
        ("sample_min", "-i", str(sample_min)),
        ("sample_max", "-i", str(sample_max)),
        ("sample_n_bytes", "-i", "2"),
        ("sample_byte_format", "-s2", "01"),
        ("sample_sig_bits", "-i", "16"),
        ("sample_coding", "-s3", "pcm"),
    ]
    text = f"NIST_1A\n   {SPHERE_HEADER_BYTES}\n" + "".join(f"{k} {t} {v}\n" for k, t, v in fields) + "end_head\n"
    data = text.encode("ascii")
    if len(data) > SPHERE_HEADER_BYTES:
        raise ValueError(f"{utt_id}: SPHERE header longer than {SPHERE_HEADER_BYTES} bytes")
    return data + b" " * (SPHERE_HEADER_BYTES - len(data))


def audio_complete(path: PathLike, fmt: str) -> bool:
    """True when `path` holds a complete audio file (used to resume an interrupted run)."""
    path = Path(path)
    if not path.is_file():
        return False
    try:
        if fmt == "sph":
            h = read_sphere_header(path)
            return path.stat().st_size == h.expected_size() > h.header_size
        import soundfile

        # Decode it all: a truncated FLAC still has a complete STREAMINFO header.
        with soundfile.SoundFile(str(path)) as f:
            return f.frames > 0 and len(f.read(dtype="int16")) == f.frames
    except Exception:  # unreadable or truncated: synthesize again
        return False


def encode_audio(pcm: np.ndarray, job: UttJob) -> bytes:
    """FLAC or SPHERE bytes of int16 samples."""
    if job.fmt == "sph":
        return sphere_header(len(pcm), job.utt_id, int(pcm.min()), int(pcm.max())) + pcm.tobytes()
    if job.fmt == "flac":
        import soundfile

        buf = io.BytesIO()
        soundfile.write(buf, pcm, SAMPLE_RATE, format="FLAC", subtype="PCM_16")
        return buf.getvalue()
    raise ValueError(f"{job.utt_id}: unknown audio format {job.fmt!r}")


def synthesize_one(job: UttJob) -> Tuple[str, int]:
    """Synthesize `job` to its file (atomically, replacing any old file); return (utt_id, num_samples)."""
    rng = _utt_rng(job.seed, job.utt_id)
    pcm = postprocess(tts_waveform(job, rng), job, rng)
    atomic_write_bytes(job.path, encode_audio(pcm, job))
    return job.utt_id, len(pcm)


def run_jobs(jobs: Sequence[UttJob], num_jobs: int = 2, desc: str = "synth") -> int:
    """Synthesize all jobs with `num_jobs` processes and a tqdm bar; return the number newly written."""
    from tqdm import tqdm

    todo = [j for j in jobs if not audio_complete(j.path, j.fmt)]
    logging.info("%s: %d utterances, %d already complete, %d to synthesize",
                 desc, len(jobs), len(jobs) - len(todo), len(todo))
    if not todo:
        return 0
    check_engines([j.voice for j in todo])
    if num_jobs <= 1:
        for job in tqdm(todo, desc=desc):
            synthesize_one(job)
        return len(todo)
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(num_jobs) as pool:
        for _ in tqdm(pool.imap_unordered(synthesize_one, todo, chunksize=4), total=len(todo), desc=desc):
            pass
    return len(todo)


def audio_num_samples(path: PathLike, fmt: str) -> int:
    """Number of samples of a finished file (SPHERE header or FLAC info)."""
    if fmt == "sph":
        return read_sphere_header(path).sample_count
    import soundfile

    return soundfile.info(str(path)).frames


# ----------------------------------------------------------------------------------------------------------
# corpus plans
# ----------------------------------------------------------------------------------------------------------
@dataclass
class SynthConfig:
    """Sizes and options of one synthesized corpus (saved next to it; a rerun must match)."""

    layout: str
    seed: int
    num_train: int
    num_dev: int
    num_test: int
    num_lm: int
    min_words: int = 6  # librispeech 6..16 words (about 2.5-5.5 s); wsj 5..13 (news words are longer)
    max_words: int = 16
    num_speakers_train: int = 0  # 0: default for the layout
    num_speakers_dev: int = 0
    num_speakers_test: int = 0
    test_group: str = ""  # VOICE_GROUPS group of the test voices ("": <layout>/test; "held-back" to check them)

    @classmethod
    def default(cls, layout: str, seed: int = 0, smoke: bool = False, **overrides) -> "SynthConfig":
        """Mini (or --smoke) sizes for `layout`, with any non-None overrides applied."""
        if layout == "librispeech":
            sizes = dict(num_train=20, num_dev=5, num_test=5, num_lm=500) if smoke else \
                dict(num_train=3000, num_dev=150, num_test=150, num_lm=30000)
        elif layout == "wsj":
            sizes = dict(num_train=20, num_dev=5, num_test=5, num_lm=500) if smoke else \
                dict(num_train=600, num_dev=100, num_test=100, num_lm=30000)
        else:
            raise ValueError(f"unknown layout {layout!r}; expected librispeech or wsj")
        if layout == "wsj":
            sizes.update(min_words=5, max_words=13)
        sizes.update({k: v for k, v in overrides.items() if v is not None})
        return cls(layout=layout, seed=seed, **sizes)

    def voice_group(self, split: str) -> str:
        """The VOICE_GROUPS group that `split`'s voices come from."""
        if split == "test" and self.test_group:
            if self.test_group not in VOICE_GROUPS or self.test_group.endswith("/train"):
                raise ValueError(f"test_group {self.test_group!r}: not a dev/test/held-back group of VOICE_GROUPS")
            return self.test_group
        return f"{self.layout}/{split}"

    def speakers(self, split: str) -> int:
        """Number of speakers (voices) of `split`, never more than its utterances."""
        n_utt = {"train": self.num_train, "dev": self.num_dev, "test": self.num_test}[split]
        given = {"train": self.num_speakers_train, "dev": self.num_speakers_dev, "test": self.num_speakers_test}
        # Many training voices (each variant about once or twice, with its own accent, rate and pitch).
        default = {"librispeech": {"train": 100, "dev": 6, "test": 6},
                   "wsj": {"train": 40, "dev": 6, "test": 6}}[self.layout][split]
        return max(1, min(given[split] or default, n_utt))


@dataclass
class CorpusPlan:
    """The full description of a corpus: audio jobs, text files, speaker table."""

    jobs: List[UttJob]
    text_files: Dict[str, str]  # relative path -> content (written after the audio)
    speakers: List[Tuple[str, str, str, Voice]]  # (split, speaker id, part/dir, voice)
    sentences: Dict[str, List[str]]  # split -> transcripts (plain uppercase words)
    lm_sentences: List[str]


def _assign(num_utts: int, speakers: Sequence) -> List[int]:
    """Speaker index for each utterance: as even as possible, in blocks (a speaker's utterances together)."""
    n = len(speakers)
    return [min(i * n // max(num_utts, 1), n - 1) for i in range(num_utts)]


def plan_librispeech(out: PathLike, cfg: SynthConfig) -> CorpusPlan:
    """Plan the LibriSpeech-layout corpus under `out` (no audio is produced here)."""
    out = Path(out)
    counts = {"test": cfg.num_test, "dev": cfg.num_dev, "train": cfg.num_train}
    sentences, lm = generate_splits("narrative", cfg.seed, counts, cfg.num_lm, cfg.min_words, cfg.max_words)
    rng = random.Random(f"qnet-synth/librispeech/{cfg.seed}/speakers")
    n_spk = {s: cfg.speakers(s) for s in ("train", "dev", "test")}
    spk_ids = rng.sample(range(19, 9000), sum(n_spk.values()))
    chapter_ids = rng.sample(range(1000, 99999), 2 * sum(n_spk.values()))
    jobs: List[UttJob] = []
    text_files: Dict[str, str] = {}
    speakers = []
    for split in ("train", "dev", "test"):
        part = LIBRI_PARTS[split]
        voices = make_speakers(cfg.voice_group(split), n_spk[split], rng)
        ids = [spk_ids.pop(0) for _ in voices]
        chapters = [(chapter_ids.pop(0), chapter_ids.pop(0)) for _ in voices]
        assign = _assign(counts[split], voices)
        per_chapter: Dict[Tuple[int, int], List[Tuple[str, str]]] = defaultdict(list)
        spk_count: Dict[int, int] = defaultdict(int)
        spk_total = defaultdict(int)
        for k in assign:
            spk_total[k] += 1
        for text, k in zip(sentences[split], assign):
            # First half of a speaker's utterances in one chapter, the rest in a second one.
            chapter = chapters[k][0] if spk_count[k] < (spk_total[k] + 1) // 2 else chapters[k][1]
            key = (ids[k], chapter)
            utt_id = f"{ids[k]}-{chapter}-{len(per_chapter[key]):04d}"
            per_chapter[key].append((utt_id, text))
            spk_count[k] += 1
            path = out / "LibriSpeech" / part / str(ids[k]) / str(chapter) / f"{utt_id}.flac"
            jobs.append(UttJob(utt_id, text.lower(), str(path), "flac", voices[k], cfg.seed))
        for (spk, chapter), utts in per_chapter.items():
            rel = f"LibriSpeech/{part}/{spk}/{chapter}/{spk}-{chapter}.trans.txt"
            text_files[rel] = "".join(f"{u} {t}\n" for u, t in utts)
        speakers += [(split, str(i), part, v) for i, v in zip(ids, voices)]
    text_files["lm/librispeech-lm-norm.txt"] = "".join(s + "\n" for s in lm)
    return CorpusPlan(jobs, text_files, speakers, sentences, lm)


_B36 = "0123456789abcdefghijklmnopqrstuvwxyz"


def wsj_markup(text: str, rng: random.Random) -> Tuple[str, str, bool, bool]:
    """WSJ .dot prompt text with occasional markup; returns (dot_text, spoken_text, noise_start, noise_end).

    Markup (as in the real transcripts; local/normalize_transcript.pl undoes it): `[noise]` events at the
    start/end (the audio gets a breath-like burst there), `<WORD>` verbal deletions (still spoken), `.` pauses,
    and `\\'` escaped apostrophes.
    """
    words = text.split()
    dot: List[str] = []
    spoken: List[str] = []
    for i, w in enumerate(words):
        spoken.append(w.lower())
        if "'" in w and rng.random() < 0.5:
            w = w.replace("'", "\\'")
        if rng.random() < 0.008:
            w = f"<{w}>"
        dot.append(w)
        if 0 < i < len(words) - 1 and rng.random() < 0.006:
            dot.append(".")
            spoken[-1] += ","
    noise_start = rng.random() < 0.06
    noise_end = rng.random() < 0.04
    if noise_start:
        dot.insert(0, f"[{rng.choice(WSJ_NOISES)}]")
    if noise_end:
        dot.append(f"[{rng.choice(WSJ_NOISES)}]")
    return " ".join(dot), " ".join(spoken), noise_start, noise_end


def _wsj_speaker_codes(prefixes: Sequence[str], n: int, avoid: Sequence[str] = ("401",)) -> List[str]:
    """n 3-character speaker codes: each prefix followed by 0-9a-z (skipping `avoid`)."""
    codes = [p + c for p in prefixes for c in _B36 if p + c not in avoid]
    if n > len(codes):
        raise ValueError(f"need {n} WSJ speaker codes, only {len(codes)} available for prefixes {prefixes}")
    return codes[:n]


def plan_wsj(out: PathLike, cfg: SynthConfig) -> CorpusPlan:
    """Plan the WSJ-LDC-layout corpus under `out` (LDC93S6B/ and LDC94S13B/ disc directories)."""
    out = Path(out)
    counts = {"test": cfg.num_test, "dev": cfg.num_dev, "train": cfg.num_train}
    sentences, lm = generate_splits("news", cfg.seed, counts, cfg.num_lm, cfg.min_words, cfg.max_words)
    rng = random.Random(f"qnet-synth/wsj/{cfg.seed}/speakers")
    n_train_spk = max(2, cfg.speakers("train")) if cfg.num_train >= 2 else 1
    train_voices = make_speakers("wsj/train", n_train_spk, rng)
    # si84 (WSJ0) gets the first half of the training voices and utterances, si200 (WSJ1) the rest.
    n84_spk = max(1, n_train_spk // 2)
    n84_utt = cfg.num_train // 2 if n_train_spk > 1 else cfg.num_train
    sets = [
        # name, voices, sentences, speaker-code prefixes, audio disc(s), audio dir, dot location, index
        ("si84", train_voices[:n84_spk], sentences["train"][:n84_utt], ("01", "02", "00"),
         ("11-1.1", "11-2.1", "11-3.1"), "wsj0/si_tr_s", "11-10.1/wsj0/transcrp/dots/si_tr_s", "train"),
        ("si200", train_voices[n84_spk:], sentences["train"][n84_utt:], ("46", "47", "48"),
         ("13-1.1", "13-2.1", "13-3.1"), "wsj1/si_tr_s", "13-34.1/wsj1/trans/wsj1/si_tr_s", "train"),
        ("dev93", make_speakers("wsj/dev", cfg.speakers("dev"), rng), sentences["dev"], ("4k",),
         ("13-16.1",), "wsj1/si_dt_20", "13-34.1/wsj1/trans/wsj1/si_dt_20", "dev"),
        ("eval92", make_speakers(cfg.voice_group("test"), cfg.speakers("test"), rng), sentences["test"], ("44",),
         ("11-14.1",), "wsj0/si_et_20", None, "test"),
    ]
    jobs: List[UttJob] = []
    text_files: Dict[str, str] = {}
    speakers = []
    ndx_lines: Dict[str, List[str]] = defaultdict(list)
    markup_rng = random.Random(f"qnet-synth/wsj/{cfg.seed}/markup")
    for name, voices, texts, prefixes, discs, audio_dir, dot_dir, split in sets:
        if not texts:
            continue
        voices = voices[: len(texts)]
        codes = _wsj_speaker_codes(prefixes, len(voices))
        assign = _assign(len(texts), voices)
        dots: Dict[str, List[str]] = defaultdict(list)
        per_spk: Dict[int, int] = defaultdict(int)
        for text, k in zip(texts, assign):
            idx = per_spk[k]
            per_spk[k] += 1
            session = f"{2 + idx // 35:02d}"  # 35 utterances (01..0z) per session
            utt_id = f"{codes[k]}c{session}0{_B36[1 + idx % 35]}"  # e.g. 01ic0201 (3-char speaker + 5)
            disc = discs[k % len(discs)]
            group = "LDC93S6B" if disc.startswith("11-") else "LDC94S13B"
            rel_audio = f"{audio_dir}/{codes[k]}/{utt_id}.wv1"
            dot_text, spoken, n_start, n_end = wsj_markup(text, markup_rng)
            jobs.append(UttJob(utt_id, spoken, str(out / group / disc / rel_audio), "sph", voices[k], cfg.seed,
                               n_start, n_end))
            dot_rel = (f"LDC94S13B/{dot_dir}" if dot_dir and dot_dir.startswith("13-") else
                       f"LDC93S6B/{dot_dir}" if dot_dir else f"LDC93S6B/{disc}/{audio_dir}")
            dots[f"{dot_rel}/{codes[k]}/{utt_id[:6]}00.dot"].append(f"{dot_text} ({utt_id})\n")
            disc_id = disc.replace("-", "_").replace(".", "_")
            # The real si_et_20.ndx lists paths without the .wv1 extension (Kaldi appends it).
            ndx_lines[name].append(f"{disc_id}:{rel_audio[:-4] if name == 'eval92' else rel_audio}")
        for rel, lines in dots.items():
            text_files[rel] = "".join(lines)
        speakers += [(split, c, name, v) for c, v in zip(codes, voices)]
    header = (";\n; qnet synthetic WSJ-layout corpus (espeak-ng/flite TTS, seed {seed}), index {name}\n"
              "; format: disc_id:path (as in the LDC CSR-I/CSR-II index files)\n;\n")
    index_paths = {
        "si84": "LDC93S6B/11-13.1/wsj0/doc/indices/train/tr_s_wv1.ndx",
        "si200": "LDC94S13B/13-34.1/wsj1/doc/indices/si_tr_s.ndx",
        "dev93": "LDC94S13B/13-34.1/wsj1/doc/indices/h1_p0.ndx",
        "eval92": "LDC93S6B/11-13.1/wsj0/doc/indices/test/nvp/si_et_20.ndx",
    }
    for name, rel in index_paths.items():
        text_files[rel] = header.format(seed=cfg.seed, name=name) + "".join(l + "\n" for l in ndx_lines[name])
    lm_dir = "LDC94S13B/13-32.1/wsj1/doc/lng_modl/lm_train/np_data"
    for year, chunk in zip(("87", "88", "89"), np.array_split(np.arange(len(lm)), 3)):
        lines = []
        for j, i in enumerate(chunk):
            if j % 20 == 0:  # article headers as in the real files; recipes drop lines starting with '<'
                lines.append(f"<art.{year}0101-{j // 20:04d}>\n")
            lines.append(lm[i] + "\n")
        text_files[f"{lm_dir}/{year}/{year}_001.z"] = "".join(lines)
    return CorpusPlan(jobs, text_files, speakers, sentences, lm)


def compress_z(text: str) -> bytes:
    """Bytes of a `.z` file: Unix `compress` output when the tool exists, else gzip (mtime 0, deterministic).

    `gzip -dc` / `zcat` read both formats.
    """
    data = text.encode("utf-8")
    if shutil.which("compress"):
        return subprocess.run(["compress", "-c"], input=data, stdout=subprocess.PIPE, check=True).stdout
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", fileobj=buf, mode="wb", mtime=0) as f:
        f.write(data)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# driver
# ----------------------------------------------------------------------------------------------------------
def plan_corpus(out: PathLike, cfg: SynthConfig) -> CorpusPlan:
    """The plan for cfg.layout."""
    return plan_librispeech(out, cfg) if cfg.layout == "librispeech" else plan_wsj(out, cfg)


def write_voice_report(out: Path, plan: CorpusPlan, cfg: SynthConfig) -> Dict[str, List[str]]:
    """Write `<out>/synth_voices.txt` (split, speaker, set, voice, minutes) and, for LibriSpeech, SPEAKERS.TXT."""
    minutes: Dict[str, float] = defaultdict(float)
    for job in plan.jobs:
        spk = job.utt_id.split("-")[0] if cfg.layout == "librispeech" else job.utt_id[:3]
        minutes[spk] += audio_num_samples(job.path, job.fmt) / SAMPLE_RATE / 60.0
    lines = ["# split speaker set gender voice minutes\n"]
    for split, spk, where, v in plan.speakers:
        lines.append(f"{split} {spk} {where} {v.gender} {v.engine}:{v.voice}:rate={v.rate:.0f}:pitch={v.pitch} "
                     f"{minutes[spk]:.2f}\n")
    atomic_write_text(out / "synth_voices.txt", "".join(lines))
    if cfg.layout == "librispeech":
        rows = [";ID  |SEX| SUBSET           |MINUTES| NAME\n"]
        for split, spk, part, v in sorted(plan.speakers, key=lambda s: int(s[1])):
            rows.append(f"{spk:<5}| {v.gender} | {part:<17}| {minutes[spk]:5.2f} | {v.name}\n")
        atomic_write_text(out / "LibriSpeech" / "SPEAKERS.TXT", "".join(rows))
    by_split: Dict[str, List[str]] = defaultdict(list)
    for split, _, _, v in plan.speakers:
        by_split[split].append(v.identity)
    return by_split


def synthesize_corpus(out: PathLike, cfg: SynthConfig, num_jobs: int = 2) -> CorpusPlan:
    """Plan, synthesize (resuming) and write all text files of one corpus under `out`."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg_path = out / f".synth_{cfg.layout}.json"
    cfg_json = json.dumps(dataclasses.asdict(cfg), sort_keys=True, indent=1) + "\n"
    if cfg_path.exists() and cfg_path.read_text() != cfg_json:
        raise RuntimeError(f"{out} already holds a {cfg.layout} corpus synthesized with other settings "
                           f"({cfg_path}); use another --out or delete it")
    atomic_write_text(cfg_path, cfg_json)
    plan = plan_corpus(out, cfg)
    for split in ("train", "dev", "test"):
        logging.info("%s %s: %d utterances, voices %s", cfg.layout, split, len(plan.sentences[split]),
                     sorted({v.identity for s, _, _, v in plan.speakers if s == split}))
    run_jobs(plan.jobs, num_jobs, desc=f"synth {cfg.layout}")
    for rel, content in sorted(plan.text_files.items()):
        path = out / rel
        if rel.endswith(".z"):
            atomic_write_bytes(path, compress_z(content))
        else:
            atomic_write_text(path, content)
    write_voice_report(out, plan, cfg)
    total = sum(audio_num_samples(j.path, j.fmt) for j in plan.jobs) / SAMPLE_RATE
    logging.info("%s corpus in %s: %d utterances, %.1f minutes of audio, %d LM sentences",
                 cfg.layout, out, len(plan.jobs), total / 60, len(plan.lm_sentences))
    return plan
