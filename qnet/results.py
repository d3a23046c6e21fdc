"""Collect `wer-summary-<set>.txt` files into a RESULTS.md table next to published QuartzNet numbers.

A *system* is a name and an experiment folder (e.g. `15x5=exp/quartznet_15x5`); every
`wer-summary-<set>.txt` below it (written by qnet.scoring) contributes the WER of each result key on
that set. A key is a decoding method (`greedy`, `ctc-decoding`, `1best`) or a method plus a setting
(`whole-lattice-rescoring_lm_scale_0.7`). One row per (system, method): for methods with settings,
the setting is chosen on a tuning set (`--tune test-clean=dev-clean`: the LM scale best on dev-clean
is the one reported for test-clean), or, without a tuning set, the best setting of that very set,
which is then marked as such (an optimistic "oracle" number, as icefall's `best for <set>`).

With `voices` (a synthetic corpus's `synth_voices.txt`), RESULTS.md also gets a per-voice table: the WER
of each speaker (TTS voice) of a test set, for the greedy and HLG 1best results of every system that
decoded it. With `stage_times` (lines `<stage> <seconds> <what>`), it lists each stage's wall time.

Published numbers come from /work/shared/reference/quartznet.md §7.1 (verified, with their source);
the unverified paper tables (§7.2) are deliberately left out and say so.
"""

import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from qnet.utils import PathLike

SUMMARY_PREFIX = "wer-summary-"
CER_SUMMARY_PREFIX = "cer-summary-"
CER_SUFFIX = "-cer"
SETTING_SEP = "_lm_scale_"
METHOD_ORDER = ["greedy", "ctc-decoding", "1best", "nbest", "nbest-rescoring", "whole-lattice-rescoring"]


@dataclass(frozen=True)
class PublishedRow:
    """One published result: label, WER per set, decoding, and where it was read."""

    label: str
    wer: Dict[str, float]
    decoding: str
    source: str


