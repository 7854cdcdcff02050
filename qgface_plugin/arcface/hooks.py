"""Hooks that let arcface_torch's own ``train_v2.py`` train QGFace (``config.loss = "qgface"``).

``patches/0002-train_v2-qgface.patch`` adds a few calls to these functions to upstream's
``train_v2.py``; all the logic lives here. The patched script does, in order::

    from qgface_plugin.arcface import hooks as qgface_hooks     # optional import (see below)
    cfg = get_config(args.config)
    qgface = qgface_hooks.configure(cfg)                        # loss check, qgface_* defaults
    train_loader = get_dataloader(...)
    if qgface: train_loader = qgface_hooks.prepare_loader(train_loader, cfg)     # two views
    module_partial_fc = PartialFC_V2(margin_loss, ...)
    if qgface: module_partial_fc, criterion = qgface_hooks.build(cfg, module_partial_fc)
    ...                                                         # optimizer, scheduler as upstream
    if cfg.resume: ...; if qgface: qgface_hooks.load_state_dict(criterion, dict_checkpoint)
    for img, local_labels in train_loader:
        if qgface: img = qgface_hooks.stack_views(img)          # [B, 2, ...] -> [2B, ...]
        local_embeddings = backbone(img)
        loss = (qgface_hooks.loss(criterion, local_embeddings, local_labels, cfg, global_step)
                if qgface else module_partial_fc(local_embeddings, local_labels))
        ...                                                     # backward, step, logging as upstream
    checkpoint["state_qgface"] = qgface_hooks.state_dict(criterion)   # with save_all_states

With ``config.loss`` absent, ``"arcface"`` or ``"cosface"``, :func:`configure` returns False and the
patched script runs exactly upstream's code (the ``loss`` key is then only checked for a valid
name). Without ``qgface_plugin`` installed, the patched script still runs those losses and raises
a clear ``ImportError`` for ``loss = "qgface"``.

**Config.** Upstream's ``get_config`` merges a job config onto upstream's ``configs/base.py``,
which has no ``qgface_*`` keys. :func:`configure` fills every missing ``qgface_*`` key with its
default from ``recognition_configs/base.py`` and validates the config with
:func:`qgface_plugin.arcface.config.validate_config` (an unknown ``qgface_*`` key is an error naming the
closest valid key).

**Model.** :func:`build` swaps upstream's ``PartialFC_V2`` for QGFace's subclass
(:func:`qgface_plugin.arcface.partial_fc.qgface_partial_fc`: same constructor, ``weight``/``class_start``/
``num_local`` layout and ``state_dict``, so upstream's optimizer grouping, checkpoints and resume
keep working), with QGFace's HQ margin, and builds the :class:`~qgface_plugin.loss.QGFaceLoss`
around it. The backbone sees both views in one ``[2B, 3, 112, 112]`` batch (H views, then L views).

**Checkpoint.** ``checkpoint_gpu_<rank>.pt`` gains ``"state_qgface"``: the loss's buffers without
the classifier (already in ``state_dict_softmax_fc``): the proxy queue (``queue.features``,
``queue.labels``, ``queue.centres``, ``queue.centre_inv_norm``, ``queue.ptr``, ``queue.num_filled``)
and the quality statistics (``partition.mean``, ``partition.std``, ``partition.num_updates``).
Upstream's resume restores the LR scheduler's ``total_iters`` too, so a resumed run cannot extend
the schedule by raising ``num_epoch`` (arcface_torch behaviour, kept).

This module never imports arcface_torch: it reaches upstream's ``partial_fc_v2`` module through the
``PartialFC_V2`` instance that train_v2 hands to :func:`build`.
"""
from __future__ import annotations

import copy
import logging
import sys

import numpy as np
import torch

from .. import dist
from .config import LOSSES, base_config, validate_config
from .device_data import stack_views
from ..errors import QGFaceConfigError, QGFaceInputError
from .factory import (load_qgface_state_dict, qgface_loss, qgface_margin, qgface_state_dict,
                      threshold_at_step, two_view_transform)
from ..loss import QGFaceLoss
from .partial_fc import qgface_partial_fc

__all__ = ["enabled", "configure", "prepare_loader", "two_view_transform", "build", "stack_views", "loss",
           "state_dict", "load_state_dict", "QGFACE_PREFIX", "CHECKPOINT_KEY"]

