"""The quality view shared by every evaluator: items split into bins by feature-norm quality.

Every evaluator's quality table has one row per bin that starts with the same keys (:func:`bin_rows`):
``bin`` (name), ``count`` (items: pairs or probes), ``quality_min`` / ``quality_max`` (the range of the
items' quality in the bin: a probe's raw feature norm, or a pair's quality), then its own figures.
"""
from __future__ import annotations

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["quality_split", "bin_rows"]


def quality_split(norms, bins=3, what="quality_bins") -> list:
    """Split items into ``bins`` near-equal quantile groups by feature norm, lowest norms first.

    Items are sorted by norm (stable argsort, so ties keep their input order) and cut with
    ``np.array_split`` (the first ``n % bins`` groups get one extra item). With 3 bins the groups are
    named ``lowest`` / ``middle`` / ``highest``; otherwise ``q1..qB``.

    Returns:
        ``[(name, indices), ...]``, ``indices`` an int array into ``norms``.

    Raises:
        QGFaceInputError: (prefixed with ``what``) unless ``1 <= bins <= len(norms)`` (``bins=1`` is
            allowed for an empty input).
    """
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    bins = int(bins)
    if bins < 1 or bins > max(1, len(norms)):
        raise QGFaceInputError(f"{what}: bins={bins} must be in 1..{len(norms)}")
    names = ["lowest", "middle", "highest"] if bins == 3 else [f"q{i + 1}" for i in range(bins)]
    return list(zip(names, np.array_split(np.argsort(norms, kind="stable"), bins)))


def bin_rows(quality, bins=3, what="quality_bins") -> list:
    """:func:`quality_split` of ``quality`` with the head of each bin's table row: ``[(row, indices), ...]``,
    ``row = {"bin", "count", "quality_min", "quality_max"}`` (the caller adds its figures to it)."""
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    return [({"bin": name, "count": int(len(idx)), "quality_min": float(q[idx].min()),
              "quality_max": float(q[idx].max())}, idx) for name, idx in quality_split(q, bins, what)]
