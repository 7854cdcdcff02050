"""The L-view degradation of QGFace (arXiv 2312.17494): the authors' ``.rec`` pipeline, one image at a time.

Steps (:func:`degrade`): downscale to ``max(floor(U(low, high) * S), 2)`` px with a random Pillow filter, JPEG
re-encode at the small size, upscale back with an independently drawn filter; then, each with a small
probability, a random resized crop, a colour jitter and a rotation; finally a horizontal flip.

The down- and the up-scale go through Pillow's ``Image.resize``, exactly as the authors'
``torchvision.transforms.functional.resize`` on a PIL image does, so the five random filters are PIL's: when
downscaling, BILINEAR, BICUBIC (a = -0.5), LANCZOS (3 lobes) and BOX widen their support by the scale factor and
therefore antialias; only NEAREST aliases. (OpenCV's linear, cubic and Lanczos resizes point-sample when
downscaling, so they alias.) Everything else uses OpenCV so the transform is fast enough to feed a GPU from a
few CPU cores. Images are RGB HWC uint8 numpy arrays throughout.

Public: :func:`degrade` (checked arguments, any input size), :func:`hflip`, and for the transforms of
:mod:`qgface_plugin.views`: :func:`apply_degradation` (pre-checked parameters from :func:`check_params`, an
``S x S`` image from :func:`as_rgb_uint8`) and the argument checks. Depends only on numpy, OpenCV and Pillow.
"""
import math
import numbers

import cv2
import numpy as np
from PIL import Image

from .errors import QGFaceConfigError, QGFaceInputError

__all__ = ["degrade", "hflip", "apply_degradation", "as_rgb_uint8", "check_params", "check_size", "check_prob",
           "check_seed"]

# Pillow filters drawn uniformly (index ``rng.integers(5)``) for the down- and
# the up-scale of the L view: the authors' set {bicubic, bilinear, nearest, box,
# lanczos}, here in a fixed order.
_INTERPOLATIONS = (
    Image.Resampling.NEAREST,
    Image.Resampling.BILINEAR,
    Image.Resampling.BICUBIC,
    Image.Resampling.BOX,
    Image.Resampling.LANCZOS,
)

# torchvision RandomResizedCrop default aspect-ratio range, and its log.
_CROP_RATIO = (3.0 / 4.0, 4.0 / 3.0)
_CROP_LOG_RATIO = (math.log(_CROP_RATIO[0]), math.log(_CROP_RATIO[1]))


# --------------------------------------------------------------------------- #
# validation helpers
# --------------------------------------------------------------------------- #
def _is_real(x):
    return isinstance(x, numbers.Real) and not isinstance(x, bool) and math.isfinite(x)


def _is_int(x):
    return isinstance(x, numbers.Integral) and not isinstance(x, bool)


def check_prob(name, p):
    if not _is_real(p) or not 0.0 <= p <= 1.0:
        raise QGFaceConfigError(f"{name} must be a probability in [0, 1], got {p!r}")
    return float(p)


def _check_fraction_range(name, pair):
    """Validate ``(low, high)`` with ``0 < low <= high <= 1``."""
    try:
        low, high = pair
    except (TypeError, ValueError):
        raise QGFaceConfigError(f"{name} must be a pair (low, high), got {pair!r}") from None
    if not (_is_real(low) and _is_real(high) and 0.0 < low <= high <= 1.0):
        raise QGFaceConfigError(f"{name} must satisfy 0 < low <= high <= 1, got {pair!r}")
    return float(low), float(high)


def check_size(size):
    if not _is_int(size) or size < 2:
        raise QGFaceConfigError(f"size must be an integer >= 2, got {size!r}")
    return int(size)


def _check_nonneg(name, x):
    if not _is_real(x) or x < 0:
        raise QGFaceConfigError(f"{name} must be a finite number >= 0, got {x!r}")
    return float(x)


