#!/usr/bin/env python
"""Compare models on the evaluation suite: one side-by-side table with paired bootstrap intervals of B - A.

    python tools/compare_models.py MODEL_A MODEL_B [MODEL_C ...] --data BENCHMARKS --output out/ \
        [--network r50 [mbf ...]] [--labels A B ...] [--bootstrap 1000] [--seed 0] [--level 0.95] \
        [the suite's benchmark, extraction and ERC flags: --bins DIR --tinyface DIR ... --lowres 8 12 16 20 \
         --scface-protocols all test80 --flip sum --batch-size 64 --device cuda --fp16 --cache DIR ...]

Each model (an arcface_torch ``model.pt`` / checkpoint with ``--network``, or an exported ``.onnx``) is run
through the whole evaluation suite (``tools/eval_suite.py``, the library ``qgface_plugin.eval.suite``) into
``<output>/<label>/`` (its reports and ``summary.md``), the first model being the reference A. ``--network``
takes one name for every ``.pt`` model or one per model (ignored for ``.onnx``). ``--cache DIR`` is keyed by
the weights, so one folder serves every model.

Then, per benchmark, the same pairs (verification) or probes (identification) are resampled with
replacement ``--bootstrap`` times (seeded by ``--seed``; SCface within each distance), and every figure is
recomputed on each resample for every model -- for TAR@FAR the threshold is recomputed in each resample --
giving the percentile interval (``--level``, default 95%) of each difference B - A
(``qgface_plugin.eval.paired``; ``qgface_plugin.eval.compare`` says which figures and how). Figures: the
headline ones (.bin accuracy per target and variant, TinyFace CMC, SCface rank-1 per distance, IJB TAR at the
FARs the set resolves) and the quality-third view of each model (its own items split by its own feature norm)
with the gap highest - lowest.

Writes ``<output>/compare.md`` (percent; the interval marked * when it excludes 0), ``<output>/compare.json``
(fractions: ``models``, ``reference``, ``bootstrap``, ``benchmarks``, ``rows`` with ``values`` per model and
``diff`` per other model: ``diff``, ``low``, ``high``, ``resamples``) and ``<output>/compare.png`` (grouped bars
of the figures, and the differences with their intervals). Exit status 0 when every benchmark ran for every
model, 1 when one failed (compared without it), 2 on bad input or when nothing could be run.
"""
from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.eval import compare, suite
from qgface_plugin.eval.cli import SHARED_FLAGS

TOOLS_DIR = Path(__file__).resolve().parent
load_tool = suite.tool_loader(TOOLS_DIR)


def parse_args(argv=None):
    p = cli.parser(__doc__.split("\n\n")[0], raw_description=False)
    p.add_argument("models", nargs="+", metavar="MODEL", help="model.pt / checkpoint or .onnx; the first is the "
                                                              "reference A")
    p.add_argument("--network", nargs="+", default=None,
                   help="upstream backbone name for the .pt models: one for all, or one per model (default: none; "
                        "needed for .pt)")
    p.add_argument("--labels", nargs="+", default=None,
                   help="a short label per model, also its sub-folder of --output (default: A B C ...)")
    p.add_argument("--data", default=None, help="root folder to look for the benchmarks in, as eval_suite.py "
                                                "(default: none; give the benchmark folders then)")
    p.add_argument("--output", required=True, help="output folder")
    p.add_argument("--bootstrap", type=int, default=1000, metavar="N",
                   help="paired bootstrap resamples per benchmark; 0 = no intervals")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap resamples")
    p.add_argument("--level", type=float, default=0.95, help="level of the percentile intervals")
    for flag, kw in SHARED_FLAGS[2:]:
        p.add_argument(flag, **kw)
    suite.add_suite_flags(p)
    args = p.parse_args(argv)
    suite.check_suite_flags(p, args)
    n = len(args.models)
    if n < 2:
        p.error("give at least two models to compare")
    if args.network is not None and len(args.network) not in (1, n):
        p.error(f"--network: give one network for all models or one per model ({n}), got {len(args.network)}")
    if args.labels is None:
        args.labels = [chr(ord("A") + i) if i < 26 else f"M{i + 1}" for i in range(n)]
    if len(args.labels) != n:
        p.error(f"--labels: give one label per model ({n}), got {len(args.labels)}")
    if len(set(args.labels)) != n or any(not lab or "/" in lab or lab in (".", "..") for lab in args.labels):
        p.error(f"--labels must be distinct folder names, got {' '.join(args.labels)}")
    if args.bootstrap < 0:
        p.error(f"--bootstrap must be >= 0, got {args.bootstrap}")
    if not 0 < args.level < 1:
        p.error(f"--level must be in (0, 1), got {args.level}")
    return args


def _networks(args):
    if args.network is None:
        return [None] * len(args.models)
    return args.network * len(args.models) if len(args.network) == 1 else list(args.network)


def check_models(args) -> str | None:
    """The first problem with the models (a missing file, a .pt without a network), or None."""
    for path, net in zip(args.models, _networks(args)):
        if not Path(path).is_file():
            return f"{path}: model file not found"
        if Path(path).suffix.lower() != ".onnx" and not net:
            return f"{path}: --network is required for a .pt model (e.g. --network r50)"
    return None


def main(argv=None) -> int:
    args = parse_args(argv)
    problem = check_models(args)
    if problem:
        return cli.error(problem)
    out = Path(args.output)
    runs, status = [], 0
    for i, (path, net, label) in enumerate(zip(args.models, _networks(args), args.labels)):
        ns = copy.copy(args)
        ns.model, ns.network, ns.output = str(path), (net if Path(path).suffix.lower() != ".onnx" else None), \
            str(out / label)
        t0 = time.time()
        print(f"[compare] [{i + 1}/{len(args.models)}] model {label}: {path} — evaluation suite into {out / label}",
              flush=True)
        rc = suite.run_suite(ns, load_tool)
        print(f"[compare] model {label}: suite finished in {time.time() - t0:.1f} s (exit status {rc})", flush=True)
        if rc == 2:
            return cli.error(f"model {label}: the evaluation suite had nothing to run")
        status = max(status, rc)
        runs.append({"label": label, "model": str(path), "network": ns.network, "dir": str(out / label)})
    t0 = time.time()
    comp = compare.compare_runs(runs, resamples=args.bootstrap, seed=args.seed, level=args.level)
    comp["seconds_bootstrap"] = round(time.time() - t0, 3)
    if not comp["rows"]:
        return cli.error("no benchmark ran for every model; nothing to compare", code=cli.EXIT_FAILED)
    (out / "compare.json").write_text(json.dumps(comp, indent=2) + "\n", encoding="utf-8")
    md = compare.markdown(comp)
    (out / "compare.md").write_text(md, encoding="utf-8")
    compare.plot(comp, out / "compare.png")
    print()
    print(md, end="")
    print(f"[compare] wrote {out / 'compare.md'}, {out / 'compare.json'}, {out / 'compare.png'}", flush=True)
    if any(b["status"] == "error" for b in comp["benchmarks"].values()):
        status = 1
    return 1 if status else 0


if __name__ == "__main__":
    sys.exit(main())
