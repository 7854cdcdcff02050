"""A study's report: per arm the mean and interval over seeds, QGFace's paired difference to each baseline.

:func:`summarise` turns the runs' results (:mod:`.runner`) into the JSON-ready study: per arm and pair type the
per-seed accuracies with their mean and Student-t interval over seeds (:func:`~.stats.t_interval`), the final
AUROC of the norm likewise, the mean AUROC curve, and the suite's headline figures when ``--data`` was given;
per baseline, the difference ``reference - baseline`` (positive: the reference, QGFace, is better) of each pair
type's accuracy with its paired two-stage bootstrap interval over seeds and pairs
(:func:`~.stats.seed_pair_bootstrap`), of the AUROC and of each ``--data`` headline figure with its t interval over
the per-seed differences.
Per QGFace arm also its training diagnostics (the results' ``"diagnostics"``, :mod:`.diagnostics`): the share of
rows classified HQ and of pairs contrasted (means over the logged steps, overall and per quarter of training)
with their mean and t interval over seeds, ``b``, the last logged step's queue fill and norm statistics
(means over seeds) and the mean curve of both shares; ``None`` for an arm none of whose runs has them.
:func:`markdown` and :func:`plot` write ``study.md`` and ``study.png``; :func:`write` all three files.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ..eval.paired import LEVEL
from ..utils import atomic_write
from .data import PAIR_TYPES
from .diagnostics import FRACTIONS, mean_or_none
from .stats import seed_pair_bootstrap, t_interval

__all__ = ["summarise", "markdown", "plot", "write"]


def _flatten(d, prefix=""):
    out = {}
    for k, v in (d or {}).items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flatten(v, key + " / "))
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[key] = float(v)
    return out


def _headlines(run) -> dict:
    """A run's evaluation-suite headline figures (``--data``), flattened to ``{"benchmark / figure": value}``."""
    return _flatten({b: v.get("headline") for b, v in (run.get("suite") or {}).get("benchmarks", {}).items()})


def _diagnostics(runs, level):
    """The arm's training diagnostics over its seeds (None when no run has them)."""
    diags = [r["diagnostics"] for r in runs if r.get("diagnostics")]
    if not diags:
        return None

    def field(values):
        values = list(values)
        return {"per_seed": values, **t_interval(values, level)}
    quarters = []
    for i in range(max(len(d["by_quarter"]) for d in diags)):
        qs = [d["by_quarter"][i] for d in diags if i < len(d["by_quarter"])]
        quarters.append({"steps": qs[0]["steps"], **{k: field(q.get(k) for q in qs)
                                                     for k in FRACTIONS}})
    steps = sorted({p["step"] for d in diags for p in d.get("curve", [])})
    curve = [{"step": s, **{k: mean_or_none(p.get(k) for d in diags for p in d.get("curve", []) if p["step"] == s)
                            for k in FRACTIONS}} for s in steps]
    finals = {k: mean_or_none((d.get("final") or {}).get(k) for d in diags) for k in diags[0].get("final", {})}
    return {"runs": len(diags), "threshold": mean_or_none(d.get("threshold") for d in diags),
            "hq_fraction": field(d.get("hq_fraction") for d in diags),
            "contrast_fraction": field(d.get("contrast_fraction") for d in diags),
            "by_quarter": quarters, "final": finals, "curve": curve}


def _arm_summary(name, runs, level):
    first = runs[0]
    pairs = {}
    for t in PAIR_TYPES:
        accs = [r["pairs"][t]["accuracy"] for r in runs if t in r.get("pairs", {})]
        if accs:
            pairs[t] = {"per_seed": accs, **t_interval(accs, level)}
    aur = [r["auroc"]["auroc"] for r in runs if r.get("auroc")]
    steps = sorted({p["step"] for r in runs for p in r.get("auroc_curve", [])})
    curve = []
    for s in steps:
        vals = [p["auroc"] for r in runs for p in r.get("auroc_curve", []) if p["step"] == s]
        curve.append({"step": s, "per_seed": vals, "mean": float(np.mean(vals))})
    suite = {}
    headlines = [_headlines(r) for r in runs if r.get("suite")]
    for key in (headlines[0] if headlines else {}):
        suite[key] = t_interval([h.get(key) for h in headlines], level)
    cfg = first["config"]
    return {"arm": name, "views": first["views"], "loss": cfg.get("loss"), "seeds": [r["seed"] for r in runs],
            "steps": first["train"]["steps"], "rows_per_step": first["train"]["rows_per_step"],
            "images_per_step": first["train"]["images_per_step"], "network": cfg.get("network"),
            "seconds_mean": float(np.mean([r["seconds"]["total"] for r in runs])),
            "pairs": pairs, "auroc": {"per_seed": aur, **t_interval(aur, level)}, "auroc_curve": curve,
            "suite": suite, "diagnostics": _diagnostics(runs, level)}