def _check_jpeg_quality(q):
    if q is None:
        return None
    if not _is_int(q) or not 1 <= q <= 100:
        raise QGFaceConfigError(f"jpeg_quality must be an integer in 1..100 or None, got {q!r}")
    return int(q)


def check_seed(seed):
    if seed is None:
        return None
    if not _is_int(seed) or seed < 0:
        raise QGFaceConfigError(f"seed must be a non-negative integer or None, got {seed!r}")
    return int(seed)


def as_rgb_uint8(img, size):
    """Check an RGB HWC uint8 image and resize it to ``size x size`` if needed.

    Args:
        img: ``np.ndarray`` of shape ``[H, W, 3]`` and dtype uint8.
        size: output side ``S``.

    Returns:
        C-contiguous uint8 array ``[S, S, 3]`` (``img`` itself when it already is).

    Raises:
        ValueError: if ``img`` is not an ``H x W x 3`` uint8 numpy array.
    """
    if not isinstance(img, np.ndarray):
        raise QGFaceInputError(
            f"expected an RGB HxWx3 uint8 numpy array, got {type(img).__name__}")
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8 \
            or img.shape[0] == 0 or img.shape[1] == 0:
        raise QGFaceInputError(
            "expected an RGB HxWx3 uint8 numpy array, got shape "
            f"{tuple(img.shape)} dtype {img.dtype}")
    img = np.ascontiguousarray(img)
    h, w = img.shape[:2]
    if h != size or w != size:
        interp = cv2.INTER_AREA if (h >= size and w >= size) else cv2.INTER_LINEAR
        img = cv2.resize(img, (size, size), interpolation=interp)
    return img




# --------------------------------------------------------------------------- #
# the individual L-view operations (img: uint8 [S, S, 3] RGB, contiguous)
# --------------------------------------------------------------------------- #
def _draw_side(rng, size, low, high):
    """Side of the downscaled image: ``max(floor(U(low, high) * size), 2)``.

    With the defaults (112, 0.1, 0.5) this lies in 11..56 (56 only in the
    degenerate case ``low == high == 0.5``).
    """
    return max(int(math.floor(rng.uniform(low, high) * size)), 2)


def _to_pil(arr, rawmode="RGB"):
    """uint8 ``[H, W, 3]`` array (channels in ``rawmode`` order) -> PIL RGB image (a copy)."""
    h, w = arr.shape[:2]
    return Image.frombuffer("RGB", (w, h), np.ascontiguousarray(arr), "raw", rawmode, 0, 1)


def _to_array(pil, rawmode="RGB"):
    """PIL RGB image -> read-only uint8 ``[H, W, 3]`` array, channels in ``rawmode`` order."""
    w, h = pil.size
    return np.frombuffer(pil.tobytes("raw", rawmode), np.uint8).reshape(h, w, 3)


def _resize(img, side, resample):
    """Pillow ``Image.resize`` of an RGB uint8 ``[H, W, 3]`` array to ``side x side``.

    This is what the authors' ``torchvision.transforms.functional.resize`` does
    on a PIL image (``reducing_gap=None``). Returns a C-contiguous, read-only
    uint8 ``[side, side, 3]`` array.
    """
    return _to_array(_to_pil(img).resize((side, side), resample))


def _down_jpeg_up(img, rng, size, low, high, quality):
    """Downscale, JPEG re-encode at the small size, upscale back to ``size``.

    Both resizes are Pillow's ``Image.resize`` (see :func:`_resize`) with a
    filter drawn uniformly from :data:`_INTERPOLATIONS`. Returns ``img`` itself
    when nothing is done, else a new, read-only uint8 ``[size, size, 3]`` array.
    """
    side = _draw_side(rng, size, low, high)
    down = _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))]
    up = _INTERPOLATIONS[rng.integers(len(_INTERPOLATIONS))]
    if side == size and quality is None:
        return img
    pil = _to_pil(img)
    if side != size:
        pil = pil.resize((side, side), down)
    if quality is not None:
        # cv2's JPEG codec takes BGR (chroma is computed from that order).
        ok, buf = cv2.imencode(".jpg", _to_array(pil, "BGR"), (cv2.IMWRITE_JPEG_QUALITY, quality))
        if not ok:  # pragma: no cover - libjpeg does not fail on valid input
            raise RuntimeError("cv2.imencode failed to JPEG-encode the image")
        pil = _to_pil(cv2.imdecode(buf, cv2.IMREAD_COLOR), "BGR")
    if side != size:
        pil = pil.resize((size, size), up)
    return _to_array(pil)


