#!/usr/bin/env python
"""Run an arcface_torch script (``train_v2.py``, ``eval_ijbc.py``, ...) unmodified, with our fixes and, without
CUDA, the CPU shims.

    python tools/run_upstream.py [--root ROOT] [--config-dir DIR] SCRIPT [ARGS...]
    torchrun --nproc_per_node 2 tools/run_upstream.py --config-dir my_configs train_v2.py configs/my_job

What it does before running SCRIPT as ``__main__`` (``runpy.run_path``):

1. ``qgface_plugin.arcface.upstream.load(ROOT)`` (``--root``, else ``ARCFACE_TORCH_ROOT``, else
   ``third_party/arcface_torch``): checks the API and applies ``compat.apply_fixes`` (SciPy ``interp1d`` in
   ``eval/verification.py``, numpy aliases).
2. From ``qgface_plugin.arcface.compat``: ``install_lr_scheduler_compat`` (torch >= 2.7 removed ``verbose``,
   which ``PolynomialLRWarmup`` passes),
   ``install_tensorboard_fallback`` (tensorboardX when ``tensorboard`` is not installed) and
   ``install_menpo_stub`` (``eval_ijbc.py`` imports menpo only for the ROC plot's colours; a
   matplotlib stand-in when ``menpo`` is not installed).
3. Only without CUDA: ``qgface_plugin.arcface.cpu_shim.install_cpu_shim`` (NCCL -> gloo, ``.cuda()`` identity, CUDA streams, DDP
   without ``device_ids``, ``sync_random_seed`` on CPU).
4. ``--config-dir DIR`` (repeatable): ``configs/<name>`` also resolves to ``DIR/<name>.py``; DIR comes
   first, so its files (``base.py`` included) win over upstream's of the same name. Upstream's
   ``get_config`` only accepts paths that start with ``configs/``.
5. ``--synthetic-len N``: upstream's ``SyntheticDataset`` (``rec = "synthetic"``) has 1,000,000 images
   and ``train_v2`` only stops at an epoch's end; N makes an epoch short, for smoke tests.
6. A single process (no ``RANK``/``LOCAL_RANK``/``WORLD_SIZE`` in the environment) gets them set for
   rank 0 of 1 with a free ``MASTER_PORT``, so that ``train_v2``'s fixed ``tcp://127.0.0.1:12584``
   fallback cannot collide with another run (``--fixed-port`` keeps upstream's behaviour).
7. chdir into ROOT, ROOT first on ``sys.path``, ``sys.argv = [SCRIPT, *ARGS]``.

Relative ``--config-dir`` and SCRIPT paths are taken from the directory you run in (SCRIPT from ROOT
first). Exit status: SCRIPT's; 2 when arcface_torch is missing or fails its check.
"""
from __future__ import annotations

import argparse
import os
import runpy
import sys
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.arcface import compat, upstream
from qgface_plugin.arcface.cpu_shim import install_cpu_shim
from qgface_plugin.errors import QGFaceConfigError
from qgface_plugin.utils import free_port


def _script_path(script: str, root: Path) -> Path:
    candidate = Path(script).expanduser()
    if candidate.is_absolute():
        found = candidate
    elif (root / candidate).is_file():
        found = root / candidate
    else:
        found = Path.cwd() / candidate
    if not found.is_file():
        raise QGFaceConfigError(f"script {script} not found in {root} or {Path.cwd()}: pass a script of "
                                "arcface_torch (e.g. train_v2.py) or a path to one")
    return found.resolve()


def set_synthetic_length(ns, n: int) -> None:
    """Give upstream's ``SyntheticDataset`` ``n`` images (its ``__len__`` is 1,000,000)."""
    if n <= 0:
        raise QGFaceConfigError(f"--synthetic-len must be positive, got {n}")
    ns.SyntheticDataset.__len__ = lambda self: n


def prepare(root=None, config_dirs=(), synthetic_len=None, fixed_port=False):
    """Steps 1-6 of the module docstring; returns :func:`qgface_plugin.arcface.upstream.load`'s namespace."""
    ns = upstream.load(root)
    compat.install_lr_scheduler_compat()
    compat.install_tensorboard_fallback()
    compat.install_menpo_stub()
    install_cpu_shim(ns)
    if config_dirs:
        upstream.add_config_dirs([Path(d).expanduser().resolve() for d in config_dirs], ns.root, prepend=True)
    if synthetic_len is not None:
        set_synthetic_length(ns, synthetic_len)
    if not fixed_port and not any(k in os.environ for k in ("RANK", "LOCAL_RANK", "WORLD_SIZE")):
        os.environ.update(RANK="0", LOCAL_RANK="0", WORLD_SIZE="1", LOCAL_WORLD_SIZE="1")
        os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
        os.environ.setdefault("MASTER_PORT", str(free_port()))
    return ns


def main(argv=None) -> int:
    parser = cli.parser(__doc__.split("\n\n")[0], prog="run_upstream", epilog=__doc__)
    parser.add_argument("--root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT, then "
                                       "third_party/arcface_torch)")
    parser.add_argument("--config-dir", action="append", default=[], metavar="DIR",
                        help="extra folder for configs/<name> (repeatable; searched before upstream's configs/)")
    parser.add_argument("--synthetic-len", type=int, metavar="N",
                        help="number of images of upstream's SyntheticDataset (default: upstream's 1,000,000)")
    parser.add_argument("--fixed-port", action="store_true",
                        help="single process: keep train_v2's fixed tcp://127.0.0.1:12584 rendezvous")
    parser.add_argument("script", help="script to run, e.g. train_v2.py (looked up in the arcface_torch folder)")
    parser.add_argument("args", nargs=argparse.REMAINDER, help="arguments of the script (default: none)")
    args = parser.parse_args(argv)
    try:
        ns = prepare(args.root, args.config_dir, args.synthetic_len, args.fixed_port)
        script = _script_path(args.script, ns.root)
    except QGFaceConfigError as e:
        return cli.error(e, "run_upstream")
    os.chdir(ns.root)
    root = str(ns.root)
    if root in sys.path:
        sys.path.remove(root)
    sys.path.insert(0, root)
    sys.argv = [str(script), *args.args]
    runpy.run_path(str(script), run_name="__main__")
    return 0


if __name__ == "__main__":
    sys.exit(main())
