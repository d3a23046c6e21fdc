"""CTC decoding: greedy (no k2), ctc-decoding with H, HLG 1best, whole-lattice and n-best LM rescoring,
and n-best rescoring with a neural LM (qnet.nnlm) on top of the n-gram.

All functions take the model's output as `log_probs (B, T, V)` with valid lengths `lens (B,)`, and return
one hypothesis (a string of words separated by single spaces) per utterance, in input order. An
utterance whose lattice is empty or pruned away gets an empty hypothesis and is counted in
`DecodeStats`; it never stops a run.

LM rescoring is memory-bounded by construction and degrades gracefully: it runs one utterance at a
time; a lattice with more than `max_lattice_arcs` arcs is first pruned with `k2.prune_on_arc_post`;
n-best paths are intersected with the lattice in chunks whose product (lattice arcs x paths) stays
under `max_intersect_arcs`. If rescoring an utterance still fails (k2 raises on a failed allocation),
n-best retries with half the paths and whole-lattice with more pruning (as icefall does), and in the end
the utterance gets its 1best hypothesis, counted in `DecodeStats.fallback` and logged.

Every method on HLG lattices sweeps the word insertion penalties `opts.word_penalties` (nats per word,
negative favours words, in the units of the acoustic scores) with its LM scales, as Kaldi's scoring sweeps
LMWT and word_ins_penalty: 1best with `opts.hlg_scales` (the weight on HLG's LM scores), the rescoring
methods with `opts.lm_scales`. A rescoring method's result keys end in `_wip_P` for P != 0.

NNLM rescoring (`nnlm-rescoring`) scores a list of candidate word sequences per utterance with
`am + lm_scale * ngram + nnlm_scale * nnlm - word_penalty * words` (natural logs; `am` is the sequence's
best path in the HLG lattice without the graph's LM scores, `ngram` is G_rescore, `nnlm` the neural LM with `</s>`). The
candidates are the unique n-best paths sampled from the HLG lattice (at most `num_paths`), its 1best,
and the best path of the whole-lattice-rescored lattice at every (lm_scale, word_penalty), so that with nnlm_scale 0
the method reproduces n-gram rescoring and a positive nnlm_scale can only re-rank those candidates.
The NNLM scores the candidates of a whole lattice-generation group at once, in batches of at most
`nnlm_max_tokens` padded words.
"""

import logging
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import torch

from qnet.ctc import greedy_decode
from qnet.utils import PathLike, import_k2

METHODS = ("greedy", "ctc-decoding", "1best", "nbest-rescoring", "whole-lattice-rescoring", "nnlm-rescoring")
RESCORING_METHODS = ("whole-lattice-rescoring", "nbest-rescoring", "nnlm-rescoring")
DEFAULT_LM_SCALES = [round(0.1 * i, 1) for i in range(1, 21)]
DEFAULT_NNLM_SCALES = [round(0.2 * i, 1) for i in range(0, 8)]
BEST_PATH_OUTPUT_BEAM = 1.0  # output beam of lattices used only for their best path (1best, ctc-decoding)


def one_best_key(hlg_scale: float, word_penalty: float) -> str:
    """Result key of HLG 1best at one (graph LM weight, word insertion penalty) pair; `1best` at (1, 0)."""
    if (hlg_scale, word_penalty) == (1.0, 0.0):
        return "1best"
    return f"1best_lm_scale_{hlg_scale:g}_wip_{word_penalty:g}"


def _wip_suffix(word_penalty: float) -> str:
    return f"_wip_{word_penalty:g}" if word_penalty != 0 else ""


def rescore_key(method: str, lm_scale: float, word_penalty: float = 0.0) -> str:
    """Result key of whole-lattice or n-best rescoring at one (LM scale, word insertion penalty) pair."""
    return f"{method}_lm_scale_{lm_scale:g}{_wip_suffix(word_penalty)}"


def nnlm_key(lm_scale: float, nnlm_scale: float, word_penalty: float = 0.0) -> str:
    """Result key of NNLM rescoring at one (n-gram scale, NNLM scale, word insertion penalty) setting."""
    return f"nnlm-rescoring_lm_scale_{lm_scale:g}_nnlm_scale_{nnlm_scale:g}{_wip_suffix(word_penalty)}"