def _crop_params(rng, height, width, scale):
    """torchvision ``RandomResizedCrop.get_params`` with a numpy generator.

    Returns:
        ``(top, left, h, w)`` of the crop.
    """
    area = height * width
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(_CROP_LOG_RATIO[0], _CROP_LOG_RATIO[1]))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            top = int(rng.integers(0, height - h + 1))
            left = int(rng.integers(0, width - w + 1))
            return top, left, h, w
    # Fallback: central crop with the aspect ratio clamped into the range.
    in_ratio = width / height
    if in_ratio < _CROP_RATIO[0]:
        w = width
        h = int(round(w / _CROP_RATIO[0]))
    elif in_ratio > _CROP_RATIO[1]:
        h = height
        w = int(round(h * _CROP_RATIO[1]))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


def _random_resized_crop(img, rng, size, scale):
    top, left, h, w = _crop_params(rng, img.shape[0], img.shape[1], scale)
    return cv2.resize(img[top:top + h, left:left + w], (size, size),
                      interpolation=cv2.INTER_LINEAR)


def _color_jitter(img, rng, amount):
    """Brightness/contrast/saturation jitter in random order (hue untouched).

    Mirrors torchvision's ``ColorJitter(amount, amount, amount, 0)`` on PIL
    images: the order is a random permutation, each factor ``f`` is drawn from
    ``U(max(0, 1 - amount), 1 + amount)``, and every step blends the image with
    a "degenerate" image, ``f * img + (1 - f) * degenerate``, rounded and
    clipped to uint8 ``[0, 255]``. Degenerate images: black (brightness), the
    mean grey level (contrast), the per-pixel grey image (saturation), with
    grey = 0.299 R + 0.587 G + 0.114 B.

    Args:
        img: RGB uint8 ``[H, W, 3]``.

    Returns:
        New RGB uint8 ``[H, W, 3]``.
    """
    order = rng.permutation(3)
    factors = rng.uniform(max(0.0, 1.0 - amount), 1.0 + amount, size=3)
    x = img
    for k in order:
        f = float(factors[k])
        if k == 0:  # brightness
            x = cv2.addWeighted(x, f, x, 0.0, 0.0)
        elif k == 1:  # contrast
            mean = cv2.mean(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY))[0]
            x = cv2.addWeighted(x, f, x, 0.0, (1.0 - f) * mean)
        else:  # saturation
            gray = cv2.cvtColor(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)
            x = cv2.addWeighted(x, f, gray, 1.0 - f, 0.0)
    return x


def _rotate(img, rng, degrees):
    """Rotate by ``U(-degrees, degrees)`` about the centre, nearest, fill 0."""
    angle = rng.uniform(-degrees, degrees)
    h, w = img.shape[:2]
    m = cv2.getRotationMatrix2D(((w - 1) * 0.5, (h - 1) * 0.5), angle, 1.0)
    return cv2.warpAffine(img, m, (w, h), flags=cv2.INTER_NEAREST,
                          borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0))