# Verified numbers only (reference quartznet.md §7.1). Sets use LibriSpeech part names.
PUBLISHED = {
    "librispeech": [
        PublishedRow("QuartzNet 15x5, paper (LibriSpeech)", {"dev-other": 11.58}, "greedy",
                     "paper, as quoted in NVIDIA/NeMo#217"),
        PublishedRow("QuartzNet 15x5, paper", {"test-clean": 2.6}, "Transformer-XL rescoring (approx.)",
                     "NVIDIA developer blog ('2.6% WER ... using Transformer-XL rescoring')"),
        PublishedRow("QuartzNet15x5 NGC (NeMo 0.9), LS +-10% SP + MCV-En", {"test-clean": 4.19, "test-other": 10.98},
                     "greedy", "NGC model card quartznet15x5"),
        PublishedRow("stt_en_quartznet15x5 (NeMo)", {"dev-clean": 4.38, "dev-other": 11.3}, "greedy",
                     "NeMo docs scores quartznet15x5_en.csv"),
        PublishedRow("QuartzNet 10x5 (NVIDIA DeepLearningExamples, LS)",
                     {"dev-clean": 3.47, "dev-other": 10.84, "test-clean": 3.69, "test-other": 10.69},
                     "greedy (EMA weights)", "DeepLearningExamples QuartzNet README"),
        PublishedRow("QuartzNet5x5LS-En (NeMo 1.0, LibriSpeech only)", {"dev-clean": 5.37, "dev-other": 15.69},
                     "greedy", "NeMo v1.0.0b2 ctc_models.py"),
    ],
    # The paper's WSJ table could not be read (quartznet.md §7.2); other systems give the magnitude.
    "wsj": [
        PublishedRow("Kaldi chain TDNN (not QuartzNet)", {"test_dev93": 4.31, "test_eval92": 2.27},
                     "bd_fg 4-gram", "kaldi egs/wsj/s5 local/chain2/tuning/run_tdnn_1i.sh"),
        PublishedRow("ESPnet Transformer + char LM (not QuartzNet)", {"test_dev93": 6.6, "test_eval92": 4.6},
                     "char LM", "espnet egs2/wsj/asr1 README"),
    ],
    # CMU's AN4 test set (130 utterances, 773 words). ESPnet's train_dev (100 utterances of CMU's train
    # list) is not our dev set (8 train speakers), so its dev numbers are left out.
    "an4": [
        PublishedRow("ESPnet2 Transformer (joint CTC/attention), BPE 30, speed perturbation", {"test": 7.4},
                     "beam 10, CTC weight 0.3, LM weight 0.1",
                     "espnet egs2/an4/asr1 README.md, asr_train_asr_transformer_raw_en_bpe30_sp (2021-12-25)"),
        PublishedRow("ESPnet2 Transformer (joint CTC/attention), BPE 30, speed perturbation", {"test": 7.6},
                     "beam 10, CTC weight 0.3, no LM",
                     "espnet egs2/an4/asr1 README.md, asr_train_asr_transformer_raw_en_bpe30_sp (2021-12-25)"),
    ],
}
PUBLISHED_NOTE = {
    "librispeech": "Published numbers: only those verified in a second source (reference quartznet.md §7.1); "
                   "the paper's full LibriSpeech table could not be read and is not reproduced.",
    "wsj": "The paper's WSJ numbers (5x3 from scratch; 15x5 pretrained on LibriSpeech + Common Voice, "
           "fine-tuned) could not be verified (reference quartznet.md §7.2) and are not shown; the rows "
           "below are other systems, for the expected magnitude only.",
    "an4": "AN4 test set, trained on AN4 alone. ESPnet2's transformer (CTC/attention, BPE 30) also reports "
           "3.6% CER on test with and without LM. ESPnet1's egs/an4/asr1/RESULTS reports character error "
           "rates only (test: 12.6% CTC-only, mtlalpha 1.0; 15.3% CTC/attention, mtlalpha 0.5). NVIDIA NeMo's "
           "AN4 tutorial (tutorials/asr/ASR_with_NeMo.ipynb: Jasper 4x1, 50 epochs; fine-tuning QuartzNet "
           "15x5 for 2 epochs) prints its WER but publishes no figure, so no NeMo row is shown.",
}


@dataclass
class Cell:
    """A reported WER: value, the setting it was taken at, and how that setting was chosen."""

    wer: float
    setting: Optional[str] = None
    tuned_on: Optional[str] = None  # None: no setting; "self": best on this very set (oracle)


@dataclass
class System:
    """A named experiment folder and its scores: {set: {result key: WER}}, with the files read."""

    name: str
    exp_dir: Path
    scores: Dict[str, Dict[str, float]] = field(default_factory=dict)
    files: List[Path] = field(default_factory=list)


def read_wer_summary(path: PathLike) -> Dict[str, float]:
    """Parse a `settings<TAB>WER` table (header optional); errors name the file and line."""
    path = Path(path)
    scores: Dict[str, float] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split()
        if not parts:
            continue
        if lineno == 1 and parts[0] == "settings":
            continue
        if len(parts) != 2:
            raise ValueError(f"{path}:{lineno}: expected 'KEY WER', got {line!r}")
        try:
            value = float(parts[1])
        except ValueError:
            raise ValueError(f"{path}:{lineno}: WER {parts[1]!r} is not a number") from None
        if not math.isfinite(value) or value < 0:
            raise ValueError(f"{path}:{lineno}: WER {value} is not a valid rate")
        scores[parts[0]] = value
    if not scores:
        raise ValueError(f"{path}: no scores in the file")
    return scores


def cer_key(key: str) -> str:
    """The result key of a character error rate: `greedy` -> `greedy-cer`, setting kept at the end."""
    method, setting = split_key(key)
    return result_key(f"{method}{CER_SUFFIX}", setting)


