"""Word n-gram LMs: ARPA with kenlm's lmplz (or a ready ARPA), G.fst.txt with kaldilm, cached G.pt.

Training text and ready ARPAs go through the same normalizer as transcripts (`qnet.tokens.normalize_text`),
so an upper-case LibriSpeech/WSJ ARPA matches the lower-case words of a qnet lang dir.
"""

import gzip
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Dict, List, Optional, Sequence, TextIO

from qnet.tokens import normalize_text
from qnet.utils import MissingDependencyError, PathLike, atomic_torch_save, atomic_write_text, import_k2

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
        cmd = [lmplz, "-o", str(order), "--text", str(norm), "--arpa", str(Path(tmp) / "lm.arpa"),
               "-S", memory, "-T", tmp]
        if prune:
            cmd += ["--prune"] + [str(p) for p in prune]
        if discount_fallback:
            cmd.append("--discount_fallback")
        cmd += list(extra_args)
        logging.info(f"{n} lines of text; running {' '.join(cmd)}")
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"lmplz failed (exit {proc.returncode}) on {text}:\n{proc.stderr[-3000:]}")
        os.replace(Path(tmp) / "lm.arpa", arpa)
    logging.info(f"wrote {arpa} ({arpa.stat().st_size / 1e6:.1f} MB)")
    return arpa


def build_binary(arpa: PathLike, out: PathLike) -> Path:
    """kenlm binary (trie) of an ARPA, for fast querying (pyctcdecode, kenlm.Model)."""
    tool = find_kenlm_tool("build_binary")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.tmp")
    proc = subprocess.run([tool, "trie", str(arpa), str(tmp)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"build_binary failed on {arpa}:\n{proc.stderr[-3000:]}")
    os.replace(tmp, out)
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
        out_tmp = Path(tmp) / "out.arpa"
        with open(out_tmp, "w", encoding="utf-8") as fout:
            fout.write("\n\\data\\\n")
            for o in sorted(counts):
                fout.write(f"ngram {o}={counts[o]}\n")
            for o in sorted(counts):
                fout.write(f"\n\\{o}-grams:\n")
                with open(Path(tmp) / f"{o}.txt", encoding="utf-8") as fsec:
                    shutil.copyfileobj(fsec, fout)
            fout.write("\n\\end\\\n")
        os.replace(out_tmp, dst)
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
    atomic_write_text(out, fst_txt)
    logging.info(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB) in {time.time() - start:.1f} s")
    return out


def load_G(fst_txt: PathLike, first_disambig_word_id: int, device="cpu", epsilon_self_loops: bool = False):
    """G for rescoring as an acceptor on word ids: back-off `#0` (and above) become epsilon, arc-sorted,
    `lm_scores` set; cached next to the text file as .pt. `epsilon_self_loops` for whole-lattice rescoring."""
    k2 = import_k2()
    import torch

    fst_txt = Path(fst_txt)
    cache = fst_txt.with_name(fst_txt.name.replace(".fst.txt", "") + ".pt")
    if cache.is_file() and cache.stat().st_mtime >= fst_txt.stat().st_mtime:
        G = k2.Fsa.from_dict(torch.load(cache, map_location="cpu"))
    else:
        if not fst_txt.is_file():
            raise FileNotFoundError(f"{fst_txt} does not exist; build it with qnet.bin.make_lm")
        logging.info(f"loading {fst_txt} (cached as {cache} afterwards)")
        with open(fst_txt, encoding="utf-8") as f:
            G = k2.Fsa.from_openfst(f.read(), acceptor=False)
        del G.aux_labels
        labels = G.labels.clone()
        labels[labels >= first_disambig_word_id] = 0
        G.labels = labels
        G.__dict__["_properties"] = None
        G = k2.Fsa.from_fsas([G])
        G = k2.arc_sort(G)
        atomic_torch_save(G.as_dict(), cache)
    G = G.to(device)
    if epsilon_self_loops:
        G = k2.add_epsilon_self_loops(G)
    G = k2.arc_sort(G)
    G.lm_scores = G.scores.clone()
    return G