@dataclass
class DecodeOptions:
    """Beams as icefall uses them, n-best settings and the LM-scale sweep."""

    search_beam: float = 20.0
    output_beam: float = 8.0
    min_active_states: int = 30
    max_active_states: int = 10000
    num_paths: int = 100
    nbest_scale: float = 0.5
    lm_scales: Sequence[float] = field(default_factory=lambda: list(DEFAULT_LM_SCALES))
    use_double_scores: bool = True
    # Rescoring bounds: per-utterance lattice arcs (pruned by arc posteriors above this) and arcs of one
    # n-best intersection (estimated as lattice arcs x (words + 1) summed over the paths of a chunk).
    max_lattice_arcs: int = 50_000
    max_intersect_arcs: int = 2_000_000
    # Lattice generation: frames (after subsampling) of one k2.intersect_dense_pruned call.
    max_lattice_frames: int = 1500
    # Frames whose blank probability exceeds this, after such a frame, are dropped before the graph
    # methods (skip_blank_frames); 0 keeps every frame.
    blank_skip_threshold: float = 0.0
    # NNLM rescoring: the NNLM weights swept (with every lm_scale), and padded words per NNLM batch.
    nnlm_scales: Sequence[float] = field(default_factory=lambda: list(DEFAULT_NNLM_SCALES))
    nnlm_max_tokens: int = 20000
    # HLG 1best: weights on the graph's LM scores, swept with the word insertion penalties (nats per word;
    # negative favours words) as Kaldi's scoring sweeps LMWT and word_ins_penalty; every pair but (1, 0)
    # decodes its own lattice. The rescoring methods sweep the same penalties with their LM scales. A weak
    # acoustic model's HLG 1best drops words whose LM cost outweighs their acoustic evidence: most of its
    # errors are then deletions, which a lower weight or a negative penalty recovers.
    hlg_scales: Sequence[float] = (1.0,)
    word_penalties: Sequence[float] = (0.0,)


@dataclass
class DecodeStats:
    """Utterance ids, per method, whose lattice came out empty, whose lattice was pruned before
    rescoring, or whose rescoring failed and fell back to the 1best hypothesis."""

    empty: Dict[str, List[str]] = field(default_factory=dict)
    pruned: Dict[str, List[str]] = field(default_factory=dict)
    fallback: Dict[str, List[str]] = field(default_factory=dict)

    def add(self, method: str, utt_id: str) -> None:
        """Count an empty lattice."""
        self.empty.setdefault(method, []).append(utt_id)
        logging.warning(f"{method}: empty lattice for {utt_id}; writing an empty hypothesis")

    def add_pruned(self, method: str, utt_id: str, arcs_before: int, arcs_after: int, threshold: float) -> None:
        """Count a lattice pruned to fit the rescoring bounds."""
        self.pruned.setdefault(method, []).append(utt_id)
        logging.info(f"{method}: lattice of {utt_id} pruned from {arcs_before} to {arcs_after} arcs "
                     f"(arc-posterior threshold {threshold:g}) before rescoring")

    def add_fallback(self, method: str, utt_id: str, reason: str) -> None:
        """Count an utterance whose rescoring failed; it gets its 1best hypothesis."""
        self.fallback.setdefault(method, []).append(utt_id)
        logging.warning(f"{method}: rescoring {utt_id} failed ({reason[:300]}); using its 1best hypothesis")

    def summary(self) -> str:
        """One line for the log."""
        parts = [f"{m}: {len(ids)} empty lattices" for m, ids in self.empty.items()]
        parts += [f"{m}: {len(ids)} lattices pruned before rescoring" for m, ids in self.pruned.items()]
        parts += [f"{m}: {len(ids)} fell back to 1best" for m, ids in self.fallback.items()]
        return ", ".join(parts) if parts else "no empty lattices, no rescoring fallbacks"


def skip_blank_frames(log_probs: torch.Tensor, lens: torch.Tensor, threshold: float):
    """Drop every frame whose blank probability exceeds `threshold` when the frame before it does too: a
    run of such frames keeps its first one, which still separates repeated tokens (`l <blk> l`). Such
    frames can only extend a blank (any token there costs more than -log(1 - threshold)), so the
    lattice loses no plausible path while k2 sees far fewer frames. (B, T, V), (B,) -> the same, T shorter."""
    B, T, _ = log_probs.shape
    valid = torch.arange(T, device=lens.device).unsqueeze(0) < lens.unsqueeze(1)
    high = (log_probs[:, :, 0] > math.log(threshold)).to(lens.device) & valid
    drop = torch.zeros_like(high)
    drop[:, 1:] = high[:, 1:] & high[:, :-1]
    keep = valid & ~drop
    new_lens = keep.sum(dim=1)
    out = log_probs.new_full((B, max(1, int(new_lens.max()) if B else 1), log_probs.shape[2]), 0.0)
    for b in range(B):
        idx = torch.nonzero(keep[b]).flatten().to(log_probs.device)
        out[b, : idx.numel()] = log_probs[b].index_select(0, idx)
    return out, new_lens.to(lens.dtype)


