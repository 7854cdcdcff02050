"""The HQ classifier contract, and a plain (unsharded) margin-softmax classifier that keeps it.

QGFace's classification branch runs through a *Partial-FC-like classifier*: any module with

* ``weight [num_local, D]``, ``class_start``, ``num_local``, ``num_classes`` — the class-centre
  shard layout of arcface_torch's ``PartialFC_V2`` (the queue reads centres from it);
* ``forward(local_embeddings [N, D], local_labels [N], quality: Quality) -> loss`` — ``quality`` is
  the hook's output for the **global** batch; the classifier picks the rows it uses and hands
  their quality to its margin (``margin.set_quality``).

Two ways to keep LQ rows out of classification (``hq_mode``):

* ``"gate"`` (authors): all rows are classified, each row's logits multiplied by σ(2s(q̂ − b));
  the loss is the mean over all rows.
* ``"subset"``: only rows with q̂ ≥ b are classified, the loss is the mean over the HQ rows of the
  global batch. Cleaner (no ln C floor from gated rows); no rows → a zero loss that still touches
  every parameter. Computed with fixed shapes (every row's loss, the LQ rows' set to 0, divided by
  the global HQ count on the device), so it needs no host sync.

:class:`MarginClassifier` is the single-shard reference (each rank holds all C centres, e.g. under
DDP); the arcface_torch adapter subclasses ``PartialFC_V2`` with the same contract.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from . import dist
from .errors import QGFaceConfigError, QGFaceInputError
from .margins import QualityMargin
from .quality import Quality
from .utils import at_least_fp32

__all__ = ["MarginClassifier", "HQ_MODES", "check_labels"]

HQ_MODES = ("gate", "subset")


def check_hq_mode(mode: str) -> str:
    """Validate ``hq_mode`` (one of :data:`HQ_MODES`); returns it."""
    if mode not in HQ_MODES:
        raise QGFaceConfigError(f"qgface_hq_mode must be one of {HQ_MODES}, got {mode!r}")
    return mode


def check_labels(labels: torch.Tensor, num_classes: int, where: str = "the batch") -> None:
    """Raise if any label is outside [0, num_classes); the message names the label and ``where`` it was.

    The host reads the labels' range: one device sync for device labels, none for CPU ones. A training
    loop that checks its batches on the host before copying them to the device (as this package's
    does, ``where="a training batch"``) can skip the loss's per-step check
    (``QGFaceLoss(check_labels=False)``)."""
    if labels.numel() == 0:
        return
    lo, hi = (int(v) for v in torch.aminmax(labels))
    if lo < 0 or hi >= num_classes:
        bad = hi if hi >= num_classes else lo
        raise QGFaceInputError(
            f"label {bad} in {where} is outside [0, num_classes={num_classes}); set num_classes "
            "to the number of identities of the training set (its 'property' file)")


class MarginClassifier(nn.Module):
    """Normalised-softmax classifier with a quality margin; all C centres on every rank.

    Args:
        margin: a :class:`~qgface_plugin.margins.QualityMargin` (e.g. ``build_margin("adaface")``).
        embedding_size: D.
        num_classes: C.
        hq_mode: ``"gate"`` or ``"subset"`` (see module docstring).

    Under DDP wrap nothing: the weight is replicated, so all-reduce (average) its gradient like the
    backbone's, e.g. by registering the classifier inside the DDP module.
    """

    def __init__(self, margin: QualityMargin, embedding_size: int, num_classes: int,
                 hq_mode: str = "gate"):
        super().__init__()
        if not callable(margin):
            raise QGFaceConfigError("margin must be callable(logits, labels)")
        if num_classes <= 0 or embedding_size <= 0:
            raise QGFaceConfigError(
                f"num_classes and embedding_size must be > 0, got {num_classes}, {embedding_size}")
        self.margin_softmax = margin
        self.hq_mode = check_hq_mode(hq_mode)
        self.num_classes = self.num_local = int(num_classes)
        self.class_start = 0
        self.weight = nn.Parameter(torch.normal(0, 0.01, (num_classes, embedding_size)))

    def extra_repr(self) -> str:
        return f"num_classes={self.num_classes}, hq_mode={self.hq_mode!r}"

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor,
                quality: Quality | None = None) -> torch.Tensor:
        """Mean margin-softmax loss over this rank's rows (see ``hq_mode``).

        Args:
            embeddings: ``[N, D]`` raw local embeddings (any float dtype; computed in fp32).
            labels: ``[N]`` classes.
            quality: the hook's output (global batch) or None (no gate, all rows).
        """
        labels = labels.reshape(-1).long()
        local_q = quality.local() if quality is not None else None
        if local_q is not None and local_q.ms.shape[0] != embeddings.shape[0]:
            raise QGFaceInputError(
                f"quality covers {local_q.ms.shape[0]} rows but the classifier got {embeddings.shape[0]}")
        weight = F.normalize(at_least_fp32(self.weight), dim=1)
        if self.hq_mode == "subset" and local_q is not None and local_q.partitioned:
            return self._subset_loss(embeddings, labels, weight, quality, local_q)
        logits = F.linear(F.normalize(at_least_fp32(embeddings), dim=1), weight).clamp(-1, 1)
        self.margin_softmax.set_quality(local_q, gate=self.hq_mode == "gate")
        return F.cross_entropy(self.margin_softmax(logits, labels), labels)

    def _subset_loss(self, embeddings, labels, weight, quality, local_q):
        # Fixed shapes: every row is classified and the LQ rows' losses are dropped (exactly 0, no
        # gradient), so nothing waits for the mask's values on the host. The loss reaches every
        # parameter through the logits, also when no row is HQ (it is then exactly 0).
        n_hq_global = quality.hq.sum().clamp_min(1)   # identical on every rank; a device tensor
        logits = F.linear(F.normalize(at_least_fp32(embeddings), dim=1), weight).clamp(-1, 1)
        self.margin_softmax.set_quality(local_q, gate=False)
        row_loss = F.cross_entropy(self.margin_softmax(logits, labels), labels, reduction="none")
        total = torch.where(local_q.hq, row_loss, 0.0).sum()
        # sum over local HQ rows / (global HQ rows / W): DDP's average gives the global HQ mean
        return total * dist.world_size() / n_hq_global
