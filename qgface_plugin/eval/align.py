"""5-point similarity alignment to arcface_torch's 112x112 template, as its ``eval_ijbc.py`` does.

``estimate_transform(landmarks)`` fits a scikit-image ``SimilarityTransform`` (rotation, uniform scale,
translation; least squares, Umeyama) from the five landmarks -- left eye, right eye, nose tip, left and
right mouth corners, in image pixels -- to :data:`ARCFACE_TEMPLATE`; :func:`align_face` warps the BGR image
with ``cv2.warpAffine`` (bilinear, constant black border) to 112x112 and returns it as RGB. The template
is built exactly as upstream builds it (the 96x112 template in float32 with ``x + 8``), so crops are
bit-identical to upstream's. 68-point landmarks are reduced to 5 as upstream does (eye centres from the
eye corners, nose tip 30, mouth corners 48 and 54).
"""
from __future__ import annotations

import numpy as np

from ..errors import QGFaceInputError
from ..formats.face_crop import ARCFACE_TEMPLATE  # the template's one home (built as upstream builds it)

__all__ = ["ARCFACE_TEMPLATE", "to_five_points", "estimate_transform", "align_face"]


def to_five_points(landmarks) -> np.ndarray:
    """``[5, 2]`` or ``[68, 2]`` landmarks -> ``[5, 2]`` float32 (see the module docstring)."""
    lm = np.asarray(landmarks, dtype=np.float32)
    if lm.shape == (5, 2):
        return lm
    if lm.shape == (68, 2):
        return np.stack([(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]]).astype(np.float32)
    raise QGFaceInputError(f"landmarks must be [5, 2] or [68, 2], got shape {lm.shape}")


def estimate_transform(landmarks) -> np.ndarray:
    """The 2x3 affine matrix of the similarity that maps the landmarks onto :data:`ARCFACE_TEMPLATE`."""
    from skimage import transform as trans
    lm = to_five_points(landmarks)
    if not np.isfinite(lm).all():
        raise QGFaceInputError("landmarks contain non-finite values")
    tform = trans.SimilarityTransform()
    if not tform.estimate(lm, ARCFACE_TEMPLATE) or not np.isfinite(tform.params).all():
        raise QGFaceInputError(f"landmarks {lm.tolist()} do not define a similarity transform (degenerate points)")
    return tform.params[0:2, :]


def align_face(image_bgr, landmarks, size: int = 112) -> np.ndarray:
    """Aligned ``[size, size, 3]`` uint8 **RGB** crop of a BGR image (``cv2.imread`` output)."""
    import cv2
    img = np.asarray(image_bgr)
    if img.ndim != 3 or img.shape[2] != 3:
        raise QGFaceInputError(f"align_face: image must be [H, W, 3] BGR, got shape {img.shape}")
    M = estimate_transform(landmarks)
    out = cv2.warpAffine(img, M, (size, size), borderValue=0.0)
    return cv2.cvtColor(out, cv2.COLOR_BGR2RGB)
