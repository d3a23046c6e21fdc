"""Word n-gram LMs: ARPA with kenlm's lmplz (or a ready ARPA), G.fst.txt with kaldilm, cached G.pt.

Training text and ready ARPAs go through the same normalizer as transcripts (`qnet.tokens.normalize_text`),
so an upper-case LibriSpeech/WSJ ARPA matches the lower-case words of a qnet lang dir.
"""

import gzip
import logging
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from qnet.tokens import normalize_text
from qnet.utils import MissingDependencyError, PathLike, atomic_output, atomic_torch_save, import_k2

ARPA_SPECIAL = {"<s>", "</s>", "<unk>", "<UNK>"}


def find_kenlm_tool(name: str) -> str:
    """Path of a kenlm binary (lmplz, build_binary); a clear error when it is not on PATH."""
    path = shutil.which(name)
    if path is None:
        raise MissingDependencyError(
            f"kenlm's `{name}` is not on PATH; run tools/setup.sh (it builds tools/kenlm/bin) and `. path.sh`"
        )
    return path


def normalize_text_file(src: PathLike, dst: PathLike) -> int:
    """Write the normalized non-empty lines of `src` (plain or .gz) to `dst`; returns the line count."""
    n = 0
    with _open_text(src) as fin, open(dst, "w", encoding="utf-8") as fout:
        for line in fin:
            norm, _ = normalize_text(line)
            if norm:
                fout.write(norm + "\n")
                n += 1
    return n


def _open_text(path: PathLike) -> TextIO:
    path = str(path)
    if path.endswith(".gz"):
        return gzip.open(path, "rt", encoding="utf-8", errors="replace")
    return open(path, encoding="utf-8", errors="replace")


def train_arpa(
    text: PathLike,
    arpa: PathLike,
    order: int = 3,
    prune: Optional[Sequence[int]] = None,
    discount_fallback: bool = True,
    memory: str = "20%",
    extra_args: Sequence[str] = (),
) -> Path:
    """Estimate a modified-Kneser-Ney ARPA with `lmplz` on normalized `text`; `prune` are lmplz's count
    thresholds per order (e.g. 0 0 1). Writes `arpa` atomically and returns it."""
    lmplz = find_kenlm_tool("lmplz")
    arpa = Path(arpa)
    arpa.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=arpa.parent, prefix=".lmplz.") as tmp:
        norm = Path(tmp) / "text.txt"
        n = normalize_text_file(text, norm)
        if n == 0:
            raise ValueError(f"{text}: no text left after normalization")
        with atomic_output(arpa) as out:
            cmd = [lmplz, "-o", str(order), "--text", str(norm), "--arpa", str(out), "-S", memory, "-T", tmp]
            if prune:
                cmd += ["--prune"] + [str(p) for p in prune]
            if discount_fallback:
                cmd.append("--discount_fallback")
            cmd += list(extra_args)
            logging.info(f"{n} lines of text; running {' '.join(cmd)}")
            proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
            if proc.returncode != 0:
                raise RuntimeError(f"lmplz failed (exit {proc.returncode}) on {text}:\n{proc.stderr[-3000:]}")
    logging.info(f"wrote {arpa} ({arpa.stat().st_size / 1e6:.1f} MB)")
    return arpa