def apply_degradation(img, rng, size, scale, jpeg_quality, crop_p, crop_scale,
             jitter_p, jitter, rotation_p, rotation_degrees, flip_p):
    """Unchecked L-view pipeline; ``img`` is contiguous uint8 ``[size, size, 3]``.

    Returns a C-contiguous uint8 ``[size, size, 3]`` array, which is ``img``
    itself when every step is a no-op.
    """
    x = _down_jpeg_up(img, rng, size, scale[0], scale[1], jpeg_quality)
    if rng.random() < crop_p:
        x = _random_resized_crop(x, rng, size, crop_scale)
    if rng.random() < jitter_p:
        x = _color_jitter(x, rng, jitter)
    if rng.random() < rotation_p:
        x = _rotate(x, rng, rotation_degrees)
    if rng.random() < flip_p:
        x = cv2.flip(x, 1)
    return x


# --------------------------------------------------------------------------- #
# public functions
# --------------------------------------------------------------------------- #
def hflip(img):
    """Mirror an image left/right.

    Args:
        img: array ``[H, W, C]`` (or ``[H, W]``).

    Returns:
        A new C-contiguous array of the same shape and dtype, ``img[:, ::-1]``.
    """
    img = np.asarray(img)
    if img.ndim in (2, 3) and img.dtype in (np.uint8, np.float32) and img.size:
        return cv2.flip(np.ascontiguousarray(img), 1)  # SIMD; much faster
    return np.ascontiguousarray(img[:, ::-1])


def degrade(img_rgb_uint8, rng=None, *, size=112, scale=(0.1, 0.5), jpeg_quality=75,
            crop_p=0.2, crop_scale=(0.8, 1.0), jitter_p=0.2, jitter=0.2,
            rotation_p=0.2, rotation_degrees=45.0, flip_p=0.5):
    """Apply the QGFace L-view degradation to one image.

    Steps, in order: (1) downscale to ``max(floor(U(*scale) * size), 2)`` px
    with a random Pillow filter (nearest, bilinear, bicubic, box or lanczos,
    each antialiasing but nearest), JPEG re-encode at ``jpeg_quality`` and
    upscale back with an independently drawn filter; (2) with ``crop_p`` a
    torchvision-style random resized crop (``crop_scale``, ratio 3/4..4/3,
    bilinear); (3) with ``jitter_p`` a brightness/contrast/saturation jitter of
    strength ``jitter`` in random order; (4) with ``rotation_p`` a rotation by
    ``U(-rotation_degrees, rotation_degrees)`` (nearest, fill 0); (5) with
    ``flip_p`` a horizontal flip. See :class:`TwoViewTransform` for the
    arguments.

    Args:
        img_rgb_uint8: RGB image, ``np.ndarray`` ``[H, W, 3]`` uint8; resized
            to ``size x size`` first if it is not already.
        rng: ``np.random.Generator``, or an int seed / None passed to
            ``np.random.default_rng``.

    Returns:
        RGB uint8 array ``[size, size, 3]``, C-contiguous and never sharing
        memory with the input.

    Raises:
        ValueError: on a bad image or a bad argument.
    """
    size = check_size(size)
    params = check_params(size, scale, jpeg_quality, crop_p, crop_scale, jitter_p,
                           jitter, rotation_p, rotation_degrees, flip_p)
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    img = as_rgb_uint8(img_rgb_uint8, size)
    out = apply_degradation(img, rng, *params)
    if out is img or not out.flags.writeable or np.may_share_memory(out, img_rgb_uint8):
        out = out.copy()
    return out


def check_params(size, scale, jpeg_quality, crop_p, crop_scale, jitter_p, jitter,
                  rotation_p, rotation_degrees, flip_p):
    return (
        size,
        _check_fraction_range("scale", scale),
        _check_jpeg_quality(jpeg_quality),
        check_prob("crop_p", crop_p),
        _check_fraction_range("crop_scale", crop_scale),
        check_prob("jitter_p", jitter_p),
        _check_nonneg("jitter", jitter),
        check_prob("rotation_p", rotation_p),
        _check_nonneg("rotation_degrees", rotation_degrees),
        check_prob("flip_p", flip_p),
    )