#: prefix of QGFace's config keys.
QGFACE_PREFIX = "qgface_"
#: key of the QGFace state in train_v2's ``checkpoint_gpu_<rank>.pt``.
CHECKPOINT_KEY = "state_qgface"

log = logging.getLogger(__name__)

# ---------------------------------------------------------------------------------------- config

def enabled(cfg) -> bool:
    """Whether ``cfg`` asks for QGFace (``cfg.loss == "qgface"``); no ``loss`` key means upstream's loss.

    Raises:
        QGFaceConfigError: ``cfg.loss`` is set to something other than ``"qgface"``, ``"arcface"``
            or ``"cosface"``.
    """
    loss_name = cfg.get("loss")
    if loss_name is None:
        return False
    if loss_name not in LOSSES:
        raise QGFaceConfigError(f"config.loss must be one of {LOSSES} (or absent for arcface_torch's own "
                                f"margin loss), got {loss_name!r}")
    return loss_name == "qgface"


def configure(cfg) -> bool:
    """Prepare upstream's config for QGFace, in place; returns :func:`enabled` (False: nothing changed).

    For QGFace: every ``qgface_*`` key the config lacks gets its default from
    ``recognition_configs/base.py``; then :func:`qgface_plugin.arcface.config.validate_config` checks the
    whole config (unknown ``qgface_*`` keys with a suggestion, required keys, value ranges, no DALI).
    Keys that are not ``qgface_*`` are upstream's business: they are neither filled nor warned about.

    Raises:
        QGFaceConfigError: a bad ``loss``, an unknown ``qgface_*`` key or a bad value.
    """
    if not enabled(cfg):
        return False
    base = base_config()
    for key, value in base.items():
        if key.startswith(QGFACE_PREFIX) and key not in cfg:
            cfg[key] = copy.deepcopy(value)
    known = set(base) | {k for k in cfg if not k.startswith(QGFACE_PREFIX)}
    validate_config(cfg, known=known, own_loop=False)
    return True


# ------------------------------------------------------------------------------------------ data

class _ArrayInput:
    """Feeds a PIL image (torchvision ``ImageFolder``) to a transform that takes RGB uint8 arrays."""

    def __init__(self, transform):
        self.transform = transform

    def __call__(self, img):
        if not isinstance(img, np.ndarray):
            img = np.asarray(img.convert("RGB"))
        return self.transform(img)

    def __repr__(self):
        return f"{type(self).__name__}({self.transform!r})"


def prepare_loader(train_loader, cfg):
    """Make upstream's data loader yield both views, ``img`` of shape ``[B, 2, 3, 112, 112]``.

    Returns ``train_loader`` itself, untouched unless :func:`enabled`. Upstream's
    ``get_dataloader`` picks the dataset; for QGFace:

    * ``MXFaceDataset`` (``train.rec``): its ``transform`` becomes the two-view transform;
    * torchvision ``ImageFolder``: the same, fed with the PIL image as an array;
    * ``SyntheticDataset`` (``rec = "synthetic"``): its one image is used as both views.

    The transform is seeded with ``cfg.seed + rank`` (DataLoader workers mix in their own seed), so
    every rank draws its own degradations.

    Raises:
        QGFaceConfigError: the loader has no dataset to change (DALI).
    """
    if not enabled(cfg):
        return train_loader
    dataset = getattr(train_loader, "dataset", None)
    if dataset is None:
        raise QGFaceConfigError(
            f"config.loss='qgface' needs a DataLoader over a dataset (for its two views); got "
            f"{type(train_loader).__name__}. Set config.dali = False.")
    seed = None if cfg.get("seed") is None else int(cfg.seed) + dist.rank()
    if hasattr(dataset, "transform"):
        transform = two_view_transform(cfg, seed)
        dataset.transform = transform if hasattr(dataset, "imgrec") else _ArrayInput(transform)
    elif isinstance(getattr(dataset, "img", None), torch.Tensor):
        if dataset.img.dim() == 3:
            dataset.img = torch.stack([dataset.img, dataset.img])
    else:
        raise QGFaceConfigError(f"config.loss='qgface' cannot make two views for {type(dataset).__name__}: "
                                "use a train.rec folder, an image folder or rec='synthetic'")
    return train_loader


# ----------------------------------------------------------------------------------------- model

