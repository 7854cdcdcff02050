"""qgface_plugin.export, qgface_plugin.arcface.backbone and tools/export_onnx.py.

The tiny-CNN tests always run (no arcface_torch needed). Tests marked ``upstream`` build a real
arcface_torch MobileFaceNet and skip unless ``ARCFACE_TORCH_ROOT`` names the upstream folder.
"""
from __future__ import annotations

import json
import os
import sys
import warnings

import numpy as np
import pytest
import torch
from torch import nn

from _proc import ROOT, run_guarded
from qgface_plugin import export
from qgface_plugin.arcface import backbone
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError

D = 64


class TinyNet(nn.Module):
    """Conv-BN-PReLU, pool, Linear -> BatchNorm1d: an arcface_torch-shaped backbone in miniature."""

    def __init__(self, dim=D):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(8), nn.PReLU(8),
                                  nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(16),
                                  nn.PReLU(16), nn.AdaptiveAvgPool2d(4))
        self.fc = nn.Linear(16 * 16, dim, bias=False)
        self.features = nn.BatchNorm1d(dim)

    def forward(self, x):
        return self.features(self.fc(torch.flatten(self.body(x), 1)))


def _tiny():
    torch.manual_seed(0)
    net = TinyNet()
    net.train()
    with torch.no_grad():  # give the BatchNorms real running statistics
        for _ in range(3):
            net(torch.rand(16, 3, 112, 112) * 2 - 1)
    return net.eval()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    net = _tiny()
    path = tmp_path_factory.mktemp("export") / "tiny.onnx"
    figures = export.export_onnx(net, path)
    return net, path, figures


