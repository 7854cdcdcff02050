"""Error-versus-reject curves (ERC): how the error falls when the lowest-quality items are rejected.

The standard test of a quality score (Grother & Tabassi's ERC; the face-image-quality literature,
MagFace): reject the fraction ``f`` of the items with the lowest quality -- here QGFace's quality, the raw
feature norm -- and recompute the error on the items kept, for ``f`` on a grid (default 0, 0.05, ..., 0.5).
A good quality score makes the error fall fast; rejecting at random leaves it where it was.

* **Items and error.** Verification (``.bin``, IJB-B/C): the items are pairs, the error is the FNMR
  (genuine pairs rejected by the matcher / genuine pairs kept) at one fixed similarity threshold, set once
  on ALL pairs at a chosen FMR (= FAR) and not moved as pairs are rejected. Identification (TinyFace,
  SCface): the items are probes, the error is the rank-1 error (probes whose rank is not 1 / probes kept).
  Generally: each item ``i`` has an error flag ``e_i`` and a "counted" flag ``c_i`` (``e_i`` implies ``c_i``;
  genuine pairs for FNMR, every probe for rank-1), and the error of a kept set ``K`` is
  ``sum_K e / sum_K c`` (undefined -- ``None`` -- when ``sum_K c = 0``, e.g. nothing kept).
* **How many are rejected.** At fraction ``f`` exactly ``k = floor(f * n)`` of the ``n`` items are rejected
  (``f * n`` is taken with a 1e-9 tolerance, so 0.3 of 10 items is 3).
* **Tie rule (proportional).** Items are ordered by quality, lowest first. When the ``k``-th and the
  ``k+1``-th lowest items have the same quality, the boundary falls inside a group of equal quality: the
  items below the group are rejected, the items above it kept, and every member of the group counts as
  kept with the same share ``(kept from the group) / (group size)``. So exactly ``k`` items are rejected
  whatever the input order, and the kept error and counted sums are their means over every order of the
  tied items (the ratio of those means is the error). Without ties this is simply "reject the ``k``
  lowest". (IJB pair quality -- the lower of two template qualities -- ties a lot: a template's quality is
  shared by all its pairs.)
* **AUC** = the trapezoid rule over the fraction grid (``sum (f_j+1 - f_j) (err_j + err_j+1) / 2``): error
  x fraction, so a flat curve at error ``E`` over 0..0.5 has AUC ``0.5 E``. ``None`` when a grid point is
  undefined.
* **Random baseline.** Rejecting ``k`` items uniformly at random: the expected error is exactly the
  unrejected error ``E / C`` (``E`` errors among ``C`` counted items) at every ``k`` -- given ``g`` counted
  items kept, the errors kept are hypergeometric with mean ``g E / C``, so ``E[errors kept / g | g] = E / C``
  (for FNMR this holds conditional on at least one genuine pair kept; for rank-1 every probe counts and it
  is unconditional). That flat line is the baseline's curve and AUC (``random.error``, ``random.auc``:
  analytic, exact). A single random rejection scatters around it; ``random.band`` gives that spread from
  ``draws`` seeded random rejection orders, each a nested sequence of rejections along the grid, sampled
  exactly from its (multivariate) hypergeometric distribution without permuting the items: per fraction the
  mean and the 2.5-97.5 percentiles of the error, and the percentile interval of the draws' AUCs.
"""
from __future__ import annotations

import math

import numpy as np

from ..errors import QGFaceInputError
from .roc import FAR_DECADES, far_key, far_resolved, tar_at_far

__all__ = ["DEFAULT_FRACTIONS", "DEFAULT_DRAWS", "TIE_RULE", "RANDOM_METHOD", "check_fractions", "n_rejected",
           "reject_curve", "auc", "random_baseline", "erc", "options", "choose_fmr", "fnmr_erc", "rank1_erc", "error_at",
           "markdown_table", "plot_erc"]

DEFAULT_FRACTIONS = tuple(round(0.05 * i, 2) for i in range(11))  # 0, 0.05, ..., 0.5
DEFAULT_DRAWS = 1000
LEVEL = 0.95
TIE_RULE = ("proportional: exactly floor(f*n) items are rejected, lowest quality first; when the cut falls inside a "
            "group of equal quality, each member of the group counts as kept with the same share")
RANDOM_METHOD = ("expected error under uniformly random rejection of the same number of items, analytic and exact: "
                 "the unrejected error at every fraction (for FNMR conditional on at least one genuine pair kept); "
                 "band: seeded random rejection orders sampled exactly (nested hypergeometric draws)")


