"""The quality hook: feature norm → margin scaler, normalised quality and the HQ/LQ split.

QGFace (and AdaFace before it) reads image quality off the norm ‖z‖ of the raw, un-normalised
embedding. Norms are standardised with exponential moving averages of the batch mean μ and
standard deviation σ:

    μ ← α·mean(n) + (1 − α)·μ,   σ ← α·std(n) + (1 − α)·σ          (α = 0.01, unbiased std)
    ms = clip(h · (n − μ) / (σ + 1e-3), −1, 1)                       (h = 0.333)
    q̂  = (ms + 1) / 2 ∈ [0, 1];   HQ ⇔ q̂ ≥ b

The statistics are updated *before* they are used, so the current batch counts (as in the
authors' code). Unlike the authors' code, which keeps per-GPU statistics, the batch here is the
**all-gathered** batch of every rank: every rank holds identical μ/σ and derives identical masks,
and the result does not depend on how the global batch is split over ranks.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from . import dist
from .errors import QGFaceConfigError, QGFaceInputError
from .utils import at_least_fp32

__all__ = ["Quality", "QualityPartition", "threshold_schedule", "check_threshold"]

#: Norms are clipped to this range before anything else (authors' code).
NORM_CLIP = (1e-3, 100.0)
#: Added to σ in the scaler's denominator (authors' and AdaFace's code).
STD_EPS = 1e-3
#: Initial μ/σ for each ``init`` choice ("first_batch" starts from the first batch's statistics).
STATS_INIT = {"zeros": (0.0, 0.0), "adaface": (20.0, 100.0), "first_batch": (0.0, 0.0)}


def check_threshold(b: float, name: str = "qgface_threshold") -> float:
    """Validate the HQ/LQ threshold b ∈ [0, 1]; returns it as a float."""
    try:
        b = float(b)
    except (TypeError, ValueError):
        raise QGFaceConfigError(f"{name} must be a number in [0, 1], got {b!r}") from None
    if not 0.0 <= b <= 1.0:  # also rejects NaN
        raise QGFaceConfigError(f"{name} must be in [0, 1], got {b}")
    return b


def threshold_schedule(b: float, epoch: float, warmup_epochs: float = 0.0) -> float:
    """Threshold in force at ``epoch``: a linear ramp from 0 to b over ``warmup_epochs``.

    The authors' ``warmup_scaler`` evaluates this at each epoch start with an integer epoch
    (b_epoch = min(1, epoch / joint_point) · b); a fractional epoch gives a smooth ramp.
    Note that b = 0 means "no partition" (everything classified *and* contrasted).
    """
    b = check_threshold(b)
    if warmup_epochs < 0:
        raise QGFaceConfigError(f"qgface_threshold_warmup_epochs must be >= 0, got {warmup_epochs}")
    if warmup_epochs == 0:
        return b
    return b * min(1.0, max(0.0, float(epoch)) / float(warmup_epochs))


@dataclass(frozen=True)
class Quality:
    """Per-row quality of the **global** batch (all ranks' rows, rank 0 first).

    Attributes:
        ms: ``[N]`` margin scaler in [−1, 1] (AdaFace's "margin scaler").
        qhat: ``[N]`` normalised quality (ms + 1) / 2 ∈ [0, 1].
        hq: ``[N]`` bool, q̂ ≥ b.
        threshold: b in force for this step.
        rank: this process's rank.
        rows_per_rank: rows each rank contributed (identical on every rank).
        finite: 0-dim bool tensor, False when some norm of the global batch was NaN/inf (identical
            on every rank); such a batch has not moved the statistics, and its rows count as LQ.
            None when not known.
    """

    ms: torch.Tensor
    qhat: torch.Tensor
    hq: torch.Tensor
    threshold: float
    rank: int = 0
    rows_per_rank: int = -1
    finite: torch.Tensor | None = None

    def local(self) -> "Quality":
        """The rows this rank contributed (a view; the whole object without a process group).

        The one row selection of a :class:`Quality`: :class:`~qgface_plugin.classifier.MarginClassifier` and
        the loss's pair gate take their rows here; Partial FC scores the gathered global batch, so it takes
        the whole object."""
        n = self.rows_per_rank
        if n < 0 or n == self.ms.shape[0]:
            return self
        sl = slice(self.rank * n, (self.rank + 1) * n)
        return Quality(self.ms[sl], self.qhat[sl], self.hq[sl], self.threshold, 0, n, self.finite)

    @property
    def partitioned(self) -> bool:
        """False when b = 0: the authors' "no partition" (everything classified and contrasted)."""
        return self.threshold > 0.0


class QualityPartition(nn.Module):
    """Feature-norm quality hook with EMA statistics shared by all ranks.

    Args:
        threshold: b ∈ [0, 1]; rows with q̂ ≥ b are HQ. 0 disables the partition.
        h: concentration of the scaler (AdaFace's h), > 0.
        momentum: EMA rate α ∈ (0, 1].
        init: initial μ/σ: ``"zeros"`` (the authors' QGFace code: the scaler saturates at +1 and
            every sample counts as HQ for the first ~1/α steps), ``"adaface"`` (μ = 20, σ = 100)
            or ``"first_batch"`` (μ/σ of the first batch).
        check_finite: raise on NaN/inf norms (one device sync per step). Off by default: a batch
            with a non-finite norm (an fp16 overflow, say) leaves the statistics untouched, is
            flagged in :attr:`Quality.finite`, and its loss is non-finite, so the training loop's
            non-finite check (GradScaler's, or the plugin loop's) skips the step on every rank.

    Buffers (all persistent, so ``state_dict`` resumes them): ``mean``, ``std``, ``num_updates``.

    Example:
        >>> part = QualityPartition(threshold=0.2)
        >>> q = part(z.detach().float().norm(dim=1))   # z: [N, D] raw local embeddings
        >>> q.local().hq                                  # this rank's HQ rows
    """

    def __init__(self, threshold: float = 0.2, h: float = 0.333, momentum: float = 0.01,
                 init: str = "zeros", check_finite: bool = False):
        super().__init__()
        self.threshold = check_threshold(threshold)
        if not h > 0:
            raise QGFaceConfigError(f"qgface_h must be > 0, got {h}")
        if not 0.0 < momentum <= 1.0:
            raise QGFaceConfigError(f"qgface_norm_momentum must be in (0, 1], got {momentum}")
        if init not in STATS_INIT:
            raise QGFaceConfigError(
                f"qgface_stats_init must be one of {sorted(STATS_INIT)}, got {init!r}")
        self.h, self.momentum, self.init, self.check_finite = float(h), float(momentum), init, check_finite
        mean0, std0 = STATS_INIT[init]
        self.register_buffer("mean", torch.tensor(mean0, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std0, dtype=torch.float32))
        self.register_buffer("num_updates", torch.tensor(0, dtype=torch.long))

    def extra_repr(self) -> str:
        return f"threshold={self.threshold}, h={self.h}, momentum={self.momentum}, init={self.init!r}"

    @torch.no_grad()
    def forward(self, norms: torch.Tensor, threshold: float | None = None) -> Quality:
        """Update the statistics (in training mode) and split the global batch.

        Args:
            norms: ``[n]`` local feature norms ‖z‖ (detached; any float dtype). Same n on every rank.
            threshold: b for this step (e.g. from :func:`threshold_schedule`); default ``self.threshold``.

        Returns:
            :class:`Quality` over the all-gathered ``[world_size · n]`` rows.
        """
        b = self.threshold if threshold is None else check_threshold(threshold)
        if norms.dim() != 1:
            raise QGFaceInputError(f"norms must be 1-D [n], got shape {tuple(norms.shape)}")
        n_local = norms.shape[0]
        norms = dist.gather_nograd(at_least_fp32(norms.detach()))
        finite_rows = torch.isfinite(norms)
        if self.check_finite and not bool(finite_rows.all()):
            bad = norms[~finite_rows][0].item()
            raise QGFaceInputError(
                f"non-finite feature norm {bad} in the batch: the backbone produced NaN/inf "
                "embeddings (lower the learning rate, enable gradient clipping or check the input)")
        finite = finite_rows.all()
        # NaN/inf rows become the lowest norm (LQ); the statistics ignore such a batch (below)
        norms = torch.where(finite_rows, norms, NORM_CLIP[0]).clamp(*NORM_CLIP)
        if self.training:
            self._update(norms, finite)
        ms = (self.h * (norms - self.mean) / (self.std + STD_EPS)).clamp_(-1.0, 1.0)
        qhat = (ms + 1.0) / 2.0
        return Quality(ms=ms, qhat=qhat, hq=qhat >= b, threshold=b,
                       rank=dist.rank(), rows_per_rank=n_local, finite=finite)

    def _update(self, norms: torch.Tensor, finite: torch.Tensor) -> None:
        """EMA step on the device (no host sync); a batch that was not ``finite`` changes nothing."""
        if norms.numel() < 2:
            raise QGFaceInputError("the quality statistics need at least 2 rows per step")
        mean, std = norms.mean(), norms.std()  # unbiased, as torch's default in the authors' code
        new_mean, new_std = self.mean.lerp(mean, self.momentum), self.std.lerp(std, self.momentum)
        if self.init == "first_batch":
            first = self.num_updates == 0
            new_mean, new_std = torch.where(first, mean, new_mean), torch.where(first, std, new_std)
        self.mean.copy_(torch.where(finite, new_mean, self.mean))
        self.std.copy_(torch.where(finite, new_std, self.std))
        self.num_updates.add_(finite.long())