def summarise(results: dict, arms, reference=None, resamples=1000, seed=0, level=LEVEL, meta=None) -> dict:
    """The study (JSON-ready) from ``{(arm name, k): result}``; ``reference`` defaults to ``qgface`` when it is an
    arm, else the first arm. Differences use the seeds both arms finished."""
    names = [a.name for a in arms if any(n == a.name for n, _ in results)]
    reference = reference or ("qgface" if "qgface" in names else (names[0] if names else None))
    by_arm = {n: [results[n, k] for n_, k in sorted(results) if n_ == n] for n in names}
    out = {"meta": meta or {}, "reference": reference, "level": level,
           "interval_per_arm": f"Student t over seeds (mean ± t_(1+level)/2,S-1 · sd/√S), level {level:g}",
           "interval_diff": "paired two-stage bootstrap over seeds and pairs (same draws for both arms), "
                            f"{resamples} resamples, percentile, level {level:g}; AUROC: t over the per-seed "
                            "differences",
           "arms": {n: _arm_summary(n, runs, level) for n, runs in by_arm.items()},
           "descriptions": {a.name: a.description for a in arms}, "differences": {}}
    if reference is None:
        return out
    ref_runs = {r["k"]: r for r in by_arm[reference]}
    for n in names:
        if n == reference:
            continue
        ks = sorted(set(ref_runs) & {r["k"] for r in by_arm[n]})
        if not ks:
            continue
        other = {r["k"]: r for r in by_arm[n]}
        diff = {"seeds": ks, "pairs": {}}
        for t in PAIR_TYPES:
            if all(t in ref_runs[k].get("pairs", {}) and t in other[k].get("pairs", {}) for k in ks):
                a = np.array([other[k]["pairs"][t]["correct"] for k in ks])
                b = np.array([ref_runs[k]["pairs"][t]["correct"] for k in ks])
                diff["pairs"][t] = seed_pair_bootstrap(a, b, resamples, seed, level)
        d_auc = [ref_runs[k]["auroc"]["auroc"] - other[k]["auroc"]["auroc"] for k in ks
                 if ref_runs[k].get("auroc") and other[k].get("auroc")]
        diff["auroc"] = {"per_seed": d_auc, **t_interval(d_auc, level)}
        ref_h, other_h = {k: _headlines(ref_runs[k]) for k in ks}, {k: _headlines(other[k]) for k in ks}
        keys = [key for key in ref_h[ks[0]] if all(key in ref_h[k] and key in other_h[k] for k in ks)]
        diff["suite"] = {}
        for key in keys:
            d = [ref_h[k][key] - other_h[k][key] for k in ks]
            diff["suite"][key] = {"per_seed": d, **t_interval(d, level)}
        out["differences"][n] = diff
    return out


def _ci(m, sign=False, scale=100):
    if m.get("mean", m.get("diff")) is None:
        return "–"
    mid = m.get("mean", m.get("diff"))
    f = (lambda v: f"{scale * v:+.1f}") if sign else (lambda v: f"{scale * v:.1f}")
    s = f(mid)
    if m.get("low") is not None:
        s += f" [{f(m['low'])}, {f(m['high'])}]"
    return s


def _auc(m, sign=False):
    if m.get("mean") is None:
        return "–"
    f = (lambda v: f"{v:+.3f}") if sign else (lambda v: f"{v:.3f}")
    return f(m["mean"]) + (f" [{f(m['low'])}, {f(m['high'])}]" if m.get("low") is not None else "")


def _num(v, scale=100, fmt=".1f"):
    return "–" if v is None else format(scale * v, fmt)


def _seeds_note(study) -> str:
    """What the interval over seeds means for the study's smallest seed count."""
    n = min((len(a["seeds"]) for a in study["arms"].values()), default=0)
    if n < 2:
        return "with 1 seed there is no interval over seeds (the differences below still resample the pairs)."
    from scipy.stats import t
    return (f"with {n} seeds t = {float(t.ppf((1 + study['level']) / 2, n - 1)):.3g}"
            + (", so the interval is wide." if n < 5 else "."))


