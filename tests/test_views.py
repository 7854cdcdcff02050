"""Tests for qgface_plugin.views (QGFace two-view augmentation: H/L views, normalisation, randomness); the
L view's operations against references are in test_degradation.py."""

import math
import pickle

import numpy as np
import pytest
import torch

from qgface_plugin import QGFaceConfigError, degradation
from qgface_plugin.degradation import degrade, hflip
from qgface_plugin.views import FlipTransform, MixedViewTransform, TwoViewTransform

S = 112
# L view switched off entirely: no downscale, no JPEG, no crop/jitter/rotation/flip.
IDENTITY_L = dict(scale=(1.0, 1.0), jpeg_quality=None, crop_p=0.0, jitter_p=0.0,
                  rotation_p=0.0)


def _noise(seed=0, shape=(S, S, 3)):
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def _smooth(seed=0):
    """A smooth, face-sized image: a colour gradient plus a low-frequency blob."""
    y, x = np.mgrid[0:S, 0:S].astype(np.float64)
    rng = np.random.default_rng(seed)
    r = 128 + 100 * np.sin(x / 17.0 + rng.uniform(0, 3))
    g = 128 + 100 * np.cos(y / 23.0 + rng.uniform(0, 3))
    b = 255 * (x + y) / (2 * (S - 1))
    return np.clip(np.stack([r, g, b], -1), 0, 255).round().astype(np.uint8)


