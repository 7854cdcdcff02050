"""Compatibility fixes that let the pinned arcface_torch run on current libraries, each applied only when needed.

* :func:`apply_fixes` (called by :func:`qgface_plugin.arcface.upstream.load`): SciPy >= 1.9 rejects repeated
  x in ``interp1d(kind='slinear')``, which ``eval/verification.calculate_val`` hits on plateaus of the
  false-accept curve (:class:`RepeatedXLinear` evaluates it as older SciPy did); and the numpy aliases
  ``np.int``/``np.float``/``np.bool`` removed in numpy 1.24 (:func:`fix_numpy_aliases`).
* :func:`lr_scheduler_compat` / :func:`install_lr_scheduler_compat` / :func:`make_scheduler`: torch >= 2.7
  removed ``LRScheduler.__init__``'s ``verbose`` argument, which ``PolynomialLRWarmup`` passes.
* :func:`install_tensorboard_fallback`: ``torch.utils.tensorboard`` backed by tensorboardX when the
  ``tensorboard`` package is not installed (``train_v2`` and ``utils_callbacks`` import it).
* :func:`install_menpo_stub`: a stand-in for ``menpo.visualize.viewmatplotlib`` (``eval_ijbc.py``
  imports it only for ``sample_colours_from_colourmap``) when ``menpo`` is not installed.

Upstream's CUDA-only calls are :mod:`qgface_plugin.arcface.cpu_shim`'s business. Nothing happens at import
time, and nothing here imports arcface_torch.
"""
from __future__ import annotations

import contextlib
import functools
import importlib
import importlib.util
import sys
import types
import warnings

import numpy as np

from .checkout import parameter_names

__all__ = ["apply_fixes", "fix_numpy_aliases", "RepeatedXLinear", "lr_scheduler_compat",
           "install_lr_scheduler_compat", "make_scheduler", "install_tensorboard_fallback", "install_menpo_stub"]


# ---------------------------------------------------------------------------------- numpy and SciPy

def fix_numpy_aliases(module=None) -> list:
    """Restore ``np.int``/``np.float``/``np.bool`` (removed in numpy 1.24) as the builtins, if absent.

    mxnet 1.9.1 uses ``np.bool`` at import; upstream's ``eval_ijbc.py`` and ``torch2onnx.py`` use
    ``np.int``/``np.float``. Returns the names added (none on numpy < 1.24, which still has them).
    """
    module = np if module is None else module
    added = []
    for name, builtin in (("int", int), ("float", float), ("bool", bool)):
        with warnings.catch_warnings():  # numpy 1.20-1.23 warn on access to these aliases
            warnings.simplefilter("ignore")
            present = hasattr(module, name)
        if not present:
            setattr(module, name, builtin)
            added.append(f"numpy.{name}")
    return added


def _interp1d_rejects_repeated_x(interpolate) -> bool:
    try:
        interpolate.interp1d(np.array([0.0, 0.0, 1.0]), np.array([0.0, 1.0, 2.0]), kind="slinear")
    except ValueError:
        return True
    return False


class RepeatedXLinear:
    """``interp1d(x, y, kind='slinear')`` as SciPy < 1.9 evaluated it when x has repeated values.

    SciPy before 1.9 built the order-1 spline directly from the stably sorted points (knots
    ``[x0, x0..x_{n-1}, x_{n-1}]``, coefficients y); later versions raise "Expect x to not have
    duplicates". That spline is: between two distinct x values, the line from the **last** point of
    the lower run of equal x to the **first** point of the upper run; at a repeated x value, the
    run's last y. (At a repeated *final* x, old SciPy returned a degenerate value; the run's last y is
    returned here.) For ``calculate_val`` (x = false-accept rate, y = threshold, both non-decreasing)
    the threshold for a FAR target inside a plateau gap is thus interpolated between the largest
    threshold at the lower FAR and the smallest threshold at the higher FAR.

    Values outside ``[min x, max x]`` raise ``ValueError``, like ``interp1d``'s default.
    """

    def __init__(self, x, y):
        x = np.asarray(x, dtype=float)
        y = np.asarray(y, dtype=float)
        if x.ndim != 1 or y.shape != x.shape or x.size < 2:
            raise ValueError("RepeatedXLinear needs 1-D x and y of the same length >= 2")
        order = np.argsort(x, kind="mergesort")  # stable, as interp1d sorts
        x, y = x[order], y[order]
        starts = np.flatnonzero(np.r_[True, x[1:] != x[:-1]])
        ends = np.r_[starts[1:], x.size] - 1
        self.x = x[starts]
        self.y_first = y[starts]
        self.y_last = y[ends]

    def __call__(self, x_new):
        q = np.asarray(x_new, dtype=float)
        if np.any(q < self.x[0]):
            raise ValueError("A value in x_new is below the interpolation range.")
        if np.any(q > self.x[-1]):
            raise ValueError("A value in x_new is above the interpolation range.")
        if self.x.size == 1:
            return np.full(q.shape, self.y_last[0])
        i = np.clip(np.searchsorted(self.x, q, side="right") - 1, 0, self.x.size - 2)
        x0, x1 = self.x[i], self.x[i + 1]
        y0, y1 = self.y_last[i], self.y_first[i + 1]
        out = y0 + (q - x0) / (x1 - x0) * (y1 - y0)
        return np.where(q == x1, self.y_last[i + 1], out)