def markdown(study: dict) -> str:
    meta, ref, lv = study["meta"], study["reference"], f"{100 * study['level']:g}%"
    lines = ["# Study: QGFace against its baselines", ""]
    if meta:
        lines += [f"Profile `{meta.get('profile')}`; {meta.get('seeds')} seed(s) per arm (config.seed = "
                  f"{meta.get('seed')} + k); data `{meta.get('rec')}` ({meta.get('num_image')} images, "
                  f"{meta.get('num_classes')} identities); pair sets: "
                  + ", ".join(f"{t} {n} pairs" for t, n in (meta.get("pair_counts") or {}).items()) + ".", ""]
    lines += ["## Arms", "", "| arm | what it trains | loss | forwarded | steps | mean time per run |",
              "|---|---|---|---|---|---|"]
    for n, a in study["arms"].items():
        lines.append(f"| {n} | {study['descriptions'].get(n, '')} | {a['loss']} | {a['views']} | {a['steps']} | "
                     f"{a['seconds_mean'] / 60:.1f} min |")
    lines += ["", f"## Verification accuracy (%), mean [{lv} interval] over seeds", "",
              f"Per arm: {study['interval_per_arm']}; {_seeds_note(study)}", "",
              "| arm | " + " | ".join(PAIR_TYPES) + " | AUROC of the norm (clean vs degraded) |",
              "|---" * (len(PAIR_TYPES) + 2) + "|"]
    for n, a in study["arms"].items():
        lines.append(f"| {n} | " + " | ".join(_ci(a["pairs"][t]) if t in a["pairs"] else "–" for t in PAIR_TYPES)
                     + f" | {_auc(a['auroc'])} |")
    if study["differences"]:
        lines += ["", f"## {ref} − baseline (points; positive = {ref} better), [{lv} interval]", "",
                  f"{study['interval_diff']}. `*`: the interval excludes 0.", "",
                  "| baseline | seeds | " + " | ".join(PAIR_TYPES) + " | AUROC |", "|---" * (len(PAIR_TYPES) + 3) + "|"]
        for n, d in study["differences"].items():
            cells = []
            for t in PAIR_TYPES:
                p = d["pairs"].get(t)
                if p is None:
                    cells.append("–")
                    continue
                star = " *" if p["low"] is not None and (p["low"] > 0 or p["high"] < 0) else ""
                cells.append(_ci(p, sign=True) + star)  # seed_pair_bootstrap(baseline, reference): reference − baseline
            lines.append(f"| {n} | {len(d['seeds'])} | " + " | ".join(cells) + f" | {_auc(d['auroc'], sign=True)} |")
    curves = {n: a["auroc_curve"] for n, a in study["arms"].items() if a["auroc_curve"]}
    if curves:
        lines += ["", "## AUROC of the norm during training (mean over seeds)", "",
                  "| arm | " + " | ".join(f"step {p['step']}" for p in next(iter(curves.values()))) + " |",
                  "|---" * (len(next(iter(curves.values()))) + 1) + "|"]
        for n, c in curves.items():
            lines.append(f"| {n} | " + " | ".join(f"{p['mean']:.3f}" for p in c) + " |")
    suite = {n: a["suite"] for n, a in study["arms"].items() if a["suite"]}
    if suite:
        keys = list(dict.fromkeys(k for s in suite.values() for k in s))
        lines += ["", f"## Evaluation suite on --data (headline figures, %, mean [{lv} t interval])", "",
                  "| figure | " + " | ".join(suite) + " |", "|---" * (len(suite) + 1) + "|"]
        for k in keys:
            lines.append(f"| {k} | " + " | ".join(_ci(s[k]) if k in s else "–" for s in suite.values()) + " |")
        diffs = {n: d["suite"] for n, d in study["differences"].items() if d.get("suite")}
        if diffs:
            lines += ["", f"{ref} − baseline on these figures (points; positive = {ref} higher, which is better "
                      f"for accuracies and TARs), mean [{lv} t interval over the per-seed differences; none with "
                      "1 seed]:", "", "| figure | " + " | ".join(f"{ref} − {n}" for n in diffs) + " |",
                      "|---" * (len(diffs) + 1) + "|"]
            for k in dict.fromkeys(k for d in diffs.values() for k in d):
                lines.append(f"| {k} | " + " | ".join(_ci(d[k], sign=True) if k in d else "–" for d in diffs.values())
                             + " |")
    diags = {n: a["diagnostics"] for n, a in study["arms"].items() if a.get("diagnostics")}
    if diags:
        lines += ["", "## Training diagnostics (QGFace arms)", "",
                  "| arm | b | rows classified (HQ), % | pairs contrasted, % | contrasted, first quarter → last "
                  "quarter, % | queue fill at the end, % |", "|---|---|---|---|---|---|"]
        for n, d in diags.items():
            qs = d["by_quarter"]
            first = qs[0]["contrast_fraction"]["mean"] if qs else None
            last = qs[-1]["contrast_fraction"]["mean"] if qs else None
            fill = (d.get("final") or {}).get("queue_fill")
            lines.append(f"| {n} | {_num(d['threshold'], 1, '.2f')} | {_ci(d['hq_fraction'])} | "
                         f"{_ci(d['contrast_fraction'])} | {_num(first)} → {_num(last)} | {_num(fill)} |")
        lines += ["", "HQ rows (q̂ ≥ b) go to Partial FC; pairs with a weight > 0 enter the contrastive loss "
                  "against the queue. Shares: means over the logged steps (per quarter of them for the first → last "
                  f"quarter), then mean [{lv} t interval] over seeds; b and the queue fill: the last logged step's, "
                  "mean over seeds."]
    return "\n".join(lines) + "\n"


