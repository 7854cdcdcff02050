"""Training batches on the device: labels checked on the host, uint8 images normalised on the device.

The loader's workers ship CHW **uint8** images (``output="uint8"`` transforms: a quarter of the
float32 bytes to collate, pin and copy); :class:`DeviceBatches` checks the labels while they are
still on the host (no device sync), copies each batch to the device and normalises it there
(:func:`qgface_plugin.views.normalise_images`, bitwise the float transforms' values). On CUDA the
copy and normalisation of the next batch run on a side stream while the current step computes, as
upstream's ``DataLoaderX`` prefetches; elsewhere batches are moved one by one, in order.
"""
from __future__ import annotations

import torch

from ..errors import QGFaceInputError
from ..views import normalise_images

__all__ = ["DeviceBatches", "check_labels_on_host"]


def check_labels_on_host(labels: torch.Tensor, num_classes: int) -> None:
    """Raise if a CPU label batch holds a label outside [0, num_classes) (host work only)."""
    if labels.numel() == 0:
        return
    lo, hi = int(labels.min()), int(labels.max())
    if lo < 0 or hi >= num_classes:
        bad = hi if hi >= num_classes else lo
        raise QGFaceInputError(
            f"label {bad} in a training batch is outside [0, num_classes={num_classes}); set "
            "num_classes to the number of identities of the training set (its 'property' file)")


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
        check_labels_on_host(labels, self.num_classes)
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