def collect_system(name: str, exp_dir: PathLike, cer: bool = False) -> System:
    """Read every wer-summary file under `exp_dir` (with `cer`, also every cer-summary file, as
    methods `<method>-cer`); a set scored twice with one key is an error."""
    exp_dir = Path(exp_dir)
    if not exp_dir.is_dir():
        raise FileNotFoundError(f"system {name}: experiment folder {exp_dir} does not exist")
    system = System(name, exp_dir)
    seen: Dict[Tuple[str, str], Path] = {}
    paths = [(p, SUMMARY_PREFIX, str) for p in sorted(exp_dir.rglob(f"{SUMMARY_PREFIX}*.txt"))]
    if cer:
        paths += [(p, CER_SUMMARY_PREFIX, cer_key) for p in sorted(exp_dir.rglob(f"{CER_SUMMARY_PREFIX}*.txt"))]
    for path, prefix, rename in paths:
        test_set = path.name[len(prefix):-len(".txt")]
        for key, wer in ((rename(k), v) for k, v in read_wer_summary(path).items()):
            if (test_set, key) in seen:
                raise ValueError(f"system {name}: {test_set}/{key} is scored in both {seen[test_set, key]} "
                                 f"and {path}; point the system at one of them")
            seen[test_set, key] = path
            system.scores.setdefault(test_set, {})[key] = wer
        system.files.append(path)
    if not system.files:
        raise FileNotFoundError(f"system {name}: no {SUMMARY_PREFIX}*.txt under {exp_dir} (decoded yet?)")
    return system


def split_key(key: str) -> Tuple[str, Optional[str]]:
    """`whole-lattice-rescoring_lm_scale_0.7` -> (`whole-lattice-rescoring`, `lm_scale_0.7`)."""
    if SETTING_SEP in key:
        method, value = key.split(SETTING_SEP, 1)
        return method, f"lm_scale_{value}"
    return key, None


def result_key(method: str, setting: Optional[str]) -> str:
    """`(1best, lm_scale_0.5_wip_-1)` -> `1best_lm_scale_0.5_wip_-1` (the inverse of split_key)."""
    return method if setting is None else f"{method}{SETTING_SEP}{setting[len('lm_scale_'):]}"


def methods_of(system: System) -> List[str]:
    """Methods scored anywhere in `system`, in the usual order (unknown ones last, sorted)."""
    found = {split_key(k)[0] for per_set in system.scores.values() for k in per_set}
    known = [m for m in METHOD_ORDER if m in found]
    return known + sorted(found - set(known))


def _settings(scores: Dict[str, float], method: str) -> Dict[Optional[str], float]:
    return {split_key(k)[1]: v for k, v in scores.items() if split_key(k)[0] == method}


def report_cell(system: System, method: str, test_set: str, tune: Dict[str, str]) -> Optional[Cell]:
    """The WER of `method` on `test_set`, its setting chosen on `tune[test_set]` when that set was scored."""
    own = _settings(system.scores.get(test_set, {}), method)
    if not own:
        return None
    if list(own) == [None]:
        return Cell(own[None])
    dev = tune.get(test_set)
    if dev and dev != test_set:
        dev_scores = _settings(system.scores.get(dev, {}), method)
        usable = {s: v for s, v in dev_scores.items() if s in own}
        if usable:
            best = min(usable, key=lambda s: (usable[s], s or ""))
            return Cell(own[best], best, dev)
    best = min(own, key=lambda s: (own[s], s or ""))
    return Cell(own[best], best, "self")


def ordered_sets(systems: Sequence[System], sets: Optional[Sequence[str]] = None) -> List[str]:
    """Columns: `sets` when given, else every scored set (dev sets first, then alphabetical)."""
    if sets:
        return list(sets)
    found = {s for sys_ in systems for s in sys_.scores}
    return sorted(found, key=lambda s: (0 if "dev" in s else 1, s))


