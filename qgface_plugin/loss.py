"""``QGFaceLoss``: one QGFace training step's loss, L = L_cls + λ·L_con.

Per step, with this rank's raw embeddings of both views ``[2B, D]`` (rows ``[H_1..H_B, L_1..L_B]``)
and labels ``[B]``:

1. **partition** — the quality hook turns the detached norms of the all-gathered batch into
   margin scalers, normalised quality q̂ and the HQ mask (identical on every rank);
2. **HQ branch** — the supplied Partial-FC-like classifier computes the margin-softmax loss,
   keeping LQ rows out (logit gate or subset, see :mod:`qgface_plugin.classifier`);
3. **enqueue** — the detached, normalised features of every rank (ordered ``[H of all ranks;
   L of all ranks]``, so the queue does not depend on the world size) enter the queue with
   their labels and current class centres, fetched from the (sharded) classifier weight with one
   collective that also serves the proxy correction of the whole queue;
4. **LQ branch** — symmetric InfoNCE on this rank's anchors (both views, positive = the other
   view) against the corrected queue, for pairs with min(q̂_H, q̂_L) < b only;
5. L_cls + λ·L_con, plus a dict of detached statistics for logging (nothing is logged here).

Empty HQ or LQ sets give a valid loss whose backward still reaches every input (DDP static graph).
"""
from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from . import dist
from .classifier import check_labels
from .contrastive import (MASK_MODES, PAIR_QUALITY, masked_info_nce, pair_quality, pair_weight,
                          rescale_factor)
from .errors import QGFaceConfigError, QGFaceInputError
from .quality import QualityPartition
from .queue import ProxyQueue, check_centre_dtype, check_queue_size, fetch_centres
from .utils import at_least_fp32

__all__ = ["QGFaceLoss"]

#: Labels travel with the features in one float32 gather; exact below 2**24.
_MAX_PACKED_LABEL = 2 ** 24