def get_lattice(log_probs: torch.Tensor, lens: torch.Tensor, graph, opts: DecodeOptions, connect: bool = True):
    """k2.intersect_dense_pruned of the graph (H or HLG) with the log-probs, connected unless `connect` is
    False (a best path needs no connected lattice); FSA i of the result belongs to utterance i of the batch."""
    k2 = import_k2()
    B = log_probs.shape[0]
    lens = lens.to("cpu", torch.int64).clamp(max=log_probs.shape[1])
    segments = torch.stack([torch.arange(B), torch.zeros(B, dtype=torch.int64), lens], dim=1).to(torch.int32)
    # k2 wants the segments sorted by decreasing length; undo the order afterwards.
    order = torch.argsort(lens, descending=True)
    dense = k2.DenseFsaVec(log_probs, segments[order])
    lattice = k2.intersect_dense_pruned(
        graph, dense, search_beam=opts.search_beam, output_beam=opts.output_beam,
        min_active_states=opts.min_active_states, max_active_states=opts.max_active_states,
    )
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(B)
    lattice = k2.index_fsa(lattice, inverse.to(torch.int32).to(lattice.device))
    # The pruned intersection keeps arcs that reach no final state (on weak models with flat posteriors
    # ~90% of them): connect drops them, losslessly, before anything sizes memory by the lattice.
    return k2.connect(lattice) if connect else lattice


def consecutive_groups(costs: Sequence[int], budget: int) -> List[range]:
    """Split items into consecutive ranges whose summed cost stays within `budget`; an item is never split,
    so a range holding a single over-budget item is allowed (every range has >= 1 item)."""
    groups, lo, total = [], 0, 0
    for i, cost in enumerate(costs):
        if i > lo and total + cost > budget:
            groups.append(range(lo, i))
            lo, total = i, 0
        total += cost
    if lo < len(costs):
        groups.append(range(lo, len(costs)))
    return groups


def frame_groups(num_frames: List[int], max_frames: int) -> List[range]:
    """Consecutive ranges of utterances with at most `max_frames` frames in all (>= 1 utterance each)."""
    return consecutive_groups(num_frames, max_frames)


def num_arcs_per_fsa(fsas) -> List[int]:
    """Number of arcs of each FSA of an FsaVec (0 for an empty one)."""
    shape = fsas.arcs.shape().remove_axis(1)
    return (shape.row_splits(1)[1:] - shape.row_splits(1)[:-1]).tolist()


def path_labels(best_path, use_aux: bool = True) -> List[List[int]]:
    """Positive aux_labels (words, or tokens for H) along each linear FSA of `best_path`."""
    k2 = import_k2()
    labels = best_path.aux_labels if use_aux else best_path.labels
    if isinstance(labels, torch.Tensor):
        ragged = k2.RaggedTensor(best_path.arcs.shape(), labels).remove_axis(1)
    else:
        shape = best_path.arcs.shape().compose(labels.shape)
        shape = shape.remove_axis(1).remove_axis(1)
        ragged = k2.RaggedTensor(shape, labels.values)
    return ragged.remove_values_leq(0).tolist()


def one_best(lattice, use_double_scores: bool = True):
    """Best path of each lattice."""
    k2 = import_k2()
    return k2.shortest_path(lattice, use_double_scores=use_double_scores)


PRUNE_THRESHOLDS = (1e-10, 1e-8, 1e-6, 1e-5, 1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)


def _intersect(a_fsas, b_fsas, b_to_a_map: torch.Tensor):
    """k2.intersect_device with `a_fsas` arc-sorted (the one place rescoring intersects; tests make it fail)."""
    k2 = import_k2()
    return k2.intersect_device(a_fsas, b_fsas, b_to_a_map=b_to_a_map, sorted_match_a=True)


def prune_lattice(lattice, max_arcs: int, use_double_scores: bool = True):
    """Prune an FsaVec with k2.prune_on_arc_post at growing thresholds until it has at most `max_arcs`
    arcs (or the next threshold would leave an FSA empty); returns (lattice, threshold or None)."""
    k2 = import_k2()
    if lattice.num_arcs <= max_arcs:
        return lattice, None
    best, used = lattice, None
    num_nonempty = sum(n > 0 for n in num_arcs_per_fsa(lattice))
    for threshold in PRUNE_THRESHOLDS:
        pruned = k2.connect(k2.prune_on_arc_post(lattice, threshold, use_double_scores))
        if sum(n > 0 for n in num_arcs_per_fsa(pruned)) < num_nonempty:
            break  # never prune an utterance away
        best, used = pruned, threshold
        if pruned.num_arcs <= max_arcs:
            break
    return best, used


