"""Training batches on the device: labels checked on the host, uint8 images normalised on the device.

The loader's workers ship CHW **uint8** images (``output="uint8"`` transforms: a quarter of the
float32 bytes to collate, pin and copy); :class:`DeviceBatches` checks the labels while they are
still on the host (:func:`qgface_plugin.classifier.check_labels`: no device sync), copies each batch to
the device and normalises it there (:func:`qgface_plugin.views.normalise_images`, bitwise the float
transforms' values). On CUDA the copy and normalisation of the next batch run on a side stream while
the current step computes, as upstream's ``DataLoaderX`` prefetches; elsewhere batches are moved one by
one, in order. :func:`stack_views` lays a two-view batch out as the backbone takes it (our loop and the
hooks for upstream's train_v2 both use it).
"""
from __future__ import annotations

import torch

from ..classifier import check_labels
from ..errors import QGFaceInputError
from ..views import normalise_images

__all__ = ["DeviceBatches", "stack_views"]


def stack_views(img: torch.Tensor) -> torch.Tensor:
    """``[B, 2, C, H, W]`` (H view, L view per image) -> ``[2B, C, H, W]``: all H views, then all L views."""
    if img.dim() != 5 or img.shape[1] != 2:
        raise QGFaceInputError(
            f"QGFace needs batches of two views [B, 2, C, H, W], got {tuple(img.shape)}: build the loader "
            "through qgface_hooks.prepare_loader")
    return torch.cat([img[:, 0], img[:, 1]])


class DeviceBatches:
    """Iterate ``(images, labels)`` of ``loader`` on ``device`` (see the module docstring).

    Args:
        loader: yields ``(images uint8 or float, labels long)`` CPU batches.
        device: the training device.
        num_classes: labels must be in ``[0, num_classes)``.
    """

    def __init__(self, loader, device: torch.device, num_classes: int):
        self.loader, self.device, self.num_classes = loader, torch.device(device), int(num_classes)
        self.stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def __len__(self):
        return len(self.loader)

    def _to_device(self, batch):
        images, labels = batch
        check_labels(labels, self.num_classes, where="a training batch")  # CPU tensor: no device sync
        images = images.to(self.device, non_blocking=True)
        labels = labels.to(self.device, non_blocking=True)
        return normalise_images(images), labels

    def __iter__(self):
        if self.stream is None:
            for batch in self.loader:
                yield self._to_device(batch)
            return
        it = iter(self.loader)
        nxt = self._prefetch(it)
        while nxt is not None:
            current = torch.cuda.current_stream(self.device)
            current.wait_stream(self.stream)
            for t in nxt:  # the side stream's memory is now used by the main stream
                t.record_stream(current)
            batch, nxt = nxt, self._prefetch(it)
            yield batch

    def _prefetch(self, it):
        try:
            batch = next(it)
        except StopIteration:
            return None
        with torch.cuda.stream(self.stream):
            return self._to_device(batch)
