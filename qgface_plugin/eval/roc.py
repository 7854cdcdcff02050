"""TAR at FAR off an ROC, as upstream ``eval_ijbc.py`` reads it, and the FAR keys the reports use.

A FAR is a number everywhere in the code; :func:`far_key` makes the JSON key of the TAR read at it
(``1e-4 -> "TAR@FAR=1e-4"``) and :func:`far_label` its short label (``"1e-4"``). Nothing parses a key back:
the structures that need the FAR carry it (:func:`tar_at_far`'s ``far_points``).
"""
from __future__ import annotations

from typing import Iterable

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["FAR_DECADES", "far_label", "far_key", "far_resolved", "tar_at_far"]

FAR_DECADES = (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1)


def far_label(far: float) -> str:
    """``1e-4 -> "1e-4"``, ``0.25 -> "2.5e-1"`` (mantissa without trailing zeros, exponent without padding)."""
    mant, exp = f"{float(far):.3e}".split("e")
    return f"{mant.rstrip('0').rstrip('.')}e{int(exp)}"


def far_key(far: float, metric: str = "TAR") -> str:
    """``1e-4 -> "TAR@FAR=1e-4"`` (the JSON key of a TAR); ``metric="FAR"`` gives the key of the FAR a subset
    reaches at that FAR's global threshold (``"FAR@FAR=1e-4"``, :func:`~qgface_plugin.eval.ijb.quality_tar`)."""
    return f"{metric}@FAR={far_label(far)}"


def far_resolved(far: float, min_resolvable_far: float) -> bool:
    """Whether ``far`` is at least ``min_resolvable_far`` (1 / impostor pairs): smaller FARs all read the
    FAR-0 point of the ROC."""
    return float(far) >= min_resolvable_far * (1 - 1e-9)


def tar_at_far(scores, labels, fars: Iterable[float] = FAR_DECADES, return_roc: bool = False):
    """TAR at each FAR as upstream ``eval_ijbc.py``: ``fpr, tpr, thr = sklearn.metrics.roc_curve(labels, scores)``
    (default ``drop_intermediate=True``); for each FAR take the ROC point with the smallest ``|fpr - far|``
    (no interpolation); among equally near points upstream's flipped-array ``min`` picks the one with the
    **largest index in roc_curve order**, i.e. the largest TPR.

    Returns ``{"TAR@FAR=1e-4": float, ...}`` (:func:`far_key`); with ``return_roc=True`` returns
    ``(that dict, roc)`` where ``roc = {"fpr", "tpr", "thresholds", "auc", "far_points"}`` (arrays in roc_curve
    order; ``far_points[key] = (index, fpr, threshold, far)`` of the ROC point chosen for each FAR ``far``: a
    pair is accepted at that point iff ``score >= threshold``).
    """
    from sklearn.metrics import auc, roc_curve
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    if len(scores) != len(labels):
        raise QGFaceInputError(f"tar_at_far: {len(scores)} scores for {len(labels)} labels")
    if not np.isfinite(scores).all():
        raise QGFaceInputError("tar_at_far: scores has non-finite values")
    if not (np.any(labels == 1) and np.any(labels == 0)) or not np.isin(labels, (0, 1)).all():
        raise QGFaceInputError("tar_at_far: labels must be 0/1 with both classes present")
    fpr, tpr, thr = roc_curve(labels, scores)
    out, points = {}, {}
    for far in fars:
        d = np.abs(fpr - far)
        idx = int(np.flatnonzero(d == d.min())[-1])
        out[far_key(far)] = float(tpr[idx])
        points[far_key(far)] = (idx, float(fpr[idx]), float(thr[idx]), float(far))
    if return_roc:
        return out, {"fpr": fpr, "tpr": tpr, "thresholds": thr, "auc": float(auc(fpr, tpr)), "far_points": points}
    return out
