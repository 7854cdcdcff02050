"""The study's statistics: intervals over seeds, the norm's AUROC, and paired differences over seeds and pairs.

* :func:`t_interval`: mean and two-sided Student-t interval over seeds (``mean ± t_{(1+level)/2, S-1} · sd / √S``,
  ``sd`` with ``ddof=1``). With 2 seeds ``t_{0.975, 1} = 12.71``: the interval is wide, honestly so; with one
  seed there is none (``low = high = None``).
* :func:`auroc`: the area under the ROC of a score separating positives from negatives (Mann-Whitney: the
  probability that a random positive scores above a random negative, ties counting one half). The study's
  quality indicator is the AUROC of the raw feature norm separating clean (positive) from degraded images.
* :func:`seed_pair_bootstrap`: the difference ``B - A`` of two arms' pooled verification accuracies, paired
  **over seeds** (seed k of A with seed k of B: both trained with ``config.seed = base + k``) and **over the same
  pairs**. A two-stage bootstrap: each resample draws the seeds with replacement and the pairs with replacement
  (the same draws for both arms), and the figure of an arm is the seed-count-weighted mean of its per-seed
  accuracies on the resampled pairs. Interval: percentiles of the resampled differences
  (:func:`qgface_plugin.eval.paired.bootstrap`, which this reuses with the draws as counts over ``P + S`` items).
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import QGFaceInputError
from ..eval.paired import LEVEL, bootstrap, resample_counts

__all__ = ["t_interval", "auroc", "seed_pair_counts", "seed_pair_bootstrap"]


def t_interval(values, level=LEVEL) -> dict:
    """``{"mean", "low", "high", "sd", "n", "interval"}`` of ``values`` (``None`` entries dropped); the
    interval is Student's t over the ``n`` values (none for ``n < 2``; ``mean`` None for ``n = 0``)."""
    v = np.asarray([x for x in values if x is not None], dtype=np.float64)
    n = len(v)
    out = {"mean": float(v.mean()) if n else None, "low": None, "high": None,
           "sd": float(v.std(ddof=1)) if n > 1 else None, "n": n, "interval": f"t, {level:g}, df={max(n - 1, 0)}"}
    if n > 1:
        from scipy.stats import t
        half = float(t.ppf((1 + level) / 2, n - 1)) * out["sd"] / math.sqrt(n)
        out["low"], out["high"] = out["mean"] - half, out["mean"] + half
    return out


def auroc(positive, negative) -> float | None:
    """P(score of a random positive > that of a random negative) + ½ P(equal): the ROC area, exactly
    (average ranks); ``None`` when either side is empty."""
    pos = np.asarray(positive, dtype=np.float64).reshape(-1)
    neg = np.asarray(negative, dtype=np.float64).reshape(-1)
    if not len(pos) or not len(neg):
        return None
    if not (np.all(np.isfinite(pos)) and np.all(np.isfinite(neg))):
        raise QGFaceInputError("auroc: scores contain NaN or inf")
    from scipy.stats import rankdata
    ranks = rankdata(np.concatenate([pos, neg]))  # average ranks: ties count one half
    u = ranks[:len(pos)].sum() - len(pos) * (len(pos) + 1) / 2
    return float(u / (len(pos) * len(neg)))


def seed_pair_counts(pairs, seeds, resamples, seed=0):
    """``resamples`` two-stage draws as counts ``[pairs + seeds]``: the pairs' counts (with replacement,
    sum ``pairs``) then the seeds' (sum ``seeds``), seeded by ``seed``."""
    rng = np.random.default_rng(seed)
    for _ in range(int(resamples)):
        yield np.concatenate([resample_counts(rng, pairs), resample_counts(rng, seeds)])


def _pooled(correct):
    """``stat(counts)`` of an arm's ``[S, P]`` per-seed, per-pair correctness: the seed-count-weighted mean of
    its per-seed accuracies on the pair-count-weighted pairs."""
    ok = np.asarray(correct, dtype=np.float64)
    s, p = ok.shape

    def stat(counts):
        cp, cs = np.asarray(counts[:p], dtype=np.float64), np.asarray(counts[p:], dtype=np.float64)
        if cp.sum() <= 0 or cs.sum() <= 0:
            return None
        per_seed = ok @ cp / cp.sum()
        return float(per_seed @ cs / cs.sum())
    return stat


def seed_pair_bootstrap(correct_a, correct_b, resamples=1000, seed=0, level=LEVEL, counts=None) -> dict:
    """Paired two-stage bootstrap of ``B - A`` (see the module docstring).

    Args:
        correct_a, correct_b: ``[S, P]`` per-seed, per-pair correctness (bool or 0/1) of arms A and B on the
            same ``P`` pairs, seed ``k`` of A paired with seed ``k`` of B.
        counts: draws to use instead of seeded ones (``[P + S]`` each: pair counts then seed counts), e.g. an
            exhaustive enumeration for exact checks.

    Returns:
        ``{"a", "b" (pooled accuracies over every seed and pair), "diff" (b - a), "low", "high" (percentile
        interval), "resamples" (draws where the difference is defined), "seeds", "pairs", "level", "method"}``.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 2 or a.shape != b.shape or a.size == 0:
        raise QGFaceInputError(f"seed_pair_bootstrap: need two [seeds, pairs] arrays of one shape, got {a.shape} "
                               f"and {b.shape}")
    s, p = a.shape
    if counts is None:
        counts = seed_pair_counts(p, s, resamples, seed)
    res = bootstrap({"A": _pooled(a), "B": _pooled(b)}, p + s, "A", counts=counts, level=level, seed=seed)
    d = res["diff"]["B"]["value"]
    return {"a": res["point"]["A"]["value"], "b": res["point"]["B"]["value"], "diff": d["diff"], "low": d["low"],
            "high": d["high"], "resamples": d["resamples"], "seeds": s, "pairs": p, "level": level,
            "method": "paired two-stage bootstrap: seeds and pairs resampled with replacement, the same draws for "
                      "both arms; percentile interval"}
