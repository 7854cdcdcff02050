"""The LQ branch: masked, quality-weighted InfoNCE against the (corrected) queue.

For anchor a with positive p (the other view of the same image), pair weight w and queue entries
ẽ_1..ẽ_K (not renormalised):

    c_0 = clamp(a·p, −1, 1),   c_j = clamp(a·ẽ_j, −1, 1), and c_j = 0 for masked entries
    L   = −log softmax(s·w·[c_0, c_1, …, c_K])_0 · ln(129) / ln(K + 1)

Masked entries (same label as the anchor by default, which covers the anchor's own freshly
enqueued views) are set to cosine **0**: they stay in the denominator as e⁰, as in the authors'
code, and pass no gradient. The pair weight multiplies the logits (an inverse temperature); a pair
with w = 0 gives the constant ln(K + 1) (ln 129 after rescaling) with no gradient and still counts
in the mean. On the CPU only rows with w > 0 are computed (picked with ``nonzero``: no device to
wait for, and at b = 0.2 ~93 % of the work saved); on other devices (CUDA) every row is computed with
fixed shapes and the w = 0 rows get that constant, so the step needs no host sync
(:data:`SELECT_ROWS_ON`).

The negative part runs through a fused autograd function: the ``[N, K]`` similarity matrix is
clamped, masked, scaled and exponentiated in place, and only that one matrix (plus a bool mask)
is kept for backward. The queue receives no gradient. Exponentials too small to change their row's
sum are exactly 0 (:func:`qgface_plugin.numerics.exp_cutoff`), so no subnormal reaches the products.
"""
from __future__ import annotations

import math

import torch

from .errors import QGFaceConfigError, QGFaceInputError
from .numerics import exp_cutoff
from .utils import at_least_fp32

__all__ = ["pair_weight", "pair_quality", "masked_info_nce", "negative_logsumexp", "rescale_factor",
           "WEIGHT_METHODS", "PAIR_QUALITY", "MASK_MODES"]

WEIGHT_METHODS = ("sgn", "cos", "linear")
WEIGHT_RANGES = ("half", "whole")
PAIR_QUALITY = ("low", "mean", "high")
MASK_MODES = ("label", "own")
#: The rescale normalises the loss to the size it would have with 128 negatives.
RESCALE_REFERENCE = math.log(129.0)
#: Device types on which :func:`masked_info_nce` computes only the rows with w > 0, picked with
#: ``torch.nonzero``. On the CPU that selection costs no synchronisation (the values are on the host
#: already) and saves the work of the other rows; on a GPU it would make the host wait for the
#: device every step, so there every row is computed and the w = 0 rows are replaced by their
#: constant (the same values; the work of all rows, which a GPU does in a fraction of a backbone step).
SELECT_ROWS_ON = frozenset({"cpu"})


def rescale_factor(num_negatives: int) -> float:
    """ln(129) / ln(K + 1) for K valid queue entries (1 for an empty queue)."""
    return RESCALE_REFERENCE / math.log(num_negatives + 1) if num_negatives > 0 else 1.0


def pair_quality(q_a: torch.Tensor, q_b: torch.Tensor, how: str = "low") -> torch.Tensor:
    """Quality of a view pair: min (authors' default ``"low"``), mean or max of the two q̂."""
    if how == "low":
        return torch.minimum(q_a, q_b)
    if how == "high":
        return torch.maximum(q_a, q_b)
    if how == "mean":
        return (q_a + q_b) / 2
    raise QGFaceConfigError(f"qgface_pair_quality must be one of {PAIR_QUALITY}, got {how!r}")


