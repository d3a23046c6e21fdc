"""NovoGrad (layer-wise second moments) and NeMo's cosine-annealing schedule with linear warmup.

Both follow NeMo exactly (see shared/reference/quartznet.md §5.2-5.3):

NovoGrad, per parameter tensor p with gradient g, first moment m (shape of p) and a *scalar*
second moment v (initialised to 0)::

    n = ||g||_2^2
    v = n                      on the first step (v == 0)
    v = b2 * v + (1 - b2) * n  afterwards
    d = g / (sqrt(v) + eps) + weight_decay * p
    d = (1 - b1) * d           only with grad_averaging
    m = b1 * m + d
    p = p - lr * m

Schedule (NeMo HEAD `CosineAnnealing` with `WarmupAnnealHoldPolicy`), `step` = optimizer steps done::

    step <= warmup:        lr0 * (step + 1) / (warmup + 1)
    warmup < step <= max:  (lr0 - min_lr) * 0.5 * (1 + cos(pi * (step - warmup) / (max - warmup))) + min_lr
    step > max:            min_lr
"""

import math
from typing import Iterable, Tuple

import torch


class NovoGrad(torch.optim.Optimizer):
    """NovoGrad (Ginsburg et al. 2019) as in NeMo: per-tensor scalar second moment, WD on the normalized grad."""

    def __init__(
        self,
        params: Iterable,
        lr: float = 0.01,
        betas: Tuple[float, float] = (0.95, 0.5),
        eps: float = 1e-8,
        weight_decay: float = 0.001,
        grad_averaging: bool = False,
        amsgrad: bool = False,
    ):
        if lr < 0.0:
            raise ValueError(f"invalid learning rate {lr}")
        if not 0.0 <= betas[0] < 1.0 or not 0.0 <= betas[1] < 1.0:
            raise ValueError(f"invalid betas {betas}: each must be in [0, 1)")
        if eps < 0.0:
            raise ValueError(f"invalid eps {eps}")
        if weight_decay < 0.0:
            raise ValueError(f"invalid weight_decay {weight_decay}")
        defaults = dict(
            lr=lr, betas=tuple(betas), eps=eps, weight_decay=weight_decay, grad_averaging=grad_averaging, amsgrad=amsgrad
        )
        super().__init__(params, defaults)

    @torch.no_grad()
    def step(self, closure=None):
        """Apply one NovoGrad update to every parameter with a gradient; returns the closure's loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                if grad.is_sparse:
                    raise RuntimeError("NovoGrad does not support sparse gradients")
                # Moments are kept in fp32 for half-precision parameters, else in the parameter's dtype.
                dtype = torch.float32 if p.dtype in (torch.float16, torch.bfloat16) else p.dtype
                grad32 = grad.to(dtype)
                state = self.state[p]
                if len(state) == 0:
                    state["step"] = 0
                    state["exp_avg"] = torch.zeros_like(p, dtype=dtype, memory_format=torch.preserve_format)
                    state["exp_avg_sq"] = torch.zeros((), dtype=dtype, device=p.device)
                    if group["amsgrad"]:
                        state["max_exp_avg_sq"] = torch.zeros((), dtype=dtype, device=p.device)
                exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
                state["step"] += 1

                norm_sq = grad32.pow(2).sum()
                # v == 0 means "no second moment yet" (NeMo's test); torch.where avoids a device sync.
                exp_avg_sq.copy_(torch.where(exp_avg_sq == 0, norm_sq, exp_avg_sq * beta2 + norm_sq * (1 - beta2)))
                if group["amsgrad"]:
                    max_sq = state["max_exp_avg_sq"]
                    torch.max(max_sq, exp_avg_sq, out=max_sq)
                    denom = max_sq.sqrt().add_(group["eps"])
                else:
                    denom = exp_avg_sq.sqrt().add_(group["eps"])

                update = grad32.div(denom)
                if group["weight_decay"] != 0:
                    update.add_(p.to(dtype), alpha=group["weight_decay"])
                if group["grad_averaging"]:
                    update.mul_(1 - beta1)
                exp_avg.mul_(beta1).add_(update)
                p.add_(exp_avg.to(p.dtype), alpha=-group["lr"])
        return loss


def cosine_warmup_lr(step: int, base_lr: float, warmup_steps: int, max_steps: int, min_lr: float = 0.0) -> float:
    """Learning rate after `step` optimizer steps (NeMo CosineAnnealing with linear warmup)."""
    if step <= warmup_steps:
        return base_lr * (step + 1) / (warmup_steps + 1)
    if step > max_steps:
        return min_lr
    progress = (step - warmup_steps) / max(1, max_steps - warmup_steps)
    return (base_lr - min_lr) * 0.5 * (1.0 + math.cos(math.pi * progress)) + min_lr


class CosineWarmupScheduler:
    """Per-step LR scheduler: call `.step()` after each optimizer step; state_dict/load_state_dict resume it.

    A plain class (not torch's _LRScheduler) so the formula is evaluated from the step count alone,
    which makes resuming exact and keeps `max_steps` part of the saved state.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, warmup_steps: int, max_steps: int, min_lr: float = 0.0):
        if warmup_steps < 0 or max_steps < 1:
            raise ValueError(f"need warmup_steps >= 0 and max_steps >= 1, got {warmup_steps}, {max_steps}")
        self.optimizer = optimizer
        self.warmup_steps = int(warmup_steps)
        self.max_steps = int(max_steps)
        self.min_lr = float(min_lr)
        self.base_lrs = [g.get("initial_lr", g["lr"]) for g in optimizer.param_groups]
        for g, lr in zip(optimizer.param_groups, self.base_lrs):
            g["initial_lr"] = lr
        self.last_step = 0
        self._apply()

    def _apply(self) -> None:
        for g, base in zip(self.optimizer.param_groups, self.base_lrs):
            g["lr"] = cosine_warmup_lr(self.last_step, base, self.warmup_steps, self.max_steps, self.min_lr)

    def step(self) -> None:
        """Advance one optimizer step and set the groups' lr for the next one."""
        self.last_step += 1
        self._apply()

    def get_last_lr(self):
        """Current lr of each parameter group."""
        return [g["lr"] for g in self.optimizer.param_groups]

    def state_dict(self) -> dict:
        """Everything needed to continue the schedule."""
        return {
            "warmup_steps": self.warmup_steps,
            "max_steps": self.max_steps,
            "min_lr": self.min_lr,
            "base_lrs": list(self.base_lrs),
            "last_step": self.last_step,
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore a schedule saved by state_dict (and set the groups' lr accordingly)."""
        self.warmup_steps = int(state["warmup_steps"])
        self.max_steps = int(state["max_steps"])
        self.min_lr = float(state["min_lr"])
        self.base_lrs = list(state["base_lrs"])
        self.last_step = int(state["last_step"])
        self._apply()
