"""The evaluation suite as a library: find the benchmarks, run every evaluator tool on one model, summarise.

``tools/eval_suite.py`` is its command line and ``tools/compare_models.py`` runs it once per model. The
evaluators are the tools of ``tools/`` (``eval_verification.py``, ``eval_tinyface.py``, ``eval_scface.py``,
``eval_ijb.py``), run in this process through their ``main(argv)``; ``load_tool(filename)`` (see
:func:`tool_loader`) imports one of them. Every number of the summary is read back from the tools' JSON
reports (see ``tools/eval_suite.py`` for the files and the tables).
"""
from __future__ import annotations

import contextlib
import importlib.util
import json
import sys
import time
import traceback
from functools import lru_cache
from pathlib import Path

from ..cli import EXIT_FAILED, error
from . import erc as erc_mod
from .cli import SHARED_FLAGS, add_erc_flags, erc_argv, erc_options, shared_argv, write_report
from .ijb import DEFAULT_ERC_FAR
from .roc import far_key, far_label, far_resolved
from .verification import DEFAULT_ERC_FMR

__all__ = ["IJB_FARS", "QUALITY_FARS", "BENCHMARK_KEYS", "ERC_AT", "quality_far", "add_suite_flags",
           "check_suite_flags", "discover", "tool_loader", "plan", "run_one", "headline", "quality_rows", "erc_rows",
           "markdown", "run_suite"]

IJB_FARS = (1e-5, 1e-4, 1e-3, 1e-2)  # the TAR@FAR of the Markdown; the JSON has all
QUALITY_FARS = (1e-4, 1e-3, 1e-2, 1e-1)  # the IJB quality view's: the first one the set resolves
BENCHMARK_KEYS = ("bins", "tinyface", "scface", "ijbb", "ijbc")
ERC_AT = 0.2  # the summary's "error at 20% rejected"


def _resolved(far, rep) -> bool:
    return far_resolved(far, rep.get("min_resolvable_far", 0.0))


def quality_far(rep) -> float:
    """The IJB quality view's FAR for an IJB report: 1e-4 when the set resolves it, else the smallest decade
    it does (its TAR's key: :func:`~qgface_plugin.eval.roc.far_key`)."""
    return next((f for f in QUALITY_FARS if _resolved(f, rep)), QUALITY_FARS[-1])


# ------------------------------------------------------------------------------------------------- flags
def add_suite_flags(p) -> None:
    """The suite's benchmark flags (folders, .bin targets and variants, SCface protocols) and the ERC flags
    (``--erc-fmr`` for the ``.bin`` sets, ``--erc-far`` for IJB)."""
    p.add_argument("--bins", default=None, help="folder of verification .bin files (default: found under --data)")
    p.add_argument("--tinyface", default=None, help="TinyFace aligned folder (default: found under --data)")
    p.add_argument("--scface", default=None,
                   help="SCface folder, all.txt + aligned_dir/ (default: found under --data)")
    p.add_argument("--ijbb", default=None, help="IJB-B folder, loose_crop/ + meta/ (default: found under --data)")
    p.add_argument("--ijbc", default=None, help="IJB-C folder, loose_crop/ + meta/ (default: found under --data)")
    p.add_argument("--targets", nargs="+", default=None,
                   help=".bin names without .bin (default: the standard sets present, else every *.bin)")
    p.add_argument("--lowres", nargs="*", type=int, default=[8, 12, 16, 20],
                   help="low-res sizes of the .bin sets (--lowres with no sizes: originals only)")
    p.add_argument("--scface-protocols", nargs="+", default=["all", "test80"], choices=("all", "test80"),
                   help="SCface protocols run")
    g = add_erc_flags(p, "--erc-fmr", DEFAULT_ERC_FMR, "FMR of the .bin sets' ERC threshold (the smallest "
                      "larger decade a set resolves when it has fewer than 1/FMR impostor pairs)")
    g.add_argument("--erc-far", type=float, default=DEFAULT_ERC_FAR, metavar="FAR",
                   help="FAR of the IJB ERC's threshold (the smallest larger decade a set resolves when it has fewer "
                        "than 1/FAR impostor pairs)")


def check_suite_flags(p, args) -> None:
    """``parser.error`` (exit status 2) for bad ERC flags, before anything runs."""
    erc_options(p, args, "--erc-fmr")
    erc_options(p, args, "--erc-far")


