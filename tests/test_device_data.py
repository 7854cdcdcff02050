"""DeviceBatches: host-side label check (classifier.check_labels), on-device normalisation, order kept;
stack_views' H-then-L layout."""
import numpy as np
import pytest
import torch

from qgface_plugin import FlipTransform, QGFaceInputError, TwoViewTransform
from qgface_plugin.arcface.device_data import DeviceBatches, stack_views
from qgface_plugin.classifier import check_labels


class _Loader:
    def __init__(self, batches):
        self.batches = batches

    def __iter__(self):
        return iter(self.batches)

    def __len__(self):
        return len(self.batches)


def test_batches_equal_the_float_pipeline_in_order():
    rng = np.random.default_rng(1)
    imgs = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(6)]
    for make in (lambda o: TwoViewTransform(seed=3, output=o), lambda o: FlipTransform(seed=3, output=o)):
        as_float, as_uint8 = make("float"), make("uint8")
        f = [torch.stack([as_float(im) for im in imgs[i:i + 3]]) for i in (0, 3)]
        u = [torch.stack([as_uint8(im) for im in imgs[i:i + 3]]) for i in (0, 3)]
        labels = [torch.tensor([0, 1, 2]), torch.tensor([3, 4, 0])]
        got = list(DeviceBatches(_Loader(list(zip(u, labels))), torch.device("cpu"), num_classes=5))
        assert len(got) == 2
        for (images, y), want, want_y in zip(got, f, labels):
            assert images.dtype == torch.float32 and torch.equal(images, want) and torch.equal(y, want_y)


@pytest.mark.parametrize("bad", [-1, 5, 100])
def test_labels_out_of_range_are_named_before_the_copy(bad):
    with pytest.raises(QGFaceInputError, match=f"label {bad} in a training batch is outside \\[0, num_classes=5\\)"):
        check_labels(torch.tensor([0, bad, 1]), 5, where="a training batch")
    loader = _Loader([(torch.zeros(3, 3, 4, 4, dtype=torch.uint8), torch.tensor([0, bad, 1]))])
    with pytest.raises(QGFaceInputError, match=f"label {bad}"):
        next(iter(DeviceBatches(loader, torch.device("cpu"), 5)))
    check_labels(torch.tensor([0, 4]), 5)
    check_labels(torch.tensor([], dtype=torch.long), 5)


def test_stack_views_puts_every_h_view_before_every_l_view():
    img = torch.arange(3 * 2).float().view(3, 2, 1, 1, 1)          # image i: H view 2i, L view 2i+1
    assert stack_views(img).flatten().tolist() == [0, 2, 4, 1, 3, 5]
    with pytest.raises(QGFaceInputError, match=r"two views \[B, 2, C, H, W\], got \(3, 1, 1, 1\)"):
        stack_views(torch.zeros(3, 1, 1, 1))