def build(cfg, module_partial_fc):
    """QGFace's Partial FC and loss in place of upstream's ``module_partial_fc``.

    Args:
        cfg: the config, after :func:`configure`.
        module_partial_fc: the ``PartialFC_V2`` train_v2 just built (its module provides the base
            class; its initial weight is kept, so QGFace starts from the same class centres).

    Returns:
        ``(pfc, criterion)``: the :func:`~qgface_plugin.arcface.partial_fc.qgface_partial_fc` subclass
        instance (QGFace's HQ margin ``cfg.qgface_margin``, ``hq_mode``), to use as
        ``module_partial_fc``; and the :class:`~qgface_plugin.loss.QGFaceLoss` around it, in
        training mode, on the current CUDA device (or the CPU without CUDA).
    """
    pfc_module = sys.modules[type(module_partial_fc).__module__]
    margin = qgface_margin(cfg)
    pfc = qgface_partial_fc(pfc_module)(margin, cfg.embedding_size, cfg.num_classes, cfg.sample_rate,
                                        module_partial_fc.fp16, hq_mode=cfg.qgface_hq_mode)
    with torch.no_grad():
        pfc.weight.copy_(module_partial_fc.weight)
    criterion = qgface_loss(cfg, pfc)
    device = torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
    return pfc, criterion.to(device).train()


# ------------------------------------------------------------------------------------------ step

def loss(criterion: QGFaceLoss, local_embeddings: torch.Tensor, local_labels: torch.Tensor, cfg,
         global_step: int) -> torch.Tensor:
    """The QGFace loss of one step (L_cls + λ·L_con), a scalar tensor for upstream's backward.

    Args:
        criterion: from :func:`build`.
        local_embeddings: the backbone's ``[2B, D]`` output for :func:`stack_views`'s batch.
        local_labels: ``[B]`` labels.
        cfg: the config (train_v2 has set ``total_batch_size``).
        global_step: train_v2's step counter, already incremented (1 at the first step).

    The threshold b ramps up over ``qgface_threshold_warmup_epochs`` (:func:`~qgface_plugin.quality.threshold_schedule`,
    at the fractional epoch of this step). Every ``cfg.frequent`` steps rank 0 logs the loss parts,
    HQ fraction, b, queue fill and norm statistics (into ``training.log``).
    """
    total_batch_size = cfg.get("total_batch_size") or cfg.batch_size * dist.world_size()
    steps_per_epoch = max(1, cfg.num_image // total_batch_size)
    b = threshold_at_step(cfg, global_step - 1, steps_per_epoch)
    value, stats = criterion(local_embeddings.float(), local_labels, threshold=b)
    if cfg.frequent and global_step % cfg.frequent == 0 and dist.rank() == 0:
        s = {k: float(v) for k, v in stats.items()}
        log.info("QGFace step %d: loss %.4f  cls %.4f  con %.4f  hq %.0f%%  contrasted %.0f%%  b %.3f  "
                 "queue %.0f%%  norm %.2f+-%.2f", global_step, s["loss"], s["loss_cls"], s["loss_con"],
                 100 * s["hq_fraction"], 100 * s["contrast_fraction"], s["threshold"], 100 * s["queue_fill"],
                 s["norm_mean"], s["norm_std"])
    return value


# ------------------------------------------------------------------------------------ checkpoint

def state_dict(criterion: QGFaceLoss) -> dict:
    """The loss's state for ``checkpoint["state_qgface"]``: queue and quality statistics, no classifier."""
    return qgface_state_dict(criterion)


def load_state_dict(criterion: QGFaceLoss, checkpoint: dict) -> None:
    """Restore :func:`state_dict`'s part of train_v2's checkpoint (call after the Partial FC is loaded).

    Raises:
        QGFaceInputError: the checkpoint has no ``"state_qgface"`` (it was not written by a QGFace run
            of the patched train_v2).
    """
    state = checkpoint.get(CHECKPOINT_KEY)
    if state is None:
        raise QGFaceInputError(
            f"the checkpoint has no {CHECKPOINT_KEY!r}: it was not written by a config.loss='qgface' run of the "
            "patched train_v2. Resume it with the loss it was trained with, or start a new run from model.pt.")
    load_qgface_state_dict(criterion, state)
    log.info("QGFace state restored: queue %d/%d filled, quality statistics after %d updates (mean %.3f, std %.3f)",
             criterion.queue.filled, criterion.queue.size, int(criterion.partition.num_updates),
             float(criterion.partition.mean), float(criterion.partition.std))