def pair_weight(q: torch.Tensor, b: float, method: str = "sgn", range_: str = "half") -> torch.Tensor:
    """Contrastive weight of each pair from its quality q ∈ [0, 1] and threshold b (authors' gates).

    ``half`` range: pairs with q ≥ b get 0; below b, ``sgn`` gives 1, ``cos`` (1 − cos(πq/b))/2,
    ``linear`` q/b. ``whole`` range: below b as ``half``; at or above b ``sgn`` gives 1, ``cos``
    1 + cos(π(q + 1 − 2b) / (2(1 − b))), ``linear`` (q − 1)/(b − 1). b = 0 means no partition:
    every pair has weight 1 (authors' code).
    """
    if method not in WEIGHT_METHODS:
        raise QGFaceConfigError(f"qgface_weight_method must be one of {WEIGHT_METHODS}, got {method!r}")
    if range_ not in WEIGHT_RANGES:
        raise QGFaceConfigError(f"qgface_weight_range must be one of {WEIGHT_RANGES}, got {range_!r}")
    q = at_least_fp32(q)
    if b <= 0.0:
        return torch.ones_like(q)
    low = q < b
    if method == "sgn":
        below = torch.ones_like(q)
    elif method == "cos":
        below = (1 - torch.cos(math.pi * q / b)) / 2
    else:
        below = q / b
    if range_ == "half" or b >= 1.0:
        above = torch.zeros_like(q)
    elif method == "sgn":
        above = torch.ones_like(q)
    elif method == "cos":
        above = 1 + torch.cos(math.pi * (q + 1 - 2 * b) / (2 * (1 - b)))
    else:
        above = (q - 1) / (b - 1)
    return torch.where(low, below, above)


class _NegativeLogSumExp(torch.autograd.Function):
    """lse_i = log Σ_j exp(scale_i · c_ij), c = clamp(A Kᵀ, −1, 1) with masked entries 0.

    Gradient w.r.t. A only: Σ_j softmax_ij · scale_i · [unmasked and |a_i·k_j| ≤ 1] · k_j.
    """

    @staticmethod
    def forward(ctx, anchors, keys, masked, scale):
        sim = anchors @ keys.t()                                   # N x K
        nograd = masked | (sim > 1) | (sim < -1)                   # no gradient through these
        sim.clamp_(-1.0, 1.0).masked_fill_(masked, 0.0).mul_(scale.unsqueeze(1))
        row_max = sim.amax(dim=1, keepdim=True)                    # N x 1
        # terms too small to change the row's sum are exactly 0 (no subnormals, see numerics)
        torch.nn.functional.threshold_(sim.sub_(row_max), exp_cutoff(sim.dtype, sim.shape[1]), -math.inf)
        sim.exp_()
        row_sum = sim.sum(dim=1, keepdim=True)
        ctx.save_for_backward(sim, row_sum, keys, nograd, scale)
        return (row_max + row_sum.log()).squeeze(1)

    @staticmethod
    def backward(ctx, grad_lse):
        expo, row_sum, keys, nograd, scale = ctx.saved_tensors
        coef = (grad_lse * scale).unsqueeze(1) / row_sum           # N x 1
        weights = (expo * coef).masked_fill_(nograd, 0.0)          # N x K, d lse / d (a_i . k_j)
        return weights @ keys, None, None, None


def negative_logsumexp(anchors: torch.Tensor, keys: torch.Tensor, masked: torch.Tensor,
                       scale: torch.Tensor) -> torch.Tensor:
    """``[N]`` log Σ_j exp(scale_i · c_ij) over the queue (see module docstring); −inf if K = 0."""
    if keys.shape[0] == 0:
        return anchors.new_full((anchors.shape[0],), float("-inf")) + 0 * anchors.sum(dim=1)
    return _NegativeLogSumExp.apply(anchors, keys.detach(), masked, scale)


