"""CTC loss: k2 and torch backends agree (loss and gradients), NeMo mean_batch reduction, zero_infinity."""

import pytest
import torch

from qnet.ctc import CtcLoss, ctc_min_frames, default_backend, greedy_decode, k2_available

needs_k2 = pytest.mark.skipif(not k2_available(), reason="k2 is not importable here")


def _batch(seed=0, vocab=9):
    g = torch.Generator().manual_seed(seed)
    lens = torch.tensor([40, 17, 33, 25, 8])
    logits = torch.randn(len(lens), 40, vocab, generator=g, dtype=torch.float32)
    targets = [[1, 2, 2, 3, 4], [5, 6], [1, 1, 1, 1, 7, 8, 8], [3, 4, 5, 6, 7, 8, 1, 2], [2, 3]]
    return logits, lens, targets


def _loss_and_grad(backend, logits, lens, targets):
    x = logits.clone().requires_grad_(True)
    loss, per_utt, n_inf = CtcLoss(backend)(x.log_softmax(-1), lens, targets)
    loss.backward()
    return loss.detach(), per_utt, n_inf, x.grad


@needs_k2
def test_k2_and_torch_agree_on_loss_and_gradients():
    logits, lens, targets = _batch()
    lk, pk, nk, gk = _loss_and_grad("k2", logits, lens, targets)
    lt, pt, nt, gt = _loss_and_grad("torch", logits, lens, targets)
    assert nk == nt == 0
    assert float((lk - lt).abs() / lt.abs()) <= 1e-3
    assert torch.allclose(pk, pt, rtol=1e-3)
    assert torch.allclose(gk, gt, atol=1e-5, rtol=1e-3)
    assert gk.abs().sum() > 0


@needs_k2
def test_k2_handles_unsorted_lengths_and_ties():
    logits, _, targets = _batch(seed=3)
    lens = torch.tensor([12, 40, 12, 30, 40])  # unsorted with ties: k2 needs longest-first segments
    lk, pk, _, gk = _loss_and_grad("k2", logits, lens, targets)
    lt, pt, _, gt = _loss_and_grad("torch", logits, lens, targets)
    assert torch.allclose(pk, pt, rtol=1e-3)
    assert torch.allclose(gk, gt, atol=1e-5, rtol=1e-3)


@pytest.mark.parametrize("backend", ["torch", pytest.param("k2", marks=needs_k2)])
def test_reduction_is_mean_over_utterances_of_summed_nll(backend):
    logits, lens, targets = _batch(seed=1)
    loss, per_utt, _ = CtcLoss(backend)(logits.log_softmax(-1), lens, targets)
    lp = logits.log_softmax(-1).transpose(0, 1)
    ref = torch.nn.functional.ctc_loss(
        lp, torch.tensor(sum(targets, [])), lens, torch.tensor([len(t) for t in targets]), reduction="none"
    )
    assert torch.allclose(per_utt, ref, rtol=1e-4)
    assert float(loss) == pytest.approx(float(ref.mean()), rel=1e-4)


@pytest.mark.parametrize("backend", ["torch", pytest.param("k2", marks=needs_k2)])
def test_infeasible_utterance_is_zeroed_with_zero_gradient(backend):
    logits, lens, targets = _batch(seed=2)
    targets = list(targets)
    targets[4] = [1, 1, 1, 1, 1]  # needs 9 frames, has 8
    loss, per_utt, n_inf, grad = _loss_and_grad(backend, logits, lens, targets)
    assert n_inf == 1
    assert per_utt[4] == 0.0 and torch.isfinite(loss)
    assert torch.isfinite(grad).all() and grad[4].abs().max() == 0.0
    assert float(loss) == pytest.approx(float(per_utt[:4].sum() / 5), rel=1e-5)


def test_ctc_min_frames_counts_repeats():
    assert ctc_min_frames([]) == 0
    assert ctc_min_frames([1, 2, 3]) == 3
    assert ctc_min_frames([1, 1, 2, 2, 2]) == 8


def test_greedy_decode_collapses_and_drops_blank():
    # frames: a a <b> a b b <b> | padding that would add 'c'
    ids = torch.tensor([[1, 1, 0, 1, 2, 2, 0, 3, 3]])
    log_probs = torch.nn.functional.one_hot(ids, 4).float().log()
    assert greedy_decode(log_probs, torch.tensor([7])) == [[1, 1, 2]]
    assert greedy_decode(log_probs, torch.tensor([0])) == [[]]


def test_backend_choice_and_errors():
    assert default_backend() == "torch"  # k2 only when asked: the same loss, slower on CPU (bench_cpu_procs.py)
    with pytest.raises(ValueError):
        CtcLoss("warp")
    with pytest.raises(ValueError):
        CtcLoss("torch")(torch.zeros(2, 5, 3), torch.tensor([5]), [[1], [2]])