@dataclass
class Check:
    """A target such as `ls:greedy:test-clean <= 10` or `ls:1best:test-clean <= 0.7 * ls:greedy:test-clean`."""

    label: str
    lhs: Tuple[str, str, str]
    bound: float
    rhs: Optional[Tuple[str, str, str]] = None

    _REF = r"([^:\s]+):([^:\s]+):([^:\s]+)"
    _PATTERN = re.compile(rf"^\s*{_REF}\s*<=\s*([0-9.]+)\s*(?:\*\s*{_REF})?\s*$")

    @classmethod
    def parse(cls, spec: str) -> "Check":
        """`LABEL: SYSTEM:METHOD:SET <= NUMBER [* SYSTEM:METHOD:SET]`; errors quote the spec."""
        if ": " not in spec:
            raise ValueError(f"check {spec!r}: expected 'LABEL: SYSTEM:METHOD:SET <= NUMBER [* SYSTEM:METHOD:SET]'")
        label, expr = spec.split(": ", 1)
        m = cls._PATTERN.match(expr)
        if not m:
            raise ValueError(f"check {spec!r}: cannot parse {expr!r}; expected "
                             f"'SYSTEM:METHOD:SET <= NUMBER' or 'SYSTEM:METHOD:SET <= FACTOR * SYSTEM:METHOD:SET'")
        g = m.groups()
        rhs = (g[4], g[5], g[6]) if g[4] else None
        return cls(label.strip(), (g[0], g[1], g[2]), float(g[3]), rhs)

    def evaluate(self, cells: Dict[Tuple[str, str, str], Cell]) -> Tuple[Optional[bool], str]:
        """(passed, description); passed is None when a referenced number is missing."""
        lhs = cells.get(self.lhs)
        if lhs is None:
            return None, f"{':'.join(self.lhs)} was not scored"
        if self.rhs is None:
            return lhs.wer <= self.bound, f"{lhs.wer:.2f} (target <= {self.bound:g})"
        rhs = cells.get(self.rhs)
        if rhs is None:
            return None, f"{':'.join(self.rhs)} was not scored"
        if rhs.wer == 0:
            return lhs.wer == 0, f"{lhs.wer:.2f} vs {rhs.wer:.2f}"
        rel = 100.0 * (rhs.wer - lhs.wer) / rhs.wer
        need = 100.0 * (1.0 - self.bound)
        return lhs.wer <= self.bound * rhs.wer, (f"{lhs.wer:.2f} vs {rhs.wer:.2f}: {rel:.1f}% relative "
                                                  f"(target >= {need:.0f}%)")


PER_VOICE_METHODS = ("greedy", "1best")


def read_voices(path: PathLike) -> Dict[str, str]:
    """`synth_voices.txt` (`split speaker set gender voice minutes`) -> {speaker: voice}."""
    path = Path(path)
    voices: Dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        parts = line.split()
        if len(parts) != 6:
            raise ValueError(f"{path}:{lineno}: expected 'split speaker set gender voice minutes', got {line!r}")
        voices[parts[1]] = parts[4]
    if not voices:
        raise ValueError(f"{path}: no voices in the file")
    return voices


def speaker_of(utt_id: str, speakers: Sequence[str]) -> str:
    """The speaker of an utterance id: the listed speaker it starts with, else its `spk-...` prefix
    (LibriSpeech) or first 3 characters (a WSJ speaker code)."""
    head = utt_id.split("-", 1)[0]
    if head in speakers:
        return head
    listed = next((s for s in speakers if utt_id.startswith(s)), None)
    return listed or (head if "-" in utt_id else utt_id[:3])