def rescore_whole_lattice(lattice, G_with_loops, lm_scales: Sequence[float], use_double_scores: bool = True,
                          word_penalties: Sequence[float] = (0.0,)):
    """Replace the graph's LM scores with G's (an acceptor on words with epsilon self-loops and
    `lm_scores`) over the whole lattice; returns {(lm_scale, word_penalty): best paths}, the paths maximizing
    `am + lm_scale * lm - word_penalty * words`. When the intersection fails
    (out of memory), the lattice is pruned by arc posteriors and it is retried, as icefall does; raises
    RuntimeError when even the most pruned lattice fails."""
    k2 = import_k2()
    lattice = lattice.clone() if hasattr(lattice, "clone") else lattice
    lattice.scores = lattice.scores - lattice.lm_scores
    del lattice.lm_scores
    # Epsilon self-loops on the lattice let G take a back-off arc while the lattice stays put (k2's
    # intersect_device matches epsilons like any label): without them a word on the very first arc of a
    # lattice, or the end of G's <s>-context, could not be reached through a back-off. They are added
    # after pruning: prune_on_arc_post needs an acyclic FSA.
    num_seqs = lattice.shape[0]
    b_to_a = torch.zeros(num_seqs, dtype=torch.int32, device=lattice.device)
    rescored = None
    for threshold in (None,) + PRUNE_THRESHOLDS:
        try:
            cand = lattice if threshold is None else k2.connect(
                k2.prune_on_arc_post(lattice, threshold, use_double_scores))
            inv = k2.arc_sort(k2.add_epsilon_self_loops(k2.invert(cand)))
            rescored = _intersect(G_with_loops, inv, b_to_a)
            break
        except (RuntimeError, MemoryError) as exc:  # out of memory: prune by arc posteriors and retry
            logging.warning(f"whole-lattice rescoring failed ({str(exc)[:200]}); pruning the lattice "
                            f"with arc-posterior threshold {threshold or PRUNE_THRESHOLDS[0]:g} and retrying")
    if rescored is None:
        raise RuntimeError("whole-lattice rescoring failed even after pruning the lattice")
    # (G self-loop, lattice self-loop) pairs are zero-score self-loops: drop them so the result is acyclic.
    rescored = k2.top_sort(k2.connect(k2.remove_epsilon_self_loops(rescored)))
    rescored = k2.invert(rescored)
    am_scores = rescored.scores - rescored.lm_scores
    words = None
    if any(p != 0 for p in word_penalties):
        from qnet.graph import words_per_arc

        words = words_per_arc(rescored).to(am_scores.dtype)
    am_with_penalty = {p: am_scores if p == 0 else am_scores - p * words for p in word_penalties}
    best = {}
    for scale in lm_scales:
        for penalty in word_penalties:
            lat = rescored.clone() if hasattr(rescored, "clone") else rescored
            # divided by the scale (the same argmax): the (scale, 0) scores are those of the unswept code
            lat.scores = am_with_penalty[penalty] / scale + rescored.lm_scores
            best[(scale, penalty)] = k2.shortest_path(lat, use_double_scores=use_double_scores)
    return best


def _fsa_sums(fsas, arc_values: torch.Tensor) -> torch.Tensor:
    k2 = import_k2()
    ragged = k2.RaggedTensor(fsas.arcs.shape().remove_axis(1), arc_values.to(torch.float64))
    return ragged.sum()


def nbest_chunks(arcs_of_seq: List[int], max_arcs: int) -> List[range]:
    """Consecutive ranges of n-best paths whose intersection with their lattice stays under `max_arcs`
    arcs (estimated as lattice arcs x 2 per path: the reachable (lattice state, word position) pairs of
    one path measured 1.6-1.9 x the lattice arcs); a path is never split, so a chunk has >= 1 path."""
    return consecutive_groups([2 * arcs for arcs in arcs_of_seq], max_arcs)


def sample_nbest(lattice, opts: DecodeOptions, num_paths: Optional[int] = None):
    """Sample `num_paths` (default opts.num_paths) paths per utterance (scores scaled by `nbest_scale`)
    and keep the unique word sequences: returns (unique [utt][seq][word] ragged, utt index of each
    sequence (tensor), sequences [seq][word] ragged)."""
    k2 = import_k2()
    sample = lattice.clone()
    sample.scores = sample.scores * opts.nbest_scale
    paths = k2.random_paths(sample, num_paths=num_paths or opts.num_paths,
                            use_double_scores=opts.use_double_scores)
    if isinstance(lattice.aux_labels, torch.Tensor):
        word_seqs = k2.ragged.index(lattice.aux_labels, paths)
    else:
        word_seqs = lattice.aux_labels.index(paths)
        word_seqs = word_seqs.remove_axis(word_seqs.num_axes - 2)
    word_seqs = word_seqs.remove_values_leq(0)
    unique, _, _ = word_seqs.unique(need_num_repeats=False, need_new2old_indexes=False)
    return unique, unique.shape.row_ids(1), unique.remove_axis(0)


