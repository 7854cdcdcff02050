"""QGFace's HQ classifier on top of arcface_torch's ``PartialFC_V2`` (model-parallel, sampled).

:func:`qgface_partial_fc` subclasses the upstream class it is given (this module never imports
arcface_torch itself) and keeps its constructor arguments, its ``weight``/``class_start``/
``num_local`` shard layout and its ``state_dict``, so checkpoints and optimizer grouping stay as
upstream's. The forward gains the classifier contract of :mod:`qgface_plugin.classifier`:
``forward(local_embeddings, local_labels, quality=None)``.

* ``quality=None``: exactly upstream's forward (margin without quality).
* ``hq_mode="gate"``: the margin receives the quality of the **global** batch, which is ordered as
  Partial FC gathers it (rank 0's rows first), then upstream's forward runs unchanged.
* ``hq_mode="subset"``: the loss is the mean over the HQ rows of the global batch (the global mask
  is the same on every rank). It is computed with fixed shapes, so the plugin's part of the step
  needs no host sync: every gathered row is scored, LQ rows are "not on this shard" (label −1) for
  the margin and the sampling (negatives are sampled from the HQ rows' classes only), and a
  masked distributed cross-entropy divides the HQ rows' sum by the global HQ count (a device
  tensor, at least 1). Every rank runs the same collectives whatever the mask. No HQ row anywhere:
  a zero loss whose (zero) gradient still reaches every parameter. Upstream's ``AllGather``
  backward (× world size) and DDP's average cancel, as for upstream's own loss. (Upstream's
  sampling, ``sample_rate < 1``, still syncs: ``torch.unique``, bool-mask indexing, ``.cuda()``.)
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch.nn.functional import linear, normalize

from ..classifier import check_hq_mode
from ..quality import Quality

__all__ = ["qgface_partial_fc"]

_CLASSES: dict = {}


def qgface_partial_fc(upstream_module):
    """The QGFace subclass of ``upstream_module.PartialFC_V2`` (cached per upstream module).

    Args:
        upstream_module: arcface_torch's ``partial_fc_v2`` module (for ``PartialFC_V2`` and ``AllGather``).

    Returns:
        ``QGFacePartialFC(margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False,
        hq_mode="gate")``.
    """
    if upstream_module in _CLASSES:
        return _CLASSES[upstream_module]
    base = upstream_module.PartialFC_V2
    all_gather = upstream_module.AllGather

    class QGFacePartialFC(base):
        """Upstream Partial FC with QGFace's quality-aware forward (see the module docstring)."""

        def __init__(self, margin_loss, embedding_size, num_classes, sample_rate=1.0, fp16=False,
                     hq_mode="gate"):
            super().__init__(margin_loss, embedding_size, num_classes, sample_rate, fp16)
            self.num_classes = int(num_classes)
            self.hq_mode = check_hq_mode(hq_mode)

        def forward(self, local_embeddings, local_labels, quality: Quality | None = None):
            # the margin gets the global batch's quality once, in Partial FC's gathered row order, for
            # its next call: the gate (hq_mode="gate") or none (the subset; or no partition, b = 0)
            set_quality = getattr(self.margin_softmax, "set_quality", None)  # upstream's margins have none
            if set_quality is not None:
                set_quality(quality, gate=self.hq_mode == "gate")
            if quality is None or self.hq_mode == "gate" or not quality.partitioned:
                return super().forward(local_embeddings, local_labels)
            return self._subset_forward(local_embeddings, local_labels, quality)

        def _subset_forward(self, local_embeddings, local_labels, quality):
            local_labels = local_labels.reshape(-1).long()
            batch_size = local_embeddings.size(0)
            if self.last_batch_size == 0:
                self.last_batch_size = batch_size
            if self.last_batch_size != batch_size:
                raise RuntimeError(f"Partial FC needs a constant batch size: {self.last_batch_size} vs {batch_size}")
            device = local_embeddings.device
            local_embeddings = local_embeddings.float()
            # Fixed shapes: every global row is gathered and scored, the LQ rows weigh 0 in the loss
            # (no host sync on the mask, the same collectives on every rank whatever the mask). The
            # loss reaches every parameter through the logits, also when no row is HQ (it is then 0).
            gathered = [torch.zeros((batch_size, self.embedding_size), device=device) for _ in range(self.world_size)]
            embeddings = torch.cat(all_gather(local_embeddings, *gathered))           # W*B x D, with grad
            labels = [torch.zeros(batch_size, dtype=torch.long, device=device) for _ in range(self.world_size)]
            torch_dist.all_gather(labels, local_labels)
            labels = torch.cat(labels).view(-1, 1)
            hq = quality.hq.view(-1, 1)                                               # same on every rank
            # LQ rows count as "no class here" (-1) for the margin and the sampling (negatives are
            # sampled from the HQ rows' classes), and weigh 0 in the loss: they are never trained
            positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local) & hq
            labels = torch.where(positive, labels - self.class_start, -1)
            weight = self.sample(labels, positive) if self.sample_rate < 1 else self.weight
            with torch.autocast(device_type=device.type, enabled=self.fp16):
                logits = linear(normalize(embeddings), normalize(weight))
            logits = logits.float().clamp(-1, 1)
            logits = self.margin_softmax(logits, labels)                             # quality set in forward
            return _MaskedDistCrossEntropy.apply(logits, labels, quality.hq)

    QGFacePartialFC.__qualname__ = QGFacePartialFC.__name__ = "QGFacePartialFC"
    _CLASSES[upstream_module] = QGFacePartialFC
    return QGFacePartialFC


class _MaskedDistCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy over the rows with ``row_mask`` of class-sharded logits, with fixed shapes.

    ``logits [N, C_local]`` hold this rank's classes of every global row; ``labels [N, 1]`` the local
    column of each row's class, −1 where the class is on another rank (or the row is masked out).
    Three all-reduces (row max, row sum of exponentials, target probability), as upstream's
    ``DistCrossEntropy``; the loss is Σ_{mask} −log max(p_target, 1e-30) / max(1, Σ mask), the
    same on every rank. The logits are overwritten with the probabilities (the margin's fresh output,
    used by nothing else), which backward turns into the gradient in place.
    """

    @staticmethod
    def forward(ctx, logits, labels, row_mask):
        labels = labels.view(-1, 1)
        max_logits = logits.amax(dim=1, keepdim=True)
        torch_dist.all_reduce(max_logits, torch_dist.ReduceOp.MAX)
        logits.sub_(max_logits).exp_()
        sum_exp = logits.sum(dim=1, keepdim=True)
        torch_dist.all_reduce(sum_exp, torch_dist.ReduceOp.SUM)
        logits.div_(sum_exp)                                                   # probabilities
        here = labels.view(-1) >= 0
        idx = labels.clamp_min(0)
        p_target = torch.where(here, logits.gather(1, idx).squeeze(1), 0.0)
        torch_dist.all_reduce(p_target, torch_dist.ReduceOp.SUM)
        row_weight = row_mask.to(logits.dtype) / row_mask.sum().clamp_min(1)  # 1/n_HQ or 0
        loss = (row_weight * -p_target.clamp_min(1e-30).log()).sum()
        ctx.save_for_backward(logits, idx, here, row_weight)
        return loss

    @staticmethod
    def backward(ctx, grad):
        probs, idx, here, row_weight = ctx.saved_tensors
        probs.scatter_(1, idx, probs.gather(1, idx) - here.to(probs.dtype).unsqueeze(1))  # − one-hot
        return probs.mul_(row_weight.unsqueeze(1) * grad), None, None