# ---------------------------------------------------------------------------------------------- discovery
def _child(folder, name):
    """The sub-folder of ``folder`` called ``name`` (any case), or None."""
    if folder is None or not Path(folder).is_dir():
        return None
    return next((c for c in sorted(Path(folder).iterdir()) if c.is_dir() and c.name.lower() == name.lower()), None)


def _has_bins(folder):
    return folder is not None and any(Path(folder).glob("*.bin"))


def discover(root) -> dict:
    """``{"bins", "tinyface", "scface", "ijbb", "ijbc"} -> folder or None`` in the conventional places."""
    root = Path(root)
    bins = _child(root, "bins")
    found = {"bins": bins if _has_bins(bins) else (root if _has_bins(root) else None),
             "tinyface": _child(root, "tinyface"), "scface": _child(root, "scface")}
    for t in ("ijbb", "ijbc"):
        found[t] = _child(_child(root, "IJB_release"), t) or _child(root, t)
    return found


def tool_loader(tools_dir):
    """``load_tool(filename)``: a module of ``tools_dir`` (not a package), imported by path, once."""
    tools_dir = Path(tools_dir)

    @lru_cache(maxsize=None)
    def load_tool(filename: str):
        spec = importlib.util.spec_from_file_location(f"_qgface_suite_{Path(filename).stem}", tools_dir / filename)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    return load_tool


def _bin_targets(folder, targets, load_tool):
    if targets is not None or not Path(folder).is_dir():
        return targets
    standard = load_tool("eval_verification.py").TARGETS
    if any((Path(folder) / f"{t}.bin").is_file() for t in standard):
        return None  # the tool's own default
    return sorted(p.stem for p in Path(folder).glob("*.bin")) or None


def plan(args, load_tool) -> list:
    """One entry per benchmark: ``key``, ``title``, ``tool``, ``data`` (None: skipped, see ``reason``),
    ``argv`` (the benchmark's own flags), ``output`` (sub-folder) and ``report`` (JSON name)."""
    found = discover(args.data) if args.data else {}
    given = {k: getattr(args, k) for k in BENCHMARK_KEYS}

    def where(k):
        if given[k]:
            return Path(given[k]), None
        if found.get(k):
            return found[k], None
        return None, f"not found under {args.data}" if args.data else f"no --{k} (or --data)"

    out = []
    data, reason = where("bins")
    targets = _bin_targets(data, args.targets, load_tool) if data else None
    out.append({"key": "verification", "title": ".bin verification", "tool": "eval_verification.py",
                "data": data, "reason": reason, "output": ".", "report": "verification",
                "argv": ["--lowres", *map(str, args.lowres)] + (["--targets", *targets] if targets else [])
                + erc_argv(args, ["--erc-fmr"])})
    data, reason = where("tinyface")
    out.append({"key": "tinyface", "title": "TinyFace", "tool": "eval_tinyface.py", "data": data,
                "reason": reason, "output": ".", "report": "tinyface", "argv": erc_argv(args)})
    data, reason = where("scface")
    for prot in dict.fromkeys(args.scface_protocols):
        out.append({"key": f"scface_{prot}", "title": f"SCface ({prot})", "tool": "eval_scface.py", "data": data,
                    "reason": reason, "output": f"scface_{prot}", "report": "scface",
                    "argv": ["--protocol", prot] + erc_argv(args)})
    for t in ("ijbb", "ijbc"):
        data, reason = where(t)
        far = ["--erc-far", repr(float(args.erc_far))]
        out.append({"key": t, "title": f"IJB-{t[-1].upper()}", "tool": "eval_ijb.py", "data": data,
                    "reason": reason, "output": ".", "report": t,
                    "argv": ["--target", t.upper()] + erc_argv(args) + far})
    return out


# -------------------------------------------------------------------------------------------------- running
class _Tee:
    """Passes stderr through and keeps its tail, to find the tool's ``error: ...`` line."""

    def __init__(self, stream):
        self.stream, self.tail = stream, ""

    def write(self, s):
        self.tail = (self.tail + s)[-8192:]
        return self.stream.write(s)

    def __getattr__(self, name):  # flush, isatty, fileno, encoding ...
        return getattr(self.stream, name)

    def error(self):
        lines = [ln.strip() for ln in self.tail.splitlines() if "error:" in ln]
        return lines[-1].split("error:", 1)[1].strip() if lines else None