def am_lm_scores(lattice, G, seqs, utt_of_seq: torch.Tensor, opts: DecodeOptions):
    """(am, lm) float64 scores of word sequences `seqs` ([seq][word] ragged): am is the best path of
    lattice `utt_of_seq[i]` restricted to sequence i, without its LM scores (intersected in chunks of at
    most opts.max_intersect_arcs arcs), lm is G's score (an acceptor on words; its back-off arcs are
    taken through epsilon self-loops on the sequences). -inf am: the sequence is not in the lattice."""
    k2 = import_k2()
    inv = k2.arc_sort(k2.invert(lattice))
    lattice_arcs = num_arcs_per_fsa(lattice)
    utt_list = utt_of_seq.tolist()
    am_parts = []
    for chunk in nbest_chunks([lattice_arcs[u] for u in utt_list], opts.max_intersect_arcs):
        idx = torch.arange(chunk.start, chunk.stop, dtype=torch.int32, device=utt_of_seq.device)
        word_fsas_loops = k2.add_epsilon_self_loops(k2.linear_fsa(seqs.index(idx, axis=0)[0]))
        path_lat = _intersect(inv, word_fsas_loops, utt_of_seq[chunk.start:chunk.stop].to(torch.int32))
        path_lat = k2.top_sort(k2.connect(k2.invert(path_lat)))
        best = k2.shortest_path(path_lat, use_double_scores=True)
        am = _fsa_sums(best, best.scores - best.lm_scores)
        # a sequence with no path in its lattice has an empty best path (sum 0): make it -inf
        am[torch.tensor(num_arcs_per_fsa(best), device=am.device) == 0] = float("-inf")
        am_parts.append(am)
        del path_lat, best
    am = torch.cat(am_parts)
    word_fsas_loops = k2.add_epsilon_self_loops(k2.linear_fsa(seqs))
    b_to_a = torch.zeros(seqs.dim0, dtype=torch.int32, device=lattice.device)
    lm_lat = k2.top_sort(k2.connect(_intersect(G, word_fsas_loops, b_to_a)))
    lm = lm_lat.get_tot_scores(use_double_scores=True, log_semiring=False)
    return am.to(torch.float64), lm.to(torch.float64)


def _argmax_per_utt(tot: torch.Tensor, row_splits: List[int], seq_list: List[List[int]]) -> List[List[int]]:
    """The best sequence of each utterance (non-finite totals lose; an utterance without one gets [])."""
    tot = torch.where(torch.isfinite(tot), tot, torch.full_like(tot, -1e30)).cpu()
    out = []
    for u in range(len(row_splits) - 1):
        lo, hi = row_splits[u], row_splits[u + 1]
        out.append(seq_list[lo + int(tot[lo:hi].argmax())] if hi > lo else [])
    return out


def rescore_nbest(lattice, G, opts: DecodeOptions, lm_scales: Sequence[float], num_paths: Optional[int] = None,
                  word_penalties: Sequence[float] = (0.0,)) -> Dict[Tuple[float, float], List[List[int]]]:
    """N-best rescoring: sample paths (sample_nbest), score each unique word sequence by its best path in
    the lattice (acoustic part) and by G (am_lm_scores); per (lm_scale, word_penalty), the argmax of
    am + scale * lm - penalty * words. Returns {(lm_scale, word_penalty): word-id lists per utterance}."""
    num_utts = lattice.shape[0]
    unique, utt_of_seq, seqs = sample_nbest(lattice, opts, num_paths)
    if seqs.dim0 == 0:
        return {(s, p): [[] for _ in range(num_utts)] for s in lm_scales for p in word_penalties}
    am, lm = am_lm_scores(lattice, G, seqs, utt_of_seq, opts)
    row_splits, seq_list = unique.shape.row_splits(1).tolist(), seqs.tolist()
    num_words = torch.tensor([len(seq) for seq in seq_list], dtype=torch.float64, device=am.device)
    # divided by the scale (the same argmax): the (scale, 0) scores are those of the unswept code
    return {(scale, penalty): _argmax_per_utt((am - penalty * num_words) / scale + lm, row_splits, seq_list)
            for scale in lm_scales for penalty in word_penalties}


@dataclass
class NnlmCandidates:
    """One utterance's n-best list for NNLM rescoring: word-id sequences and their am and n-gram scores."""

    seqs: List[List[int]]
    am: torch.Tensor
    ngram: torch.Tensor


def nnlm_candidates(lattice, G, opts: DecodeOptions, extra: Sequence[List[int]] = (),
                    num_paths: Optional[int] = None) -> NnlmCandidates:
    """The n-best list of a one-utterance lattice: its unique sampled paths plus the `extra` sequences
    (1best, whole-lattice-rescoring results), scored by am_lm_scores; sequences without a path in the
    lattice are dropped."""
    k2 = import_k2()
    _, _, sampled = sample_nbest(lattice, opts, num_paths)
    seqs: List[List[int]] = []
    seen = set()
    for seq in list(extra) + sampled.tolist():
        if tuple(seq) not in seen:
            seen.add(tuple(seq))
            seqs.append(list(seq))
    ragged = k2.RaggedTensor(seqs, dtype=torch.int32).to(lattice.device)
    utt_of_seq = torch.zeros(len(seqs), dtype=torch.int32, device=lattice.device)
    am, ngram = am_lm_scores(lattice, G, ragged, utt_of_seq, opts)
    keep = torch.isfinite(am).cpu()
    return NnlmCandidates([s for s, k in zip(seqs, keep.tolist()) if k], am.cpu()[keep], ngram.cpu()[keep])


