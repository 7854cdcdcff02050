"""One optimisation step under the GradScaler's rule, decided identically on every rank.

A step whose loss or gradients hold a NaN/inf anywhere (an fp16 overflow, one bad batch on one
rank) is **skipped**: no optimizer update, the GradScaler backs off, the gradients are dropped. The
decision comes from one all-reduced flag, so every rank skips the same steps and the replicas never
drift apart, even when only one rank's Partial FC shard (whose gradient DDP does not average) saw
the overflow. The forward has already kept such a batch out of the queue and the quality
statistics (see :class:`qgface_plugin.quality.QualityPartition`). The LR schedule keeps stepping
(it follows the step count, as upstream's does). After ``limit`` consecutive skipped steps the run
stops on every rank at the same step with :class:`~qgface_plugin.errors.QGFaceNonFiniteError`.

The flag costs one host sync per step, the one ``GradScaler.step`` makes anyway under fp16 (it
replaces it: the optimizer is stepped directly once the flag says the gradients are finite).
"""
from __future__ import annotations

import torch

from ..dist import all_reduce_sum_, world_size
from ..errors import QGFaceConfigError, QGFaceNonFiniteError

__all__ = ["optimizer_step", "NonFiniteSteps"]


class NonFiniteSteps:
    """Counts skipped steps; raises after ``limit`` in a row (the same step on every rank).

    Args:
        limit: consecutive skipped steps that stop the run (config ``max_nonfinite_steps``).
        keep: how many skipped step numbers to remember for the summary.
    """

    def __init__(self, limit: int = 20, keep: int = 100):
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise QGFaceConfigError(f"config.max_nonfinite_steps must be a positive integer, got {limit!r}")
        self.limit, self.keep = limit, keep
        self.consecutive = self.total = 0
        self.steps: list[int] = []

    def record(self, skipped: bool, step: int) -> None:
        """Note the outcome of ``step`` (the 1-based number of the step just taken, as the log counts)."""
        if not skipped:
            self.consecutive = 0
            return
        self.consecutive += 1
        self.total += 1
        if len(self.steps) < self.keep:
            self.steps.append(step)
        if self.consecutive >= self.limit:
            raise QGFaceNonFiniteError(
                f"training stopped at step {step}: {self.consecutive} consecutive steps had a NaN/inf "
                f"loss or gradient on some rank ({self.total} skipped in all, first at step "
                f"{self.steps[0]}); lower config.lr, raise config.warmup_epoch, check the data, or "
                "raise config.max_nonfinite_steps. The last epoch's checkpoint is intact.")

    def state_dict(self) -> dict:
        """The counters, for a checkpoint."""
        return {"consecutive": self.consecutive, "total": self.total, "steps": list(self.steps)}

    def load_state_dict(self, state: dict) -> None:
        self.consecutive, self.total, self.steps = int(state["consecutive"]), int(state["total"]), list(state["steps"])

    def summary(self) -> dict:
        return {"skipped": self.total, "steps": list(self.steps), "limit": self.limit}


def _nonfinite_flag(loss: torch.Tensor, grad_norm: torch.Tensor, other_grads) -> torch.Tensor:
    """``[1]`` float: 1 if the loss, the clipped parameters' gradient norm or any other gradient
    is NaN/inf on this rank (device-side; a sum is non-finite iff one of its terms is, short of an
    overflow of finite terms past 3e38, which is as bad)."""
    total = loss.detach().float().reshape(()) + grad_norm.detach().float().reshape(())
    if other_grads:
        total = total + torch.stack(torch._foreach_norm(other_grads)).float().sum()
    return (~torch.isfinite(total)).float().reshape(1)


def _mark_skipped(scaler, opt) -> None:
    """Make the scaler's next ``update()`` back off, as after an inf found by its own check: mark
    the inf flags its ``unscale_(opt)`` of this step recorded (GradScaler's per-optimizer state)."""
    for t in scaler._per_optimizer_states[id(opt)]["found_inf_per_device"].values():
        t.fill_(1.0)


def optimizer_step(loss: torch.Tensor, opt: torch.optim.Optimizer, scaler: torch.amp.GradScaler,
                   clip_params, clip_norm: float, other_params=()) -> bool:
    """Backward, unscale, clip, and step — or skip on every rank. Returns True if skipped.

    Args:
        loss: this rank's loss (may be non-finite).
        opt: the optimizer over ``clip_params`` and ``other_params``.
        scaler: a GradScaler (disabled in fp32: the same rule holds without scaling).
        clip_params: parameters whose gradient norm is clipped to ``clip_norm`` (the backbone).
        other_params: the rest of the optimizer's parameters (Partial FC's shard), checked only.
    """
    scaler.scale(loss).backward()
    scaler.unscale_(opt)
    grad_norm = torch.nn.utils.clip_grad_norm_(list(clip_params), clip_norm)
    other = [p.grad for p in other_params if p.grad is not None]
    flag = _nonfinite_flag(loss, grad_norm, other)
    if world_size() > 1:
        all_reduce_sum_(flag)
    skipped = bool(flag.item())  # the step's one host sync (GradScaler.step's, taken here instead)
    if skipped:
        if scaler.is_enabled():
            _mark_skipped(scaler, opt)
    else:
        opt.step()
    scaler.update()
    opt.zero_grad(set_to_none=True)
    return skipped
