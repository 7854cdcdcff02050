"""Degradation of the synthetic faces: :func:`degrade_quality` makes a low-quality copy of an image
(low light, colour loss, downscale and back, blur, noise, JPEG), so image quality varies and a
feature-norm quality signal has something to pick up. numpy + OpenCV.
"""
import cv2
import numpy as np

from .checks import check_fraction, check_image
from .jpeg import decode_jpeg, encode_jpeg

__all__ = ["degrade_quality"]


def degrade_quality(img, rng, level):
    """A low-quality version of an RGB uint8 image.

    In order: low light (probability ``0.3 + 0.4 * level``: darkening by a gain
    down to ``1 - 0.55 * level`` and a gamma up to ``1 + 0.8 * level``), colour
    loss (probability ``0.15 + 0.35 * level``: partial to full desaturation and
    a white-balance cast), downscale of the short side to about
    ``40 - 28 * level`` px (clipped to 12..40, random interpolation) and back, a
    Gaussian blur (sigma up to ``0.4 + 1.4 * level``), Gaussian noise (sigma up
    to ``1 + 5 * level``) and a JPEG round trip at quality about
    ``40 - 30 * level`` (clipped to 10..40). Even ``level=0`` is clearly worse
    than the input; ``level=1`` is very poor.

    Args:
        img: ``uint8 [H, W, 3]`` RGB.
        rng: ``np.random.Generator`` (or an int seed / None).
        level: severity in [0, 1].

    Returns:
        ``uint8 [H, W, 3]`` RGB, a new array.
    """
    if not isinstance(rng, np.random.Generator):
        rng = np.random.default_rng(rng)
    level = check_fraction("level", level)
    img = check_image(img)
    h, w = img.shape[:2]
    f = img.astype(np.float32)
    if rng.random() < 0.3 + 0.4 * level:
        f = 255.0 * (f / 255.0) ** rng.uniform(1.0, 1.0 + 0.8 * level) * rng.uniform(1 - 0.55 * level, 1.0)
    if rng.random() < 0.15 + 0.35 * level:
        grey = f @ np.array([0.299, 0.587, 0.114], np.float32)
        amount = np.float32(rng.uniform(0.4, 1.0))
        f = f * (1 - amount) + grey[..., None] * amount
        f = f * (1.0 + rng.normal(0, 0.1 * level, 3)).astype(np.float32)
    side = int(np.clip(round(40 - 28 * level + rng.normal(0, 3)), 12, 40))
    scale = min(side / min(h, w), 1.0)
    small_size = (max(int(round(w * scale)), 1), max(int(round(h * scale)), 1))
    down = (cv2.INTER_AREA, cv2.INTER_LINEAR, cv2.INTER_NEAREST)[rng.choice(3, p=[0.6, 0.3, 0.1])]
    small = cv2.resize(np.clip(f + 0.5, 0, 255).astype(np.uint8), small_size, interpolation=down)
    out = cv2.resize(small, (w, h), interpolation=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))])
    sigma = rng.uniform(0.0, 0.4 + 1.4 * level)
    if sigma > 0.3:
        out = cv2.GaussianBlur(out, (0, 0), sigma)
    noise = rng.standard_normal(out.shape, dtype=np.float32) * np.float32(rng.uniform(1.0, 1.0 + 5.0 * level))
    out = np.clip(out.astype(np.float32) + noise + 0.5, 0, 255).astype(np.uint8)
    q = int(np.clip(round(40 - 30 * level + rng.normal(0, 3)), 10, 40))
    return decode_jpeg(encode_jpeg(out, q))