def rescore_with_nnlm(candidates: Sequence[NnlmCandidates], nnlm_scores: torch.Tensor, lm_scales: Sequence[float],
                      nnlm_scales: Sequence[float], word_penalties: Sequence[float] = (0.0,)
                      ) -> Dict[Tuple[float, float, float], List[List[int]]]:
    """{(lm_scale, nnlm_scale, word_penalty): best sequence per utterance} by am + lm_scale * ngram +
    nnlm_scale * nnlm - word_penalty * words; `nnlm_scores` holds the NNLM log-probabilities of every
    candidate, utterance after utterance."""
    row_splits = [0]
    for c in candidates:
        row_splits.append(row_splits[-1] + len(c.seqs))
    seq_list = [s for c in candidates for s in c.seqs]
    if not seq_list:
        return {(s, t, p): [[] for _ in candidates] for s in lm_scales for t in nnlm_scales for p in word_penalties}
    am = torch.cat([c.am for c in candidates])
    ngram = torch.cat([c.ngram for c in candidates])
    nnlm = nnlm_scores.to(torch.float64)
    num_words = torch.tensor([len(seq) for seq in seq_list], dtype=torch.float64)
    return {(s, t, p): _argmax_per_utt(am + s * ngram + t * nnlm - p * num_words, row_splits, seq_list)
            for s in lm_scales for t in nnlm_scales for p in word_penalties}


