"""From a config to QGFace components: the one place that maps ``qgface_*`` keys to constructors.

Used by our training loop (:mod:`.training`, with its :mod:`.loader` and :mod:`.checkpoint`) and by the hooks
for upstream's patched ``train_v2.py`` (:mod:`.hooks`), so both build exactly the same things.
"""
from __future__ import annotations

from ..loss import QGFaceLoss
from ..margins import QualityMargin, build_margin
from ..quality import threshold_schedule
from ..views import TwoViewTransform

__all__ = ["two_view_transform", "qgface_margin", "qgface_loss", "qgface_state_dict",
           "load_qgface_state_dict", "threshold_at_step"]


def two_view_transform(cfg, seed=None, output: str = "float") -> TwoViewTransform:
    """QGFace's :class:`~qgface_plugin.views.TwoViewTransform` with the config's ``qgface_view_*`` options
    (``output="uint8"`` for a loop that normalises on the device)."""
    return TwoViewTransform(
        scale=tuple(cfg.qgface_view_scale), jpeg_quality=cfg.qgface_view_jpeg_quality,
        crop_p=cfg.qgface_view_crop_p, jitter_p=cfg.qgface_view_jitter_p,
        rotation_p=cfg.qgface_view_rotation_p, seed=seed, output=output)


def qgface_margin(cfg) -> QualityMargin:
    """The HQ-branch margin (``qgface_margin``, ``qgface_m``, ``qgface_s``; ``margin_list`` for ArcFace/CosFace)."""
    return build_margin(cfg.qgface_margin, s=cfg.qgface_s, m=cfg.qgface_m, margin_list=cfg.margin_list)


def qgface_loss(cfg, classifier, check_labels: bool = True) -> QGFaceLoss:
    """:class:`~qgface_plugin.loss.QGFaceLoss` around a Partial-FC-like classifier, from the config.

    ``check_labels=False`` for a loop that checks each batch's labels on the host before copying it
    (saves the per-step label check's device sync), as :mod:`qgface_plugin.arcface.training` does."""
    return QGFaceLoss(
        classifier, cfg.embedding_size, queue_size=cfg.qgface_queue_size, threshold=cfg.qgface_threshold,
        contrastive_weight=cfg.qgface_lambda, contrastive_scale=cfg.qgface_contrastive_scale,
        h=cfg.qgface_h, norm_momentum=cfg.qgface_norm_momentum, stats_init=cfg.qgface_stats_init,
        weight_method=cfg.qgface_weight_method, weight_range=cfg.qgface_weight_range,
        pair_quality=cfg.qgface_pair_quality, mask=cfg.qgface_mask, symmetric=cfg.qgface_symmetric,
        detach_positive=cfg.qgface_detach_positive, rescale=cfg.qgface_rescale,
        proxy_correction=cfg.qgface_proxy_correction, check_labels=check_labels,
        centre_dtype=cfg.qgface_centre_dtype)


def threshold_at_step(cfg, step: int, steps_per_epoch: int) -> float:
    """b in force at 0-based ``step`` (the ``qgface_threshold_warmup_epochs`` ramp at the fractional epoch)."""
    return threshold_schedule(cfg.qgface_threshold, step / max(1, steps_per_epoch),
                              cfg.qgface_threshold_warmup_epochs)


def qgface_state_dict(criterion: QGFaceLoss) -> dict:
    """Queue and quality statistics of the loss, without the classifier (checkpointed separately)."""
    return {k: v for k, v in criterion.state_dict().items() if not k.startswith("classifier.")}


def load_qgface_state_dict(criterion: QGFaceLoss, state: dict) -> None:
    """Restore :func:`qgface_state_dict` (after the classifier itself has been loaded)."""
    classifier = {f"classifier.{k}": v for k, v in criterion.classifier.state_dict().items()}
    criterion.load_state_dict({**state, **classifier})
