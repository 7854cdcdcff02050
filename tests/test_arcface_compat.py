"""qgface_plugin.arcface.compat: the fixes for numpy, SciPy, torch's LR scheduler, tensorboard and menpo.

Tests marked ``upstream`` use the real arcface_torch named by ``ARCFACE_TORCH_ROOT`` and skip without it.
"""
from __future__ import annotations

import importlib.util
import subprocess
import sys
import types

import numpy as np
import pytest
import torch

from _proc import clean_env
from qgface_plugin.arcface import checkout, compat


def test_numpy_alias_fix_adds_only_what_is_missing():
    fake = types.ModuleType("fake_numpy")
    fake.int = "kept"
    assert compat.fix_numpy_aliases(fake) == ["numpy.float", "numpy.bool"]
    assert fake.int == "kept" and fake.float is float and fake.bool is bool
    assert compat.fix_numpy_aliases(fake) == []  # idempotent
    if np.lib.NumpyVersion(np.__version__) < "1.24.0":
        assert compat.fix_numpy_aliases() == []  # numpy < 1.24 still has the aliases


def _old_scipy_slinear(x, y):
    """What SciPy < 1.9's interp1d(kind='slinear') built: an order-1 B-spline straight from the points."""
    from scipy.interpolate import BSpline
    order = np.argsort(x, kind="mergesort")
    x, y = np.asarray(x, float)[order], np.asarray(y, float)[order]
    return BSpline.construct_fast(np.r_[x[0], x, x[-1]], np.ascontiguousarray(y), 1)


def test_repeated_x_linear_matches_old_scipy_and_new_scipy_without_repeats():
    x = np.array([0.0, 0.0, 0.0, 0.2, 0.2, 0.5, 0.6, 0.6, 1.0])
    y = np.arange(9) * 0.1
    f = compat.RepeatedXLinear(x, y)
    old = _old_scipy_slinear(x, y)
    q = np.array([0.0, 0.05, 0.1, 0.2, 0.3, 0.5, 0.55, 0.6, 0.8, 1.0])
    np.testing.assert_allclose(f(q), old(q), atol=1e-12)
    # by hand: between 0 and 0.2 the line runs from the last y at 0 (0.2) to the first y at 0.2 (0.3)
    assert f(0.1) == pytest.approx(0.25)
    assert f(0.2) == pytest.approx(0.4)  # at a repeated x: the run's last y
    with pytest.raises(ValueError, match="above"):
        f(1.5)
    stand_in = compat._InterpolateStandIn(__import__("scipy.interpolate").interpolate)
    xs, ys = np.array([0.0, 0.3, 1.0]), np.array([1.0, 2.0, 4.0])
    np.testing.assert_allclose(stand_in.interp1d(xs, ys, kind="slinear")(q),
                               __import__("scipy.interpolate").interpolate.interp1d(xs, ys, kind="slinear")(q))
    assert stand_in.BSpline is __import__("scipy.interpolate").interpolate.BSpline  # the rest is SciPy's


def test_lr_scheduler_compat_is_scoped():
    base = torch.optim.lr_scheduler.LRScheduler
    original = base.__dict__["__init__"]

    class Passes(torch.optim.lr_scheduler.LRScheduler):
        def __init__(self, optimizer):
            super().__init__(optimizer, last_epoch=-1, verbose=False)

        def get_lr(self):
            return [g["lr"] for g in self.optimizer.param_groups]

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1)
    with compat.lr_scheduler_compat(Passes) as installed:
        Passes(opt)
    assert base.__dict__["__init__"] is original
    needed = "verbose" not in checkout.parameter_names(original)
    assert installed == needed
    if needed:
        with pytest.raises(TypeError, match="verbose"):
            Passes(opt)



def test_tensorboard_fallback_only_without_tensorboard(monkeypatch):
    if importlib.util.find_spec("tensorboard") is not None:
        assert compat.install_tensorboard_fallback() is False
        return
    pytest.importorskip("tensorboardX")
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard")
    monkeypatch.setattr(torch.utils, "tensorboard", None, raising=False)
    assert compat.install_tensorboard_fallback() is True
    from torch.utils.tensorboard import SummaryWriter
    import tensorboardX
    assert SummaryWriter is tensorboardX.SummaryWriter
    assert compat.install_tensorboard_fallback() is True  # idempotent



def test_menpo_stub():
    code = ("import importlib.util, sys\n"
            "from qgface_plugin.arcface import compat\n"
            "real = importlib.util.find_spec('menpo') is not None\n"
            "assert compat.install_menpo_stub() is (not real)\n"
            "assert compat.install_menpo_stub() is (not real)  # idempotent\n"
            "from menpo.visualize.viewmatplotlib import sample_colours_from_colourmap as f\n"
            "c = f(3, 'Set2')\n"
            "assert len(c) == 3 and all(len(x) == 3 and all(0 <= v <= 1 for v in x) for x in c), c\n"
            "assert len(set(c)) == 3\n")
    pytest.importorskip("matplotlib")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=clean_env())
    assert proc.returncode == 0, proc.stderr[-3000:]


@pytest.mark.upstream
def test_make_scheduler_warms_up_then_decays_linearly(ns):
    param = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([param], lr=0.1)
    sched = ns.make_scheduler(opt, 4, 10)
    assert torch.optim.lr_scheduler.LRScheduler.__dict__["__init__"].__name__ == "__init__"
    lrs = []
    for _ in range(12):
        opt.step()
        sched.step()
        lrs.append(opt.param_groups[0]["lr"])
    # after step k: 0.1*k/4 for k <= 4, then 0.1*(1 - (k-4)/6) down to 0 at k = 10, then 0
    expected = [0.025, 0.05, 0.075, 0.1, 0.1 * 5 / 6, 0.1 * 4 / 6, 0.05, 0.1 * 2 / 6, 0.1 / 6, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(lrs, expected, atol=1e-12)
    assert sched.get_last_lr()[0] == pytest.approx(0.0)


@pytest.mark.upstream
def test_verification_calculate_val_with_repeated_far_values(ns):
    import scipy.interpolate
    if compat._interp1d_rejects_repeated_x(scipy.interpolate):
        assert ns.verification.interpolate is not scipy.interpolate and "verification-interp1d" in ns.fixes
    # 1-D "embeddings" so that the squared distance of pair i is d[i]
    same = np.array([0.1, 0.3, 0.5, 0.7])
    diff = np.array([0.42, 0.8, 1.2, 1.6])
    dist = np.r_[same, diff]
    e1, e2 = np.zeros((8, 1)), np.sqrt(dist)[:, None]
    issame = np.array([True] * 4 + [False] * 4)
    thresholds = np.array([0.0, 0.25, 0.35, 0.45, 0.55, 0.85, 1.0, 1.3, 1.7])
    # FAR per threshold: 0, 0, 0, .25, .25, .5, .5, .75, 1 (repeated values). For a target FAR of 0.125 the
    # threshold is interpolated between the last threshold at FAR 0 (0.35) and the first at FAR 0.25 (0.45):
    # 0.40. Then VAL = #(same < 0.40)/4 = 0.5 and FAR = #(diff < 0.40)/4 = 0.
    val, val_std, far = ns.verification.calculate_val(thresholds, e1, e2, issame, 0.125, nrof_folds=1)
    assert (val, val_std, far) == (0.5, 0.0, 0.0)

