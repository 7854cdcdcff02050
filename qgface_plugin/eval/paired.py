"""Paired bootstrap of the difference between models evaluated on the same pairs or probes.

Two (or more) models are scored on the same items (verification pairs, identification probes). To see
whether model B's figure really differs from model A's, the items are resampled with replacement and, for
**the same resample**, the figure is recomputed for both models; the spread of ``B - A`` over the resamples
gives its interval. Pairing removes the variance the models share (items that are hard for both), so the
interval of the difference is much narrower than one built from independent resamples of each model.

* A resample is represented by its **counts**: ``counts[i]`` = how many times item ``i`` was drawn (n draws
  in all), so every figure is a weighted figure (:class:`SortedBins`, :class:`WeightedROC`), and the
  original set is ``counts = 1``. With ``strata`` (e.g. SCface's distances) each stratum is resampled on its
  own, keeping its size.
* Interval: the percentile interval of the resampled differences (``numpy.percentile``, linear
  interpolation), 95% by default; resamples where a figure is undefined (e.g. no genuine pair in a bin) are
  left out of that figure's interval and counted.
* Seeded: ``numpy.random.default_rng(seed)``; the same seed gives the same resamples.
"""
from __future__ import annotations

import itertools

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["LEVEL", "resample_counts", "bootstrap_counts", "all_resamples", "percentile_interval", "bootstrap",
           "paired_bootstrap", "unpaired_bootstrap", "SortedBins", "WeightedROC", "weighted_mean"]

LEVEL = 0.95


# --------------------------------------------------------------------------------------------- resampling
def _strata(strata, n):
    if strata is None:
        return [np.arange(n)]
    s = np.asarray(strata).reshape(-1)
    if len(s) != n:
        raise QGFaceInputError(f"bootstrap: {len(s)} strata labels for {n} items")
    return [np.flatnonzero(s == v) for v in np.unique(s)]


def _draw(rng, n, groups) -> np.ndarray:
    if groups is None:  # one stratum: the draws are the item indices themselves
        return np.bincount(rng.integers(0, n, n), minlength=n)
    counts = np.zeros(n, dtype=np.int64)
    for idx in groups:
        counts += np.bincount(idx[rng.integers(0, len(idx), len(idx))], minlength=n)
    return counts


def resample_counts(rng, n, strata=None) -> np.ndarray:
    """One resample with replacement as counts ``[n]`` (sum n); with ``strata``, per stratum (its size kept)."""
    return _draw(rng, n, None if strata is None else _strata(strata, n))


def bootstrap_counts(n, resamples, seed=0, strata=None):
    """``resamples`` seeded resamples (:func:`resample_counts`)."""
    rng = np.random.default_rng(seed)
    groups = None if strata is None else _strata(strata, n)
    for _ in range(int(resamples)):
        yield _draw(rng, n, groups)


def all_resamples(n):
    """Every one of the ``n ** n`` equally likely ordered draws of ``n`` items, as counts (for exact checks)."""
    for draw in itertools.product(range(n), repeat=n):
        yield np.bincount(np.asarray(draw), minlength=n)