def per_voice_rows(system: System, test_set: str, voices: Dict[str, str],
                   tune: Optional[Dict[str, str]] = None) -> List[Tuple[str, str, int, Dict[str, float]]]:
    """(speaker, voice, utterances, {method: WER}) per speaker of `test_set` in `system`'s decode files; a
    method with settings (1best's LM weight and word penalty) is read at the setting the table reports."""
    from qnet.scoring import error_stats, pair_results, read_text

    refs_files = sorted(system.exp_dir.rglob(f"ref-{test_set}.txt"))
    if not refs_files:
        return []
    decode_dir = refs_files[0].parent
    refs = read_text(refs_files[0])
    by_speaker: Dict[str, List[str]] = {}
    for utt in refs:
        by_speaker.setdefault(speaker_of(utt, list(voices)), []).append(utt)
    hyps_of: Dict[str, Dict[str, str]] = {}  # method -> its hypotheses at the reported setting, read once
    for method in PER_VOICE_METHODS:
        key = result_key(method, reported_setting(system, method, test_set, tune))
        hyp_file = decode_dir / f"hyp-{test_set}-{key}.txt"
        if hyp_file.is_file():
            hyps_of[method] = read_text(hyp_file)
    rows = []
    for spk in sorted(by_speaker):
        utts = by_speaker[spk]
        wers: Dict[str, float] = {}
        for method, hyps in hyps_of.items():
            results = pair_results({u: refs[u] for u in utts}, {u: hyps[u] for u in utts if u in hyps})
            wers[method] = error_stats(results)[0].rate
        rows.append((spk, voices.get(spk, "(not in the voice list)"), len(utts), wers))
    return rows


def reported_setting(system: System, method: str, test_set: str, tune: Optional[Dict[str, str]]) -> Optional[str]:
    """The setting (e.g. `lm_scale_0.5_wip_-1`) of `method` that the main table reports for `test_set`."""
    cell = report_cell(system, method, test_set, tune or {})
    return cell.setting if cell else None


def render_per_voice(systems: Sequence[System], voice_files: Dict[str, PathLike],
                     tune: Optional[Dict[str, str]] = None) -> List[str]:
    """Markdown sections: WER per speaker (TTS voice) of each test set in `voice_files`, each method at the
    setting the main table reports (named in the column header)."""
    lines: List[str] = []
    for test_set, path in voice_files.items():
        voices = read_voices(path)
        for system in systems:
            rows = per_voice_rows(system, test_set, voices, tune)
            if not rows:
                continue
            methods = [m for m in PER_VOICE_METHODS if any(m in r[3] for r in rows)]
            settings = {m: reported_setting(system, m, test_set, tune) for m in methods}
            headers = [m + (f" ({setting_label(settings[m])})" if settings[m] else "") for m in methods]
            lines += [f"## Per voice: {system.name}, {test_set}", "",
                      "| speaker | voice | utterances | " + " | ".join(headers) + " |",
                      "|---|---|---|" + "---|" * len(methods)]
            for spk, voice, n, wers in rows:
                vals = [f"{wers[m]:.2f}" if m in wers else "-" for m in methods]
                lines.append(f"| {spk} | {voice} | {n} | " + " | ".join(vals) + " |")
            lines.append("")
    return lines


def read_stage_times(path: PathLike) -> List[Tuple[str, int, str]]:
    """`<stage> <seconds> <what>` lines -> [(stage, seconds, what)]."""
    path = Path(path)
    rows = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        parts = line.split(maxsplit=2)
        if not parts:
            continue
        if len(parts) < 2 or not parts[1].isdigit():
            raise ValueError(f"{path}:{lineno}: expected '<stage> <seconds> <what>', got {line!r}")
        rows.append((parts[0], int(parts[1]), parts[2] if len(parts) > 2 else ""))
    return rows


def render_stage_times(rows: Sequence[Tuple[str, int, str]]) -> List[str]:
    """Markdown table of stage wall times and their sum."""
    lines = ["## Wall time per stage", "", "| stage | what | seconds |", "|---|---|---|"]
    lines += [f"| {st} | {what} | {sec} |" for st, sec, what in rows]
    lines += [f"| all | sum of the stages above | {sum(r[1] for r in rows)} ({sum(r[1] for r in rows) / 60:.1f} min) |", ""]
    return lines


