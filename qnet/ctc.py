"""CTC loss over (B, T, V) log-probabilities, with k2 (training graphs + DenseFsaVec) or torch.

Reduction is NeMo's `mean_batch`: the per-utterance negative log-likelihood (summed over that
utterance's frames, *not* divided by its label length) averaged over the utterances of the batch.
Utterances whose labels cannot be aligned to their frames get an infinite loss, which is replaced
by 0 with a zero gradient (`zero_infinity`, as NeMo's CTCLoss); the count of such utterances is
returned so the trainer can log it. The blank is token 0 (the k2/icefall convention of qnet).

The k2 path follows icefall's old CTC recipes: `k2.ctc_graph(token_ids)` builds one linear CTC
graph per utterance, `k2.DenseFsaVec` wraps the network output with supervision segments sorted
by duration (longest first, as `k2.intersect_dense` requires) and `k2.ctc_loss` returns the
negative total log-probability of each graph; results are put back in batch order.
"""

from typing import List, Optional, Sequence, Tuple

import torch

from qnet.utils import MissingDependencyError, import_k2

BACKENDS = ("k2", "torch")


def k2_available() -> bool:
    """True when k2 imports (it needs Python 3.9 + torch 1.13.1 here)."""
    try:
        import_k2()
        return True
    except MissingDependencyError:
        return False


def default_backend() -> str:
    """'torch': the same loss as k2's, computed ~12x faster on CPU (k2 builds and intersects an FSA per
    utterance), which makes a whole mini training step 1.5x faster (bench/README.md, bench_cpu_procs.py)."""
    return "torch"


def ctc_min_frames(tokens: Sequence[int]) -> int:
    """Frames a CTC alignment of `tokens` needs: one per token plus a blank between each repeated pair."""
    repeats = sum(1 for a, b in zip(tokens, tokens[1:]) if a == b)
    return len(tokens) + repeats


class CtcLoss(torch.nn.Module):
    """CTC loss, mean over utterances of the per-utterance loss, zero_infinity; backend 'k2' or 'torch'.

    forward(log_probs (B, T, V) log-softmax, lens (B,), targets: list of B token-id lists)
      -> (loss scalar, per_utt (B,) float32 with 0 where infinite, num_infinite int)
    """

    def __init__(self, backend: Optional[str] = None, blank: int = 0, output_beam: float = 1e4):
        super().__init__()
        backend = backend or default_backend()
        if backend not in BACKENDS:
            raise ValueError(f"unknown CTC backend {backend!r}, expected one of {BACKENDS}")
        if backend == "k2":
            import_k2()  # fail now with a clear message rather than in the first batch
            if blank != 0:
                raise ValueError("the k2 CTC backend needs blank id 0 (k2.ctc_graph's convention)")
        self.backend = backend
        self.blank = blank
        # k2 prunes the lattice with this beam; a very wide one keeps every path (exact loss).
        self.output_beam = output_beam

    def extra_repr(self) -> str:
        return f"backend={self.backend}, blank={self.blank}"

    def forward(
        self, log_probs: torch.Tensor, lens: torch.Tensor, targets: List[List[int]]
    ) -> Tuple[torch.Tensor, torch.Tensor, int]:
        """Loss (mean over utterances), per-utterance losses (B,), number of infinite ones zeroed."""
        if log_probs.dim() != 3:
            raise ValueError(f"log_probs must be (B, T, V), got shape {tuple(log_probs.shape)}")
        batch = log_probs.size(0)
        if lens.numel() != batch or len(targets) != batch:
            raise ValueError(f"batch mismatch: log_probs {batch}, lens {lens.numel()}, targets {len(targets)}")
        # The loss is computed in fp32 even under autocast.
        log_probs = log_probs.float()
        if self.backend == "k2":
            per_utt = self._k2(log_probs, lens, targets)
        else:
            per_utt = self._torch(log_probs, lens, targets)
        # Infinite = no alignment exists; NaN (a diverged model) is left for the trainer to see.
        infinite = torch.isinf(per_utt)
        if bool(infinite.any()):
            # where() routes a zero gradient to those utterances (zero_infinity).
            per_utt = torch.where(infinite, torch.zeros_like(per_utt), per_utt)
        # torch's zero_infinity has already zeroed them, so count them from the lengths as well.
        lens_list = lens.tolist()
        num_infeasible = sum(1 for seq, n in zip(targets, lens_list) if ctc_min_frames(seq) > n)
        num_infinite = max(int(infinite.sum().item()), num_infeasible)
        return per_utt.mean(), per_utt.detach(), num_infinite

    def _torch(self, log_probs: torch.Tensor, lens: torch.Tensor, targets: List[List[int]]) -> torch.Tensor:
        flat = torch.tensor([t for seq in targets for t in seq], dtype=torch.long)
        target_lens = torch.tensor([len(seq) for seq in targets], dtype=torch.long)
        # cudnn's CTC needs int32 CPU targets, blank 0 and T <= 256 labels; the native kernel is fine.
        return torch.nn.functional.ctc_loss(
            log_probs.transpose(0, 1),
            flat.to(log_probs.device),
            lens.to(torch.long),
            target_lens.to(log_probs.device),
            blank=self.blank,
            reduction="none",
            # torch's backward gives NaN gradients for infinite losses unless it zeroes them itself.
            zero_infinity=True,
        )

    def _k2(self, log_probs: torch.Tensor, lens: torch.Tensor, targets: List[List[int]]) -> torch.Tensor:
        k2 = import_k2()
        lens_cpu = lens.detach().to("cpu", torch.int32)
        # DenseFsaVec wants segments sorted by duration, longest first (stable for equal lengths).
        order = sorted(range(len(targets)), key=lambda i: -int(lens_cpu[i]))
        segments = torch.tensor([[i, 0, int(lens_cpu[i])] for i in order], dtype=torch.int32)
        dense = k2.DenseFsaVec(log_probs, segments)
        graphs = k2.ctc_graph([list(targets[i]) for i in order], modified=False, device=log_probs.device)
        sorted_loss = k2.ctc_loss(
            graphs, dense, output_beam=self.output_beam, reduction="none", use_double_scores=True
        )
        inverse = torch.empty(len(order), dtype=torch.long)
        inverse[torch.tensor(order, dtype=torch.long)] = torch.arange(len(order))
        return sorted_loss[inverse.to(sorted_loss.device)]


def greedy_decode(log_probs: torch.Tensor, lens: torch.Tensor, blank: int = 0) -> List[List[int]]:
    """Best-path decoding: argmax per frame over the valid frames, collapse repeats, drop blanks."""
    best = log_probs.argmax(dim=-1).cpu()
    out: List[List[int]] = []
    for b, n in enumerate(lens.cpu().tolist()):
        path = best[b, :n]
        if n:
            keep = torch.ones(n, dtype=torch.bool)
            keep[1:] = path[1:] != path[:-1]
            path = path[keep]
        out.append([int(t) for t in path if int(t) != blank])
    return out