class _InterpolateStandIn(types.ModuleType):
    """``scipy.interpolate`` for upstream's ``eval/verification.py`` only: ``interp1d`` accepts repeated x
    for ``kind='slinear'`` (see :class:`RepeatedXLinear`); everything else is SciPy's."""

    _qgface_stand_in = True

    def __init__(self, wrapped):
        super().__init__("scipy.interpolate", self.__doc__)
        self._wrapped = wrapped

    def __getattr__(self, name):
        return getattr(self._wrapped, name)

    def interp1d(self, x, y, kind="linear", *args, **kwargs):
        if kind == "slinear" and not args and not kwargs:
            xa = np.asarray(x)
            if xa.ndim == 1 and xa.size >= 2 and np.unique(xa).size < xa.size and np.ndim(y) == 1:
                return RepeatedXLinear(x, y)
        return self._wrapped.interp1d(x, y, kind, *args, **kwargs)


def apply_fixes(ns) -> list:
    """Fix upstream for current libraries, each fix only when needed; idempotent. Returns the fixes applied now.

    * ``verification-interp1d``: if SciPy's ``interp1d`` rejects repeated x (SciPy >= 1.9),
      ``ns.verification.interpolate`` becomes a stand-in whose ``interp1d(kind='slinear')`` evaluates
      such data as old SciPy did (:class:`RepeatedXLinear`); only that module's name is rebound.
    * ``numpy.int``/``numpy.float``/``numpy.bool``: see :func:`fix_numpy_aliases`.
    """
    applied = fix_numpy_aliases()
    verification = getattr(ns, "verification", None)
    current = getattr(verification, "interpolate", None)
    if current is not None and not getattr(current, "_qgface_stand_in", False) \
            and _interp1d_rejects_repeated_x(current):
        verification.interpolate = _InterpolateStandIn(current)
        applied.append("verification-interp1d")
    if hasattr(ns, "fixes"):
        ns.fixes.extend(applied)
    return applied


# ---------------------------------------------------------------------------------- LR scheduler fix

def _lr_scheduler_base():
    import torch
    return torch.optim.lr_scheduler.LRScheduler


def _scheduler_init_owner(cls):
    """The class whose ``__init__`` a ``super().__init__`` from ``cls`` reaches (LRScheduler in torch 2.x)."""
    for klass in cls.__mro__[1:]:
        if "__init__" in vars(klass):
            return klass
    return _lr_scheduler_base()


def _drop_verbose(init):
    @functools.wraps(init)
    def __init__(self, *args, verbose=None, **kwargs):  # noqa: N807 (stands in for __init__)
        return init(self, *args, **kwargs)

    __init__._qgface_drops_verbose = True
    return __init__


def _needs_verbose_fix(owner) -> bool:
    init = vars(owner).get("__init__")
    if init is None or getattr(init, "_qgface_drops_verbose", False):
        return False
    return "verbose" not in parameter_names(init)


@contextlib.contextmanager
def lr_scheduler_compat(scheduler_cls=None):
    """While active, ``LRScheduler.__init__`` accepts and ignores ``verbose`` -- only if torch removed it (2.7+).

    ``PolynomialLRWarmup.__init__`` passes ``verbose=verbose`` to its base; torch >= 2.7 raises
    ``TypeError`` on it. The base ``__init__`` is wrapped for the duration of the block and restored
    after. Yields whether the wrapper was installed.
    """
    owner = _scheduler_init_owner(scheduler_cls) if scheduler_cls is not None else _lr_scheduler_base()
    if not _needs_verbose_fix(owner):
        yield False
        return
    original = vars(owner)["__init__"]
    owner.__init__ = _drop_verbose(original)
    try:
        yield True
    finally:
        owner.__init__ = original