def setting_label(setting: str) -> str:
    """`lm_scale_0.3_nnlm_scale_0.4` -> `s=0.3, nnlm=0.4`; `lm_scale_0.5_wip_-1` -> `s=0.5, wip=-1`."""
    return setting.replace("lm_scale_", "s=", 1).replace("_nnlm_scale_", ", nnlm=").replace("_wip_", ", wip=")


def _fmt(cell: Optional[Cell]) -> str:
    if cell is None:
        return "-"
    text = f"{cell.wer:.2f}"
    if cell.setting is not None:
        text += f" ({setting_label(cell.setting)}" + ("*" if cell.tuned_on == "self" else "") + ")"
    return text


def render_markdown(
    title: str,
    systems: Sequence[System],
    sets: Optional[Sequence[str]] = None,
    tune: Optional[Dict[str, str]] = None,
    published: Optional[str] = None,
    checks: Sequence[Check] = (),
    notes: Sequence[str] = (),
    voice_files: Optional[Dict[str, PathLike]] = None,
    stage_times: Sequence[Tuple[str, int, str]] = (),
) -> Tuple[str, List[Tuple[Check, Optional[bool], str]]]:
    """RESULTS.md text and the evaluated checks."""
    tune = tune or {}
    columns = ordered_sets(systems, sets)
    lines = [f"# {title}", "", "%WER per test set (lower is better). Rows are our systems, one per decoding method."]
    if tune:
        lines.append("LM scales are chosen on the dev set named in brackets: "
                     + ", ".join(f"{t} <- {d}" for t, d in tune.items()) + ".")
    lines += ["`(s=X)` is the LM scale used (for 1best: the weight on HLG's LM scores), `nnlm=` the neural LM's "
              "scale, `wip=` the word insertion penalty; `*` marks a setting picked on the test set itself "
              "(optimistic).", ""]
    lines.append("| system | method | " + " | ".join(columns) + " |")
    lines.append("|---|---|" + "---|" * len(columns))
    cells: Dict[Tuple[str, str, str], Cell] = {}
    for system in systems:
        for method in methods_of(system):
            row = []
            for col in columns:
                cell = report_cell(system, method, col, tune)
                if cell is not None:
                    cells[system.name, method, col] = cell
                row.append(_fmt(cell))
            lines.append(f"| {system.name} | {method} | " + " | ".join(row) + " |")
    lines.append("")
    if published:
        if published not in PUBLISHED:
            raise ValueError(f"unknown published table {published!r}; choose from {sorted(PUBLISHED)}")
        rows = [r for r in PUBLISHED[published] if any(c in r.wer for c in columns)]
        lines += ["## Published numbers", "", PUBLISHED_NOTE[published], ""]
        lines.append("| system | decoding | " + " | ".join(columns) + " | source |")
        lines.append("|---|---|" + "---|" * len(columns) + "---|")
        for r in rows:
            vals = [f"{r.wer[c]:.2f}" if c in r.wer else "-" for c in columns]
            lines.append(f"| {r.label} | {r.decoding} | " + " | ".join(vals) + f" | {r.source} |")
        lines.append("")
    evaluated = []
    if checks:
        lines += ["## Targets", "", "| target | result | status |", "|---|---|---|"]
        for check in checks:
            ok, desc = check.evaluate(cells)
            status = "MISSING" if ok is None else ("PASS" if ok else "FAIL")
            evaluated.append((check, ok, desc))
            lines.append(f"| {check.label} | {desc} | {status} |")
        lines.append("")
    if voice_files:
        lines += render_per_voice(systems, voice_files, tune)
    if stage_times:
        lines += render_stage_times(stage_times)
    lines += ["## Sources", ""]
    for system in systems:
        lines.append(f"- {system.name}: " + ", ".join(str(f) for f in system.files))
    lines += [f"- {n}" for n in notes]
    return "\n".join(lines) + "\n", evaluated
