"""Embed aligned 112x112 RGB faces with a torch backbone or an ONNX model, with optional flip fusion.

Pre-processing is exactly arcface_torch's: RGB, ``(x / 255 - 0.5) / 0.5``, NCHW float32.

Flip fusion (``flip=``):

* ``"sum"``: ``f(x) + f(flip(x))`` on the raw (unnormalised) features -- upstream
  ``eval/verification.py`` ("Accuracy-Flip") and ``eval_ijbc.py`` (F1).
* ``"norm_weighted"``: ``sum_v (f_v / |f_v|) * |f_v|`` -- AdaFace's ``pre_norm_vector_add``. For a
  backbone whose output *is* the raw feature this is mathematically identical to ``"sum"`` (the unit
  vector times its norm is the vector); it is computed literally here and agrees with ``"sum"`` up to
  float rounding (checked in the tests). It is offered so that reports can name the AdaFace mode.
* ``"none"``: ``f(x)`` only.

The returned ``norms`` are always ``|f(x)|`` of the non-flipped raw feature: the feature-norm
quality score used by QGFace / AdaFace / MagFace.
"""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["FLIP_MODES", "FeatureExtractor", "preprocess", "load_model", "load_images", "embed_files"]

FLIP_MODES = ("sum", "norm_weighted", "none")


def preprocess(images_rgb_uint8) -> np.ndarray:
    """[N,H,W,3] uint8 RGB -> [N,3,H,W] float32 in [-1, 1], as arcface_torch does."""
    x = np.asarray(images_rgb_uint8, dtype=np.float32)
    x = (x / 255.0 - 0.5) / 0.5
    return np.ascontiguousarray(x.transpose(0, 3, 1, 2))


class FeatureExtractor:
    """Embed face crops with a torch module or an ONNX file.

    Args:
        model: a ``torch.nn.Module`` returning raw embeddings ``[B, D]`` (put in eval mode here), or the
            path of an ``.onnx`` file (run with onnxruntime's CPU provider; the input name is read from
            the session; a fixed batch dimension is respected by padding the last batch).
        device: torch device for a torch model (ignored for ONNX).
        batch_size: images per forward pass (each pass runs the flipped copies separately).
        fp16: torch autocast (float16 on CUDA, bfloat16 on CPU); features are returned as float32.
            Ignored for ONNX.
        flip: one of :data:`FLIP_MODES` (see the module docstring).
    """

    def __init__(self, model, device="cpu", batch_size=64, fp16=False, flip="sum"):
        if flip not in FLIP_MODES:
            raise QGFaceInputError(f"FeatureExtractor: flip={flip!r}; use one of {', '.join(FLIP_MODES)}")
        if int(batch_size) < 1:
            raise QGFaceInputError(f"FeatureExtractor: batch_size={batch_size!r} must be >= 1")
        self.flip = flip
        self.batch_size = int(batch_size)
        self.fp16 = bool(fp16)
        self.session = None
        self.model = None
        if isinstance(model, (str, Path)):
            path = Path(model)
            if not path.is_file():
                raise QGFaceInputError(f"{path}: ONNX model file not found")
            import onnxruntime as ort
            try:
                self.session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
            except Exception as e:  # onnxruntime raises its own exception types
                raise QGFaceInputError(f"{path}: cannot be loaded as an ONNX model ({e})") from e
            inp = self.session.get_inputs()[0]
            self.input_name = inp.name
            dim0 = inp.shape[0] if inp.shape else None
            self.fixed_batch = dim0 if isinstance(dim0, int) and dim0 > 0 else None
            self.source = str(path)
        else:
            import torch
            self.device = torch.device(device)
            self.model = model.to(self.device).eval()
            self.source = type(model).__name__

    # ----------------------------------------------------------------------------------------- forward
    def _forward_onnx(self, x: np.ndarray) -> np.ndarray:
        if self.fixed_batch is None:
            return np.asarray(self.session.run(None, {self.input_name: x})[0], dtype=np.float32)
        outs = []
        b = self.fixed_batch
        for i in range(0, len(x), b):
            chunk = x[i:i + b]
            n = len(chunk)
            if n < b:
                chunk = np.concatenate([chunk, np.zeros((b - n,) + chunk.shape[1:], chunk.dtype)])
            outs.append(np.asarray(self.session.run(None, {self.input_name: chunk})[0][:n], dtype=np.float32))
        return np.concatenate(outs)

    def _forward_torch(self, x: np.ndarray) -> np.ndarray:
        import torch
        t = torch.from_numpy(x).to(self.device)
        with torch.inference_mode():
            if self.fp16:
                dtype = torch.float16 if self.device.type == "cuda" else torch.bfloat16
                with torch.autocast(device_type=self.device.type, dtype=dtype):
                    out = self.model(t)
            else:
                out = self.model(t)
        return out.float().cpu().numpy()

    def embed(self, x_nchw: np.ndarray) -> np.ndarray:
        """Raw embeddings of pre-processed NCHW float32 input (one pass, no flip)."""
        f = self._forward_onnx(x_nchw) if self.session is not None else self._forward_torch(x_nchw)
        if f.ndim != 2 or len(f) != len(x_nchw):
            raise QGFaceInputError(f"{self.source}: model output has shape {f.shape}, expected [{len(x_nchw)}, D]")
        return f

    def __call__(self, images_rgb_uint8, progress=False) -> dict:
        """Embed ``[N,112,112,3]`` uint8 RGB images.

        Returns:
            ``{"features": [N, D] float32 fused raw features, "norms": [N] float32 |f(x)| of the
            non-flipped raw feature}``.
        """
        images = np.asarray(images_rgb_uint8)
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise QGFaceInputError(f"FeatureExtractor: images must be [N,H,W,3] uint8 RGB, got shape "
                                   f"{images.shape} dtype {images.dtype}")
        feats, norms = [], []
        n = len(images)
        for i in range(0, n, self.batch_size):
            x = preprocess(images[i:i + self.batch_size])
            f = self.embed(x)
            norm = np.linalg.norm(f, axis=1)
            if self.flip != "none":
                g = self.embed(np.ascontiguousarray(x[:, :, :, ::-1]))
                if self.flip == "sum":
                    f = f + g
                else:  # norm_weighted: sum of unit vectors weighted by their norms (== sum mathematically)
                    gn = np.linalg.norm(g, axis=1)
                    f = (f / np.maximum(norm, 1e-12)[:, None]) * norm[:, None] \
                        + (g / np.maximum(gn, 1e-12)[:, None]) * gn[:, None]
            feats.append(f.astype(np.float32))
            norms.append(norm.astype(np.float32))
            if progress:
                print(f"\rembedded {min(i + self.batch_size, n)}/{n}", end="", file=sys.stderr, flush=True)
        if progress:
            print(file=sys.stderr)
        if not feats:
            return {"features": np.zeros((0, 0), np.float32), "norms": np.zeros((0,), np.float32)}
        return {"features": np.concatenate(feats), "norms": np.concatenate(norms)}