def percentile_interval(values, level=LEVEL):
    """``(low, high)``: the ``(1 - level) / 2`` and ``(1 + level) / 2`` percentiles (linear interpolation) of
    ``values``; ``(None, None)`` when there are none."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    if len(v) == 0:
        return None, None
    lo, hi = np.percentile(v, [100 * (1 - level) / 2, 100 * (1 + level) / 2])
    return float(lo), float(hi)


# ---------------------------------------------------------------------------------------------- bootstrap
def _as_dict(v):
    return v if isinstance(v, dict) else {"value": v}


def _diff(a, b):
    return None if a is None or b is None else float(b) - float(a)


def bootstrap(stats: dict, n, reference=None, resamples=1000, seed=0, level=LEVEL, strata=None, paired=True,
              counts=None, progress=None) -> dict:
    """Bootstrap intervals of every model's difference to the ``reference`` model, for every figure.

    Args:
        stats: ``{model label: stat}``, ``stat(counts) -> {figure: value or None}`` (or one value) for the
            same ``n`` items; ``stat(ones)`` is the figure on the original set.
        reference: the label differences are taken from (default: the first).
        resamples: number of resamples; 0 = no intervals.
        paired: True (the point): one resample per round, shared by every model; False: each model draws its
            own resample (the unpaired bootstrap, for comparison).
        counts: an iterable of count arrays to use instead of seeded draws (e.g. :func:`all_resamples`).
        progress: ``progress(done, total)`` called every ~10% (optional).

    Returns:
        ``{"point": {label: {figure: value}}, "diff": {label: {figure: {"diff" (on the original set), "low",
        "high", "resamples" (resamples where the difference is defined)}}}, "resamples", "seed", "level",
        "paired", "reference"}`` (the reference has no ``diff`` entry).
    """
    labels = list(stats)
    if not labels:
        raise QGFaceInputError("bootstrap: no models")
    reference = labels[0] if reference is None else reference
    if reference not in stats:
        raise QGFaceInputError(f"bootstrap: reference {reference!r} is not one of {labels}")
    ones = np.ones(int(n), dtype=np.int64)
    point = {m: _as_dict(stats[m](ones)) for m in labels}
    others = [m for m in labels if m != reference]
    figures = list(point[reference])
    diffs = {m: {f: [] for f in figures} for m in others}
    if counts is None:
        streams = {m: bootstrap_counts(n, resamples, seed if paired else seed + i, strata)
                   for i, m in enumerate(labels)}
        draws = (zip(*(streams[m] for m in labels)) if not paired
                 else ((c,) * len(labels) for c in streams[reference]))
        total = int(resamples)
    else:
        counts = list(counts)
        draws = ((c,) * len(labels) for c in counts)
        total = len(counts)
    done = 0
    for draw in draws:
        by_model = dict(zip(labels, draw))
        ref = _as_dict(stats[reference](by_model[reference]))
        for m in others:
            got = _as_dict(stats[m](by_model[m]))
            for f in figures:
                d = _diff(ref.get(f), got.get(f))
                if d is not None:
                    diffs[m][f].append(d)
        done += 1
        if progress is not None and total and (done == total or done % max(1, total // 10) == 0):
            progress(done, total)
    out = {m: {} for m in others}
    for m in others:
        for f in figures:
            lo, hi = percentile_interval(diffs[m][f], level) if total else (None, None)
            out[m][f] = {"diff": _diff(point[reference].get(f), point[m].get(f)), "low": lo, "high": hi,
                         "resamples": len(diffs[m][f])}
    return {"point": point, "diff": out, "resamples": total, "seed": int(seed), "level": level, "paired": paired,
            "reference": reference}


def paired_bootstrap(stat_a, stat_b, n, resamples=1000, seed=0, level=LEVEL, strata=None, counts=None) -> dict:
    """The paired bootstrap of ``B - A`` for two models: ``{figure: {"a", "b", "diff", "low", "high",
    "resamples"}}`` (see :func:`bootstrap`)."""
    res = bootstrap({"A": stat_a, "B": stat_b}, n, "A", resamples, seed, level, strata, True, counts)
    return {f: {"a": res["point"]["A"][f], "b": res["point"]["B"].get(f), **d} for f, d in res["diff"]["B"].items()}


def unpaired_bootstrap(stat_a, stat_b, n, resamples=1000, seed=0, level=LEVEL, strata=None) -> dict:
    """As :func:`paired_bootstrap`, but each model resampled on its own (what pairing is compared with)."""
    res = bootstrap({"A": stat_a, "B": stat_b}, n, "A", resamples, seed, level, strata, False)
    return {f: {"a": res["point"]["A"][f], "b": res["point"]["B"].get(f), **d} for f, d in res["diff"]["B"].items()}


# ------------------------------------------------------------------------------------- weighted figures
def weighted_mean(counts, values):
    """``sum(counts * values) / sum(counts)`` (``None`` when the counts sum to 0)."""
    c = np.asarray(counts, dtype=np.float64)
    tot = c.sum()
    return None if tot <= 0 else float(np.dot(c, np.asarray(values, dtype=np.float64)) / tot)


class SortedBins:
    """Quantile bins of a resample, as :func:`~qgface_plugin.eval.quality_view.quality_split` makes them on the
    resampled items (``np.repeat(arange(n), counts)``): sorted by quality (stable, so ties by item index, the
    copies of an item together) and cut into ``bins`` near-equal groups (the first ``N % bins`` one larger).
    A copy count that straddles a cut is split between the two bins. The bins are contiguous in quality
    order, so a resample costs one gather of its counts, one cumulative sum and a dot product per value."""

    def __init__(self, quality, bins=3):
        q = np.asarray(quality, dtype=np.float64).reshape(-1)
        self.order = np.argsort(q, kind="stable")
        self.bins = int(bins)
        self.names = ["lowest", "middle", "highest"] if self.bins == 3 else [f"q{i + 1}" for i in range(self.bins)]

    def sort(self, values) -> np.ndarray:
        """``values`` (item order) in quality order, as float64 (for :meth:`sums_sorted`)."""
        return np.asarray(values, dtype=np.float64)[self.order]

    def sums(self, counts, *values):
        """``(sizes [bins], [per value: sums [bins]])``: each bin's number of resampled items and the sum of
        each ``value`` (``[n]``, item order) over them."""
        return self.sums_sorted(self.sort(counts), *(self.sort(v) for v in values))

    def sums_sorted(self, c, *values):
        """:meth:`sums` with the counts and values already in quality order (:meth:`sort`)."""
        n = len(c)
        cum = np.cumsum(c)
        total = int(round(cum[-1])) if n else 0
        sizes = np.full(self.bins, total // self.bins)
        sizes[: total % self.bins] += 1
        cuts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.float64)
        out = [np.zeros(self.bins) for _ in values]
        for j in range(self.bins):
            lo, hi = cuts[j], cuts[j + 1]
            if hi <= lo:
                continue
            a = int(np.searchsorted(cum, lo, "right"))   # first item ending after lo
            b = int(np.searchsorted(cum, hi, "left"))    # first item ending at or after hi ...
            if b < n and cum[b] - c[b] < hi:             # ... is in the bin when it starts before hi
                b += 1
            if b <= a:
                continue
            cut_left, cut_right = max(lo - (cum[a] - c[a]), 0.0), max(cum[b - 1] - hi, 0.0)
            for s, v in zip(out, values):
                s[j] = float(np.dot(c[a:b], v[a:b])) - cut_left * v[a] - cut_right * v[b - 1]
        return sizes, out


class WeightedROC:
    """TAR@FAR of a resample exactly as :func:`~qgface_plugin.eval.roc.tar_at_far` computes it on the
    resampled pairs (``sklearn.metrics.roc_curve`` with its default ``drop_intermediate``, nearest ROC point
    to each FAR, ties to the largest TPR), from the counts alone: the scores are sorted once, each resample
    sums its weights per distinct score.

    With ``max_far`` (the largest FAR that will be asked), a resample first builds the ROC over the highest
    scores only -- down to about 3 ``max_far`` of the impostor pairs -- which holds every point near those
    FARs (a point's fate under ``drop_intermediate`` depends on its neighbours only); when the nearest point
    is not safely inside that prefix, the whole ROC is built. The result is the same either way (tested)."""

    def __init__(self, scores, labels, max_far=None):
        s = np.asarray(scores, dtype=np.float64).reshape(-1)
        self.labels = np.asarray(labels).reshape(-1) == 1
        self.scores = s
        self.order = np.argsort(s, kind="mergesort")[::-1]
        ss = s[self.order]
        self.gen_sorted = self.labels[self.order].astype(np.int64)
        self.starts = np.concatenate([[0], np.flatnonzero(np.diff(ss)) + 1]) if len(ss) else np.zeros(0, int)
        self.group_score = ss[self.starts] if len(ss) else ss
        self.prefix = None  # (groups, items) of the high-score prefix
        if max_far is not None and len(ss):
            n_imp = int((~self.labels).sum())
            ends = np.r_[self.starts[1:], len(ss)] - 1
            imp_at_end = np.cumsum(1 - self.gen_sorted)[ends]
            need = int(np.ceil(3 * float(max_far) * n_imp)) + 50
            g = int(np.searchsorted(imp_at_end, need))
            if g + 1 < len(self.starts):
                self.prefix = (g + 1, int(self.starts[g + 1]))

    def _curve(self, counts, groups, items):
        w = np.asarray(counts)[self.order[:items]].astype(np.int64)
        starts = self.starts[:groups]
        gp = np.add.reduceat(w * self.gen_sorted[:items], starts)
        gt = np.add.reduceat(w, starts)
        keep = gt != 0
        tps, fps, thr = np.cumsum(gp[keep]), np.cumsum((gt - gp)[keep]), self.group_score[:groups][keep]
        if len(fps) > 2:
            opt = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
            tps, fps, thr = tps[opt], fps[opt], thr[opt]
        return np.r_[0, tps], np.r_[0, fps], np.r_[np.inf, thr]

    def roc(self, counts):
        """``(fpr, tpr, thresholds)`` of the resample, as ``roc_curve`` returns them; ``None`` without a genuine
        or an impostor pair."""
        if len(self.scores) == 0:
            return None
        tps, fps, thr = self._curve(counts, len(self.starts), len(self.scores))
        if fps[-1] <= 0 or tps[-1] <= 0:
            return None
        return fps / fps[-1], tps / tps[-1], thr

    @staticmethod
    def _nearest(fpr, tpr, thr, fars):
        out = {}
        for far in fars:
            d = np.abs(fpr - far)
            idx = int(np.flatnonzero(d == d.min())[-1])
            out[far] = (float(tpr[idx]), float(thr[idx]), idx, float(d[idx]))
        return out

    def tar_at_far(self, counts, fars):
        """``{far: (TAR, threshold)}`` of the resample (``(None, None)`` for each when undefined)."""
        if self.prefix is not None:
            c = np.asarray(counts)
            total_gen = int(np.dot(c, self.labels))
            total_imp = int(c.sum()) - total_gen
            if total_gen > 0 and total_imp > 0:
                tps, fps, thr = self._curve(c, *self.prefix)
                fpr, tpr = fps / total_imp, tps / total_gen
                got = self._nearest(fpr, tpr, thr, fars)
                last = len(fpr) - 1
                if all(idx < last and dist < fpr[-1] - far for far, (_, _, idx, dist) in got.items()):
                    return {far: v[:2] for far, v in got.items()}
        roc = self.roc(counts)
        if roc is None:
            return {far: (None, None) for far in fars}
        return {far: v[:2] for far, v in self._nearest(*roc, fars).items()}
