#!/usr/bin/env python
"""The whole evaluation suite on one model: every benchmark present, one Markdown + JSON summary.

    python tools/eval_suite.py --network r50 --model model.pt --output out/ [--data ROOT] \
        [--bins DIR] [--tinyface DIR] [--scface DIR] [--ijbb DIR] [--ijbc DIR] \
        [--targets lfw cfp_fp ...] [--lowres 8 12 16 20] [--scface-protocols all test80] \
        [--flip sum|norm_weighted|none] [--batch-size 64] [--device cuda] [--fp16] [--workers N] \
        [--cache DIR] [--progress] [--arcface-root PATH] \
        [--erc-fractions 0 0.05 ... 0.5] [--erc-fmr 1e-3] [--erc-far 1e-4] [--erc-draws 1000] [--erc-seed 0]

Runs, in this order and in this process, ``tools/eval_verification.py`` (``--bins``),
``eval_tinyface.py``, ``eval_scface.py`` (once per ``--scface-protocols`` entry) and ``eval_ijb.py``
(``--ijbb``, ``--ijbc``), each with the model and extraction flags given here. A benchmark folder not given
is looked for under ``--data ROOT`` (names matched case-insensitively): the ``*.bin`` files of
``ROOT/bins/`` or ``ROOT/``, ``ROOT/tinyface/``, ``ROOT/scface/``, ``ROOT/IJB_release/IJBB|IJBC/`` or
``ROOT/IJBB|IJBC/``; what is found and what is skipped is printed. Without ``--targets`` the verification
uses the tool's standard sets present in the folder, else every ``*.bin`` there. ``--lowres`` defaults to
8 12 16 20 (``--lowres`` with no sizes: originals only); ``--scface-protocols`` to ``all test80``.
A benchmark that fails is recorded with its error message and the others still run.

Writes the tools' reports into ``<output>/``: ``verification.*``, ``tinyface.*``, ``scface_<protocol>/scface.*``,
``ijbb.*`` / ``ijbc.*`` (with ``*_roc.png``), then ``<output>/summary.json`` (fractions) and
``<output>/summary.md`` (percent, with links to the reports): the status (ok / skipped / error) and seconds
of each benchmark, its headline figures (IJB: TAR@FAR and AUC, Markdown shows FAR 1e-4 and 1e-5; TinyFace
CMC rank-1/5/20; SCface rank-1 at d1/d2/d3 per protocol; accuracy of each ``.bin`` and low-res variant), and
the quality view: per benchmark, the figure in the lowest / middle / highest quality third and the gap
highest - lowest (IJB: TAR@FAR=1e-4 by pair quality; TinyFace and SCface: rank-1 by probe quality; ``.bin``:
accuracy by pair quality, per target and variant), and the error-versus-reject table: per benchmark, the
AUC of the curve that rejects by feature norm against random rejection, and the error at 20% rejected
(``.bin``: FNMR at FMR ``--erc-fmr``; IJB: FNMR at FAR ``--erc-far``, each the smallest larger decade the set
resolves when it cannot resolve that one; TinyFace, SCface: rank-1 error; see ``qgface_plugin.eval.erc``).
Every number is read from the tools' JSON reports. The suite itself is ``qgface_plugin.eval.suite`` (also
run by ``tools/compare_models.py``).
Exit status 0 when every benchmark run succeeded, 1 when one failed, 2 when there is nothing to run or a
flag is bad.
"""
from __future__ import annotations

import sys
from pathlib import Path

from qgface_plugin.eval import suite as _suite
from qgface_plugin.eval.cli import evaluator_parser
from qgface_plugin.eval.suite import discover  # noqa: F401 (tests find the benchmarks through the tool)

TOOLS_DIR = Path(__file__).resolve().parent
load_tool = _suite.tool_loader(TOOLS_DIR)


def parse_args(argv=None):
    p = evaluator_parser(__doc__.split("\n\n")[0], "root folder to look for the benchmarks in (see above)",
                         data_required=False)
    _suite.add_suite_flags(p)
    args = p.parse_args(argv)
    _suite.check_suite_flags(p, args)
    return args


def plan(args) -> list:
    """One entry per benchmark (see :func:`qgface_plugin.eval.suite.plan`)."""
    return _suite.plan(args, load_tool)


def run_one(entry, args) -> dict:
    """Run one benchmark's tool; ``{"status", "seconds", "error"}``."""
    return _suite.run_one(entry, args, load_tool)


def main(argv=None) -> int:
    return _suite.run_suite(parse_args(argv), load_tool)


if __name__ == "__main__":
    sys.exit(main())