# ------------------------------------------------------------------------------------------------ the curve
def check_fractions(fractions) -> np.ndarray:
    """The fraction grid as a float array; raises unless it is non-empty, finite, strictly increasing, in [0, 1]."""
    try:
        f = np.asarray([float(x) for x in fractions], dtype=np.float64)
    except (TypeError, ValueError) as e:
        raise QGFaceInputError(f"ERC fractions must be numbers, got {fractions!r}") from e
    if f.ndim != 1 or len(f) == 0:
        raise QGFaceInputError("ERC fractions: need at least one fraction")
    if not np.isfinite(f).all() or f.min() < 0 or f.max() > 1:
        raise QGFaceInputError(f"ERC fractions must lie in [0, 1], got {f.tolist()}")
    if len(f) > 1 and not (np.diff(f) > 0).all():
        raise QGFaceInputError(f"ERC fractions must be strictly increasing, got {f.tolist()}")
    return f


def n_rejected(fraction, n) -> int:
    """Items rejected at ``fraction`` of ``n``: ``floor(fraction * n)`` (with a 1e-9 tolerance)."""
    return min(int(n), int(math.floor(float(fraction) * int(n) + 1e-9)))


def _flags(quality, errors, counted, what):
    q = np.asarray(quality, dtype=np.float64).reshape(-1)
    e = np.asarray(errors, dtype=bool).reshape(-1)
    c = np.ones(len(q), dtype=bool) if counted is None else np.asarray(counted, dtype=bool).reshape(-1)
    if not (len(q) == len(e) == len(c)):
        raise QGFaceInputError(f"{what}: {len(q)} qualities, {len(e)} error flags, {len(c)} counted flags")
    if not np.isfinite(q).all():
        raise QGFaceInputError(f"{what}: quality contains NaN or inf")
    if (e & ~c).any():
        raise QGFaceInputError(f"{what}: an item counted as an error must be a counted item")
    return q, e, c


def reject_curve(quality, errors, counted=None, fractions=DEFAULT_FRACTIONS) -> dict:
    """The error after rejecting the lowest-quality fraction, at each fraction of the grid (module docstring).

    Args:
        quality: ``[n]`` quality per item (higher = better; the raw feature norm).
        errors: ``[n]`` bool, the item is an error (a genuine pair not matched; a probe not at rank 1).
        counted: ``[n]`` bool, the item counts in the denominator (genuine pairs; ``None`` = every item).
        fractions: strictly increasing fractions in [0, 1].

    Returns:
        ``{"fractions", "rejected" (items rejected, floor(f n)), "kept_errors", "kept_counted" (the kept sums,
        fractional under the tie rule), "error" (kept_errors / kept_counted, ``None`` when nothing counted
        is kept)}``, lists over the grid.
    """
    q, e, c = _flags(quality, errors, counted, "reject_curve")
    f = check_fractions(fractions)
    n = len(q)
    order = np.argsort(q, kind="stable")
    qs = q[order]
    ce = np.concatenate([[0.0], np.cumsum(e[order], dtype=np.float64)])
    cc = np.concatenate([[0.0], np.cumsum(c[order], dtype=np.float64)])
    rejected, kept_e, kept_c, err = [], [], [], []
    for frac in f:
        k = n_rejected(frac, n)
        if k == 0:
            ke, kc = ce[-1], cc[-1]
        elif k >= n:
            ke, kc = 0.0, 0.0
        else:
            v = qs[k]                                    # the first item kept in quality order
            a = int(np.searchsorted(qs, v, "left"))      # items below v's group: all rejected
            b = int(np.searchsorted(qs, v, "right"))     # items above it: all kept
            share = (b - k) / (b - a)                    # kept share of each member of the group [a, b)
            ke = (ce[-1] - ce[b]) + share * (ce[b] - ce[a])
            kc = (cc[-1] - cc[b]) + share * (cc[b] - cc[a])
        rejected.append(k)
        kept_e.append(float(ke))
        kept_c.append(float(kc))
        err.append(float(ke / kc) if kc > 0 else None)
    return {"fractions": f.tolist(), "rejected": rejected, "kept_errors": kept_e, "kept_counted": kept_c,
            "error": err}


def auc(fractions, error):
    """Trapezoid-rule area under ``error`` over ``fractions``; ``None`` with an undefined point or one point."""
    f = np.asarray(fractions, dtype=np.float64)
    if len(f) < 2 or any(x is None or not np.isfinite(x) for x in error):
        return None
    y = np.asarray(error, dtype=np.float64)
    return float(np.sum(np.diff(f) * (y[1:] + y[:-1]) / 2.0))


