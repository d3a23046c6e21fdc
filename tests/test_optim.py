"""NovoGrad against hand-computed updates (quartznet.md §5.2) and the cosine-warmup schedule (§5.3)."""

import copy
import math

import pytest
import torch

from qnet.optim import CosineWarmupScheduler, NovoGrad, cosine_warmup_lr


def _step(opt, params, grads):
    for p, g in zip(params, grads):
        p.grad = torch.tensor(g, dtype=torch.float64).reshape(p.shape)
    opt.step()


def test_novograd_two_steps_by_hand():
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0], dtype=torch.float64))
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.5, 1e-8, 0.01
    opt = NovoGrad([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)

    # step 1: g = [3, 4], ||g||^2 = 25 -> v = 25 (first step), d = g/5 + wd*p, m = d
    _step(opt, [p], [[3.0, 4.0]])
    d1 = [3 / (5 + eps) + wd * 1.0, 4 / (5 + eps) + wd * -2.0]
    m1 = d1
    p1 = [1.0 - lr * m1[0], -2.0 - lr * m1[1]]
    assert p.detach().tolist() == pytest.approx(p1, rel=1e-12, abs=1e-14)
    assert opt.state[p]["exp_avg_sq"].item() == pytest.approx(25.0)

    # step 2: g = [0, 1], n = 1 -> v = 0.5*25 + 0.5*1 = 13, d = g/sqrt(13) + wd*p1, m = 0.9*m1 + d
    _step(opt, [p], [[0.0, 1.0]])
    v2 = b2 * 25.0 + (1 - b2) * 1.0
    s = math.sqrt(v2) + eps
    d2 = [0.0 / s + wd * p1[0], 1.0 / s + wd * p1[1]]
    m2 = [b1 * m1[0] + d2[0], b1 * m1[1] + d2[1]]
    p2 = [p1[0] - lr * m2[0], p1[1] - lr * m2[1]]
    assert p.detach().tolist() == pytest.approx(p2, rel=1e-12, abs=1e-14)
    assert opt.state[p]["exp_avg_sq"].item() == pytest.approx(v2)


def test_novograd_second_moment_is_per_tensor_and_grad_averaging():
    a = torch.nn.Parameter(torch.zeros(3, dtype=torch.float64))
    b = torch.nn.Parameter(torch.zeros(2, 2, dtype=torch.float64))
    opt = NovoGrad([a, b], lr=1.0, betas=(0.5, 0.5), eps=0.0, weight_decay=0.0, grad_averaging=True)
    _step(opt, [a, b], [[1.0, 2.0, 2.0], [[0.0, 0.0], [0.0, 2.0]]])
    # per-tensor norms 3 and 2; grad_averaging multiplies the normalized grad by (1 - b1) = 0.5
    assert a.detach().tolist() == pytest.approx([-0.5 / 3, -1.0 / 3, -1.0 / 3])
    assert b.detach().flatten().tolist() == pytest.approx([0.0, 0.0, 0.0, -0.5])
    assert opt.state[a]["exp_avg_sq"].dim() == 0 and opt.state[b]["exp_avg_sq"].dim() == 0


def test_novograd_zero_gradient_keeps_first_step_rule_and_skips_missing_grads():
    p = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    q = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = NovoGrad([p, q], lr=0.1, betas=(0.9, 0.5), eps=1e-8, weight_decay=0.0)
    _step(opt, [p], [[0.0, 0.0]])  # q has no grad: untouched
    assert opt.state[p]["exp_avg_sq"].item() == 0.0
    assert q.detach().tolist() == [1.0, 1.0] and len(opt.state[q]) == 0
    _step(opt, [p], [[0.0, 2.0]])  # v was still 0 -> v = n = 4, not 0.5 * 4
    assert opt.state[p]["exp_avg_sq"].item() == pytest.approx(4.0)


def test_novograd_state_dict_roundtrip_continues_identically():
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(4, 3))
    grads = [torch.randn(4, 3) for _ in range(4)]
    opt = NovoGrad([w], lr=0.05)
    for g in grads[:2]:
        w.grad = g.clone()
        opt.step()
    saved_w, saved_state = w.detach().clone(), copy.deepcopy(opt.state_dict())
    for g in grads[2:]:
        w.grad = g.clone()
        opt.step()
    expected = w.detach().clone()

    w2 = torch.nn.Parameter(saved_w.clone())
    opt2 = NovoGrad([w2], lr=0.05)
    opt2.load_state_dict(saved_state)
    for g in grads[2:]:
        w2.grad = g.clone()
        opt2.step()
    assert torch.equal(w2.detach(), expected)


def test_novograd_rejects_bad_hyperparameters():
    p = [torch.nn.Parameter(torch.zeros(1))]
    with pytest.raises(ValueError):
        NovoGrad(p, lr=-1)
    with pytest.raises(ValueError):
        NovoGrad(p, betas=(1.0, 0.5))


def test_cosine_warmup_formula():
    lr0, warm, total, lo = 0.01, 4, 20, 1e-4
    assert cosine_warmup_lr(0, lr0, warm, total, lo) == pytest.approx(lr0 * 1 / 5)
    assert cosine_warmup_lr(3, lr0, warm, total, lo) == pytest.approx(lr0 * 4 / 5)
    assert cosine_warmup_lr(4, lr0, warm, total, lo) == pytest.approx(lr0)
    mid = (lr0 - lo) * 0.5 * (1 + math.cos(math.pi * 8 / 16)) + lo
    assert cosine_warmup_lr(12, lr0, warm, total, lo) == pytest.approx(mid)
    assert cosine_warmup_lr(20, lr0, warm, total, lo) == pytest.approx(lo)
    assert cosine_warmup_lr(25, lr0, warm, total, lo) == lo
    assert cosine_warmup_lr(0, lr0, 0, total) == pytest.approx(lr0)


def test_scheduler_sets_lr_and_resumes_from_state_dict():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = NovoGrad([p], lr=0.02)
    sched = CosineWarmupScheduler(opt, warmup_steps=3, max_steps=10, min_lr=0.001)
    seen = [sched.get_last_lr()[0]]
    for _ in range(6):
        sched.step()
        seen.append(opt.param_groups[0]["lr"])
    assert seen == pytest.approx([cosine_warmup_lr(s, 0.02, 3, 10, 0.001) for s in range(7)])
    state = sched.state_dict()

    opt2 = NovoGrad([torch.nn.Parameter(torch.zeros(1))], lr=0.5)  # base lr comes from the state
    sched2 = CosineWarmupScheduler(opt2, warmup_steps=0, max_steps=1)
    sched2.load_state_dict(state)
    assert opt2.param_groups[0]["lr"] == pytest.approx(seen[-1])
    sched.step()
    sched2.step()
    assert opt2.param_groups[0]["lr"] == pytest.approx(opt.param_groups[0]["lr"])