class Decoder:
    """Decodes batches of log-probs with the chosen methods; returns {result key: hypotheses}.

    Result keys: `greedy`, `ctc-decoding`, `1best`, `1best_lm_scale_S_wip_P` (opts.hlg_scales x
    opts.word_penalties, but for (1, 0), which is `1best`), `whole-lattice-rescoring_lm_scale_S`,
    `nbest-rescoring_lm_scale_S`, `nnlm-rescoring_lm_scale_S_nnlm_scale_N` (opts.lm_scales x opts.nnlm_scales),
    each of the last three with `_wip_P` appended for every nonzero P of opts.word_penalties. Greedy needs
    neither k2 nor a lang dir (only `tokenizer`); nnlm-rescoring needs `nnlm` (a qnet.bin.train_nnlm nnlm.pt)
    and G_rescore."""

    def __init__(
        self,
        methods: Sequence[str],
        tokenizer,
        lang_dir: Optional[PathLike] = None,
        G_rescore: Optional[PathLike] = None,
        hlg_path: Optional[PathLike] = None,
        device="cpu",
        opts: Optional[DecodeOptions] = None,
        modified_ctc_topo: bool = False,
        nnlm: Optional[PathLike] = None,
    ):
        self.methods = list(methods)
        for m in self.methods:
            if m not in METHODS:
                raise ValueError(f"unknown decoding method {m!r}; choose from {', '.join(METHODS)}")
        self.tokenizer = tokenizer
        self.opts = opts or DecodeOptions()
        self.device = torch.device(device)
        self.stats = DecodeStats()
        self.H = self.HLG = self.HLG_weighted = self.G = self.G_loops = self.nnlm = None
        self.one_best_settings: List[Tuple[float, float]] = []
        self.hlg_words: Optional[torch.Tensor] = None  # words on each HLG arc (for the word penalty)
        self.word_symbols: List[str] = []
        needs_hlg = {"1best", *RESCORING_METHODS} & set(self.methods)
        if needs_hlg or "ctc-decoding" in self.methods:
            import_k2()  # a clear error up front when k2 is missing
        if "ctc-decoding" in self.methods:
            from qnet.graph import build_ctc_topo

            self.H = build_ctc_topo(len(tokenizer.table) - 1, modified=modified_ctc_topo, device=self.device)
        if needs_hlg:
            from qnet.graph import load_HLG
            from qnet.lang import SymbolTable

            if lang_dir is None:
                raise ValueError(f"methods {sorted(needs_hlg)} need --lang-dir")
            hlg = Path(hlg_path) if hlg_path else Path(lang_dir) / "HLG.pt"
            if not hlg.is_file():
                raise FileNotFoundError(f"{hlg} does not exist; build it with qnet.bin.compile_hlg")
            self.HLG = load_HLG(hlg, self.device)
            # HLG 1best at the other (LM weight, word penalty) pairs: one copy whose scores are rewritten
            # from HLG's for each pair (the lattices for rescoring keep HLG's own scores).
            self.one_best_settings = [(float(w), float(p)) for w in self.opts.hlg_scales
                                      for p in self.opts.word_penalties if (w, p) != (1.0, 0.0)]
            if "1best" in self.methods and self.one_best_settings:
                from qnet.graph import words_per_arc

                self.HLG_weighted = self.HLG.clone()
                self.hlg_words = words_per_arc(self.HLG).to(self.HLG.scores.dtype)
            words = SymbolTable.from_file(Path(lang_dir) / "words.txt")
            self.word_symbols = words.symbols
            rescoring = set(RESCORING_METHODS) & set(self.methods)
            if rescoring:
                if G_rescore is None:
                    raise ValueError(f"methods {sorted(rescoring)} need --G-rescore")
                from qnet.lm import load_G, with_epsilon_self_loops

                G = load_G(G_rescore, words["#0"], self.device)  # read once, whatever the methods
                if {"nbest-rescoring", "nnlm-rescoring"} & rescoring:
                    self.G = G
                if {"whole-lattice-rescoring", "nnlm-rescoring"} & rescoring:
                    self.G_loops = with_epsilon_self_loops(G)
                del G
            if "nnlm-rescoring" in self.methods:
                if nnlm is None:
                    raise ValueError("method nnlm-rescoring needs --nnlm (an nnlm.pt of qnet.bin.train_nnlm)")
                from qnet.nnlm import NnlmScorer

                self.nnlm = NnlmScorer.from_file(nnlm, self.device, self.opts.nnlm_max_tokens)
                self.nnlm_ids = self.nnlm.id_map(self.word_symbols)

    def _words(self, ids: List[int]) -> str:
        return " ".join(self.word_symbols[i] for i in ids)

    def _flag_empty(self, method: str, best_path, utt_ids: Sequence[str]) -> None:
        for utt, n in zip(utt_ids, num_arcs_per_fsa(best_path)):
            if n == 0:
                self.stats.add(method, utt)

    def decode(self, log_probs: torch.Tensor, lens: torch.Tensor, utt_ids: Sequence[str]) -> Dict[str, List[str]]:
        """Hypotheses of one batch for every method (and LM scale)."""
        results: Dict[str, List[str]] = {}
        if "greedy" in self.methods:
            results["greedy"] = [self.tokenizer.decode(ids) for ids in greedy_decode(log_probs, lens)]
        if self.H is None and self.HLG is None:
            return results
        # k2 cannot take zero-frame utterances: they get empty hypotheses for the graph methods.
        lens = lens.cpu()
        if self.opts.blank_skip_threshold > 0:
            log_probs, lens = skip_blank_frames(log_probs, lens, self.opts.blank_skip_threshold)
        keep = torch.nonzero(lens > 0).flatten()
        for i in torch.nonzero(lens <= 0).flatten().tolist():
            self.stats.add("all graph methods (zero frames)", utt_ids[i])
        sub: Dict[str, List[str]] = {}
        # Lattices are built for at most opts.max_lattice_frames frames at a time: on flat posteriors
        # their memory grows with the frames of the batch, whatever --max-duration says.
        for group in frame_groups([int(lens[i]) for i in keep.tolist()], self.opts.max_lattice_frames):
            idx = keep[group.start:group.stop]
            part = self._decode_graphs(log_probs[idx.to(log_probs.device)].to(self.device), lens[idx],
                                       [utt_ids[i] for i in idx.tolist()])
            for key, hyps in part.items():
                sub.setdefault(key, []).extend(hyps)
        for key, hyps in sub.items():
            full = [""] * len(utt_ids)
            for j, i in enumerate(keep.tolist()):
                full[i] = hyps[j]
            results[key] = full
        if keep.numel() == 0:  # still report every key, all empty
            for key in self.result_keys():
                if key != "greedy":
                    results[key] = [""] * len(utt_ids)
        return results

    def result_keys(self) -> List[str]:
        """Every result key this decoder produces."""
        keys = [m for m in ("greedy", "ctc-decoding", "1best") if m in self.methods]
        if "1best" in self.methods:
            keys += [one_best_key(w, p) for w, p in self.one_best_settings]
        penalties = self.opts.word_penalties
        for m in ("whole-lattice-rescoring", "nbest-rescoring"):
            if m in self.methods:
                keys += [rescore_key(m, s, p) for s in self.opts.lm_scales for p in penalties]
        if "nnlm-rescoring" in self.methods:
            keys += [nnlm_key(s, t, p) for s in self.opts.lm_scales for t in self.opts.nnlm_scales for p in penalties]
        return keys

    def _decode_graphs(self, log_probs: torch.Tensor, lens: torch.Tensor, utt_ids: Sequence[str]):
        results: Dict[str, List[str]] = {}
        # A lattice that only gives its best path can be pruned hard on output (the best path always
        # survives k2's output beam) and needs no connect: less lattice to build, copy and search.
        best_path_opts = replace(self.opts, output_beam=min(self.opts.output_beam, BEST_PATH_OUTPUT_BEAM))
        if self.H is not None:
            lattice = get_lattice(log_probs, lens, self.H, best_path_opts, connect=False)
            best = one_best(lattice, self.opts.use_double_scores)
            self._flag_empty("ctc-decoding", best, utt_ids)
            results["ctc-decoding"] = [self.tokenizer.decode(ids) for ids in path_labels(best)]
        if self.HLG is not None:
            rescoring = bool(set(RESCORING_METHODS) & set(self.methods))
            lattice = get_lattice(log_probs, lens, self.HLG, self.opts if rescoring else best_path_opts,
                                  connect=rescoring)
            best = one_best(lattice, self.opts.use_double_scores)
            self._flag_empty("1best", best, utt_ids)
            if "1best" in self.methods:
                results["1best"] = [self._words(ids) for ids in path_labels(best)]
                for weight, penalty in self.one_best_settings:
                    key = one_best_key(weight, penalty)
                    self.HLG_weighted.scores = self.HLG.scores * weight - penalty * self.hlg_words
                    best_w = one_best(get_lattice(log_probs, lens, self.HLG_weighted, best_path_opts, connect=False),
                                      self.opts.use_double_scores)
                    self._flag_empty(key, best_w, utt_ids)
                    results[key] = [self._words(ids) for ids in path_labels(best_w)]
            if rescoring:
                results.update(self._rescore(lattice, path_labels(best), utt_ids))
        return results

    def _rescore(self, lattice, one_best_ids: List[List[int]], utt_ids: Sequence[str]) -> Dict[str, List[str]]:
        """Whole-lattice, n-best and NNLM rescoring one utterance at a time, each lattice first pruned to
        opts.max_lattice_arcs; an utterance whose rescoring fails gets its 1best words (counted). The NNLM
        scores the n-best lists of all utterances together at the end."""
        k2 = import_k2()
        opts = self.opts
        methods = [m for m in RESCORING_METHODS if m in self.methods]
        settings = [(float(s), float(p)) for s in opts.lm_scales for p in opts.word_penalties]
        words: Dict[str, List[List[int]]] = {rescore_key(m, s, p): [] for m in methods
                                             if m != "nnlm-rescoring" for s, p in settings}
        nnlm_lists: List[NnlmCandidates] = []
        for i, (utt, num_arcs) in enumerate(zip(utt_ids, num_arcs_per_fsa(lattice))):
            if num_arcs == 0:  # already counted as an empty lattice
                for key in words:
                    words[key].append([])
                nnlm_lists.append(NnlmCandidates([], torch.zeros(0, dtype=torch.float64),
                                                 torch.zeros(0, dtype=torch.float64)))
                continue
            utt_lattice = k2.index_fsa(lattice, torch.tensor([i], dtype=torch.int32, device=lattice.device))
            lat, threshold = prune_lattice(utt_lattice, opts.max_lattice_arcs, opts.use_double_scores)
            whole: Optional[Dict[Tuple[float, float], List[int]]] = None  # shared by whole-lattice and NNLM
            for method in methods:
                if threshold is not None:
                    self.stats.add_pruned(method, utt, num_arcs, lat.num_arcs, threshold)
                try:
                    if method == "whole-lattice-rescoring" or (method == "nnlm-rescoring" and whole is None):
                        best = rescore_whole_lattice(lat, self.G_loops, opts.lm_scales, opts.use_double_scores,
                                                     opts.word_penalties)
                        whole = {setting: path_labels(p)[0] for setting, p in best.items()}
                    if method == "whole-lattice-rescoring":
                        per_setting = whole
                    elif method == "nbest-rescoring":
                        per_setting = self._retrying_paths(
                            utt, lambda n: {setting: seqs[0] for setting, seqs in rescore_nbest(
                                lat, self.G, opts, opts.lm_scales, num_paths=n,
                                word_penalties=opts.word_penalties).items()})
                    else:
                        extra = [one_best_ids[i]] + list(whole.values())
                        nnlm_lists.append(self._retrying_paths(
                            utt, lambda n: nnlm_candidates(lat, self.G, opts, extra, num_paths=n)))
                        continue
                except (RuntimeError, MemoryError) as exc:
                    self.stats.add_fallback(method, utt, f"{type(exc).__name__}: {exc}")
                    if method == "nnlm-rescoring":  # the 1best alone: every scale picks it
                        nnlm_lists.append(NnlmCandidates([one_best_ids[i]], torch.zeros(1, dtype=torch.float64),
                                                         torch.zeros(1, dtype=torch.float64)))
                        continue
                    per_setting = {setting: one_best_ids[i] for setting in settings}
                for (scale, penalty), ids in per_setting.items():
                    words[rescore_key(method, scale, penalty)].append(ids)
        if "nnlm-rescoring" in methods:
            seqs = [[self.nnlm_ids[w] for w in seq] for c in nnlm_lists for seq in c.seqs]
            best = rescore_with_nnlm(nnlm_lists, self.nnlm.score(seqs), opts.lm_scales, opts.nnlm_scales,
                                     opts.word_penalties)
            for (s, t, p), per_utt in best.items():
                words[nnlm_key(s, t, p)] = per_utt
        return {key: [self._words(ids) for ids in seqs] for key, seqs in words.items()}

    def _retrying_paths(self, utt: str, rescore):
        """rescore(num_paths) for one lattice; on failure retried with half the paths, down to one."""
        num_paths = self.opts.num_paths
        while True:
            try:
                return rescore(num_paths)
            except (RuntimeError, MemoryError) as exc:
                if num_paths <= 1:
                    raise
                logging.warning(f"n-best rescoring of {utt} with {num_paths} paths failed ({str(exc)[:200]}); "
                                f"retrying with {num_paths // 2}")
                num_paths //= 2