def install_lr_scheduler_compat() -> bool:
    """Process-wide :func:`lr_scheduler_compat` (for launchers running upstream scripts). Idempotent.

    Returns True when the wrapper is in place (now or from an earlier call), False when torch still
    accepts ``verbose`` and nothing was needed.
    """
    owner = _lr_scheduler_base()
    init = vars(owner).get("__init__")
    if getattr(init, "_qgface_drops_verbose", False):
        return True
    if not _needs_verbose_fix(owner):
        return False
    owner.__init__ = _drop_verbose(init)
    return True


def make_scheduler(optimizer, warmup_iters, total_iters, *, scheduler_cls, **kwargs):
    """``scheduler_cls(optimizer, warmup_iters, total_iters, **kwargs)`` (upstream's ``PolynomialLRWarmup``), on
    any torch (:func:`lr_scheduler_compat` around the construction).

    LR rises linearly from 0 to the base LR over ``warmup_iters`` steps, then falls linearly to 0 at
    ``total_iters`` (power 1). Note upstream's quirk: before the first ``step()`` the LR is the full
    base LR, not 0. :func:`qgface_plugin.arcface.upstream.load`'s namespace has it with upstream's class bound,
    as ``ns.make_scheduler(optimizer, warmup_iters, total_iters)``.
    """
    with lr_scheduler_compat(scheduler_cls):
        return scheduler_cls(optimizer, warmup_iters=warmup_iters, total_iters=total_iters, **kwargs)


# ------------------------------------------------------------------------------- missing packages

def install_tensorboard_fallback() -> bool:
    """Make ``from torch.utils.tensorboard import SummaryWriter`` work without the ``tensorboard`` package.

    Only when ``tensorboard`` is not installed and ``tensorboardX`` is: registers a
    ``torch.utils.tensorboard`` module whose ``SummaryWriter`` is tensorboardX's (same API and event
    files). Returns whether the stand-in is in place.
    """
    existing = sys.modules.get("torch.utils.tensorboard")
    if existing is not None:
        return bool(getattr(existing, "_qgface_stand_in", False))
    if importlib.util.find_spec("tensorboard") is not None or importlib.util.find_spec("tensorboardX") is None:
        return False
    import tensorboardX
    import torch.utils

    module = types.ModuleType("torch.utils.tensorboard", "tensorboardX standing in for torch.utils.tensorboard.")
    module.SummaryWriter = tensorboardX.SummaryWriter
    module._qgface_stand_in = True
    sys.modules["torch.utils.tensorboard"] = module
    torch.utils.tensorboard = module
    return True


def _sample_colours_from_colourmap(n_colours, colour_map):
    """menpo's ``sample_colours_from_colourmap``: ``n_colours`` RGB tuples evenly spaced along a matplotlib
    colormap (``i / n_colours``, i = 0..n-1)."""
    import matplotlib
    cmap = matplotlib.colormaps[colour_map]
    return [cmap(i / n_colours)[:3] for i in range(int(n_colours))]


def install_menpo_stub() -> bool:
    """Make ``from menpo.visualize.viewmatplotlib import sample_colours_from_colourmap`` work without menpo.

    Only when ``import menpo`` fails: registers stub modules ``menpo``, ``menpo.visualize`` and
    ``menpo.visualize.viewmatplotlib`` (the last with a matplotlib-backed
    ``sample_colours_from_colourmap(n, name)``, all that upstream's ``eval_ijbc.py`` uses: the ROC
    plot's line colours). Returns whether the stub is in place (now or from an earlier call).
    """
    existing = sys.modules.get("menpo")
    if existing is not None:
        return bool(getattr(existing, "_qgface_stand_in", False))
    try:
        importlib.import_module("menpo")
        return False
    except ImportError:
        pass
    doc = "Stand-in for menpo (not installed); only what arcface_torch's eval_ijbc.py uses."
    top = types.ModuleType("menpo", doc)
    visualize = types.ModuleType("menpo.visualize", doc)
    viewmatplotlib = types.ModuleType("menpo.visualize.viewmatplotlib", doc)
    viewmatplotlib.sample_colours_from_colourmap = _sample_colours_from_colourmap
    top.visualize, visualize.viewmatplotlib = visualize, viewmatplotlib
    for module in (top, visualize, viewmatplotlib):
        module._qgface_stand_in = True
        sys.modules[module.__name__] = module
    return True