def run_one(entry, args, load_tool) -> dict:
    """Run one benchmark's tool; ``{"status", "seconds", "error"}``."""
    argv = (shared_argv(args) + ["--data", str(entry["data"]), "--output", str(Path(args.output) / entry["output"])]
            + entry["argv"])
    tee, t0 = _Tee(sys.stderr), time.time()
    with contextlib.redirect_stderr(tee):
        try:
            rc, error = load_tool(entry["tool"]).main(argv), None
        except SystemExit as e:  # argparse
            rc, error = (e.code if isinstance(e.code, int) else 2), None
        except Exception as e:  # a crash in one benchmark must not stop the others
            traceback.print_exc()
            rc, error = 1, f"{type(e).__name__}: {e}"
    seconds = round(time.time() - t0, 3)
    if rc:
        return {"status": "error", "seconds": seconds, "error": error or tee.error() or f"exit status {rc}"}
    return {"status": "ok", "seconds": seconds, "error": None}


# -------------------------------------------------------------------------------------------------- summary
def headline(key, rep) -> dict:
    """The figures of a tool's JSON report that the summary shows (fractions)."""
    if key == "verification":
        return {t: {v: {"accuracy": r["accuracy"], "std": r["std"]} for v, r in rows.items()}
                for t, rows in rep["results"].items()}
    if key == "tinyface":
        return dict(rep["cmc"])
    if key.startswith("scface"):
        return {"protocol": rep["protocol"], **rep["rank1"]}
    return {**rep["tar_at_far"], "auc": rep["auc"],
            "resolved": [k for k in rep["tar_at_far"] if _resolved(rep["far_points"][k]["far"], rep)]}