def masked_info_nce(anchors: torch.Tensor, positives: torch.Tensor, anchor_labels: torch.Tensor,
                    keys: torch.Tensor, key_labels: torch.Tensor, weight: torch.Tensor,
                    scale: float = 64.0, rescale: bool = True, mask: str = "label",
                    own_slots: torch.Tensor | None = None, reduce: bool = True) -> torch.Tensor:
    """Quality-weighted InfoNCE of L2-normalised anchors against a queue.

    Args:
        anchors: ``[N, D]`` normalised anchor features (with gradient).
        positives: ``[N, D]`` normalised positives (gradient flows unless detached by the caller).
        anchor_labels: ``[N]`` classes of the anchors.
        keys: ``[K, D]`` queue entries (corrected; no gradient).
        key_labels: ``[K]`` their classes.
        weight: ``[N]`` pair weight w ≥ 0 (see :func:`pair_weight`); rows with w = 0 give the
            constant ln(K + 1)·factor with no gradient (skipped on :data:`SELECT_ROWS_ON` devices).
        scale: s = 1/τ.
        rescale: multiply by ln(129)/ln(K + 1).
        mask: ``"label"`` masks every entry with the anchor's class; ``"own"`` only the anchor's own
            entries given by ``own_slots``.
        own_slots: ``[N, S]`` long queue slots of each anchor's own entries (−1 = none), for ``"own"``.
        reduce: mean over all N rows (gated rows included) if True, else the ``[N]`` row losses.
    """
    if mask not in MASK_MODES:
        raise QGFaceConfigError(f"qgface_mask must be one of {MASK_MODES}, got {mask!r}")
    n, k = anchors.shape[0], keys.shape[0]
    if positives.shape != anchors.shape or weight.shape[0] != n or anchor_labels.shape[0] != n:
        raise QGFaceInputError(
            f"contrastive inputs disagree: anchors {tuple(anchors.shape)}, positives "
            f"{tuple(positives.shape)}, labels {tuple(anchor_labels.shape)}, weight {tuple(weight.shape)}")
    factor = rescale_factor(k) if rescale else 1.0
    gated_value = math.log(k + 1) * factor                          # loss of a row with w = 0
    if anchors.device.type in SELECT_ROWS_ON:  # only the contrasted rows (a device sync elsewhere)
        rows = torch.nonzero(weight > 0, as_tuple=True)[0]
        losses = anchors.new_full((n,), gated_value) + 0.0 * anchors.sum(dim=1)  # keeps the graph whole
        if rows.numel():
            row_loss = _info_nce_rows(
                anchors.index_select(0, rows), positives.index_select(0, rows),
                anchor_labels.index_select(0, rows), keys, key_labels, weight.index_select(0, rows),
                scale, factor, mask, own_slots.index_select(0, rows) if own_slots is not None else None)
            losses = losses.to(row_loss.dtype).index_put((rows,), row_loss)
    else:  # every row, fixed shapes: no host sync; w = 0 rows get their constant and no gradient
        row_loss = _info_nce_rows(anchors, positives, anchor_labels, keys, key_labels, weight, scale,
                                  factor, mask, own_slots)
        losses = torch.where(weight > 0, row_loss, gated_value)
    return losses.mean() if reduce else losses


def _info_nce_rows(anchors, positives, anchor_labels, keys, key_labels, weight, scale, factor, mask,
                   own_slots):
    """``[n]`` rescaled InfoNCE losses of the given rows (fp32 at least)."""
    a, p = at_least_fp32(anchors), at_least_fp32(positives)
    dtype = a.dtype
    s_w = scale * weight.to(dtype)
    if mask == "label":
        masked = anchor_labels.view(-1, 1) == key_labels.view(1, -1)
    else:
        masked = _own_mask(own_slots, a.shape[0], keys.shape[0], a.device)
    pos = s_w * (a * p).sum(dim=1).clamp(-1.0, 1.0)
    neg = negative_logsumexp(a, keys.to(dtype), masked, s_w)
    return (torch.logaddexp(pos, neg) - pos) * factor


def _own_mask(own_slots, n, k, device):
    if own_slots is None:
        raise QGFaceInputError("mask='own' needs own_slots (the anchors' queue slots)")
    mask = torch.zeros(n, k + 1, dtype=torch.bool, device=device)
    # invalid slots (-1) go to the spare last column, which is cut off
    mask.scatter_(1, torch.where(own_slots >= 0, own_slots, torch.full_like(own_slots, k)), True)
    return mask[:, :k]
