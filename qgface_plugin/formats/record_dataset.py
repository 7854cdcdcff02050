"""arcface_torch's ``MXFaceDataset`` without mxnet: a torch ``Dataset`` on
:class:`~qgface_plugin.formats.recordio.RecordReader` (same arguments, ``imgidx`` order, ``header0`` and items).
torch (and torchvision for the default transform)."""
from __future__ import annotations

from torch.utils.data import Dataset

from .recordio import RecordIOError, RecordReader

__all__ = ["RecordDataset", "default_transform"]


def default_transform():
    """arcface_torch's MXFaceDataset transform: ToPILImage, RandomHorizontalFlip, ToTensor, Normalize(0.5, 0.5)."""
    from torchvision import transforms
    return transforms.Compose([transforms.ToPILImage(), transforms.RandomHorizontalFlip(), transforms.ToTensor(),
                               transforms.Normalize(mean=[0.5, 0.5, 0.5], std=[0.5, 0.5, 0.5])])


class RecordDataset(Dataset):
    """arcface_torch's ``MXFaceDataset`` without mxnet: the same ``(root_dir, local_rank)`` arguments,
    ``transform`` attribute (called on the RGB uint8 HWC image), ``imgidx`` order, ``header0`` and
    ``__getitem__`` result ``(transform(image), label as a torch.long scalar)``.

    ``transform="default"`` is upstream's flip + normalise; None returns the uint8 image itself.
    Where MXFaceDataset fails or misreads, this raises a :class:`RecordIOError` instead (a header0 whose
    image range the index lacks, a record 0 that is an image with a label array); a set without key 0
    (which MXFaceDataset cannot open) is read as header-less.
    """

    def __init__(self, root_dir, local_rank: int = 0, transform="default"):
        super().__init__()
        self.transform = default_transform() if isinstance(transform, str) and transform == "default" else transform
        self.root_dir = root_dir
        self.local_rank = local_rank
        self.imgrec = RecordReader(root_dir)
        if self.imgrec.header0_note:
            raise RecordIOError(self.imgrec.header0_note)
        if self.imgrec.header0 is not None:
            self.header0 = self.imgrec.header0
        self.imgidx = self.imgrec.imgidx

    def __getitem__(self, index):
        import torch
        sample, label = self.imgrec.read_image(self.imgidx[index])
        label = torch.tensor(label, dtype=torch.long)
        if self.transform is not None:
            sample = self.transform(sample)
        return sample, label

    def __len__(self) -> int:
        return len(self.imgidx)
