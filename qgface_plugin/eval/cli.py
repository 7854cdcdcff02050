"""What every evaluator's command line shares: model flags, the feature extractor, the report files."""
from __future__ import annotations

import argparse
import csv
import json
import time
from pathlib import Path

import numpy as np

from ..cli import HelpFormatter, error
from ..errors import QGFaceConfigError, QGFaceInputError
from ..utils import atomic_write
from . import erc as erc_mod
from .features import FLIP_MODES, FeatureExtractor, load_model

__all__ = ["SHARED_FLAGS", "ERC_FLAGS", "evaluator_parser", "shared_argv", "add_erc_flags",
           "erc_options", "erc_argv", "make_extractor", "run_evaluation", "write_report", "write_quality",
           "write_items"]


# the model and extraction flags every evaluator shares: (flag, add_argument keywords)
SHARED_FLAGS = (
    ("--network", dict(default=None, help="upstream backbone name (r18/r50/r100/mbf/...); needed for .pt models, "
                                          "ignored for .onnx (default: none)")),
    ("--model", dict(required=True, help="model.pt (state dict / checkpoint) or .onnx file")),
    ("--flip", dict(choices=FLIP_MODES, default="sum", help="flip fusion of the features")),
    ("--batch-size", dict(type=int, default=64, help="images per forward pass")),
    ("--device", dict(default="cpu", help="torch / ONNX Runtime device: cpu, cuda, cuda:N")),
    ("--fp16", dict(action="store_true", help="half-precision forward passes (CUDA)")),
    ("--arcface-root", dict(default=None, help="arcface_torch folder (default: ARCFACE_TORCH_ROOT, ...)")),
    ("--workers", dict(type=int, default=None, help="image decoding threads; 0 = decode in the calling thread "
                                                   "(default: the cores, at most 8)")),
    ("--cache", dict(default=None, help="folder for a resumable on-disk cache of image features (default: none)")),
    ("--progress", dict(action="store_true", help="progress bars on stderr")),
)

# the error-versus-reject options every evaluator shares (the FMR flag is the verification tools' own)
ERC_FLAGS = (
    ("--erc-fractions", dict(nargs="+", type=float, default=list(erc_mod.DEFAULT_FRACTIONS), metavar="F",
                             help="error-versus-reject curve: fractions of the lowest-quality items rejected "
                                  "(strictly increasing, in [0, 1])")),
    ("--erc-draws", dict(type=int, default=erc_mod.DEFAULT_DRAWS, metavar="R",
                         help="seeded random rejection orders for the random baseline's 95%% band (the baseline's "
                              "curve itself is exact); 0 = no band")),
    ("--erc-seed", dict(type=int, default=0, help="seed of those random rejection orders")),
)


def evaluator_parser(description: str, data_help: str, data_required: bool = True) -> argparse.ArgumentParser:
    """A parser with ``--network --model --data --output`` and the extraction options (:data:`SHARED_FLAGS`)."""
    p = argparse.ArgumentParser(description=description, formatter_class=HelpFormatter)
    for flag, kw in SHARED_FLAGS[:2]:
        p.add_argument(flag, **kw)
    p.add_argument("--data", required=data_required, help=data_help)
    p.add_argument("--output", required=True, help="output folder")
    for flag, kw in SHARED_FLAGS[2:]:
        p.add_argument(flag, **kw)
    return p


def shared_argv(args, exclude=()) -> list:
    """The :data:`SHARED_FLAGS` of parsed ``args`` as a command line (to pass them on to an evaluator)."""
    argv = []
    for flag, kw in SHARED_FLAGS:
        if flag in exclude:
            continue
        v = getattr(args, flag[2:].replace("-", "_"))
        if v is None or v is False:
            continue
        argv += [flag] if kw.get("action") == "store_true" else [flag, str(v)]
    return argv


def add_erc_flags(parser, fmr_flag=None, fmr_default=None, fmr_help=None):
    """Add :data:`ERC_FLAGS` (and, for a verification tool, ``fmr_flag`` with ``fmr_default``) as a group;
    returns the group."""
    g = parser.add_argument_group("error-versus-reject curve (ERC)")
    for flag, kw in ERC_FLAGS:
        g.add_argument(flag, **kw)
    if fmr_flag:
        g.add_argument(fmr_flag, type=float, default=fmr_default, metavar=fmr_flag.rsplit("-", 1)[1].upper(),
                       help=fmr_help)
    return g


