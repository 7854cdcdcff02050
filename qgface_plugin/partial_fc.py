"""QGFace's HQ classifier on top of arcface_torch's ``PartialFC_V2`` (model-parallel, sampled).

:func:`qgface_partial_fc` subclasses the upstream class it is given (this module never imports
arcface_torch itself) and keeps its constructor arguments, its ``weight``/``class_start``/
``num_local`` shard layout and its ``state_dict``, so checkpoints and optimizer grouping stay as
upstream's. The forward gains the classifier contract of :mod:`qgface_plugin.classifier`:
``forward(local_embeddings, local_labels, quality=None)``.

* ``quality=None``: exactly upstream's forward (margin without quality).
* ``hq_mode="gate"``: the margin receives the quality of the **global** batch, which is ordered as
  Partial FC gathers it (rank 0's rows first), then upstream's forward runs unchanged.
* ``hq_mode="subset"``: the global HQ rows are selected after the gather with the global mask, so
  every rank indexes the same rows and every collective keeps matching shapes; negatives are
  sampled from the kept labels only. No HQ row anywhere (decided from the global mask, so on
  every rank alike): a zero loss that still reaches every parameter, through the local embeddings
  and no collective. Upstream's ``AllGather`` backward (× world size) and DDP's average cancel, as for
  upstream's own loss.
"""
from __future__ import annotations

import torch
import torch.distributed as torch_dist
from torch.nn.functional import linear, normalize

from .classifier import check_hq_mode
from .quality import Quality

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
            set_quality = getattr(self.margin_softmax, "set_quality", None)
            if quality is None or self.hq_mode == "gate" or not quality.partitioned:
                if set_quality is not None:
                    set_quality(quality, gate=self.hq_mode == "gate")
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
            # The zero term that keeps every parameter in the graph (DDP's static graph) reads the *local*
            # embeddings: a sum's gradient is a stride-0 expanded tensor, which upstream's AllGather backward
            # would reduce and scale in place (a RuntimeError on one process, heap corruption on gloo ranks).
            # What reaches the gather below comes from index_select only: a dense tensor.
            touch = 0.0 * (local_embeddings.sum() + self.weight.sum())
            keep = torch.nonzero(quality.hq, as_tuple=True)[0]                        # same on every rank
            if keep.numel() == 0:  # no HQ row on any rank: every rank returns here, no collective at all
                return touch
            gathered = [torch.zeros((batch_size, self.embedding_size), device=device) for _ in range(self.world_size)]
            embeddings = torch.cat(all_gather(local_embeddings, *gathered))           # W*B x D, with grad
            labels = [torch.zeros(batch_size, dtype=torch.long, device=device) for _ in range(self.world_size)]
            torch_dist.all_gather(labels, local_labels)
            embeddings = embeddings.index_select(0, keep)
            labels = torch.cat(labels).index_select(0, keep).view(-1, 1)
            positive = (self.class_start <= labels) & (labels < self.class_start + self.num_local)
            labels[~positive] = -1
            labels[positive] -= self.class_start
            weight = self.sample(labels, positive) if self.sample_rate < 1 else self.weight
            with torch.autocast(device_type=device.type, enabled=self.fp16):
                logits = linear(normalize(embeddings), normalize(weight))
            logits = logits.float().clamp(-1, 1)
            kept = Quality(quality.ms.index_select(0, keep), quality.qhat.index_select(0, keep),
                           quality.hq.index_select(0, keep), quality.threshold, 0, keep.numel())
            self.margin_softmax.set_quality(kept, gate=False)
            logits = self.margin_softmax(logits, labels)
            return self.dist_cross_entropy(logits, labels) + touch

    QGFacePartialFC.__qualname__ = QGFacePartialFC.__name__ = "QGFacePartialFC"
    _CLASSES[upstream_module] = QGFacePartialFC
    return QGFacePartialFC
