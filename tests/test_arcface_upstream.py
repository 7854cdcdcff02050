"""qgface_plugin.arcface.upstream: checking and importing arcface_torch.

Tests marked ``upstream`` use a real arcface_torch folder at the pinned commit, named by
``ARCFACE_TORCH_ROOT``, and skip without it; the others build what they need in tmp_path.
"""
from __future__ import annotations

import os
import subprocess
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



# ------------------------------------------------------------------------- mxnet optional (no-mxnet profile)

@pytest.mark.parametrize("before", ["absent", "blocked"])
def test_mxnet_stand_in_defers_the_error_to_the_first_call(monkeypatch, before):
    """What upstream's module-level ``import mxnet as mx`` / ``from mxnet import ndarray as nd`` bind where mxnet
    cannot be imported: any name, a clear error when called; ``sys.modules`` as it was afterwards."""
    if before == "absent":
        monkeypatch.delitem(sys.modules, "mxnet", raising=False)
    else:
        monkeypatch.setitem(sys.modules, "mxnet", None)
    with upstream._mxnet_stand_in("ImportError: why not"):
        import mxnet as mx
        from mxnet import ndarray as nd
    assert isinstance(mx, upstream.MXNetStandIn) and not hasattr(mx, "__path__")
    with pytest.raises(upstream.UpstreamDependencyError) as info:
        nd.transpose(None, axes=(2, 0, 1))
    message = str(info.value)
    assert "mxnet.ndarray.transpose()" in message and "ImportError: why not" in message
    assert "config.record_reader = 'python'" in message and "requirements.txt" in message
    with pytest.raises(upstream.UpstreamDependencyError, match=r"mxnet\.recordio\.MXIndexedRecordIO\(\)"):
        mx.recordio.MXIndexedRecordIO("train.idx", "train.rec", "r")
    assert ("mxnet" not in sys.modules) if before == "absent" else (sys.modules["mxnet"] is None)


def test_no_stand_in_where_mxnet_imports(monkeypatch):
    real = types.ModuleType("mxnet")
    monkeypatch.setitem(sys.modules, "mxnet", real)
    with upstream._mxnet_stand_in(None):
        import mxnet
    assert mxnet is real and sys.modules["mxnet"] is real


_BLOCKED_LOAD = """
import sys
sys.modules["mxnet"] = None  # `import mxnet` raises ImportError from here on, as where it is not installed
from easydict import EasyDict as edict
from qgface_plugin.arcface import upstream
from qgface_plugin.arcface.loader import record_dataset
from qgface_plugin.formats.record_dataset import RecordDataset
ns = upstream.load()
assert ns.mxnet_missing.startswith("ModuleNotFoundError"), ns.mxnet_missing
assert upstream.check_api(ns.root) == []
assert sys.modules["mxnet"] is None and isinstance(ns.modules["dataset"].mx, upstream.MXNetStandIn)
try:
    ns.MXFaceDataset(root_dir=sys.argv[1], local_rank=0)
    raise SystemExit("MXFaceDataset worked without mxnet")
except upstream.UpstreamDependencyError as e:
    assert "record_reader = 'python'" in str(e), e
cfg = edict(rec=sys.argv[1], record_reader="auto")
assert isinstance(record_dataset(cfg, ns, 0), RecordDataset)
model = ns.get_model("r18", fp16=False, num_features=8)
print("OK", len(ns.SyntheticDataset()), type(model).__name__)
"""


@pytest.mark.upstream
def test_load_works_where_mxnet_cannot_be_imported(arcface_root, tmp_path):
    """A fresh process where ``import mxnet`` fails: load() and check_api() pass, the record set is read by the
    mxnet-free reader, and asking for upstream's MXFaceDataset names the fix."""
    import cv2
    import numpy as np
    from qgface_plugin.formats.records import write_header0_set
    jpeg = cv2.imencode(".jpg", np.full((112, 112, 3), 128, np.uint8))[1].tobytes()
    write_header0_set(tmp_path, [(jpeg, 0), (jpeg, 1)], writer="python")
    r = subprocess.run([sys.executable, "-c", _BLOCKED_LOAD, str(tmp_path)], capture_output=True, text=True,
                       timeout=300, env={**os.environ, checkout.ENV_VAR: str(arcface_root)})
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert r.stdout.split()[-3:] == ["OK", "1000000", "IResNet"], r.stdout


@pytest.mark.upstream
def test_load_bin_without_mxnet_equals_upstreams_load_bin(ns, tmp_path, capfd):
    """validation.load_bin_without_mxnet (used where mxnet is missing) gives upstream's load_bin tensors: the
    same values for 112 px JPEG and PNG images (the published sets' size), within one grey level for images
    resized first (mxnet's resize_short is bicubic in its own OpenCV build, which rounds a few pixels apart)."""
    if ns.mxnet_missing:
        pytest.skip(f"upstream's load_bin needs mxnet ({ns.mxnet_missing}): tests/test_nomx.py checks the copy")
    import cv2
    import numpy as np
    import torch
    from qgface_plugin.arcface.validation import load_bin_without_mxnet
    from qgface_plugin.formats.verification_bin import write_bin
    rng = np.random.default_rng(2)
    smooth = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (0, 0), 3)
    images = [rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), smooth,
              rng.integers(0, 256, (130, 130, 3), dtype=np.uint8), cv2.resize(smooth, (150, 150))]
    bins = [cv2.imencode(ext, im)[1].tobytes() for im, ext in zip(images, (".jpg", ".png", ".jpg", ".png"))]
    write_bin(tmp_path / "s.bin", bins, [True, False])
    ours, our_issame = load_bin_without_mxnet(tmp_path / "s.bin", (112, 112))
    theirs, their_issame = ns.verification.load_bin(str(tmp_path / "s.bin"), (112, 112))
    capfd.readouterr()
    assert list(our_issame) == list(their_issame) == [True, False]
    for flip in (0, 1):
        assert ours[flip].dtype == theirs[flip].dtype and ours[flip].shape == theirs[flip].shape == (4, 3, 112, 112)
        assert torch.equal(ours[flip][:2], theirs[flip][:2]), flip
        diff = (ours[flip][2:] - theirs[flip][2:]).abs()
        assert diff.max() <= 1 and (diff > 0).float().mean() < 0.1, (flip, diff.max(), (diff > 0).float().mean())
    assert torch.equal(ours[1], ours[0].flip(3)) and not torch.equal(ours[0], ours[1])
