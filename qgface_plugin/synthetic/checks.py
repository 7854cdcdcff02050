"""Argument checks of the synthetic-data generators: each raises
:class:`~qgface_plugin.errors.QGFaceConfigError` (a ``ValueError``) naming the argument and its value."""
import math
import numbers

import numpy as np

from ..errors import QGFaceConfigError

__all__ = ["check_int", "check_fraction", "check_image"]


def check_int(name, value, minimum):
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise QGFaceConfigError(f"{name}={value!r} must be an integer >= {minimum}")
    if value < minimum:
        raise QGFaceConfigError(f"{name}={value!r} must be >= {minimum}")
    return int(value)


def check_fraction(name, value):
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(value) \
            or not 0.0 <= value <= 1.0:
        raise QGFaceConfigError(f"{name}={value!r} must be a number in [0, 1]")
    return float(value)



def check_image(img):
    if not isinstance(img, np.ndarray) or img.dtype != np.uint8 or img.ndim != 3 or img.shape[2] != 3:
        raise QGFaceConfigError(
            f"image must be a uint8 [H, W, 3] RGB array, got {type(img).__name__} "
            f"{getattr(img, 'dtype', '')} {getattr(img, 'shape', '')}")
    return img