# ---------------------------------------------------------------------------------------- random baseline
def _percentiles(values, level):
    lo, hi = 100 * (1 - level) / 2, 100 * (1 + level) / 2
    return [float(x) for x in np.percentile(values, [lo, hi])]


def random_baseline(errors, counted=None, fractions=DEFAULT_FRACTIONS, draws=DEFAULT_DRAWS, seed=0,
                    level=LEVEL) -> dict:
    """The random-rejection baseline (module docstring): exact expectation, plus a band from ``draws`` orders.

    Each draw is one uniformly random rejection order: along the grid, the next ``k_j+1 - k_j`` items are
    rejected at random from those still kept, so the rejected sets are nested. Only the counts matter, so
    each step draws how many of them are uncounted / counted errors / counted non-errors (two hypergeometric
    draws per step, vectorised over the draws). ``draws=0`` leaves the band out.

    Returns:
        ``{"method", "error" (the expectation per fraction; ``None`` where nothing counted can be kept), "auc",
        "band": {"draws", "seed", "level", "mean", "low", "high" (per fraction, over the draws with a counted
        item kept; ``None`` where there is none), "auc_mean", "auc_low", "auc_high"} or None}``.
    """
    e = np.asarray(errors, dtype=bool).reshape(-1)
    c = np.ones(len(e), dtype=bool) if counted is None else np.asarray(counted, dtype=bool).reshape(-1)
    f = check_fractions(fractions)
    draws = int(draws)
    if draws < 0:
        raise QGFaceInputError(f"random_baseline: draws={draws} must be >= 0")
    n, n_c, n_e = len(e), int(c.sum()), int(e.sum())
    ks = [n_rejected(x, n) for x in f]
    expect = [float(n_e / n_c) if (n - k) >= 1 and n_c >= 1 else None for k in ks]
    out = {"method": RANDOM_METHOD, "error": expect, "auc": auc(f, expect), "band": None}
    if draws == 0:
        return out
    rng = np.random.default_rng(int(seed))
    pool_u = np.full(draws, n - n_c, dtype=np.int64)   # uncounted items still kept
    pool_e = np.full(draws, n_e, dtype=np.int64)       # counted errors still kept
    pool_o = np.full(draws, n_c - n_e, dtype=np.int64)  # counted non-errors still kept
    curves = np.full((len(f), draws), np.nan)
    done = 0
    for j, k in enumerate(ks):
        r = k - done
        if r > 0:
            x_u = rng.hypergeometric(pool_u, pool_e + pool_o, np.full(draws, r))
            x_e = rng.hypergeometric(pool_e, pool_o, r - x_u)
            pool_u, pool_e, pool_o = pool_u - x_u, pool_e - x_e, pool_o - (r - x_u - x_e)
            done = k
        kept_c = pool_e + pool_o
        ok = kept_c > 0
        curves[j, ok] = pool_e[ok] / kept_c[ok]
    mean, low, high = [], [], []
    for row in curves:
        v = row[np.isfinite(row)]
        if len(v):
            lo, hi = _percentiles(v, level)
            mean.append(float(v.mean()))
            low.append(lo)
            high.append(hi)
        else:
            mean.append(None)
            low.append(None)
            high.append(None)
    band = {"draws": draws, "seed": int(seed), "level": level, "mean": mean, "low": low, "high": high,
            "auc_mean": None, "auc_low": None, "auc_high": None}
    if len(f) >= 2:
        aucs = np.sum(np.diff(f)[:, None] * (curves[1:] + curves[:-1]) / 2.0, axis=0)
        aucs = aucs[np.isfinite(aucs)]
        if len(aucs):
            band["auc_mean"] = float(aucs.mean())
            band["auc_low"], band["auc_high"] = _percentiles(aucs, level)
    out["band"] = band
    return out


def erc(quality, errors, counted=None, /, fractions=DEFAULT_FRACTIONS, draws=DEFAULT_DRAWS, seed=0, **info) -> dict:
    """The ERC of the quality score and its random baseline, as the evaluators report it.

    Returns ``{**info, "items", "counted", "errors", "tie_rule", "fractions", "rejected", "norm": {"error",
    "auc"}, "random": random_baseline(...)}`` (JSON-ready; errors are fractions). ``info`` (e.g. ``metric``,
    ``quality``) is copied in first.
    """
    q, e, c = _flags(quality, errors, counted, "erc")
    curve = reject_curve(q, e, c, fractions)
    return {**info, "items": int(len(q)), "counted": int(c.sum()), "errors": int(e.sum()), "tie_rule": TIE_RULE,
            "fractions": curve["fractions"], "rejected": curve["rejected"],
            "norm": {"error": curve["error"], "auc": auc(curve["fractions"], curve["error"])},
            "random": random_baseline(e, c, fractions, draws=draws, seed=seed)}