def _thirds(bins, field) -> dict | None:
    """Lowest / middle / highest bin's ``field`` and the gap highest - lowest; None without bins."""
    if not bins:
        return None
    lo, mid, hi = (bins[i].get(field) for i in (0, len(bins) // 2, -1))
    return {"lowest": lo, "middle": mid, "highest": hi,
            "gap": None if lo is None or hi is None else hi - lo}


def quality_rows(key, title, rep) -> list:
    """Rows of the quality view for one report."""
    if key == "verification":
        rows = []
        for t, variants in rep["results"].items():
            for v, r in variants.items():
                q = _thirds(r.get("quality_bins"), "accuracy")
                if q:
                    rows.append({"benchmark": key, "label": f"{t} ({v})", "target": t, "variant": v,
                                 "figure": "accuracy", "quality": "pair", **q})
        return rows
    if key.startswith("ijb"):
        figure = far_key(quality_far(rep))
        q, kind = _thirds(rep.get("quality_bins"), figure), "pair"
    else:
        q, figure, kind = _thirds(rep.get("quality_bins"), "rank1"), "rank1", "probe"
    return [{"benchmark": key, "label": title, "figure": figure, "quality": kind, **q}] if q else []


def _erc_row(key, label, e, **extra) -> dict:
    if e["metric"] == "fnmr":
        metric = f"FNMR@{'FAR' if key.startswith('ijb') else 'FMR'}={e['fmr']:g}"
    else:
        metric = "rank-1 error"
    band = e["random"].get("band") or {}
    return {"benchmark": key, "label": label, **extra, "metric": metric, "items": e["items"],
            "fractions": [e["fractions"][0], e["fractions"][-1]], "unrejected": e["norm"]["error"][0],
            "auc_norm": e["norm"]["auc"], "auc_random": e["random"]["auc"],
            "auc_random_low": band.get("auc_low"), "auc_random_high": band.get("auc_high"),
            "at": ERC_AT, "norm_at": erc_mod.error_at(e, ERC_AT), "random_at": erc_mod.error_at(e, ERC_AT, "random")}


def erc_rows(key, title, rep) -> list:
    """Rows of the summary's ERC table for one report: AUC of the norm's curve and of random rejection, and
    the error at :data:`ERC_AT` rejected (``None`` where the grid has no such point)."""
    if key == "verification":
        return [_erc_row(key, f"{t} ({v})", r["erc"], target=t, variant=v) for t, variants in rep["results"].items()
                for v, r in variants.items() if r.get("erc")]
    return [_erc_row(key, title, rep["erc"])] if rep.get("erc") else []


def _pct(x, sign=False):
    if x is None:
        return "–"
    return f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def _link(entry, suffix):
    path = Path(entry["output"]) / f"{entry['report']}{suffix}"
    return f"[{path.as_posix()}]({path.as_posix()})"


def _erc_markdown(rows) -> list:
    if not rows:
        return []
    grids = {tuple(r["fractions"]) for r in rows}
    span = " / ".join(f"{100 * a:g}–{100 * b:g}%" for a, b in sorted(grids))
    lines = ["", "## Error-versus-reject (%)", "",
             "Rejecting the lowest-quality pairs / probes by feature norm (.bin: the smaller norm of the pair; IJB: "
             "the lower template quality of the pair; TinyFace, SCface: the probe's norm), the error on those kept: "
             "FNMR at one threshold fixed on all pairs (the FMR / FAR shown, or the smallest decade the set "
             "resolves), or the rank-1 error. AUC (×100) by the trapezoid rule over the rejected fractions "
             f"{span}; random = the exact expectation under random rejection (the unrejected error), with the 95% "
             f"interval of the AUC over seeded random rejection orders. Norm below random = the norm is a useful "
             "quality score.", "",
             f"| benchmark | error | unrejected | AUC norm | AUC random [95%] | norm − random | {100 * ERC_AT:g}% "
             f"rejected: norm | random |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        band = (f" [{_pct(r['auc_random_low'])}–{_pct(r['auc_random_high'])}]"
                if r["auc_random_low"] is not None else "")
        gap = (None if r["auc_norm"] is None or r["auc_random"] is None else r["auc_norm"] - r["auc_random"])
        lines.append(f"| {r['label']} | {r['metric']} | {_pct(r['unrejected'])} | {_pct(r['auc_norm'])} | "
                     f"{_pct(r['auc_random'])}{band} | {_pct(gap, sign=True)} | {_pct(r['norm_at'])} | "
                     f"{_pct(r['random_at'])} |")
    return lines


def markdown(summary, entries, reports) -> str:
    ok = [e for e in entries if e["key"] in reports]
    lines = [f"# Evaluation suite — `{Path(summary['model']).name}`", "",
             f"Model `{summary['model']}` (network {summary['network'] or '–'}); flip {summary['flags']['flip']}, "
             f"device {summary['flags']['device']}{', fp16' if summary['flags']['fp16'] else ''}. "
             "Figures in %; fractions in `summary.json`.", "",
             "| benchmark | status | seconds | data | report |", "|---|---|---|---|---|"]
    for e in entries:
        b = summary["benchmarks"][e["key"]]
        if b["status"] == "skipped":
            lines.append(f"| {e['title']} | skipped | – | – | {b['reason']} |")
            continue
        note = _link(e, ".md") if b["status"] == "ok" else "error: " + " ".join(b["error"].split()).replace("|", "\\|")
        lines.append(f"| {e['title']} | {b['status']} | {b['seconds']:.1f} | `{b['data']}` | {note} |")
    ijb = [e for e in ok if e["key"].startswith("ijb")]
    if ijb:
        lines += ["", "## IJB-B / IJB-C 1:1 verification, TAR (%)", "",
                  "| benchmark | " + " | ".join(f"FAR={far_label(f)}" for f in IJB_FARS) + " | ROC |",
                  "|---" * (len(IJB_FARS) + 2) + "|"]
        keys = [far_key(f) for f in IJB_FARS]
        for e in ijb:
            h = summary["benchmarks"][e["key"]]["headline"]
            lines.append(f"| {e['title']} | " + " | ".join(_pct(h.get(k)) + ("" if k in h["resolved"] else " †")
                                                          for k in keys) + f" | {_link(e, '_roc.png')} |")
        if any(k not in summary["benchmarks"][e["key"]]["headline"]["resolved"] for e in ijb for k in keys):
            lines += ["", "† FAR below 1 / impostor pairs of that set: not resolved (it reads the FAR-0 point)."]
    if any(e["key"] == "tinyface" for e in ok):
        h = summary["benchmarks"]["tinyface"]["headline"]
        lines += ["", "## TinyFace closed-set identification, CMC (%)", "",
                  "| " + " | ".join(k.replace("rank", "rank-") for k in h) + " |", "|---" * len(h) + "|",
                  "| " + " | ".join(_pct(v) for v in h.values()) + " |"]
    scface = [e for e in ok if e["key"].startswith("scface")]
    if scface:
        lines += ["", "## SCface rank-1 identification (%)", "",
                  "| protocol | d1 (4.2 m) | d2 (2.6 m) | d3 (1.0 m) | overall |", "|---|---|---|---|---|"]
        for e in scface:
            h = summary["benchmarks"][e["key"]]["headline"]
            lines.append(f"| {h['protocol']} | " + " | ".join(_pct(h[k]) for k in ("d1", "d2", "d3", "overall")) + " |")
    if any(e["key"] == "verification" for e in ok):
        res = summary["benchmarks"]["verification"]["headline"]
        variants = list(dict.fromkeys(v for rows in res.values() for v in rows))
        lines += ["", "## Verification accuracy on the .bin sets (%)", "",
                  "| target | " + " | ".join(variants) + " |", "|---" * (len(variants) + 1) + "|"]
        for t, rows in res.items():
            lines.append(f"| {t} | " + " | ".join(_pct(rows[v]["accuracy"]) if v in rows else "–"
                                                for v in variants) + " |")
    if summary["quality_view"]:
        lines += ["", "## Quality view (%)", "",
                  "Each benchmark's figure in its lowest / middle / highest quality third (feature-norm quality; "
                  "IJB: TAR at FAR 1e-4, or the smallest decade the set resolves, by pair quality at the global "
                  "threshold; TinyFace, SCface: rank-1 by probe quality; .bin: accuracy by pair quality) and the "
                  "gap highest − lowest (points).", "",
                  "| benchmark | figure | lowest | middle | highest | gap |", "|---|---|---|---|---|---|"]
        for r in summary["quality_view"]:
            figure = f"{r['figure'].replace('rank1', 'rank-1')} ({r['quality']} quality)"
            lines.append(f"| {r['label']} | {figure} | {_pct(r['lowest'])} | {_pct(r['middle'])} | "
                         f"{_pct(r['highest'])} | {_pct(r['gap'], sign=True)} |")
    lines += _erc_markdown(summary.get("erc", []))
    return "\n".join(lines) + "\n"


def run_suite(args, load_tool, log=print) -> int:
    """Run every benchmark of ``args`` (the suite's parsed flags, see ``tools/eval_suite.py``) on ``args.model``,
    write ``<output>/summary.json`` and ``summary.md``. Returns the exit status: 0 when every benchmark run
    succeeded, 1 when one failed, 2 when there is nothing to run (``summary`` not written)."""
    entries = plan(args, load_tool)
    todo = [e for e in entries if e["data"] is not None]
    for e in entries:
        log(f"{'found' if e['data'] else 'skipped'}: {e['title']}: {e['data'] or e['reason']}")
    if not todo:
        return error("no benchmark to run: give --data ROOT or --bins/--tinyface/--scface/--ijbb/--ijbc")
    benchmarks, reports = {}, {}
    for e in entries:
        if e["data"] is None:
            benchmarks[e["key"]] = {"status": "skipped", "reason": e["reason"]}
            continue
        log(f"\n=== [{todo.index(e) + 1}/{len(todo)}] {e['title']}: {e['data']}", flush=True)
        res = run_one(e, args, load_tool)
        report = Path(e["output"]) / f"{e['report']}.json"
        benchmarks[e["key"]] = {**res, "data": str(e["data"]), "report": report.as_posix()}
        if res["status"] == "ok":
            reports[e["key"]] = json.loads((Path(args.output) / report).read_text(encoding="utf-8"))
            benchmarks[e["key"]]["headline"] = headline(e["key"], reports[e["key"]])
        log(f"=== {e['title']}: {res['status']} in {res['seconds']:.1f} s"
            + (f" ({res['error']})" if res["error"] else ""), flush=True)
    flags = {f[2:].replace("-", "_"): getattr(args, f[2:].replace("-", "_")) for f, _ in SHARED_FLAGS
             if f not in ("--model", "--network")}
    flags.update(targets=args.targets, lowres=list(args.lowres), scface_protocols=list(args.scface_protocols),
                 erc_fractions=list(args.erc_fractions), erc_draws=args.erc_draws, erc_seed=args.erc_seed,
                 erc_fmr=args.erc_fmr, erc_far=args.erc_far)
    summary = {"model": str(args.model), "network": args.network,
               "model_info": next((r.get("model_info") for r in reports.values()), None),
               "data_root": args.data, "flags": flags,
               "units": {"headline": "fraction", "quality_view": "fraction", "erc": "fraction", "seconds": "seconds"},
               "benchmarks": benchmarks,
               "quality_view": [r for e in entries if e["key"] in reports
                                for r in quality_rows(e["key"], e["title"], reports[e["key"]])],
               "erc": [r for e in entries if e["key"] in reports
                       for r in erc_rows(e["key"], e["title"], reports[e["key"]])]}
    log()
    write_report(args.output, "summary", summary, markdown(summary, entries, reports))
    failed = [e["title"] for e in entries if benchmarks[e["key"]]["status"] == "error"]
    if failed:
        return error(f"failed: {', '.join(failed)} (see {Path(args.output) / 'summary.md'})", code=EXIT_FAILED)
    return 0