def load_model(model_path, network=None, root=None):
    """What a :class:`FeatureExtractor` takes, from an evaluator's ``--model``/``--network`` flags.

    Returns ``(model, info)``: an ``.onnx`` path as it is, or the backbone of a ``.pt`` (``model.pt``
    or a training checkpoint) built with arcface_torch's ``get_model`` (:func:`qgface_plugin.export.load_backbone`).
    """
    from pathlib import Path

    from ..errors import QGFaceConfigError, QGFaceInputError
    model_path = Path(model_path)
    if not model_path.is_file():
        raise QGFaceInputError(f"{model_path}: model file not found")
    if model_path.suffix.lower() == ".onnx":
        return str(model_path), {"kind": "onnx"}
    if not network:
        raise QGFaceConfigError("--network is required for a .pt model (e.g. --network r50)")
    from ..export import infer_embedding_size, load_backbone
    net = load_backbone(network, model_path, root=root)
    return net, {"kind": "torch", "network": network, "embedding_size": infer_embedding_size(net.state_dict())}


def load_images(paths, size=112) -> np.ndarray:
    """Read images with OpenCV, BGR -> RGB, resized to ``size`` x ``size`` if needed: ``[N,size,size,3]`` uint8."""
    import cv2
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        img = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if img is None:
            raise QGFaceInputError(f"{path}: cannot be read as an image")
        if img.shape[:2] != (size, size):
            img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        out[i] = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
    return out


def embed_files(extractor, paths, load_batch=1024, progress=False, what="images"):
    """Fused features and norms of image files, read ``load_batch`` at a time: ``([N, D], [N])``."""
    feats, norms = [], []
    for i in range(0, len(paths), load_batch):
        r = extractor(load_images(paths[i:i + load_batch]))
        feats.append(r["features"])
        norms.append(r["norms"])
        if progress:
            print(f"\r{what}: {min(i + load_batch, len(paths))}/{len(paths)}", end="", file=sys.stderr, flush=True)
    if progress:
        print(file=sys.stderr)
    return np.concatenate(feats), np.concatenate(norms)
