"""Evaluating one trained arm: verification on the study's pair sets, and the norm's AUROC (at the end and during
training).

* :func:`verify_pairs` runs the evaluation suite's ``.bin`` code
  (:func:`qgface_plugin.eval.verification.evaluate_bin`: flip-fused features, the 10-fold protocol) on each pair
  type and keeps, besides the accuracy, each pair's correctness (judged with its fold's threshold), which the
  paired differences resample.
* :func:`norm_auroc` scores the quality indicator: the AUROC of the raw (non-flipped) feature norm separating the
  probe set's clean images (positives) from their degraded copies.
* :class:`AurocLogger` is the training loop's ``on_log`` callback (:func:`qgface_plugin.arcface.training.train`)
  that records that AUROC every ``every`` steps and after the last one (the backbone is switched to eval mode
  for it and back to training mode).
"""
from __future__ import annotations

import time

import numpy as np

from ..eval.features import FeatureExtractor
from ..eval.verification import evaluate_bin
from .stats import auroc

__all__ = ["verify_pairs", "norm_auroc", "AurocLogger"]


def verify_pairs(extractor, pairs: dict, bins=3) -> dict:
    """``{pair type: {"accuracy", "std", "pairs", "norm_mean", "norm_mean_first", "quality_bins", "correct"
    ([P] 0/1, in pair order)}}`` for ``pairs`` = ``{pair type: .bin path}``."""
    out = {}
    for kind, path in pairs.items():
        row = evaluate_bin(extractor, path, bins=bins, erc=False, return_pairs=True, workers=0)["original"]
        out[kind] = {"accuracy": row["accuracy"], "std": row["std"], "pairs": row["pairs"],
                     "norm_mean": row["norm_mean"], "norm_mean_first": row["norm_mean_first"],
                     "quality_bins": row.get("quality_bins"),
                     "correct": [int(v) for v in row["per_pair"]["correct"]]}
    return out


def norm_auroc(extractor, probes) -> dict:
    """``{"auroc", "norm_clean", "norm_degraded" (mean raw norms), "probes"}`` of ``probes`` = ``(clean,
    degraded)`` images; ``extractor`` should not fuse flips (the norm is the non-flipped one anyway)."""
    clean, degraded = probes
    nc = extractor(clean)["norms"]
    nd = extractor(degraded)["norms"]
    return {"auroc": auroc(nc, nd), "norm_clean": float(np.mean(nc)), "norm_degraded": float(np.mean(nd)),
            "probes": int(len(nc))}


class AurocLogger:
    """``on_log(step, backbone)`` for the training loop: :func:`norm_auroc` at every ``every``-th step and at
    ``last_step``; ``curve`` holds ``{"step", "auroc", "norm_clean", "norm_degraded"}`` rows, ``seconds`` the
    time spent."""

    def __init__(self, probes, every, last_step, device="cpu", batch_size=64, channels_last=False):
        self.probes, self.every, self.last_step = probes, int(every), int(last_step)
        self.device, self.batch_size, self.channels_last = device, batch_size, bool(channels_last)
        self.curve, self.seconds = [], 0.0

    def __call__(self, step, backbone):
        if not (self.every > 0 and step % self.every == 0) and step != self.last_step:
            return
        t0 = time.perf_counter()
        was_training = backbone.training
        try:
            ex = FeatureExtractor(backbone, self.device, self.batch_size, flip="none", channels_last=self.channels_last)
            self.curve.append({"step": int(step), **norm_auroc(ex, self.probes)})
        finally:
            backbone.train(was_training)
        self.seconds += time.perf_counter() - t0
