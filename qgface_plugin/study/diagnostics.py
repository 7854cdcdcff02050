"""QGFace's training diagnostics, from the training loop's logged history: why QGFace beats its baselines or not.

The training summary's ``"history"`` (:func:`qgface_plugin.arcface.training.train`; also in
``<run>/train/summary.json``) holds rank 0's logged steps. A QGFace run logs, per step, ``hq_fraction`` (the
share of rows classified HQ, ``q̂ ≥ b``: they go to Partial FC), ``contrast_fraction`` (the share of image pairs
with a weight > 0: they enter the contrastive loss against the queue), ``queue_fill`` (the filled share of the
queue), ``norm_mean`` / ``norm_std`` (the EMA statistics of the feature norm) and ``threshold`` (``b``).
:func:`training_diagnostics` condenses them: the means over the logged steps, the means per quarter of the logged
steps (does contrasting start late, or stop?), the last logged step's values, and the curve. A single-view
baseline logs no ``hq_fraction``: it has none (``None``).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["FRACTIONS", "training_diagnostics", "mean_or_none"]

FRACTIONS = ("hq_fraction", "contrast_fraction")
FINAL = ("norm_mean", "norm_std", "queue_fill", "hq_fraction", "contrast_fraction")


def _value(entry, key):
    """``entry[key]`` as a Python float, ``None`` when missing or not finite."""
    try:
        v = float(entry.get(key))
    except (TypeError, ValueError):
        return None
    return v if math.isfinite(v) else None


def mean_or_none(values):
    """The mean of the values that are not ``None`` (``None`` when there are none)."""
    vals = [v for v in values if v is not None]
    return float(np.mean(vals)) if vals else None


def _mean(entries, key):
    return mean_or_none(_value(e, key) for e in entries)


def training_diagnostics(history) -> dict | None:
    """The diagnostics of a QGFace run's logged ``history`` (list of ``{"step", "hq_fraction", ...}``).

    Returns ``None`` when the history is empty or has no ``hq_fraction`` (not a QGFace run); else
    ``{"threshold": b of the last logged step, "hq_fraction", "contrast_fraction": means over the logged steps,
    "by_quarter": [{"steps": [first, last], "hq_fraction", "contrast_fraction"}, ...] (the logged steps in order,
    in 4 consecutive parts as equal as can be: fewer with fewer than 4 logged steps), "final": {"norm_mean",
    "norm_std", "queue_fill", "hq_fraction", "contrast_fraction"} of the last logged step, "curve": [{"step",
    "hq_fraction", "contrast_fraction"}, ...] every logged step}``. Values that are not finite are left out of the
    means (and are ``None`` where reported one by one)."""
    entries = [dict(e) for e in (history or []) if isinstance(e, dict)]
    if not entries or not any("hq_fraction" in e for e in entries):
        return None
    entries.sort(key=lambda e: int(e.get("step", 0)))  # stable: the logged order where steps tie
    last = entries[-1]
    quarters = []
    for part in np.array_split(np.arange(len(entries)), min(4, len(entries))):
        chunk = [entries[i] for i in part]
        quarters.append({"steps": [int(chunk[0].get("step", 0)), int(chunk[-1].get("step", 0))],
                         **{k: _mean(chunk, k) for k in FRACTIONS}})
    return {"threshold": _value(last, "threshold"), **{k: _mean(entries, k) for k in FRACTIONS},
            "by_quarter": quarters, "final": {k: _value(last, k) for k in FINAL},
            "curve": [{"step": int(e.get("step", 0)), **{k: _value(e, k) for k in FRACTIONS}} for e in entries]}