def plot(study: dict, path) -> None:
    """``study.png``: bars of each arm's accuracy per pair type with its interval over seeds (left), the AUROC
    curve over steps per arm (middle, or right) and, when an arm has training diagnostics, the share of pairs
    contrasted over steps per QGFace arm (mean over seeds; right). Matplotlib, Agg backend."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    arms = list(study["arms"])
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    diag = any(a.get("diagnostics") for a in study["arms"].values())
    fig, axes = plt.subplots(1, 3 if diag else 2, figsize=(18 if diag else 12, 4.5), dpi=110)
    ax1, ax2 = axes[:2]
    x = np.arange(len(PAIR_TYPES))
    w = 0.8 / max(1, len(arms))
    for i, n in enumerate(arms):
        p = study["arms"][n]["pairs"]
        mean = np.array([100 * p[t]["mean"] if t in p else np.nan for t in PAIR_TYPES])
        lo = np.array([100 * p[t]["low"] if t in p and p[t]["low"] is not None else np.nan for t in PAIR_TYPES])
        hi = np.array([100 * p[t]["high"] if t in p and p[t]["high"] is not None else np.nan for t in PAIR_TYPES])
        err = np.vstack([mean - lo, hi - mean])
        ax1.bar(x - 0.4 + w * (i + 0.5), mean, width=w, color=colours[i % len(colours)], label=n,
                yerr=np.where(np.isfinite(err), err, 0), capsize=3)
        c = study["arms"][n]["auroc_curve"]
        if c:
            ax2.plot([q["step"] for q in c], [q["mean"] for q in c], "-o", ms=3, color=colours[i % len(colours)],
                     label=n)
        d = study["arms"][n].get("diagnostics")
        if diag and d and d["curve"]:
            axes[2].plot([q["step"] for q in d["curve"]],
                         [np.nan if q["contrast_fraction"] is None else 100 * q["contrast_fraction"]
                          for q in d["curve"]], "-o", ms=3, color=colours[i % len(colours)], label=n)
    ax1.set_xticks(x)
    ax1.set_xticklabels(PAIR_TYPES)
    lo_all = [100 * a["pairs"][t]["mean"] for a in study["arms"].values() for t in a["pairs"]]
    if lo_all:
        ax1.set_ylim(max(0, min(lo_all) - 15), 100)
    ax1.set_ylabel(f"accuracy (%), {100 * study['level']:g}% t interval")
    ax2.axhline(0.5, color="k", lw=0.8, ls="--")
    ax2.set_xlabel("training step")
    ax2.set_ylabel("norm AUROC, clean vs degraded (seed mean)")
    if diag:
        axes[2].set_ylim(0, 100)
        axes[2].set_xlabel("training step")
        axes[2].set_ylabel("pairs contrasted, % (weight > 0; seed mean)")
    for ax in axes:
        ax.grid(True, axis="y", ls="--", lw=0.5)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.suptitle("Study: accuracy per pair type, and the norm's quality separation during training"
                 + (" (right: QGFace's pairs contrasted)" if diag else ""), fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def write(output, study: dict) -> dict:
    """Write ``study.json``, ``study.md`` and ``study.png`` into ``output`` (each atomically); returns the paths."""
    output = Path(output)
    paths = {"json": output / "study.json", "md": output / "study.md", "png": output / "study.png"}
    atomic_write(paths["json"], lambda t: Path(t).write_text(json.dumps(study, indent=1) + "\n", encoding="utf-8"))
    atomic_write(paths["md"], lambda t: Path(t).write_text(markdown(study), encoding="utf-8"))
    atomic_write(paths["png"], lambda t: plot(study, t), suffix=".png")
    return paths