def _asymmetric():
    """Left half black, right half white: flipped and unflipped are told apart."""
    img = np.zeros((S, S, 3), np.uint8)
    img[:, S // 2:] = 255
    return img


def _to_uint8(view):
    """Invert arcface_torch's normalisation of one CHW view -> HWC uint8."""
    x = (view.numpy().astype(np.float64) * 0.5 + 0.5) * 255.0
    return np.rint(x).astype(np.uint8).transpose(1, 2, 0)


def _is_flipped(view):
    """For _asymmetric(): the left column is white iff the view was mirrored."""
    return bool(view[0, :, 0].mean() > 0)


def _mean_abs_laplacian(hwc_uint8):
    x = hwc_uint8.astype(np.float64)
    lap = (4 * x[1:-1, 1:-1] - x[:-2, 1:-1] - x[2:, 1:-1]
           - x[1:-1, :-2] - x[1:-1, 2:])
    return float(np.abs(lap).mean())


class _StubRng:
    """Feeds fixed 'random' numbers to the private pipeline steps."""

    def __init__(self, uniform=None, order=(0, 1, 2), integers=()):
        self._uniform = uniform
        self._order = np.array(order)
        self._integers = list(integers)

    def integers(self, n):
        value = self._integers.pop(0)
        assert 0 <= value < n
        return value

    def permutation(self, n):
        assert n == len(self._order)
        return self._order.copy()

    def uniform(self, low, high, size=None):
        value = self._uniform(low, high) if callable(self._uniform) else self._uniform
        return np.asarray(value, dtype=np.float64) if size is not None else float(value)


# --------------------------------------------------------------------------- #
# output format and normalisation
# --------------------------------------------------------------------------- #
def test_output_shape_dtype_range_default_pipeline():
    t = TwoViewTransform(seed=0)
    for seed in range(20):
        out = t(_noise(seed))
        assert isinstance(out, torch.Tensor)
        assert out.shape == (2, 3, S, S)
        assert out.dtype == torch.float32
        assert out.is_contiguous()
        assert out.min() >= -1.0 and out.max() <= 1.0


def test_non_112_input_is_resized_first():
    t = TwoViewTransform(seed=0)
    assert t(_noise(1, (100, 90, 3))).shape == (2, 3, S, S)
    assert t(_noise(2, (160, 200, 3))).shape == (2, 3, S, S)
    assert TwoViewTransform(size=64, seed=0)(_noise(3)).shape == (2, 3, 64, 64)
    assert FlipTransform(size=64)(_noise(3)).shape == (3, 64, 64)
    # a constant image stays that constant through the resize
    flat = np.full((128, 96, 3), 77, np.uint8)
    out = TwoViewTransform(flip_p=0.0, **IDENTITY_L)(flat)
    np.testing.assert_allclose(out.numpy(), (77 / 255 - 0.5) / 0.5, rtol=0, atol=1e-6)


def test_constant_image_normalisation_is_exact():
    t = TwoViewTransform(flip_p=0.0, seed=0, **IDENTITY_L)
    out = t(np.full((S, S, 3), 200, np.uint8)).numpy()
    expected = (200 / 255 - 0.5) / 0.5  # float64 reference, 0.568627...
    np.testing.assert_allclose(out, expected, rtol=0, atol=1e-6)
    assert np.unique(out).size == 1
    # bitwise equal to arcface_torch's ToTensor + Normalize(0.5, 0.5) in float32
    tv_value = ((torch.tensor(200.0) / 255.0 - 0.5) / 0.5).item()
    assert out[0, 0, 0, 0] == np.float32(tv_value)


def test_every_pixel_value_normalised_like_arcface_torch():
    img = np.arange(S * S * 3, dtype=np.int64).reshape(S, S, 3) % 256
    img = img.astype(np.uint8)
    out = TwoViewTransform(flip_p=0.0, **IDENTITY_L)(img)
    # independent float32 reference: torchvision's ToTensor + Normalize ops
    ref = torch.from_numpy(img).permute(2, 0, 1).float().div(255.0).sub(0.5).div(0.5)
    assert torch.equal(out[0], ref) and torch.equal(out[1], ref)
    assert out.min() == -1.0 and out.max() == 1.0


def test_rgb_order_preserved():
    red = np.zeros((S, S, 3), np.uint8)
    red[..., 0] = 255
    out = TwoViewTransform(flip_p=0.5, seed=1, **IDENTITY_L)(red).numpy()
    assert np.all(out[:, 0] == 1.0)
    assert np.all(out[:, 1:] == -1.0)
    # the JPEG round trip (RGB->BGR->JPEG->BGR->RGB) keeps red red as well
    jpeg = TwoViewTransform(flip_p=0.0, seed=1, **dict(IDENTITY_L, jpeg_quality=75))
    l_view = jpeg(red).numpy()[1]
    assert l_view[0].mean() > 0.95
    assert l_view[1].mean() < -0.95 and l_view[2].mean() < -0.95


# --------------------------------------------------------------------------- #
# H view and flips
# --------------------------------------------------------------------------- #
def test_h_view_is_the_image_or_its_mirror_exactly():
    img = _noise(3)
    mirror = img[:, ::-1]
    t = TwoViewTransform(seed=5)  # full L pipeline on, must not touch the H view
    seen = set()
    for _ in range(40):
        h = _to_uint8(t(img)[0])
        if np.array_equal(h, img):
            seen.add("same")
        elif np.array_equal(h, mirror):
            seen.add("mirror")
        else:
            pytest.fail("H view is neither the image nor its mirror")
    assert seen == {"same", "mirror"}


def test_flip_probability_and_independence_of_the_two_views():
    n = 2000
    t = TwoViewTransform(seed=11, **IDENTITY_L)
    img = _asymmetric()
    h_flips = l_flips = both = 0
    for _ in range(n):
        out = t(img)
        fh, fl = _is_flipped(out[0]), _is_flipped(out[1])
        h_flips += fh
        l_flips += fl
        both += fh and fl
    sigma = math.sqrt(0.25 / n)
    assert abs(h_flips / n - 0.5) < 4 * sigma
    assert abs(l_flips / n - 0.5) < 4 * sigma
    # independent flips: P(both) = 0.25 (identical coins would give 0.5)
    assert abs(both / n - 0.25) < 4 * math.sqrt(0.25 * 0.75 / n)


@pytest.mark.parametrize("flip_p", [0.0, 0.2, 1.0])
def test_flip_probability_follows_flip_p(flip_p):
    n = 1000
    t = FlipTransform(flip_p=flip_p, seed=2)
    img = _asymmetric()
    rate = sum(_is_flipped(t(img)) for _ in range(n)) / n
    assert abs(rate - flip_p) <= 4 * math.sqrt(flip_p * (1 - flip_p) / n)


def test_flip_transform_single_view():
    img = _noise(4)
    out = FlipTransform(flip_p=0.0)(img)
    assert out.shape == (3, S, S) and out.dtype == torch.float32
    np.testing.assert_allclose(out.numpy(), (img.transpose(2, 0, 1) / 255 - 0.5) / 0.5,
                               rtol=0, atol=1e-6)
    assert np.array_equal(_to_uint8(FlipTransform(flip_p=1.0)(img)), img[:, ::-1])


def test_hflip():
    img = _noise(5, (7, 9, 3))
    out = hflip(img)
    assert out.flags["C_CONTIGUOUS"]
    assert np.array_equal(out, img[:, ::-1])
    assert np.array_equal(hflip(img.astype(np.int16)), img[:, ::-1])


# --------------------------------------------------------------------------- #
# the L view
# --------------------------------------------------------------------------- #
def test_l_view_loses_high_frequencies():
    img = _noise(6)
    t = TwoViewTransform(seed=7)
    h_energy, l_energy = [], []
    for _ in range(30):
        out = t(img)
        h_energy.append(_mean_abs_laplacian(_to_uint8(out[0])))
        l_energy.append(_mean_abs_laplacian(_to_uint8(out[1])))
    assert np.mean(h_energy) == pytest.approx(_mean_abs_laplacian(img))
    # downscale to <= 56 px + JPEG wipes out most pixel-level noise
    assert np.mean(l_energy) < 0.5 * np.mean(h_energy)
    assert max(l_energy) < min(h_energy)


def test_draw_side_bounds_and_distribution():
    rng = np.random.default_rng(0)
    sides = np.array([degradation._draw_side(rng, S, 0.1, 0.5) for _ in range(20000)])
    assert sides.min() == 11 and sides.max() == 55  # floor(U(0.1,0.5) * 112)
    assert np.all(sides >= 11) and np.all(sides <= 56)
    # floor of a uniform on [11.2, 56): mean computed on a fine grid
    grid = np.floor(np.linspace(11.2, 56.0, 1_000_001)[:-1])
    assert abs(sides.mean() - grid.mean()) < 4 * grid.std() / math.sqrt(sides.size)
    # roughly uniform: every inner side value appears about 1/44.8 of the time
    counts = np.bincount(sides, minlength=57)[12:55]
    expected = sides.size / 44.8
    assert np.all(np.abs(counts - expected) < 5 * math.sqrt(expected))
    # tiny scales are clamped to a 2 px image
    assert degradation._draw_side(rng, S, 0.001, 0.001) == 2


def test_pipeline_always_downscales(monkeypatch):
    drawn = []
    real = degradation._draw_side

    def spy(rng, size, low, high):
        side = real(rng, size, low, high)
        drawn.append((size, low, high, side))
        return side

    monkeypatch.setattr(degradation, "_draw_side", spy)
    t = TwoViewTransform(seed=0)
    for _ in range(50):
        t(_noise(0))
    assert len(drawn) == 50
    assert all(d[:3] == (S, 0.1, 0.5) and 11 <= d[3] <= 56 for d in drawn)
    assert len({d[3] for d in drawn}) > 10


def test_downscale_side_changes_the_l_view(monkeypatch):
    monkeypatch.setattr(degradation, "_draw_side", lambda rng, size, low, high: 2)
    out = TwoViewTransform(seed=0, jpeg_quality=None, crop_p=0.0, jitter_p=0.0,
                           rotation_p=0.0, flip_p=0.0)(_noise(8))
    lv = _to_uint8(out[1]).astype(np.float64)
    # a 2x2 image blown back up has essentially no pixel-level detail left
    assert _mean_abs_laplacian(lv.astype(np.uint8)) < 5


def test_jpeg_step_is_applied():
    img = _smooth(1)
    rng = np.random.default_rng(0)
    plain = degrade(img, rng, scale=(1.0, 1.0), jpeg_quality=None, crop_p=0.0,
                    jitter_p=0.0, rotation_p=0.0, flip_p=0.0)
    assert np.array_equal(plain, img) and plain is not img
    jpg = degrade(img, rng, scale=(1.0, 1.0), jpeg_quality=10, crop_p=0.0,
                  jitter_p=0.0, rotation_p=0.0, flip_p=0.0)
    diff = np.abs(jpg.astype(np.int16) - img).mean()
    assert 0.5 < diff < 20  # changed, but still the same picture


def test_degrade_returns_uint8_112():
    rng = np.random.default_rng(0)
    for shape in [(S, S, 3), (90, 130, 3)]:
        out = degrade(_noise(9, shape), rng)
        assert out.shape == (S, S, 3) and out.dtype == np.uint8
        assert out.flags["C_CONTIGUOUS"]
    assert degrade(_noise(9), 123).shape == (S, S, 3)  # int seed accepted


# --------------------------------------------------------------------------- #
# randomness
# --------------------------------------------------------------------------- #
def _run(t, imgs):
    return torch.stack([t(im) for im in imgs])


def test_seeded_reproducibility():
    imgs = [_noise(s) for s in range(6)]
    a = _run(TwoViewTransform(seed=3), imgs)
    b = _run(TwoViewTransform(seed=3), imgs)
    c = _run(TwoViewTransform(seed=4), imgs)
    assert torch.equal(a, b)
    assert not torch.equal(a[:, 1], c[:, 1])
    # unseeded transforms draw from OS entropy: two instances differ
    d = _run(TwoViewTransform(), imgs)
    e = _run(TwoViewTransform(), imgs)
    assert not torch.equal(d[:, 1], e[:, 1])


def test_pickled_copy_restarts_its_stream_in_the_same_process():
    imgs = [_noise(s) for s in range(4)]
    t = TwoViewTransform(seed=8)
    first = _run(t, imgs)
    clone = pickle.loads(pickle.dumps(t))
    assert clone._rng is None
    assert torch.equal(_run(clone, imgs), first)
    assert not torch.equal(_run(t, imgs)[:, 1], first[:, 1])  # t itself moved on


class _SameImageDataset(torch.utils.data.Dataset):
    def __init__(self, transform, n=8):
        self.transform = transform
        self.n = n
        self.img = _noise(12)

    def __len__(self):
        return self.n

    def __getitem__(self, index):
        info = torch.utils.data.get_worker_info()
        return self.transform(self.img), -1 if info is None else info.id


def _epoch(transform):
    loader = torch.utils.data.DataLoader(_SameImageDataset(transform), batch_size=1,
                                         num_workers=2)
    outs, workers = zip(*[(x[0], int(w)) for x, w in loader])
    return torch.stack(outs), list(workers)


def test_dataloader_workers_draw_different_streams():
    transform = TwoViewTransform(seed=5)
    transform(_noise(0))  # generator already created in the main process
    torch.manual_seed(0)
    out, workers = _epoch(transform)
    assert sorted(set(workers)) == [0, 1]
    first = {w: out[workers.index(w), 1] for w in (0, 1)}
    assert not torch.equal(first[0], first[1])
    stream = {w: out[[i for i, x in enumerate(workers) if x == w], 1] for w in (0, 1)}
    assert not torch.equal(stream[0], stream[1])
    l_views = out[:, 1].reshape(len(out), -1)
    for i in range(len(out)):
        for j in range(i + 1, len(out)):
            assert not torch.equal(l_views[i], l_views[j]), (i, j)
    # a new epoch gets new worker seeds, hence new streams...
    again, _ = _epoch(transform)
    assert not torch.equal(out[:, 1], again[:, 1])
    # ...which are reproducible when torch is seeded in the main process
    torch.manual_seed(0)
    replay, replay_workers = _epoch(transform)
    assert replay_workers == workers and torch.equal(replay, out)


# --------------------------------------------------------------------------- #
# bad input
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("img, match", [
    (np.zeros((S, S, 3), np.float32), "float32"),
    (np.zeros((S, S, 3), np.float64), "float64"),
    (np.zeros((S, S, 4), np.uint8), r"\(112, 112, 4\)"),
    (np.zeros((S, S), np.uint8), r"\(112, 112\)"),
    (np.zeros((0, S, 3), np.uint8), r"\(0, 112, 3\)"),
    ([[0, 0, 0]], "list"),
])
def test_bad_images_raise(img, match):
    with pytest.raises(ValueError, match=match):
        TwoViewTransform()(img)
    with pytest.raises(ValueError, match=match):
        FlipTransform()(img)
    with pytest.raises(ValueError, match=match):
        degrade(img, np.random.default_rng(0))


@pytest.mark.parametrize("kwargs, match", [
    (dict(flip_p=1.5), r"flip_p.*1\.5"),
    (dict(crop_p=-0.1), r"crop_p.*-0\.1"),
    (dict(jitter_p=float("nan")), r"jitter_p.*nan"),
    (dict(rotation_p=2), r"rotation_p.*2"),
    (dict(scale=(0.6, 0.5)), r"scale.*\(0\.6, 0\.5\)"),
    (dict(scale=(0.0, 0.5)), r"scale.*\(0\.0, 0\.5\)"),
    (dict(scale=(0.1, 1.5)), r"scale.*\(0\.1, 1\.5\)"),
    (dict(scale=0.5), r"scale.*0\.5"),
    (dict(crop_scale=(0.9, 0.8)), r"crop_scale.*\(0\.9, 0\.8\)"),
    (dict(jpeg_quality=0), r"jpeg_quality.*0"),
    (dict(jpeg_quality=101), r"jpeg_quality.*101"),
    (dict(jitter=-0.2), r"jitter.*-0\.2"),
    (dict(rotation_degrees=-1.0), r"rotation_degrees.*-1\.0"),
    (dict(size=1), r"size.*1"),
    (dict(seed=-3), r"seed.*-3"),
    (dict(seed=1.5), r"seed.*1\.5"),
])
def test_bad_arguments_raise(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoViewTransform(**kwargs)
    if "seed" not in kwargs:
        with pytest.raises(ValueError, match=match):
            degrade(_noise(0), np.random.default_rng(0), **kwargs)


def test_flip_transform_bad_arguments():
    with pytest.raises(ValueError, match=r"flip_p.*1\.5"):
        FlipTransform(flip_p=1.5)
    with pytest.raises(ValueError, match=r"seed.*-1"):
        FlipTransform(seed=-1)


@pytest.mark.parametrize("make", [lambda **kw: TwoViewTransform(seed=5, **kw), lambda **kw: FlipTransform(seed=5, **kw),
                                  lambda **kw: MixedViewTransform(seed=5, **kw)])
def test_uint8_output_normalised_on_the_device_equals_the_float_output_bitwise(make):
    from qgface_plugin.views import normalise_images
    rng = np.random.default_rng(0)
    imgs = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8) for _ in range(4)]
    as_float, as_uint8 = make(), make(output="uint8")
    f = torch.stack([as_float(im) for im in imgs])
    u = torch.stack([as_uint8(im) for im in imgs])
    assert u.dtype == torch.uint8 and u.shape == f.shape and u.is_contiguous()
    assert torch.equal(normalise_images(u), f)
    assert normalise_images(f) is f
    with pytest.raises(QGFaceConfigError, match="output must be one of"):
        make(output="half")