def build_binary(arpa: PathLike, out: PathLike) -> Path:
    """kenlm binary (trie) of an ARPA, for fast querying (pyctcdecode, kenlm.Model)."""
    tool = find_kenlm_tool("build_binary")
    out = Path(out)
    with atomic_output(out) as tmp:
        proc = subprocess.run([tool, "trie", str(arpa), str(tmp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"build_binary failed on {arpa}:\n{proc.stderr[-3000:]}")
    return out


def normalize_arpa(src: PathLike, dst: PathLike) -> Dict[str, int]:
    """Copy an ARPA (plain or .gz) to plain `dst` with its words normalized (lower case, ...). Words that
    normalize to nothing, to several words, or to a word already seen are dropped with every n-gram that
    uses them, and the header counts are rewritten. Returns counts for the log."""
    mapping: Dict[str, Optional[str]] = {}
    seen_targets = set()
    counts: Dict[int, int] = {}
    dropped_words = 0
    dst = Path(dst)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dst.parent, prefix=".arpa.") as tmp:
        section_files: Dict[int, TextIO] = {}
        order = 0
        with _open_text(src) as fin:
            for raw in fin:
                line = raw.strip()
                if not line:
                    continue
                if line.startswith("\\") and line.endswith("-grams:"):
                    order = int(line[1:].split("-")[0])
                    section_files[order] = open(Path(tmp) / f"{order}.txt", "w", encoding="utf-8")
                    counts[order] = 0
                    continue
                if line == "\\end\\":
                    break
                if order == 0:
                    continue  # \data\ header: rewritten below
                fields = line.split("\t")
                if len(fields) < 2:
                    fields = line.split()
                    words = fields[1:1 + order]
                    rest = fields[1 + order:]
                else:
                    words = fields[1].split()
                    rest = fields[2:]
                if len(words) != order:
                    raise ValueError(f"{src}: malformed {order}-gram line {line[:200]!r}")
                new_words = []
                for w in words:
                    if w not in mapping:
                        if w in ARPA_SPECIAL:
                            target: Optional[str] = "<unk>" if w.lower() == "<unk>" else w
                        else:
                            norm, _ = normalize_text(w)
                            target = norm if norm and " " not in norm and norm not in seen_targets else None
                        if target is None:
                            dropped_words += 1
                        else:
                            seen_targets.add(target)
                        mapping[w] = target
                    t = mapping[w]
                    if t is None:
                        break
                    new_words.append(t)
                else:
                    section_files[order].write("\t".join([fields[0], " ".join(new_words)] + rest) + "\n")
                    counts[order] += 1
        for f in section_files.values():
            f.close()
        if not counts:
            raise ValueError(f"{src}: no n-gram sections found; is it an ARPA file?")
        with atomic_output(dst) as out_tmp, open(out_tmp, "w", encoding="utf-8") as fout:
            fout.write("\n\\data\\\n")
            for o in sorted(counts):
                fout.write(f"ngram {o}={counts[o]}\n")
            for o in sorted(counts):
                fout.write(f"\n\\{o}-grams:\n")
                with open(Path(tmp) / f"{o}.txt", encoding="utf-8") as fsec:
                    shutil.copyfileobj(fsec, fout)
            fout.write("\n\\end\\\n")
    info = {f"{o}-grams": c for o, c in sorted(counts.items())}
    info["dropped_words"] = dropped_words
    logging.info(f"normalized {src} -> {dst}: {info}")
    return info


def arpa_order(arpa: PathLike) -> int:
    """Highest n-gram order listed in an ARPA header."""
    order = 0
    with _open_text(arpa) as f:
        for line in f:
            line = line.strip()
            if line.startswith("ngram "):
                order = max(order, int(line.split()[1].split("=")[0]))
            elif line.startswith("\\1-grams:"):
                break
    if order == 0:
        raise ValueError(f"{arpa}: no `ngram N=` lines in the header")
    return order


def arpa_vocab(arpa: PathLike) -> List[str]:
    """Words of an ARPA's unigram section (without <s>, </s>, <unk>)."""
    words = []
    in_unigrams = False
    with _open_text(arpa) as f:
        for line in f:
            line = line.strip()
            if line.startswith("\\1-grams:"):
                in_unigrams = True
                continue
            if in_unigrams:
                if line.startswith("\\"):
                    break
                parts = line.split()
                if len(parts) >= 2 and parts[1] not in ARPA_SPECIAL:
                    words.append(parts[1])
    return words


def arpa_to_fst_txt(arpa: PathLike, words_txt: PathLike, out: PathLike, max_order: int = -1) -> Path:
    """G.fst.txt (OpenFst text, word ids of words.txt, back-off on `#0`) with kaldilm. ARPA words missing
    from words.txt are skipped (with a count in the log): extend the lang dir with `--words` to keep them."""
    import kaldilm

    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    known = {line.split()[0] for line in Path(words_txt).read_text(encoding="utf-8").splitlines() if line.strip()}
    vocab = arpa_vocab(arpa)
    oov = [w for w in vocab if w not in known]
    if oov:
        logging.warning(f"{len(oov)} of {len(vocab)} ARPA words are not in {words_txt} and are skipped "
                        f"(e.g. {oov[:5]}); pass the LM vocabulary to prepare_lang --words to keep them")
    start = time.time()
    fst_txt = kaldilm.arpa2fst(
        input_arpa=str(arpa), read_symbol_table=str(words_txt), disambig_symbol="#0", max_order=max_order,
        max_arpa_warnings=0,
    )
    # Written in slices: encoding the whole text at once would hold a second copy of it.
    with atomic_output(out) as tmp, open(tmp, "w", encoding="utf-8") as f:
        for i in range(0, len(fst_txt), 1 << 24):
            f.write(fst_txt[i:i + (1 << 24)])
    del fst_txt
    logging.info(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.time() - start:.1f} s")
    return out


def _parse_fst_lines(lines: List[bytes], fst_txt, first_lineno: int):
    """(src, dst, ilabel, olabel, cost) arrays of OpenFst text lines; a final state `s [cost]` becomes
    an arc to state -1 labelled -1. Lines that all have 5 fields (nearly all of a G) are parsed by numpy."""
    import numpy as np

    lines = [line for line in lines if line.strip()]
    values = np.fromstring(b"".join(lines), sep=" ") if lines else np.zeros(0)
    if values.size == 5 * len(lines):
        arcs = values.reshape(-1, 5)
        return (arcs[:, 0].astype(np.int32), arcs[:, 1].astype(np.int32), arcs[:, 2].astype(np.int32),
                arcs[:, 3].astype(np.int32), arcs[:, 4].astype(np.float32))
    rows = []
    for lineno, line in enumerate(lines, first_lineno):
        fields = line.split()
        try:
            if len(fields) >= 4:
                rows.append((int(fields[0]), int(fields[1]), int(fields[2]), int(fields[3]),
                             float(fields[4]) if len(fields) > 4 else 0.0))
            elif len(fields) <= 2:  # a final state, with an optional cost
                rows.append((int(fields[0]), -1, -1, -1, float(fields[1]) if len(fields) == 2 else 0.0))
            else:
                raise ValueError("wrong number of fields")
        except ValueError:
            raise ValueError(f"{fst_txt}:{lineno}: not an OpenFst text line: {line[:100]!r}") from None
    cols = list(zip(*rows))
    return tuple(np.array(c, dtype=np.float32 if i == 4 else np.int32) for i, c in enumerate(cols))


def read_openfst_text(fst_txt: PathLike, keep_aux_labels: bool = True, chunk_bytes: int = 1 << 22):
    """k2 Fsa from an OpenFst text file (kaldilm's G.fst.txt), read `chunk_bytes` of lines at a time into
    compact arrays: memory ~ 20 bytes per arc instead of the whole text plus k2's copy of it
    (`Fsa.from_openfst` on `f.read()`). Same FSA as `k2.Fsa.from_openfst(text, acceptor=False)`:
    scores are the negated costs, final states get an arc labelled -1 to one new final state, and
    the start state (the first line's source) becomes 0."""
    k2 = import_k2()
    import numpy as np
    import torch

    columns: List[list] = [[], [], [], [], []]
    lineno = 1
    with open(fst_txt, "rb") as f:
        if f.read(4) == b"PK\x03\x04":  # a zip archive: torch.save's format
            raise ValueError(f"{fst_txt} is a torch file (a cached G.pt?), not OpenFst text: pass the G .fst.txt; "
                             f"its .pt cache next to it is used automatically")
        f.seek(0)
        while True:
            lines = f.readlines(chunk_bytes)
            if not lines:
                break
            for col, part in zip(columns, _parse_fst_lines(lines, fst_txt, lineno)):
                col.append(part)
            lineno += len(lines)
    for i, parts in enumerate(columns):  # one column at a time: a second copy of all arcs never exists
        columns[i] = np.concatenate(parts) if parts else np.zeros(0, np.int32)
        del parts
    src, dst, ilabel, olabel, cost = columns
    del columns
    if src.size == 0:
        raise ValueError(f"{fst_txt} holds no arcs")
    start_state = int(src[0])
    final = int(max(src.max(), dst.max())) + 1
    if start_state != 0:  # k2's start state is 0: swap the two numbers
        for a in (src, dst):
            is_start, is_zero = a == start_state, a == 0
            a[is_start], a[is_zero] = 0, start_state
    dst[dst == -1] = final
    order = np.argsort(src, kind="stable")
    arcs = np.empty((len(order), 4), dtype=np.int32)
    arcs[:, 0] = src[order]
    arcs[:, 1] = dst[order]
    arcs[:, 2] = ilabel[order]
    arcs[:, 3] = (-cost[order]).view(np.int32)
    del src, dst, ilabel, cost
    aux = torch.from_numpy(olabel[order]) if keep_aux_labels else None
    del olabel, order
    return k2.Fsa(torch.from_numpy(arcs), aux)


def G_cache_path(fst_txt: PathLike) -> Path:
    """Where the rescoring G of `fst_txt` is cached: G_4_gram.fst.txt -> G_4_gram.pt."""
    fst_txt = Path(fst_txt)
    return fst_txt.with_name(fst_txt.name.replace(".fst.txt", "") + ".pt")


def G_cache_is_fresh(fst_txt: PathLike) -> bool:
    """Is `G_cache_path(fst_txt)` there and newer than the text?"""
    fst_txt, cache = Path(fst_txt), G_cache_path(fst_txt)
    return cache.is_file() and fst_txt.is_file() and cache.stat().st_mtime >= fst_txt.stat().st_mtime


def build_G_cache(fst_txt: PathLike, first_disambig_word_id: int) -> Path:
    """Write the rescoring G of `fst_txt` to `G_cache_path` unless it is newer than the text: an
    acceptor on word ids (back-off `#0` and above become epsilon), arc-sorted. steps/decode.sh runs
    this once before its parallel jobs, so they only load it."""
    k2 = import_k2()

    fst_txt = Path(fst_txt)
    cache = G_cache_path(fst_txt)
    if G_cache_is_fresh(fst_txt):
        return cache
    if not fst_txt.is_file():
        raise FileNotFoundError(f"{fst_txt} does not exist; build it with qnet.bin.make_lm")
    start = time.time()
    logging.info(f"reading {fst_txt} into {cache}")
    G = read_openfst_text(fst_txt, keep_aux_labels=False)
    labels = G.labels.clone()
    labels[labels >= first_disambig_word_id] = 0
    G.labels = labels
    G = k2.arc_sort(k2.Fsa.from_fsas([k2.Fsa(G.arcs)]))  # a fresh Fsa: no attributes but the arcs
    atomic_torch_save(G.as_dict(), cache)
    logging.info(f"{cache}: {G.arcs.tot_size(1)} states, {G.num_arcs} arcs ({time.time() - start:.1f} s)")
    return cache


def load_G(fst_txt: PathLike, first_disambig_word_id: int, device="cpu"):
    """G for rescoring (`build_G_cache`, built here when missing) with `lm_scores` set."""
    k2 = import_k2()
    import torch

    cache = build_G_cache(fst_txt, first_disambig_word_id)
    G = k2.Fsa.from_dict(torch.load(cache, map_location="cpu")).to(device)
    G.lm_scores = G.scores.clone()
    return G


def with_epsilon_self_loops(G):
    """G with epsilon self-loops (whole-lattice rescoring composes lattices with it), arc-sorted,
    `lm_scores` set."""
    k2 = import_k2()

    G = k2.arc_sort(k2.add_epsilon_self_loops(G))
    G.lm_scores = G.scores.clone()
    return G
