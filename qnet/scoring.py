"""Kaldi/icefall-style scoring: WER (and CER) with kaldialign, recogs-/errs-/wer-summary- files.

Files written into a decode dir for test set S and result key K (a method, or method + LM scale):
  recogs-S-K.txt     `utt:\tref=[...]` and `utt:\thyp=[...]` lines
  errs-S-K.txt       `%WER x.xx [ e / n, i ins, d del, s sub ]`, `%SER`, per-utterance details,
                     SUBSTITUTIONS / DELETIONS / INSERTIONS and PER-WORD STATS sections
  wer-summary-S.txt  `settings<TAB>WER`, best first
  cer-errs-S-K.txt, cer-summary-S.txt   the same on characters (spaces removed), when asked
Reference words the lexicon does not know (OOV) can never be recognized and count as errors as usual.
"""

import logging
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, Iterable, List, Sequence, Tuple

from qnet.utils import PathLike, atomic_write_text

ERR = "*"
Result = Tuple[str, List[str], List[str]]  # (utterance id, reference words, hypothesis words)


@dataclass
class ErrorCounts:
    """Totals over a test set."""

    ins: int = 0
    dels: int = 0
    subs: int = 0
    ref_words: int = 0
    sentences: int = 0
    sentence_errors: int = 0

    @property
    def errors(self) -> int:
        return self.ins + self.dels + self.subs

    @property
    def rate(self) -> float:
        """Error rate in percent (100 * errors / reference words; errors count if there are no words)."""
        return 100.0 * self.errors / max(self.ref_words, 1)

    def kaldi_line(self, name: str = "WER") -> str:
        """`%WER 12.34 [ 12 / 100, 1 ins, 2 del, 9 sub ]` as Kaldi's compute-wer prints it."""
        return (f"%{name} {self.rate:.2f} [ {self.errors} / {self.ref_words}, {self.ins} ins, "
                f"{self.dels} del, {self.subs} sub ]")


def align(ref: Sequence[str], hyp: Sequence[str]) -> List[Tuple[str, str]]:
    """Levenshtein alignment pairs (ref, hyp), `*` marking insertions and deletions (kaldialign)."""
    import kaldialign

    return kaldialign.align(list(ref), list(hyp), ERR)


def to_chars(words: Sequence[str]) -> List[str]:
    """Characters of a word sequence without the spaces (for CER)."""
    return list("".join(words))


def error_stats(results: Iterable[Result]) -> Tuple[ErrorCounts, List[Tuple[str, List[Tuple[str, str]]]]]:
    """Totals and per-utterance alignments of `results`."""
    counts = ErrorCounts()
    alignments = []
    for utt, ref, hyp in results:
        ali = align(ref, hyp)
        errs = 0
        for r, h in ali:
            if r == ERR:
                counts.ins += 1
            elif h == ERR:
                counts.dels += 1
            elif r != h:
                counts.subs += 1
            else:
                continue
            errs += 1
        counts.ref_words += len(ref)
        counts.sentences += 1
        counts.sentence_errors += errs > 0
        alignments.append((utt, ali))
    return counts, alignments


def word_errors(ref: str, hyp: str) -> int:
    """Word errors (substitutions + deletions + insertions) of one hypothesis, as counted in the errs files."""
    counts, _ = error_stats([("", ref.split(), hyp.split())])
    return counts.errors