# --------------------------------------------------------------------------- #
# MixedViewTransform: one view, H or L (fair single-view baselines)
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("output", ["float", "uint8"])
def test_mixed_l_views_are_the_two_view_transforms_l_views_bitwise(output):
    # lq_p = 1: the choice draw takes the place of TwoViewTransform's H-flip draw, then the same L pipeline
    mixed, two = MixedViewTransform(lq_p=1.0, seed=7, output=output), TwoViewTransform(seed=7, output=output)
    for i in range(6):
        img = _smooth(i)
        m, t = mixed(img), two(img)
        assert m.shape == t.shape[1:] and m.dtype == t.dtype
        assert torch.equal(m, t[1]), i


def test_mixed_h_views_follow_their_own_draws():
    # lq_p = 0: draws are (choice, flip); the view is the image or its mirror by the second draw, exactly
    mixed = MixedViewTransform(lq_p=0.0, flip_p=0.5, seed=3)
    replay = np.random.default_rng([3, 0, 1])  # the seeded main-process stream (see _WorkerAwareRandom)
    img = _asymmetric()
    flips = 0
    for _ in range(40):
        assert replay.random() >= 0.0  # the choice
        flipped = replay.random() < 0.5
        flips += flipped
        want = FlipTransform(flip_p=1.0 if flipped else 0.0)(img)
        assert torch.equal(mixed(img), want)
    assert 0 < flips < 40


