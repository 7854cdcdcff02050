"""The training loop's data: the record set (or ``rec = "synthetic"``) through the run's transform, and its loader.

:func:`build_loader` picks the dataset (:func:`record_dataset`: arcface_torch's ``MXFaceDataset`` or this
package's mxnet-free reader, checked first by :func:`~qgface_plugin.arcface.records.check_record_dataset`;
or :class:`SyntheticImages`), gives it QGFace's two-view transform (for the single-view baselines a flip, or with
``view_mode = "mixed"`` the H or the L view, :class:`~qgface_plugin.views.MixedViewTransform`), and wraps
it in a ``DataLoader`` with a distributed sampler. :class:`~qgface_plugin.arcface.device_data.DeviceBatches`
takes the batches from there to the device.

Data order and augmentation are functions of ``(config.seed, epoch, index)`` alone, so a run resumed
mid-epoch replays exactly the batches the interrupted run had left, whatever ``num_workers`` is:
:class:`ResumableSampler` is the distributed sampler's order (seed + epoch) from a given position on, and
:class:`SampleSeeded` seeds each image's augmentation (QGFace's transforms through ``seed_sample``, and
anything that draws from torch's global RNG, such as upstream's flip) from its epoch and index.
"""
from __future__ import annotations

import numpy as np
import torch

from ..errors import QGFaceConfigError
from ..formats.recordio import RecordIOError
from ..views import FlipTransform, MixedViewTransform
from .factory import two_view_transform
from .records import check_record_dataset

__all__ = ["SyntheticImages", "SampleSeeded", "ResumableSampler", "NamedRecordErrors", "record_dataset",
           "build_loader"]


class _Wrapped(torch.utils.data.Dataset):
    """A dataset around ``dataset``: its length, and its attributes (transform, imgidx, ...) as before wrapping."""

    def __init__(self, dataset):
        self.dataset = dataset

    def __len__(self):
        return len(self.dataset)

    def __getattr__(self, name):
        if name == "dataset":  # not set yet (unpickling in a worker): no recursion
            raise AttributeError(name)
        return getattr(self.dataset, name)


class SampleSeeded(_Wrapped):
    """``dataset`` with each item's randomness drawn from ``(seed, epoch, index)``.

    Before ``dataset[i]`` the transform's generator is seeded (``seed_sample((epoch, i))`` where the
    transform has one) and torch's global RNG is forked and seeded from the same key, so the item does
    not depend on which process draws it or what was drawn before, and the caller's RNG stream is left
    as it was. :meth:`set_epoch` is called before each epoch's iterator is created (workers copy the
    dataset then; ``persistent_workers`` must be off).
    """

    def __init__(self, dataset, seed: int):
        super().__init__(dataset)
        self.seed, self.epoch = int(seed), 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __getitem__(self, index):
        key = (self.epoch, int(index))
        transform = getattr(self.dataset, "transform", None)
        if hasattr(transform, "seed_sample"):
            transform.seed_sample(key)
        torch_seed = int(np.random.SeedSequence([self.seed, *key, 4]).generate_state(1, np.uint64)[0]) >> 1
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(torch_seed)
            return self.dataset[index]


class NamedRecordErrors(_Wrapped):
    """arcface_torch's ``MXFaceDataset`` with mxnet's errors (``MXNetError: ... Decoding failed. Invalid image
    file.``, which names neither file nor record) re-raised as a :class:`RecordIOError` that names both."""

    def __getitem__(self, index):
        try:
            return self.dataset[index]
        except Exception as exc:
            if type(exc).__name__ != "MXNetError":
                raise
            reason = str(exc).strip().splitlines()[-1] if str(exc).strip() else "no message"
            rec = f"{self.dataset.root_dir.rstrip('/')}/train.rec"
            raise RecordIOError(f"{rec}: record {int(self.dataset.imgidx[index])} (dataset index {int(index)}): "
                                f"mxnet cannot read it ({reason})") from None


class ResumableSampler(torch.utils.data.DistributedSampler):
    """``DistributedSampler`` (the same order for a seed and an epoch) that can begin an epoch part-way.

    :meth:`start_at` skips this rank's first indices of the current epoch (a resumed run);
    :meth:`set_epoch` begins the next epoch from its first index again.
    """

    start = 0

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.start = 0

    def start_at(self, position: int) -> None:
        """Begin the current epoch at this rank's ``position``-th index (a resumed run: batches × batch size)."""
        if not 0 <= position <= self.num_samples:
            raise ValueError(f"position {position} is outside this rank's {self.num_samples} indices")
        self.start = int(position)

    def __iter__(self):
        indices = list(super().__iter__())
        return iter(indices[self.start:])

    def __len__(self):
        return self.num_samples - self.start