OPTION_KEYS = ("fractions", "draws", "seed", "fmr")


def options(erc_opts, default_fmr=None) -> dict | None:
    """An evaluator's ``erc`` argument as keyword arguments for :func:`fnmr_erc` / :func:`rank1_erc`: ``None`` ->
    the defaults, ``False`` -> ``None`` (no ERC), a dict with some of :data:`OPTION_KEYS` -> those (``fmr`` only
    where ``default_fmr`` is given, i.e. for verification). Checked here, so a bad grid fails before embedding."""
    if erc_opts is False:
        return None
    opts = dict(erc_opts or {})
    unknown = set(opts) - set(OPTION_KEYS)
    if unknown:
        raise QGFaceInputError(f"ERC options: unknown {', '.join(sorted(unknown))} (use {', '.join(OPTION_KEYS)})")
    out = {"fractions": tuple(check_fractions(opts.get("fractions", DEFAULT_FRACTIONS)).tolist()),
           "draws": int(opts.get("draws", DEFAULT_DRAWS)), "seed": int(opts.get("seed", 0))}
    if out["draws"] < 0:
        raise QGFaceInputError(f"ERC draws={out['draws']} must be >= 0")
    if default_fmr is not None:
        fmr = float(opts.get("fmr", default_fmr))
        if not 0 < fmr < 1:
            raise QGFaceInputError(f"ERC fmr={fmr:g} must be in (0, 1)")
        out["fmr"] = fmr
    return out


def error_at(erc_report: dict, fraction: float, curve: str = "norm"):
    """The error of ``curve`` (``"norm"`` or ``"random"``) at ``fraction`` of the report's grid, else ``None``."""
    if not erc_report:
        return None
    for f, v in zip(erc_report["fractions"], erc_report[curve]["error"]):
        if abs(f - fraction) < 1e-9:
            return v
    return None


# ------------------------------------------------------------------------------------- the two evaluations
def choose_fmr(requested, n_impostor):
    """``(fmr, resolved)``: ``requested`` when the set resolves it (``requested >= 1 / n_impostor``, as
    :func:`~qgface_plugin.eval.roc.far_resolved`), else the smallest larger decade (1e-6 .. 1e-1) it resolves;
    ``resolved`` False when not even 1e-1 is (fewer than 10 impostor pairs; 1e-1 is used)."""
    requested = float(requested)
    min_far = 1.0 / max(1, int(n_impostor))
    if far_resolved(requested, min_far):
        return requested, True
    for d in FAR_DECADES:
        if d > requested and far_resolved(d, min_far):
            return d, True
    return max(requested, FAR_DECADES[-1]), False


def fnmr_erc(scores, labels, quality, fmr=1e-3, threshold=None, fractions=DEFAULT_FRACTIONS,
             draws=DEFAULT_DRAWS, seed=0, quality_desc="pair quality", score_desc="similarity") -> dict:
    """ERC of verification pairs: FNMR at one threshold fixed on ALL pairs, rejecting low pair quality.

    The threshold is the one :func:`~qgface_plugin.eval.roc.tar_at_far` reads TAR@FAR at (the ROC point
    nearest to the FMR, ties to the largest TAR; a pair is accepted iff ``score >= threshold``) for the FMR
    :func:`choose_fmr` picks from ``fmr``; pass ``threshold`` to use another one (then ``fmr`` is only
    recorded). At fraction 0 the FNMR is ``1 - TAR@FAR``. Returns :func:`erc`'s dict plus ``metric``,
    ``fmr_requested``, ``fmr``, ``fmr_resolved``, ``threshold``, ``fmr_at_threshold`` (over all pairs),
    ``quality``; ``None`` when the pairs lack genuine or impostor pairs.
    """
    s = np.asarray(scores, dtype=np.float64).reshape(-1)
    y = np.asarray(labels).reshape(-1) == 1
    if not y.any() or y.all():
        return None
    used, resolved = choose_fmr(fmr, int((~y).sum()))
    if threshold is None:
        _, roc = tar_at_far(s, y.astype(np.int64), [used], return_roc=True)
        threshold = roc["far_points"][far_key(used)][2]
    threshold = float(threshold)
    accept = s >= threshold
    label = f"FNMR at FMR={used:g} (threshold {threshold:.6g} on the {score_desc}, fixed on all pairs)"
    return erc(quality, y & ~accept, y, fractions, draws, seed, metric="fnmr", description=label,
               fmr_requested=float(fmr), fmr=used, fmr_resolved=resolved, threshold=threshold,
               fmr_at_threshold=float(accept[~y].mean()), quality=quality_desc)


