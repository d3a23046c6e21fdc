"""Decoding graphs with k2: H (CTC topology) and HLG = H o det(L_disambig o G) as icefall builds them."""

import logging
import time
from pathlib import Path
from typing import Optional

from qnet.lang import SymbolTable
from qnet.utils import PathLike, atomic_torch_save, import_k2

# Above this many LG arcs HLG gets slow to build and decode: say so and advise pruning the LM.
HUGE_LG_ARCS = 10_000_000


def build_ctc_topo(max_token_id: int, modified: bool = False, device="cpu"):
    """H: k2's CTC topology over tokens 0..max_token_id (blank 0); `modified` has O(V) arcs."""
    k2 = import_k2()
    return k2.arc_sort(k2.ctc_topo(max_token_id, modified=modified, device=device))


def _log_size(name: str, fsa, start: float) -> None:
    logging.info(f"{name}: {fsa.shape[0]} states, {fsa.num_arcs} arcs ({time.time() - start:.1f} s)")


def load_fsa(path: PathLike, device="cpu"):
    """k2 Fsa from a torch-saved `as_dict()` file (L.pt, HLG.pt, ...)."""
    k2 = import_k2()
    import torch

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    return k2.Fsa.from_dict(torch.load(path, map_location=device))


def compile_LG(lang_dir: PathLike, G_fst_txt: PathLike):
    """det(L_disambig o G) with disambiguation symbols and epsilons removed, arc-sorted (labels =
    tokens, aux_labels = words as a ragged tensor)."""
    k2 = import_k2()
    import torch

    lang_dir = Path(lang_dir)
    tokens = SymbolTable.from_file(lang_dir / "tokens.txt")
    words = SymbolTable.from_file(lang_dir / "words.txt")
    first_token_disambig = tokens["#0"]
    first_word_disambig = words["#0"]

    L = load_fsa(lang_dir / "L_disambig.pt")
    G_fst_txt = Path(G_fst_txt)
    cache = G_fst_txt.with_name(G_fst_txt.name.replace(".fst.txt", "") + ".disambig.pt")
    start = time.time()
    if cache.is_file() and cache.stat().st_mtime >= G_fst_txt.stat().st_mtime:
        G = k2.Fsa.from_dict(torch.load(cache))
    else:
        if not G_fst_txt.is_file():
            raise FileNotFoundError(f"{G_fst_txt} does not exist; build it with qnet.bin.make_lm")
        with open(G_fst_txt, encoding="utf-8") as f:
            G = k2.Fsa.from_openfst(f.read(), acceptor=False)
        atomic_torch_save(G.as_dict(), cache)
    _log_size("G", G, start)

    start = time.time()
    L = k2.arc_sort(L)
    G = k2.arc_sort(G)
    # G is a transducer word->word with #0 on the input of back-off arcs; L's output side meets G's input.
    LG = k2.compose(L, G)
    LG = k2.connect(LG)
    _log_size("L o G", LG, start)
    if LG.num_arcs > HUGE_LG_ARCS:
        logging.warning(f"L o G has {LG.num_arcs} arcs (> {HUGE_LG_ARCS}): determinization and HLG will be "
                        f"slow and large; prune the first-pass LM (e.g. make_lm --prune 0 1 1) and keep the "
                        f"full LM for rescoring")
    if LG.num_arcs == 0:
        raise ValueError(f"L o G is empty: no word of {G_fst_txt} is in {lang_dir}/lexicon.txt")

    start = time.time()
    LG = k2.determinize(LG)
    LG = k2.connect(LG)
    _log_size("det(L o G)", LG, start)

    start = time.time()
    # Reassign, never modify in place (k2 raises on in-place edits of labels; icefall#1143).
    labels = LG.labels.clone()
    labels[labels >= first_token_disambig] = 0
    LG.labels = labels
    aux = LG.aux_labels
    if isinstance(aux, torch.Tensor):
        aux = aux.clone()
        aux[aux >= first_word_disambig] = 0
        LG.aux_labels = aux
    else:
        values = aux.values.clone()
        values[values >= first_word_disambig] = 0
        LG.aux_labels = k2.RaggedTensor(aux.shape, values)
    LG.__dict__["_properties"] = None
    LG = k2.remove_epsilon(LG)
    LG = k2.connect(LG)
    LG.aux_labels = LG.aux_labels.remove_values_eq(0)
    LG = k2.arc_sort(LG)
    _log_size("LG without disambiguation symbols and epsilons", LG, start)
    return LG


def compile_HLG(lang_dir: PathLike, G_fst_txt: PathLike, modified: bool = False):
    """H o LG, connected and arc-sorted, for `k2.intersect_dense_pruned`."""
    k2 = import_k2()
    from qnet.tokens import TokenTable

    total = time.time()
    LG = compile_LG(lang_dir, G_fst_txt)
    max_token_id = len(TokenTable.from_file(Path(lang_dir) / "tokens.txt")) - 1
    start = time.time()
    H = build_ctc_topo(max_token_id, modified=modified)
    _log_size(f"H ({'modified' if modified else 'standard'} CTC topology)", H, start)
    start = time.time()
    HLG = k2.compose(H, LG, inner_labels="tokens")
    HLG = k2.connect(HLG)
    HLG = k2.arc_sort(HLG)
    _log_size("HLG", HLG, start)
    if HLG.num_arcs == 0:
        raise ValueError("HLG is empty; check that the lang dir and G share words.txt")
    logging.info(f"HLG compiled in {time.time() - total:.1f} s")
    return HLG


def save_HLG(HLG, out: PathLike) -> None:
    """Save HLG as `as_dict()` atomically."""
    atomic_torch_save(HLG.as_dict(), out)


def load_HLG(path: PathLike, device="cpu"):
    """HLG for decoding, with `lm_scores` (graph scores) for rescoring."""
    HLG = load_fsa(path, device)
    if not hasattr(HLG, "lm_scores"):
        HLG.lm_scores = HLG.scores.clone()
    return HLG


def words_per_arc(fsa):
    """Number of words (positive aux_labels) on each arc of `fsa` (plain or ragged aux_labels), an int64 tensor."""
    import torch

    aux = fsa.aux_labels
    if isinstance(aux, torch.Tensor):
        return (aux > 0).to(torch.int64)
    splits = aux.remove_values_leq(0).shape.row_splits(1)
    return (splits[1:] - splits[:-1]).to(torch.int64)


def default_hlg_path(lang_dir: PathLike, out: Optional[PathLike] = None) -> Path:
    """Where HLG.pt goes: `out` or lang_dir/HLG.pt."""
    return Path(out) if out else Path(lang_dir) / "HLG.pt"
