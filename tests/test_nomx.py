"""The no-mxnet profile (requirements-nomx.txt, numpy 2; ``make test-nomx``): arcface_torch loads, training on a
record set reads it with the mxnet-free reader, and the verification sets load without mxnet.

Every test here runs only where ``import mxnet`` fails (they skip, with the reason, in the default profile,
where tests/test_arcface_upstream.py runs the same load with mxnet blocked); the ``upstream`` ones also need
``ARCFACE_TORCH_ROOT``.
"""
from __future__ import annotations

import json
import math
import os
import sys

import cv2
import numpy as np
import pytest
import torch

from _proc import ROOT, run_guarded
from qgface_plugin.arcface import upstream
from qgface_plugin.formats.verification_bin import write_bin

try:
    from qgface_plugin.utils import import_mxnet
    import_mxnet()
    MXNET_MISSING = None
except Exception as exc:  # not installed, or an mxnet that fails to load
    MXNET_MISSING = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
pytestmark = pytest.mark.skipif(
    MXNET_MISSING is None, reason="mxnet imports here: these tests are for the no-mxnet profile "
                                  "(requirements-nomx.txt, make test-nomx)")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """A tiny header0 record set with its verification .bin sets (written without mxnet)."""
    from qgface_plugin.synthetic import make_dataset
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, num_identities=8, images_per_identity=6, num_val_identities=4, val_pairs=40, seed=3)
    return root


def test_the_profile_has_numpy_2():
    assert int(np.__version__.split(".")[0]) >= 2, np.__version__


@pytest.mark.upstream
def test_load_checks_the_whole_api_and_defers_mxnet(ns, tmp_path):
    assert ns.mxnet_missing is not None and MXNET_MISSING in ns.mxnet_missing
    assert upstream.check_api(ns.root) == []
    for name in ("MXFaceDataset", "SyntheticDataset", "get_dataloader", "verification"):
        assert getattr(ns, name) is not None, name
    with pytest.raises(ImportError):  # the stand-in was only there while upstream's modules were imported
        import mxnet  # noqa: F401
    assert len(ns.SyntheticDataset()) == 1_000_000  # what needs no mxnet works
    with pytest.raises(upstream.UpstreamDependencyError, match="record_reader = 'python'") as info:
        ns.MXFaceDataset(root_dir=str(tmp_path), local_rank=0)
    assert "mxnet.recordio.MXIndexedRecordIO" in str(info.value) and ns.mxnet_missing in str(info.value)


def _pairs_bin(path, pairs=20):
    """PNG pairs (lossless): even pairs the same image twice (issame), odd pairs two different images; one
    image (of a different pair) 120 px wide, resized as upstream's load_bin does."""
    rng = np.random.default_rng(1)
    rgbs, issame = [], []
    for p in range(pairs):
        a = rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        b = a if p % 2 == 0 else rng.integers(0, 256, (112, 112, 3), dtype=np.uint8)
        rgbs += [a, b]
        issame.append(p % 2 == 0)
    rgbs[3] = rng.integers(0, 256, (120, 120, 3), dtype=np.uint8)
    write_bin(path, [cv2.imencode(".png", im[:, :, ::-1])[1].tobytes() for im in rgbs], issame)
    return rgbs, issame


@pytest.mark.upstream
def test_verification_sets_load_and_score_without_mxnet(ns, tmp_path):
    from easydict import EasyDict as edict
    from qgface_plugin.arcface.validation import load_verification_sets, run_verification
    rgbs, issame = _pairs_bin(tmp_path / "pairs.bin")
    (images, flipped), got_issame = load_verification_sets(edict(rec=str(tmp_path), val_targets=["pairs"]),
                                                           ns)["pairs"]
    assert got_issame == issame and images.dtype == torch.float32 and images.shape == (40, 3, 112, 112)
    for i in (0, 1, 39):
        expected = torch.from_numpy(rgbs[i].transpose(2, 0, 1).astype(np.float32))
        assert torch.equal(images[i], expected) and torch.equal(flipped[i], expected.flip(2))
    small = torch.from_numpy(cv2.resize(rgbs[3], (112, 112), interpolation=cv2.INTER_CUBIC).transpose(2, 0, 1))
    assert torch.equal(images[3], small.float())
    # upstream's 10-fold test on them: identical pairs at distance 0, random pairs far apart -> accuracy 1
    backbone = _Wrapped(torch.nn.Sequential(torch.nn.AdaptiveAvgPool2d(4), torch.nn.Flatten()))
    result = run_verification({"pairs": ((images, flipped), got_issame)}, ns, backbone, torch.device("cpu"),
                              batch_size=16)
    assert result["pairs"]["accuracy"] == 1.0 and result["pairs"]["std"] == 0.0


class _Wrapped(torch.nn.Module):
    """A DDP-like wrapper: ``run_verification`` scores ``backbone.module``."""

    def __init__(self, module):
        super().__init__()
        self.module = module


def _config(tmp_path, data, **extra):
    """The demo config scaled down to the tiny data set (as tests/test_training.py), one epoch."""
    body = {"embedding_size": 64, "rec": str(data), "num_classes": 8, "num_image": 48, "batch_size": 4,
            "num_epoch": 1, "num_workers": 0, "frequent": 1, "val_targets": ["synthetic_val_hq"],
            "qgface_queue_size": 64, "output": str(tmp_path / "out"), **extra}
    path = tmp_path / "cfg.py"
    path.write_text("from qgface_plugin.arcface.config import derive\n"
                    f"config = derive('qgface_demo_cpu', **{body!r})\n")
    return path


def _train(cfg, timeout=400):
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "2")}
    return run_guarded([sys.executable, ROOT / "tools" / "train.py", cfg], timeout, env=env)


@pytest.mark.upstream
def test_train_py_trains_on_a_record_set_without_mxnet(tmp_path, data, arcface_root):
    r = _train(_config(tmp_path, data))  # record_reader = "auto": the mxnet-free reader here
    assert r.returncode == 0, r.stdout[-3000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["steps"] == 12 and len(summary["history"]) == 12  # 48 images / batch 4, one epoch
    assert all(math.isfinite(h["loss"]) for h in summary["history"]), summary["history"]
    assert 0 <= summary["verification"]["synthetic_val_hq"]["accuracy"] <= 1
    assert (tmp_path / "out" / "model.pt").is_file()


@pytest.mark.upstream
def test_asking_for_mxnets_reader_without_mxnet_is_a_clear_error(tmp_path, data, arcface_root):
    r = _train(_config(tmp_path, data, record_reader="mxnet"), timeout=200)
    assert r.returncode == 2, r.stdout[-3000:]
    assert "record_reader = 'python'" in r.stdout and "Traceback" not in r.stdout, r.stdout[-3000:]