def rank1_erc(ranks, quality, fractions=DEFAULT_FRACTIONS, draws=DEFAULT_DRAWS, seed=0,
              quality_desc="probe quality = raw feature norm of the probe") -> dict:
    """ERC of identification probes: rank-1 error over the probes kept, rejecting the lowest-norm probes."""
    r = np.asarray(ranks).reshape(-1)
    return erc(quality, r != 1, None, fractions, draws, seed, metric="rank1_error",
               description="rank-1 error (probes not at rank 1 / probes kept)", quality=quality_desc)


# ----------------------------------------------------------------------------------------------- reporting
def _pct(x):
    return "–" if x is None else f"{100 * x:.2f}"


def markdown_table(rows) -> list:
    """Markdown lines: one table of ERCs. ``rows`` = ``[(label, erc dict), ...]`` sharing one fraction grid
    (rows with another grid get their own header). Errors in %, AUC x 100."""
    lines, grid = [], None
    for label, rep in rows:
        if rep is None:
            continue
        if rep["fractions"] != grid:
            grid = rep["fractions"]
            if lines:
                lines.append("")
            lines += ["| curve | " + " | ".join(f"{100 * f:g}%" for f in grid) + " | AUC ×100 |",
                      "|---" * (len(grid) + 2) + "|"]
        norm, rnd = rep["norm"], rep["random"]
        lines.append(f"| {label} norm | " + " | ".join(_pct(v) for v in norm["error"]) + f" | {_pct(norm['auc'])} |")
        band = rnd.get("band")
        rauc = _pct(rnd["auc"])
        if band and band.get("auc_low") is not None:
            rauc += f" [{_pct(band['auc_low'])}–{_pct(band['auc_high'])}]"
        lines.append(f"| {label} random | " + " | ".join(_pct(v) for v in rnd["error"]) + f" | {rauc} |")
    return lines


def markdown_note(rep) -> str:
    """One sentence: what the table's curves are."""
    if rep is None:
        return ""
    band = rep["random"].get("band")
    spread = (f"; [..] = 95% interval of the AUC over {band['draws']} seeded random rejection orders"
              if band else "")
    return (f"Error-versus-reject, %: {rep['description']}, rejecting first the items of lowest {rep['quality']}; "
            f"ties shared proportionally. \"random\" = the expected error under random rejection (exact: "
            f"the unrejected error){spread}. AUC = trapezoid area over the rejected fraction, ×100.")


def plot_erc(path, curves, title, ylabel="error (%)") -> None:
    """One PNG: per ``(label, erc dict)`` the norm's curve (solid), the random expectation (dashed) and the
    random band (shaded), error in % against the rejected fraction in %. Matplotlib, Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for (label, rep), colour in zip([c for c in curves if c[1] is not None], colours * 4):
        x = 100 * np.asarray(rep["fractions"])
        y = np.array([np.nan if v is None else 100 * v for v in rep["norm"]["error"]])
        ax.plot(x, y, "o-", color=colour, lw=1.6, ms=3,
                label=f"{label}: norm" + (f" (AUC×100 {100 * rep['norm']['auc']:.2f})" if rep["norm"]["auc"] is not None
                                          else ""))
        r = np.array([np.nan if v is None else 100 * v for v in rep["random"]["error"]])
        ax.plot(x, r, "--", color=colour, lw=1, label=f"{label}: random")
        band = rep["random"].get("band")
        if band:
            lo = np.array([np.nan if v is None else 100 * v for v in band["low"]])
            hi = np.array([np.nan if v is None else 100 * v for v in band["high"]])
            ax.fill_between(x, lo, hi, color=colour, alpha=0.12, lw=0)
    ax.set_xlabel("rejected, lowest quality first (%)")
    ax.set_ylabel(ylabel)
    ax.set_ylim(bottom=0)
    ax.grid(True, ls="--", lw=0.6)
    ax.set_title(title, fontsize=10)
    ax.legend(loc="best", fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
