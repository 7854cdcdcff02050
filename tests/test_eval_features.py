"""qgface_plugin.eval.features: onnxruntime provider choice and the extractor's cache key."""
import onnxruntime as ort

from _models import TinyCNN, export_tiny_onnx
from qgface_plugin.eval.features import FeatureExtractor, onnx_providers


def test_onnx_providers(monkeypatch):
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert onnx_providers("cuda") == ["CPUExecutionProvider"]
    monkeypatch.setattr(ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert onnx_providers("cpu") == ["CPUExecutionProvider"]
    assert onnx_providers("cuda:1") == [("CUDAExecutionProvider", {"device_id": 1}), "CPUExecutionProvider"]
    assert onnx_providers("cuda")[0] == ("CUDAExecutionProvider", {"device_id": 0})


def test_cache_key_follows_weights_flip_and_fp16(tmp_path):
    a, b = TinyCNN(), TinyCNN()  # seeded: same weights
    key = FeatureExtractor(a).cache_key()
    assert key == FeatureExtractor(b).cache_key()
    assert key != FeatureExtractor(a, flip="none").cache_key()
    assert key != FeatureExtractor(a, fp16=True).cache_key()
    with __import__("torch").no_grad():
        b.fc.bias[0] += 1e-6
    assert key["model_sha1"] != FeatureExtractor(b).cache_key()["model_sha1"]
    p1 = export_tiny_onnx(tmp_path / "a.onnx", TinyCNN())
    p2 = export_tiny_onnx(tmp_path / "b.onnx", TinyCNN())
    k1, k2 = FeatureExtractor(str(p1)).cache_key(), FeatureExtractor(str(p2)).cache_key()
    assert k1["kind"] == "onnx" and k1["fp16"] is False
    assert k1 == k2  # same bytes