class SyntheticImages(torch.utils.data.Dataset):
    """``config.rec = "synthetic"``: random images through the real transform, for speed runs.

    arcface_torch's own synthetic set repeats one image with label 1, which makes the backbone's
    final BatchNorm output collapse (NaN losses after the first update). Here a pool of random
    RGB uint8 images cycles with labels ``i % num_classes``, and each goes through the run's
    transform (two views for QGFace), so throughput includes the augmentation cost.
    """

    def __init__(self, num_image, num_classes, transform, pool=256, seed=0):
        rng = np.random.default_rng(seed)
        self.pool = rng.integers(0, 256, size=(pool, 112, 112, 3), dtype=np.uint8)
        self.num_image, self.num_classes, self.transform = num_image, num_classes, transform

    def __len__(self):
        return self.num_image

    def __getitem__(self, i):
        return self.transform(self.pool[i % len(self.pool)]), torch.tensor(i % self.num_classes)


def record_dataset(cfg, ns, rank, transform=None):
    """The record set as arcface_torch's ``MXFaceDataset`` (``record_reader="mxnet"``; its errors naming the record,
    :class:`NamedRecordErrors`) or this package's mxnet-free
    :class:`~qgface_plugin.formats.record_dataset.RecordDataset` (``"python"``: same order, labels and pixels);
    ``"auto"`` takes mxnet's when it imports. ``transform`` replaces the dataset's own (upstream's flip) when given."""
    reader = cfg.record_reader
    if reader == "auto":  # the decision upstream.load() made for this process
        reader = "python" if getattr(ns, "mxnet_missing", None) else "mxnet"
    if reader == "mxnet":
        dataset = ns.MXFaceDataset(root_dir=cfg.rec, local_rank=rank)
    else:
        from ..formats.record_dataset import RecordDataset
        dataset = RecordDataset(root_dir=cfg.rec, local_rank=rank)
    if transform is not None:
        dataset.transform = transform
    return NamedRecordErrors(dataset) if reader == "mxnet" else dataset


def build_loader(cfg, ns, rank, world, device):
    """DataLoader over the record set (two views for QGFace; uint8 with ``loader_uint8``) with a distributed sampler."""
    # uint8 batches normalised on the device (DeviceBatches), or arcface_torch's float pipeline
    output = "uint8" if cfg.loader_uint8 else "float"
    mixed = cfg.loss != "qgface" and cfg.get("view_mode", "flip") == "mixed"
    if cfg.loss == "qgface":
        transform = two_view_transform(cfg, output=output)
    elif mixed:  # one view per image, H or L: QGFace's degradation distribution for a single-view loss
        transform = MixedViewTransform(
            lq_p=cfg.view_lq_p, scale=tuple(cfg.qgface_view_scale), jpeg_quality=cfg.qgface_view_jpeg_quality,
            crop_p=cfg.qgface_view_crop_p, jitter_p=cfg.qgface_view_jitter_p,
            rotation_p=cfg.qgface_view_rotation_p, output=output)
    else:
        transform = FlipTransform(output=output)
    if cfg.rec == "synthetic":
        dataset = SyntheticImages(cfg.num_image, cfg.num_classes, transform, seed=cfg.seed)
    else:
        check_record_dataset(cfg.rec, cfg.num_classes)
        own = cfg.loss == "qgface" or mixed or cfg.loader_uint8  # else upstream's own flip + normalise
        dataset = record_dataset(cfg, ns, rank, transform if own else None)
    dataset = SampleSeeded(dataset, cfg.seed)
    sampler = ResumableSampler(dataset, num_replicas=world, rank=rank, shuffle=True, seed=cfg.seed)
    loader = torch.utils.data.DataLoader(
        dataset, batch_size=cfg.batch_size, sampler=sampler, num_workers=cfg.num_workers,
        pin_memory=device.type == "cuda", drop_last=True, persistent_workers=False)
    if len(loader) == 0:
        raise QGFaceConfigError(
            f"{len(dataset)} images over {world} ranks give no full batch of {cfg.batch_size}: lower batch_size")
    return loader