def erc_options(parser, args, fmr_flag=None):
    """The parsed ERC flags as an evaluator's ``erc`` dict (see :func:`qgface_plugin.eval.erc.options`); bad
    values stop with ``parser.error`` (exit status 2)."""
    opts = {"fractions": args.erc_fractions, "draws": args.erc_draws, "seed": args.erc_seed}
    if fmr_flag:
        opts["fmr"] = getattr(args, fmr_flag[2:].replace("-", "_"))
    try:
        erc_mod.options(opts, opts.get("fmr"))
    except QGFaceInputError as e:
        parser.error(str(e))
    return opts


def erc_argv(args, fmr_flags=()) -> list:
    """The ERC flags of parsed ``args`` as a command line (those of :data:`ERC_FLAGS`, plus ``fmr_flags``
    that ``args`` has and that are not ``None``)."""
    argv = ["--erc-fractions", *(repr(float(f)) for f in args.erc_fractions), "--erc-draws", str(args.erc_draws),
            "--erc-seed", str(args.erc_seed)]
    for flag in fmr_flags:
        v = getattr(args, flag[2:].replace("-", "_"), None)
        if v is not None:
            argv += [flag, repr(float(v))]
    return argv


def make_extractor(args):
    """``(FeatureExtractor, model info)`` from the parsed flags."""
    model, info = load_model(args.model, args.network, args.arcface_root)
    return FeatureExtractor(model, device=args.device, batch_size=args.batch_size, fp16=args.fp16,
                            flip=args.flip), info


def run_evaluation(args, evaluate, prepare=None):
    """Build the extractor from ``args`` and time ``evaluate(extractor)``.

    ``prepare()`` (optional) runs first, so input it checks fails before a model is loaded; its result is
    then passed on: ``evaluate(extractor, prepare())``. Returns
    ``(result, model info, seconds)``, or ``None`` after printing ``<tool>: error: <message>`` on stderr
    (:func:`qgface_plugin.cli.error`) for bad input or configuration (the tool then exits with status 2).
    """
    try:
        extra = () if prepare is None else (prepare(),)
        extractor, info = make_extractor(args)
        t0 = time.time()
        result = evaluate(extractor, *extra)
        return result, info, round(time.time() - t0, 3)
    except (QGFaceInputError, QGFaceConfigError) as e:
        error(e)
        return None


def write_report(output, name: str, report: dict, markdown: str) -> None:
    """``<output>/<name>.json`` and ``<output>/<name>.md``; prints the Markdown."""
    out = Path(output)
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / f"{name}.md").write_text(markdown, encoding="utf-8")
    print(markdown, end="")


def _cell(v) -> str:
    """One CSV cell: ``None`` -> empty, booleans -> 1/0, integers as they are, floats to 6 significant digits."""
    if v is None:
        return ""
    if isinstance(v, (bool, np.bool_)):
        return "1" if v else "0"
    if isinstance(v, (int, np.integer)):
        return str(int(v))
    if isinstance(v, (float, np.floating)):
        return f"{float(v):.6g}"
    return str(v)


def write_quality(output, name: str, columns: dict) -> str:
    """Write ``<output>/<name>_quality.csv``: the per-image (or per-template) feature-norm quality table.

    ``columns`` maps each header name, in order, to a sequence with one entry per row (all the same length).
    Cells: ``None`` -> empty, booleans -> ``1``/``0``, integers as they are, floats (norms) to 6 significant
    digits, anything else ``str()``. The file is written beside it first and renamed into place, so a reader
    never sees half a table. Returns the file name (relative to ``output``), for the JSON report.
    """
    names = list(columns)
    cols = [c.tolist() if isinstance(c, np.ndarray) else list(c) for c in (columns[k] for k in names)]
    lengths = {k: len(c) for k, c in zip(names, cols)}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"write_quality({name!r}): columns differ in length: {lengths}")
    fname = f"{name}_quality.csv"

    def write(tmp):
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(names)
            w.writerows([_cell(v) for v in row] for row in zip(*cols))
    atomic_write(Path(output) / fname, write)
    return fname


def write_items(output, name: str, arrays: dict) -> str:
    """Write ``<output>/<name>_items.npz``: full-precision per-item arrays (per pair / per probe) that
    ``tools/compare_models.py`` resamples. Written beside it first and renamed into place. Returns the file
    name (relative to ``output``), for the JSON report."""
    fname = f"{name}_items.npz"
    atomic_write(Path(output) / fname, lambda tmp: np.savez(tmp, **{k: np.asarray(v) for k, v in arrays.items()}),
                 suffix=".npz")
    return fname