def write_error_stats(path: PathLike, name: str, results: Sequence[Result], unit: str = "WER") -> ErrorCounts:
    """Write an errs- file (summary, per-utterance details, error sections, per-word stats) and log the
    Kaldi summary line; returns the totals."""
    counts, alignments = error_stats(results)
    subs: Counter = Counter()
    ins: Counter = Counter()
    dels: Counter = Counter()
    words: Dict[str, List[int]] = defaultdict(lambda: [0, 0, 0])  # correct, errors as ref, errors as hyp
    lines = [
        counts.kaldi_line(unit),
        f"%SER {100.0 * counts.sentence_errors / max(counts.sentences, 1):.2f} "
        f"[ {counts.sentence_errors} / {counts.sentences} ]",
        f"Scored {counts.sentences} sentences.",
        "",
        "PER-UTT DETAILS: corr or (ref->hyp)",
    ]
    for utt, ali in alignments:
        pieces: List[str] = []
        run_ref: List[str] = []
        run_hyp: List[str] = []
        for r, h in ali + [(None, None)]:
            if r is not None and r != h:
                run_ref.append(r)
                run_hyp.append(h)
                continue
            if run_ref:  # successive errors are merged into one (ref->hyp) group
                pieces.append(f"({' '.join(run_ref)}->{' '.join(run_hyp)})")
                run_ref, run_hyp = [], []
            if r is not None:
                pieces.append(r)
        lines.append(f"{utt}:\t{' '.join(pieces)}")
        for r, h in ali:
            if r == ERR:
                ins[h] += 1
                words[h][2] += 1
            elif h == ERR:
                dels[r] += 1
                words[r][1] += 1
            elif r == h:
                words[r][0] += 1
            else:
                subs[(r, h)] += 1
                words[r][1] += 1
                words[h][2] += 1
    lines += ["", "SUBSTITUTIONS: count ref -> hyp"]
    lines += [f"{c}   {r} -> {h}" for (r, h), c in sorted(subs.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "DELETIONS: count ref"]
    lines += [f"{c}   {w}" for w, c in sorted(dels.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "INSERTIONS: count hyp"]
    lines += [f"{c}   {w}" for w, c in sorted(ins.items(), key=lambda kv: (-kv[1], kv[0]))]
    lines += ["", "PER-WORD STATS: word  corr tot_errs count_in_ref count_in_hyp"]
    stats = sorted(words.items(), key=lambda kv: (-(kv[1][1] + kv[1][2]), kv[0]))
    lines += [f"{w}   {c} {re + he} {c + re} {c + he}" for w, (c, re, he) in stats]
    atomic_write_text(path, "\n".join(lines) + "\n")
    logging.info(f"[{name}] {counts.kaldi_line(unit)}")
    return counts


def store_transcripts(path: PathLike, results: Sequence[Result]) -> None:
    """recogs- file: `utt:\\tref=[...]` then `utt:\\thyp=[...]` per utterance, sorted by id."""
    lines = []
    for utt, ref, hyp in sorted(results, key=lambda r: r[0]):
        lines.append(f"{utt}:\tref={ref}")
        lines.append(f"{utt}:\thyp={hyp}")
    atomic_write_text(path, "\n".join(lines) + "\n")


def read_text(path: PathLike) -> Dict[str, str]:
    """Kaldi `text` file: `utt-id word word ...` per line (an utterance may have no words)."""
    path = Path(path)
    out: Dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if parts[0] in out:
            raise ValueError(f"{path}:{lineno}: utterance {parts[0]!r} appears twice")
        out[parts[0]] = parts[1].strip() if len(parts) > 1 else ""
    return out


def write_text(path: PathLike, texts: Dict[str, str]) -> None:
    """Kaldi `text` file, sorted by utterance id."""
    atomic_write_text(path, "".join(f"{u} {t}".rstrip() + "\n" for u, t in sorted(texts.items())))


def pair_results(refs: Dict[str, str], hyps: Dict[str, str], what: str = "") -> List[Result]:
    """(utt, ref words, hyp words) for every reference; a missing hypothesis counts as empty (logged)."""
    missing = [u for u in refs if u not in hyps]
    if missing:
        logging.warning(f"{what}: {len(missing)} of {len(refs)} utterances have no hypothesis "
                        f"(e.g. {missing[:3]}); scored as empty")
    extra = [u for u in hyps if u not in refs]
    if extra:
        logging.warning(f"{what}: {len(extra)} hypotheses have no reference (e.g. {extra[:3]}); ignored")
    return [(u, refs[u].split(), hyps.get(u, "").split()) for u in sorted(refs)]


def write_summary(path: PathLike, rates: Dict[str, float], unit: str = "WER") -> List[Tuple[str, float]]:
    """`settings<TAB>WER` table sorted by error rate (best first)."""
    table = sorted(rates.items(), key=lambda kv: (kv[1], kv[0]))
    atomic_write_text(path, f"settings\t{unit}\n" + "".join(f"{k}\t{v:.2f}\n" for k, v in table))
    return table


def score_set(
    out_dir: PathLike,
    test_set: str,
    results_by_key: Dict[str, Sequence[Result]],
    compute_cer: bool = False,
) -> Dict[str, float]:
    """Write recogs-/errs-/wer-summary- (and cer-) files for every key; returns {key: WER}."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    wers: Dict[str, float] = {}
    cers: Dict[str, float] = {}
    for key, results in results_by_key.items():
        store_transcripts(out_dir / f"recogs-{test_set}-{key}.txt", results)
        wers[key] = write_error_stats(out_dir / f"errs-{test_set}-{key}.txt", f"{test_set}-{key}", results).rate
        if compute_cer:
            char_results = [(u, to_chars(r), to_chars(h)) for u, r, h in results]
            cers[key] = write_error_stats(out_dir / f"cer-errs-{test_set}-{key}.txt", f"{test_set}-{key}",
                                          char_results, unit="CER").rate
    table = write_summary(out_dir / f"wer-summary-{test_set}.txt", wers)
    msg = "\n".join(f"{k}\t{v:.2f}" + ("\tbest for " + test_set if i == 0 else "") for i, (k, v) in enumerate(table))
    logging.info(f"For {test_set}, WER of different settings are:\n{msg}")
    if compute_cer:
        table = write_summary(out_dir / f"cer-summary-{test_set}.txt", cers, unit="CER")
        logging.info(f"For {test_set}, CER of different settings are:\n"
                     + "\n".join(f"{k}\t{v:.2f}" for k, v in table))
    return wers


def score_dir(decode_dir: PathLike, test_set: str, compute_cer: bool = False) -> Dict[str, float]:
    """Score every `hyp-<set>-<key>.txt` in a decode dir against `ref-<set>.txt` (Kaldi text files)."""
    decode_dir = Path(decode_dir)
    ref_file = decode_dir / f"ref-{test_set}.txt"
    if not ref_file.is_file():
        raise FileNotFoundError(f"{ref_file} is missing (written by qnet.bin.decode)")
    refs = read_text(ref_file)
    prefix = f"hyp-{test_set}-"
    hyp_files = sorted(decode_dir.glob(f"{prefix}*.txt"))
    if not hyp_files:
        raise FileNotFoundError(f"no {prefix}*.txt files in {decode_dir}")
    results = {}
    for f in hyp_files:
        key = f.name[len(prefix):-len(".txt")]
        results[key] = pair_results(refs, read_text(f), f"{test_set}-{key}")
    return score_set(decode_dir, test_set, results, compute_cer)