def test_mixed_proportion_of_l_views():
    # an L view is neither the image nor its mirror (downscale + JPEG always change a noise image)
    n, p = 400, 0.5
    mixed = MixedViewTransform(lq_p=p, seed=11, output="uint8")
    img = _noise(1)
    h_views = {FlipTransform(flip_p=f, output="uint8")(img).numpy().tobytes() for f in (0.0, 1.0)}
    lq = sum(mixed(img).numpy().tobytes() not in h_views for _ in range(n))
    assert abs(lq - n * p) < 4 * math.sqrt(n * p * (1 - p)), lq
    assert sum(MixedViewTransform(lq_p=0.0, seed=1, output="uint8")(img).numpy().tobytes() not in h_views
               for _ in range(20)) == 0


def test_mixed_pickled_copy_and_bad_arguments():
    mixed = MixedViewTransform(lq_p=0.5, seed=2)
    copy = pickle.loads(pickle.dumps(mixed))
    img = _smooth(0)
    assert torch.equal(torch.stack([mixed(img) for _ in range(4)]), torch.stack([copy(img) for _ in range(4)]))
    assert "MixedViewTransform(lq_p=0.5" in repr(mixed) and mixed.seed == 2
    with pytest.raises(ValueError, match=r"lq_p.*1\.5"):
        MixedViewTransform(lq_p=1.5)
    with pytest.raises(ValueError, match=r"scale.*\(0\.6, 0\.5\)"):
        MixedViewTransform(scale=(0.6, 0.5))