class QGFaceLoss(nn.Module):
    """Quality-guided joint training loss (arXiv 2312.17494).

    Args:
        classifier: Partial-FC-like module (``weight``, ``class_start``, ``num_local``,
            ``num_classes``; ``forward(emb, labels, quality)``), e.g.
            :class:`~qgface_plugin.classifier.MarginClassifier`.
        embedding_size: D.
        queue_size: K (> 0); default min(num_classes, 65536).
        threshold: b ∈ [0, 1]; 0 = no partition (everything classified and contrasted).
        contrastive_weight: λ.
        contrastive_scale: s of the InfoNCE logits (1/τ).
        h, norm_momentum, stats_init: see :class:`~qgface_plugin.quality.QualityPartition`.
        weight_method, weight_range: pair gate (``"sgn"``/``"cos"``/``"linear"``,
            ``"half"``/``"whole"``), see :func:`~qgface_plugin.contrastive.pair_weight`.
        pair_quality: ``"low"`` (min of the two views' q̂), ``"mean"`` or ``"high"``.
        mask: ``"label"`` (same-class queue entries at cosine 0) or ``"own"`` (only the anchor's
            own two entries).
        symmetric: both views are anchors (authors' ``D2N``); False: only the L view.
        detach_positive: stop the gradient through the positive.
        rescale: multiply L_con by ln(129)/ln(K_filled + 1).
        proxy_correction: correct queue entries by their centres' drift (False: plain real-time queue).
        check_finite: forwarded to the quality hook (raise on NaN/inf embeddings, one device sync
            per step). Off by default: such a batch leaves the quality statistics and the queue as
            they were, ``stats["finite"]`` is False and the loss is non-finite, so a GradScaler or
            the plugin loop skips the step.
        check_labels: raise on labels outside ``[0, num_classes)`` of any rank, checked on the
            gathered labels each step (one device sync per step). A loop that checks the labels on
            the host before copying them to the device passes False: the step then needs no host
            sync at all (with ``check_finite=False``).
        centre_dtype: ``"float32"`` (default) or ``"bfloat16"``: the element type of the one
            all-reduce that fetches the queue's current class centres from a class-sharded weight
            (Partial FC) every step, K x D elements. bf16 halves its bytes (64 MiB saved per step at
            K = 65536, D = 512); each centre arrives rounded (relative error ≤ 2⁻⁸ per element), which
            moves a corrected key by at most ≈ 2⁻⁷ (see :func:`~qgface_plugin.queue.fetch_centres`).
            No effect on a replicated weight (no collective).
    """

    def __init__(self, classifier: nn.Module, embedding_size: int, queue_size: int | None = None,
                 threshold: float = 0.2, contrastive_weight: float = 1.0,
                 contrastive_scale: float = 64.0, h: float = 0.333, norm_momentum: float = 0.01,
                 stats_init: str = "zeros", weight_method: str = "sgn", weight_range: str = "half",
                 pair_quality: str = "low", mask: str = "label", symmetric: bool = True,
                 detach_positive: bool = False, rescale: bool = True, proxy_correction: bool = True,
                 check_finite: bool = False, check_labels: bool = True, centre_dtype: str = "float32"):
        super().__init__()
        for attr in ("weight", "class_start", "num_local"):
            if not hasattr(classifier, attr):
                raise QGFaceConfigError(
                    f"the classifier must expose `{attr}` (Partial FC's shard layout); "
                    f"{type(classifier).__name__} does not")
        self.num_classes = int(getattr(classifier, "num_classes", 0)) or None
        if queue_size is None:
            if self.num_classes is None:
                raise QGFaceConfigError("qgface_queue_size is required when the classifier has no num_classes")
            queue_size = min(self.num_classes, 65536)
        check_queue_size(queue_size)
        if self.num_classes is not None and self.num_classes >= _MAX_PACKED_LABEL:
            raise QGFaceConfigError(f"num_classes={self.num_classes} >= 2**24 is not supported")
        if not contrastive_scale > 0:
            raise QGFaceConfigError(f"qgface_contrastive_scale must be > 0, got {contrastive_scale}")
        if not contrastive_weight >= 0:
            raise QGFaceConfigError(f"qgface_contrastive_weight must be >= 0, got {contrastive_weight}")
        if mask not in MASK_MODES:
            raise QGFaceConfigError(f"qgface_mask must be one of {MASK_MODES}, got {mask!r}")
        if pair_quality not in PAIR_QUALITY:
            raise QGFaceConfigError(f"qgface_pair_quality must be one of {PAIR_QUALITY}, got {pair_quality!r}")
        pair_weight(torch.zeros(1), 0.5, weight_method, weight_range)  # validates both names
        self.classifier = classifier
        self.partition = QualityPartition(threshold, h, norm_momentum, stats_init, check_finite)
        self.queue = ProxyQueue(queue_size, embedding_size, proxy_correction)
        self.contrastive_weight, self.contrastive_scale = float(contrastive_weight), float(contrastive_scale)
        self.weight_method, self.weight_range, self.pair_quality = weight_method, weight_range, pair_quality
        self.mask, self.symmetric, self.detach_positive, self.rescale = mask, symmetric, detach_positive, rescale
        self.check_labels = bool(check_labels)
        self.centre_dtype = check_centre_dtype(centre_dtype)

    def extra_repr(self) -> str:
        return (f"lambda={self.contrastive_weight}, s_con={self.contrastive_scale}, "
                f"weight={self.weight_method}/{self.weight_range}, pair={self.pair_quality}, "
                f"mask={self.mask!r}, symmetric={self.symmetric}, rescale={self.rescale}")

    def forward(self, embeddings: torch.Tensor, labels: torch.Tensor, threshold: float | None = None,
                contrastive_weight: float | None = None):
        """Loss of one step.

        Args:
            embeddings: ``[2B, D]`` raw (un-normalised) local embeddings, H views then L views.
            labels: ``[B]`` (or ``[2B]`` as ``[y; y]``) classes.
            threshold: b for this step (schedules live outside; default the configured b).
            contrastive_weight: λ for this step (default the configured λ).

        Returns:
            ``(loss, stats)``: the scalar loss and a dict of detached scalars: ``loss``,
            ``loss_cls``, ``loss_con``, ``hq_fraction``, ``contrast_fraction``, ``norm_mean``,
            ``norm_std``, ``queue_fill``, ``threshold``, and ``finite`` (0-dim bool: the batch's embeddings
            were all finite on every rank; a False batch did not move the queue or the statistics).
        """
        rows, dim = embeddings.shape if embeddings.dim() == 2 else (0, 0)
        if rows % 2 or rows == 0 or dim != self.queue.dim:
            raise QGFaceInputError(
                f"embeddings must be [2B, {self.queue.dim}] (H views then L views), got {tuple(embeddings.shape)}")
        batch = rows // 2
        labels = labels.reshape(-1).long()
        if labels.shape[0] == rows:
            labels = labels[:batch]
        if labels.shape[0] != batch:
            raise QGFaceInputError(f"got {labels.shape[0]} labels for {batch} images ({rows} embedding rows)")
        lam = self.contrastive_weight if contrastive_weight is None else float(contrastive_weight)
        labels2 = torch.cat([labels, labels])

        # 1. partition (global statistics, identical on every rank)
        quality = self.partition(at_least_fp32(embeddings.detach()).norm(dim=1), threshold)
        # one gather for the queue rows and their labels, checked before any other collective
        feats = F.normalize(at_least_fp32(embeddings), dim=1)                # 2B x D, with grad
        packed = dist.gather_nograd(torch.cat([feats.detach(), labels2.unsqueeze(1).to(feats.dtype)], dim=1))
        world = packed.shape[0] // rows
        packed = packed.view(world, 2, batch, dim + 1).transpose(0, 1).reshape(-1, dim + 1)  # [H all; L all]
        global_labels = packed[:, dim].long()
        if self.check_labels and self.num_classes is not None:
            check_labels(global_labels, self.num_classes)  # the step's one host sync, when asked for

        # 2. HQ branch
        loss_cls = self.classifier(embeddings, labels2, quality)

        # 3. enqueue + proxy correction (one centre lookup)
        lookup = partial(fetch_centres, weight=self.classifier.weight,
                         class_start=self.classifier.class_start, num_local=self.classifier.num_local,
                         num_classes=self.num_classes,
                         # the labels were checked on entry (or on the host, check_labels=False)
                         check=self.check_labels and self.num_classes is None,
                         transfer_dtype=self.centre_dtype)
        if self.training:
            keys, slots = self.queue.enqueue_and_correct(packed[:, :dim], global_labels, lookup,
                                                         valid=quality.finite)
        else:  # evaluation never writes to the queue
            keys, slots = self.queue.corrected(lookup(self.queue.filled_labels())), None
        key_labels = self.queue.filled_labels()

        # 4. LQ branch on local anchors
        local_q = quality.local()
        q_pair = pair_quality(local_q.qhat[:batch], local_q.qhat[batch:], self.pair_quality)
        w = pair_weight(q_pair, quality.threshold, self.weight_method, self.weight_range)
        if lam > 0:
            loss_con = self._contrastive(feats, labels, keys, key_labels, w, slots, batch, world)
        else:
            loss_con = 0.0 * feats.sum()
        loss = loss_cls + lam * loss_con

        stats = {
            "loss": loss.detach(), "loss_cls": loss_cls.detach(), "loss_con": loss_con.detach(),
            "hq_fraction": quality.hq.float().mean(), "contrast_fraction": (w > 0).float().mean(),
            "norm_mean": self.partition.mean.detach().clone(), "norm_std": self.partition.std.detach().clone(),
            # host scalars as CPU tensors, made by a fill (no tensor from host data)
            "queue_fill": torch.full((), self.queue.filled / self.queue.size),
            "threshold": torch.full((), quality.threshold),
            "finite": quality.finite,
        }
        return loss, stats

    def _contrastive(self, feats, labels, keys, key_labels, w, slots, batch, world):
        h, l = feats[:batch], feats[batch:]
        pos_h, pos_l = (h.detach(), l.detach()) if self.detach_positive else (h, l)
        own = None
        if self.mask == "own":
            if slots is None:
                raise QGFaceInputError("mask='own' needs a training step (the anchors' own queue slots)")
            h_start, l_start = dist.rank() * batch, (world + dist.rank()) * batch  # slots: [H all ranks; L all]
            own_h, own_l = slots[h_start:h_start + batch], slots[l_start:l_start + batch]
            own = torch.stack([own_h, own_l], dim=1)                      # B x 2
        with torch.autocast(device_type=feats.device.type, enabled=False):  # contrastive maths in fp32
            if self.symmetric:  # rows: L anchors (positive H), then H anchors (positive L)
                anchors, positives = torch.cat([l, h]), torch.cat([pos_h, pos_l])
                anchor_labels, weight = torch.cat([labels, labels]), torch.cat([w, w])
                own = torch.cat([own, own]) if own is not None else None
            else:
                anchors, positives, anchor_labels, weight = l, pos_h, labels, w
            return masked_info_nce(anchors, positives, anchor_labels, keys, key_labels, weight,
                                   scale=self.contrastive_scale, rescale=self.rescale, mask=self.mask,
                                   own_slots=own)

    @property
    def rescale_factor(self) -> float:
        """ln(129)/ln(K_filled + 1) in force (1 when rescaling is off)."""
        return rescale_factor(self.queue.filled) if self.rescale else 1.0