def test_export_figures_and_parity(tiny):
    net, path, fig = tiny
    assert path.is_file() and fig["path"] == str(path) and fig["size_bytes"] == path.stat().st_size
    assert fig["checker"] is True and fig["opset"] == 17 and fig["embedding_size"] == D
    assert fig["max_abs_diff_b1"] < 1e-4 and fig["max_abs_diff_b8"] < 1e-4
    assert not list(path.parent.glob("*.tmp")), "temporary file left behind"
    import onnx
    graph = onnx.load(str(path)).graph
    assert [i.name for i in graph.input] == ["input"] and [o.name for o in graph.output] == ["embedding"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == [3, 112, 112]


def test_dynamic_batch_and_raw_norms(tiny):
    import onnxruntime as ort
    net, path, _ = tiny
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    x = torch.rand(5, 3, 112, 112, generator=torch.Generator().manual_seed(3)) * 2 - 1
    out = sess.run(["embedding"], {"input": x.numpy()})[0]
    with torch.no_grad():
        ref = net(x).numpy()
    assert out.shape == (5, D)
    np.testing.assert_allclose(out, ref, atol=1e-4)
    norms = np.linalg.norm(out, axis=1)
    np.testing.assert_allclose(norms, np.linalg.norm(ref, axis=1), rtol=1e-5)
    assert not np.allclose(norms, 1.0, atol=1e-2), "embedding must not be L2-normalised in the graph"


def test_insightface_routes_and_matches(tiny):
    net, path, _ = tiny
    info = export.check_insightface(path, net, n=3)
    assert info["model_class"] == "ArcFaceONNX" and info["taskname"] == "recognition"
    assert info["input_size"] == (112, 112) and info["input_mean"] == info["input_std"] == 127.5
    assert info["feat_shape"] == (3, D) and info["max_abs_diff"] < 1e-4


def test_insightface_preprocess_is_bgr_to_rgb():
    img = np.zeros((112, 112, 3), np.uint8)
    img[..., 0] = 255  # blue in BGR
    x = export.insightface_preprocess([img])
    assert x.shape == (1, 3, 112, 112)
    assert float(x[0, 2].min()) == 1.0 and float(x[0, 0].max()) == -1.0


def test_bad_paths_name_the_file(tmp_path, tiny):
    net, path, _ = tiny
    missing = tmp_path / "nope.onnx"
    with pytest.raises(QGFaceInputError, match="nope.onnx"):
        export.check_insightface(missing, net)
    with pytest.raises(QGFaceConfigError, match="model.txt"):
        export.export_onnx(net, tmp_path / "model.txt", check=False)
    with pytest.raises(QGFaceConfigError, match="absent.pt"):
        backbone.read_state_dict(tmp_path / "absent.pt")
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a torch file")
    with pytest.raises(QGFaceConfigError, match="garbage.pt"):
        backbone.read_state_dict(garbage)
    with pytest.raises(QGFaceConfigError, match="absent.pt"):
        backbone.load_backbone("mbf", tmp_path / "absent.pt")


class GlobalPoolNet(nn.Module):
    """Works at any H/W (AdaptiveAvgPool2d cannot be exported with a dynamic H/W)."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.fc = nn.Linear(8, D)

    def forward(self, x):
        return self.fc(self.conv(x).mean(dim=(2, 3)))


def test_dynamic_hw_is_not_routed(tmp_path):
    net = GlobalPoolNet().eval()
    path = tmp_path / "dyn_hw.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, (torch.zeros(1, 3, 112, 112),), str(path), dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["embedding"],
                          dynamic_axes={"input": {0: "b", 2: "h", 3: "w"}, "embedding": {0: "b"}})
    with pytest.raises(QGFaceInputError, match="returned None"):
        export.check_insightface(path, net)


def test_state_dict_forms(tmp_path):
    state = _tiny().state_dict()
    torch.save({f"module.{k}": v for k, v in state.items()}, tmp_path / "ddp.pt")
    torch.save({"epoch": 1, "global_step": 10, "state_dict_backbone": state}, tmp_path / "checkpoint_gpu_0.pt")
    for name in ("ddp.pt", "checkpoint_gpu_0.pt"):
        got = backbone.read_state_dict(tmp_path / name)
        assert set(got) == set(state)
        assert backbone.infer_embedding_size(got) == D


def _tool(*args):
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    return run_guarded([sys.executable, ROOT / "tools" / "export_onnx.py", *args], timeout=180, env=env)


@pytest.fixture(scope="module")
def mbf_model_pt(tmp_path_factory, arcface_root):
    from qgface_plugin.arcface import upstream
    ns = upstream.load(arcface_root)
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        net = backbone.build_backbone(ns, "mbf", 128)
    path = tmp_path_factory.mktemp("mbf") / "model.pt"
    torch.save(net.state_dict(), path)
    return path


@pytest.mark.upstream
def test_load_backbone_mbf(mbf_model_pt):
    model = backbone.load_backbone("mbf", mbf_model_pt)
    assert not model.training
    with torch.no_grad():
        assert model(torch.zeros(2, 3, 112, 112)).shape == (2, 128)


@pytest.mark.upstream
def test_tool_round_trip_mbf(mbf_model_pt, tmp_path, arcface_root):
    out = tmp_path / "mbf.onnx"
    res = _tool("--network", "mbf", "--model", mbf_model_pt, "--output", out, "--arcface-root", arcface_root)
    assert res.returncode == 0, res.stdout[-3000:]
    assert "onnx.checker: OK" in res.stdout
    fig = json.loads(res.stdout.strip().splitlines()[-1])
    assert fig["embedding_size"] == 128 and fig["network"] == "mbf" and out.is_file()
    assert fig["max_rel_diff_b1"] < 1e-4 and fig["max_rel_diff_b8"] < 1e-4
    assert fig["insightface"]["taskname"] == "recognition" and fig["insightface"]["max_rel_diff"] < 1e-4


@pytest.mark.upstream
def test_tool_wrong_network(mbf_model_pt, tmp_path, arcface_root):
    out = tmp_path / "wrong.onnx"
    res = _tool("--network", "r18", "--model", mbf_model_pt, "--output", out, "--arcface-root", arcface_root)
    assert res.returncode == 2, res.stdout[-3000:]
    assert "Network mismatch" in res.stdout and "--network mbf" in res.stdout
    assert not out.exists()
