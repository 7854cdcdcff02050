"""Margins for the HQ (classification) branch, as Partial FC ``margin_loss(logits, labels)`` callables.

Each margin maps clamped cosine logits ``[N, C]`` and labels ``[N]`` / ``[N, 1]`` (−1 = "class not
on this shard", as in arcface_torch's Partial FC) to scaled logits. Per-row quality comes from the
quality hook through :meth:`QualityMargin.set_quality`, called by the classifier for exactly the
rows it is about to pass in.

Unlike arcface_torch's ``CombinedMarginLoss``, the input logits are never edited in place: the
result is a new tensor. The gradients are kept as upstream defines them:

* :class:`AdaFaceMargin` — exact autograd through the norm-adaptive margin (as AdaFace's code):
  target cos' = cos(clip(θ − m·ms, ε, π − ε)) − (m + m·ms), all cosines clamped to [−1+ε, 1−ε].
* :class:`ArcFaceMargin` — target cos(θ + m); **straight-through gradient** (that of s·cos θ,
  evaluated at the margin-modified logits), exactly as upstream's in-place, no-grad edit.
* :class:`CosFaceMargin` — target cos θ − m, exact gradient.

**Quality gate** (the authors' way of keeping LQ rows out of classification): when the classifier
asks for it and b > 0, each row's scaled logits are multiplied by σ(2s·(q̂ − b)) — ≈1 for HQ rows,
≈0 for LQ rows, whose loss becomes ≈ ln C with ≈ no gradient. The gate is a constant (q̂ is
detached). Gates too small to change an fp32 result are exactly 0, so gated rows put no subnormal
floats into the logit gradient (see :mod:`qgface_plugin.numerics`).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
from torch import nn

from .errors import QGFaceConfigError, QGFaceInputError
from .numerics import drop_negligible_gates
from .quality import Quality

__all__ = ["QualityMargin", "AdaFaceMargin", "ArcFaceMargin", "CosFaceMargin", "build_margin",
           "MARGINS"]

#: AdaFace's cosine clamp / angle clip.
ADAFACE_EPS = 1e-3
#: Device types on which the entries a narrow clamp (AdaFace's) bit are kept for backward as a
#: bool mask (1/4 of the fp32 logits): host memory is plentiful and torch's CPU bit operations are
#: slow (packing cost ~30 % of the margin step on the project's CPU). Elsewhere (CUDA) the mask is
#: packed into bits, 1/32 of the fp32 logits, for a few element-wise passes over N·C/8 bytes.
BOOL_CLIP_MASK_ON = frozenset({"cpu"})


def _target_index(logits: torch.Tensor, labels: torch.Tensor):
    """Which rows have their label on this shard, and each row's label column (0 where it has
    none): fixed shapes, no device sync."""
    labels = labels.reshape(-1)
    if labels.shape[0] != logits.shape[0]:
        raise QGFaceInputError(f"margin got {logits.shape[0]} logit rows but {labels.shape[0]} labels")
    labels = labels.long()
    return labels >= 0, labels.clamp_min(0)


def _pack_bits(mask: torch.Tensor) -> torch.Tensor:
    """A bool tensor as ``ceil(numel / 8)`` uint8 bytes (bit k of byte j = element k·m + j)."""
    flat = mask.reshape(-1).view(torch.uint8)
    m = -(-flat.numel() // 8)
    if m * 8 != flat.numel():
        flat = torch.cat([flat, flat.new_zeros(m * 8 - flat.numel())])
    blocks = flat.view(8, m)
    packed = blocks[0].clone()
    for k in range(1, 8):
        packed.bitwise_or_(blocks[k] << k)
    return packed


def _unpack_bits(packed: torch.Tensor, shape) -> torch.Tensor:
    """Inverse of :func:`_pack_bits`: the bool tensor of ``shape``."""
    out = torch.empty((8, packed.numel()), dtype=torch.uint8, device=packed.device)
    for k in range(8):
        torch.bitwise_and(packed >> k, 1, out=out[k])
    return out.view(-1)[:math.prod(shape)].view(torch.bool).view(shape)


class _MarginLogits(torch.autograd.Function):
    """Fused margin edit: ``out = r_i · clamp(cos, lo, hi)`` with target entries set to ``r_i · t'_i``.

    ``r`` is the per-row scale (s, or s times the quality gate); ``has_target`` marks the rows whose
    label column ``cols`` is on this shard (the others are not edited). Backward is one pass:
    ``r_i · grad`` where the clamp did not bite, ``r_i · dt'/dt · grad`` at the targets. With
    ``mask_clip`` the entries the clamp bit are kept for backward (a bit mask, 1/32 of the fp32
    logits; a bool mask on :data:`BOOL_CLIP_MASK_ON` devices); without it the clamp is taken not to
    bite (cosines in [−1, 1] and a [−1, 1] clamp).
    Everything has fixed shapes: no device sync.
    """

    @staticmethod
    def forward(ctx, cos, has_target, cols, target, d_target, row_scale, lo, hi, mask_clip):
        out = cos.clamp(lo, hi)                                         # N x C, new tensor
        clipped = (out != cos) if mask_clip else None                   # usually all False
        ctx.packed = clipped is not None and cos.device.type not in BOOL_CLIP_MASK_ON
        if ctx.packed:
            clipped = _pack_bits(clipped)
        row_scale = row_scale.to(out.dtype).expand(cos.shape[0])
        out.mul_(row_scale.unsqueeze(1))
        idx = cols.unsqueeze(1)
        edited = torch.where(has_target, target.to(out.dtype) * row_scale, out.gather(1, idx).squeeze(1))
        out.scatter_(1, idx, edited.unsqueeze(1))
        ctx.shape = cos.shape
        ctx.save_for_backward(has_target, idx, (d_target * row_scale).to(out.dtype), row_scale,
                              *(() if clipped is None else (clipped,)))
        return out

    @staticmethod
    def backward(ctx, grad):
        has_target, idx, d_scaled, row_scale, *clipped = ctx.saved_tensors
        grad_in = grad * row_scale.unsqueeze(1)
        if clipped:
            grad_in.masked_fill_(_unpack_bits(clipped[0], ctx.shape) if ctx.packed else clipped[0], 0.0)
        at_target = torch.where(has_target, grad.gather(1, idx).squeeze(1) * d_scaled,
                                grad_in.gather(1, idx).squeeze(1))
        grad_in.scatter_(1, idx, at_target.unsqueeze(1))
        return grad_in, None, None, None, None, None, None, None, None


class QualityMargin(nn.Module):
    """Base class: scale ``s``, per-row quality, optional gate, and the fused logit edit.

    Subclasses define :meth:`target_logit` (the margin applied to the target cosine, on a vector)
    and the cosine clamp range; ``straight_through = True`` gives the target the gradient of
    s·cos θ (upstream ArcFace). Call :meth:`set_quality` before each forward when the margin needs
    quality (AdaFace) or the gate is wanted; it is consumed by that forward.

    The input is cosines in [−1, 1], as Partial FC and the classifiers clamp them. A [−1, 1] clamp
    (ArcFace, CosFace) then never bites and no clip mask is kept; a narrower one (AdaFace's
    [−1+ε, 1−ε]) keeps one bit per logit for backward (one byte on the CPU, see
    :data:`BOOL_CLIP_MASK_ON`). The forward and backward have fixed shapes
    and need no host sync.
    """

    needs_quality = False
    straight_through = False
    clamp = (-1.0, 1.0)
    default_m = 0.0

    def __init__(self, m: float | None = None, s: float = 64.0):
        super().__init__()
        m = self.default_m if m is None else m
        if not s > 0:
            raise QGFaceConfigError(f"margin scale s must be > 0, got {s}")
        if not m >= 0:
            raise QGFaceConfigError(f"{type(self).__name__} m must be >= 0, got {m}")
        self.m, self.s = float(m), float(s)
        self._ms: torch.Tensor | None = None
        self._gate: torch.Tensor | None = None

    def extra_repr(self) -> str:
        return f"m={self.m}, s={self.s}"

    def set_quality(self, quality: Quality | None, gate: bool = True) -> None:
        """Quality of the rows of the next call, in the same order.

        Args:
            quality: rows of :class:`~qgface_plugin.quality.Quality` matching the logits rows, or None.
            gate: multiply each row by σ(2s(q̂ − b)) (the authors' logit gate); ignored when b = 0.
        """
        if quality is None:
            self._ms = self._gate = None
            return
        self._ms = quality.ms
        self._gate = None
        if gate and quality.partitioned:
            gate = torch.sigmoid(2.0 * self.s * (quality.qhat - quality.threshold))
            self._gate = drop_negligible_gates(gate, self.s)  # exact 0, not a subnormal-making 1e-28

    def forward(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        ms, gate = self._ms, self._gate
        self._ms = self._gate = None  # consumed: a stale quality must never reach another batch
        for name, t in (("quality", ms), ("gate", gate)):
            if t is not None and t.shape[0] != logits.shape[0]:
                raise QGFaceInputError(
                    f"margin {name} was set for {t.shape[0]} rows but the logits have {logits.shape[0]}")
        if self.needs_quality and ms is None:
            raise QGFaceInputError(f"{type(self).__name__} needs set_quality() before each call")
        has_target, cols = _target_index(logits, labels)
        ms_t = ms.to(logits.dtype) if ms is not None else None
        t = logits.detach().gather(1, cols.unsqueeze(1)).squeeze(1)  # every row; used where has_target
        if self.straight_through:
            new, d_new = self.target_logit(t, ms_t), torch.ones_like(t)
        else:  # exact derivative of the (elementwise) target edit, on the target vector only
            with torch.enable_grad():
                t = t.requires_grad_()
                new = self.target_logit(t, ms_t)
                (d_new,) = torch.autograd.grad(new.sum(), t)
            new = new.detach()
        # a fill, not a tensor from host data (that would be a blocking host-to-device copy)
        row_scale = logits.new_full((1,), self.s) if gate is None else self.s * gate
        return _MarginLogits.apply(logits, has_target, cols, new, d_new, row_scale, *self.clamp,
                                   self.clamp != (-1.0, 1.0))

    def target_logit(self, t: torch.Tensor, ms: torch.Tensor | None) -> torch.Tensor:  # pragma: no cover
        """Margin-edited target cosine from the target cosine ``t [n]`` (before scaling)."""
        raise NotImplementedError


class AdaFaceMargin(QualityMargin):
    """AdaFace's norm-adaptive margin (m = 0.4, s = 64; h lives in the quality hook)."""

    needs_quality = True
    clamp = (-1 + ADAFACE_EPS, 1 - ADAFACE_EPS)
    default_m = 0.4

    def target_logit(self, t, ms):
        theta = torch.acos(t.clamp(*self.clamp))
        theta = (theta - self.m * ms).clamp(ADAFACE_EPS, math.pi - ADAFACE_EPS)
        return torch.cos(theta) - (self.m + self.m * ms)


class ArcFaceMargin(QualityMargin):
    """Additive angular margin cos(θ + m), upstream's straight-through gradient."""

    straight_through = True
    default_m = 0.5

    def target_logit(self, t, ms):
        return torch.cos(torch.acos(t.clamp(-1, 1)) + self.m)


class CosFaceMargin(QualityMargin):
    """Additive cosine margin cos θ − m, exact gradient."""

    default_m = 0.4

    def target_logit(self, t, ms):
        return t - self.m


MARGINS = {"adaface": AdaFaceMargin, "arcface": ArcFaceMargin, "cosface": CosFaceMargin}


def build_margin(name: str = "adaface", s: float = 64.0, m: float | None = None,
                 margin_list: Sequence[float] | None = None) -> QualityMargin:
    """Margin by name.

    Args:
        name: ``"adaface"``, ``"arcface"`` or ``"cosface"``.
        s: logit scale.
        m: margin (defaults: AdaFace 0.4, ArcFace 0.5, CosFace 0.4).
        margin_list: arcface_torch's ``(m1, m2, m3)`` for ``cos(m1·θ + m2) − m3``; used for ArcFace
            (``(1, m, 0)``) and CosFace (``(1, 0, m)``) when ``m`` is not given. Other combinations,
            which upstream handles silently or with a bare ``raise``, are rejected.
    """
    key = str(name).lower()
    if key not in MARGINS:
        raise QGFaceConfigError(f"unknown margin {name!r}; choose one of {sorted(MARGINS)}")
    if m is None and margin_list is not None and key != "adaface":
        m = _margin_from_list(key, margin_list)
    return MARGINS[key](m=m, s=s)


def _margin_from_list(key: str, margin_list: Sequence[float]) -> float:
    try:
        m1, m2, m3 = (float(v) for v in margin_list)
    except (TypeError, ValueError):
        raise QGFaceConfigError(f"margin_list must be three numbers (m1, m2, m3), got {margin_list!r}") from None
    if key == "arcface" and m1 == 1.0 and m3 == 0.0:
        return m2
    if key == "cosface" and m1 == 1.0 and m2 == 0.0:
        return m3
    expected = "(1.0, m, 0.0)" if key == "arcface" else "(1.0, 0.0, m)"
    raise QGFaceConfigError(f"margin_list {tuple(margin_list)} is not a {key} margin; expected {expected}")
