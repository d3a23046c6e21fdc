"""Shared fixtures for the lang/graph/decode/scoring/transcribe tests: a tiny char lang dir, a hand-made
bigram ARPA, crafted "peaky" CTC log-probs, and a random tiny model with audio cuts."""

from pathlib import Path
from typing import Dict, List, Optional, Sequence

import torch

from qnet.tokens import SPACE, TokenTable

TRAIN_TEXT = "the cat sat\nthe hat sat\nthe cat\na cat sat on the hat\n"

def bigram_arpa(unigrams: Dict[str, float], bigrams: Sequence[str]) -> str:
    """A small bigram ARPA: `unigrams` word -> log10 prob (backoff -0.3), `bigrams` "w1 w2" at log10 -0.1."""
    lines = ["\\data\\", f"ngram 1={len(unigrams) + 2}", f"ngram 2={len(bigrams)}", "", "\\1-grams:",
             "-1.0\t<s>\t-0.3", "-1.0\t</s>"]
    lines += [f"{p}\t{w}\t-0.3" for w, p in unigrams.items()]
    lines += ["", "\\2-grams:"] + [f"-0.1\t{b}" for b in bigrams] + ["", "\\end\\", ""]
    return "\n".join(lines)


# Upper case on purpose: ready ARPAs (LibriSpeech, WSJ) are upper case; qnet normalizes them.
BIGRAM_ARPA = bigram_arpa({"THE": -1.0, "CAT": -1.0, "SAT": -1.0, "HAT": -1.5, "ON": -1.5, "A": -1.5},
                          ["<s> THE", "THE CAT", "CAT SAT", "SAT </s>"])
# A rescoring LM that knows better than BIGRAM_ARPA (which prefers "the cat sat"): "the hat sat".
HAT_ARPA = bigram_arpa({"the": -1.0, "cat": -2.5, "sat": -1.0, "hat": -1.0, "on": -1.5, "a": -1.5},
                       ["<s> the", "the hat", "hat sat", "sat </s>"])


def frame_log_probs(frames: Sequence[Dict[str, float]], table: Optional[TokenTable] = None) -> torch.Tensor:
    """(T, V) log-probs: each frame puts the given probabilities on its symbols, a little on the rest."""
    table = table or TokenTable.chars()
    rows = []
    for spec in frames:
        p = torch.full((len(table),), 1e-3)
        for sym, v in spec.items():
            p[table.id(sym)] = v
        rows.append((p / p.sum()).log())
    return torch.stack(rows)


def peaky_frames(text: str, confusions: Optional[Dict[int, Dict[str, float]]] = None) -> List[Dict[str, float]]:
    """Frames spelling `text` (char i, then a blank); `confusions[i]` replaces char i's distribution."""
    frames = []
    for i, ch in enumerate(text):
        sym = SPACE if ch == " " else ch
        frames.append((confusions or {}).get(i, {sym: 0.9}))
        frames.append({"<blk>": 0.9})
    return frames


def make_char_lang(tmp: Path, with_hlg: bool = True, G_name: str = "G") -> Path:
    """A char lang dir from TRAIN_TEXT, the bigram G (normalized) and, optionally, its HLG."""
    from qnet.graph import compile_HLG, save_HLG
    from qnet.lang import prepare_lang
    from qnet.lm import arpa_to_fst_txt, normalize_arpa

    text = tmp / "train.txt"
    text.write_text(TRAIN_TEXT)
    lang = tmp / "lang_char"
    prepare_lang(lang, "char", [text])
    (tmp / "raw.arpa").write_text(BIGRAM_ARPA)
    normalize_arpa(tmp / "raw.arpa", tmp / f"{G_name}.arpa")
    arpa_to_fst_txt(tmp / f"{G_name}.arpa", lang / "words.txt", tmp / f"{G_name}.fst.txt")
    if with_hlg:
        save_HLG(compile_HLG(lang, tmp / f"{G_name}.fst.txt"), lang / "HLG.pt")
    return lang


def make_tiny_model(path: Path) -> Path:
    """A randomly initialized 'tiny' char QuartzNet checkpoint."""
    from qnet.model import build_model, save_model

    torch.manual_seed(0)
    table = TokenTable.chars()
    save_model(path, build_model("tiny", num_tokens=len(table)).eval(), table)
    return path


def make_audio_cuts(tmp: Path, texts: Sequence[str], sampling_rate: int = 16000) -> Path:
    """Noise recordings (0.5-1 s) with supervisions `texts`, as a cut manifest; returns its path."""
    import soundfile as sf
    from lhotse import CutSet, Recording, RecordingSet, SupervisionSegment, SupervisionSet

    g = torch.Generator().manual_seed(1)
    recs, sups = [], []
    for i, text in enumerate(texts):
        n = int(sampling_rate * (0.5 + 0.1 * (i % 5)))
        wav = tmp / f"utt{i}.wav"
        sf.write(str(wav), (0.1 * torch.randn(n, generator=g)).numpy(), sampling_rate)
        rec = Recording.from_file(wav, recording_id=f"utt{i}")
        recs.append(rec)
        sups.append(SupervisionSegment(id=f"utt{i}", recording_id=f"utt{i}", start=0.0,
                                       duration=rec.duration, text=text))
    cuts = CutSet.from_manifests(RecordingSet.from_recordings(recs), SupervisionSet.from_segments(sups))
    path = tmp / "cuts_test.jsonl.gz"
    cuts.to_file(path)
    return path
