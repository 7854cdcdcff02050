"""qgface_plugin.arcface.upstream: checking and importing arcface_torch.

Tests marked ``upstream`` use a real arcface_torch folder at the pinned commit, named by
``ARCFACE_TORCH_ROOT``, and skip without it; the others build what they need in tmp_path.
"""
from __future__ import annotations

import sys
import types
import warnings
from pathlib import Path

import pytest

from qgface_plugin.arcface import checkout, compat, upstream


def test_load_and_check_api_report_a_missing_upstream_the_same_way(isolated):
    for fn in (upstream.load, upstream.check_api):
        with pytest.raises(checkout.UpstreamNotFoundError, match="tools/fetch_arcface_torch.py --source"):
            fn()


def test_check_api_names_missing_files(isolated, fake_root):
    root = fake_root(isolated / "partial")
    with pytest.raises(checkout.UpstreamAPIError) as info:
        upstream.check_api(root)
    for name in ("dataset.py", "eval/verification.py", "train_v2.py"):
        assert name in str(info.value)
    assert "partial_fc_v2.py," not in str(info.value)



def test_conflicting_generic_module_is_refused(tmp_path, monkeypatch):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    fake = types.ModuleType("losses")
    fake.__file__ = str(elsewhere / "losses.py")
    monkeypatch.setitem(sys.modules, "losses", fake)
    for name in upstream.GENERIC_NAMES:  # leave only our fake in the way
        if name != "losses":
            monkeypatch.delitem(sys.modules, name, raising=False)
    with pytest.raises(upstream.UpstreamConflictError) as info:
        upstream._check_conflicts(tmp_path / "arcface_torch")
    assert "'losses' is already imported" in str(info.value) and str(elsewhere) in str(info.value)



@pytest.mark.upstream
def test_check_api_passes_on_the_pinned_copy_without_warnings(ns):
    with warnings.catch_warnings():
        warnings.simplefilter("error", checkout.UpstreamVersionWarning)
        assert upstream.check_api(ns.root) == []


@pytest.mark.upstream
def test_load_is_cached_and_complete(ns, arcface_root):
    assert upstream.load(arcface_root) is ns and upstream.load() is ns
    for name in ("get_model", "MXFaceDataset", "SyntheticDataset", "PartialFC_V2", "CombinedMarginLoss",
                 "PolynomialLRWarmup", "get_config", "verification", "DistributedSampler", "setup_seed",
                 "make_scheduler"):
        assert getattr(ns, name) is not None, name
    for module in ns.modules.values():
        assert Path(module.__file__).resolve().is_relative_to(ns.root)
    assert "train_v2" not in sys.modules
    assert sys.path[0] == str(ns.root) or sys.path.count(str(ns.root)) == 1
    assert compat.apply_fixes(ns) == []  # idempotent

