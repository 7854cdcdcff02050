"""Embed aligned 112x112 RGB faces with a torch backbone or an ONNX model, with optional flip fusion.

Pre-processing is exactly arcface_torch's: RGB, ``(x / 255 - 0.5) / 0.5``, NCHW float32 -- the training
views' own normalisation (:mod:`qgface_plugin.views`), so evaluation sees the values training saw.

Flip fusion (``flip=``):

* ``"sum"``: ``f(x) + f(flip(x))`` on the raw (unnormalised) features -- upstream
  ``eval/verification.py`` ("Accuracy-Flip") and ``eval_ijbc.py`` (F1).
* ``"norm_weighted"``: ``sum_v (f_v / |f_v|) * |f_v|`` -- AdaFace's ``pre_norm_vector_add``. For a
  backbone whose output *is* the raw feature this is mathematically identical to ``"sum"`` (the unit
  vector times its norm is the vector); it is computed literally here and agrees with ``"sum"`` up to
  float rounding (checked in the tests). It is offered so that reports can name the AdaFace mode.
* ``"none"``: ``f(x)`` only.

The returned ``norms`` are always ``|f(x)|`` of the non-flipped raw feature: the feature-norm
quality score used by QGFace / AdaFace / MagFace. :func:`l2_normalise` is the evaluators' one row
normalisation (cosine scores, template features).
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["FLIP_MODES", "FeatureExtractor", "preprocess", "l2_normalise", "load_model", "read_image", "load_images",
           "embed_items", "embed_files", "default_workers"]

FLIP_MODES = ("sum", "norm_weighted", "none")


def preprocess(images_rgb_uint8) -> np.ndarray:
    """[N,H,W,3] uint8 RGB -> C-contiguous [N,3,H,W] float32 in [-1, 1], as arcface_torch does: the
    normalisation of the training views (:mod:`qgface_plugin.views`), bitwise."""
    from ..views import normalise_array
    return normalise_array(np.asarray(images_rgb_uint8, dtype=np.uint8))


def l2_normalise(x, dtype=None) -> np.ndarray:
    """Each row of ``x`` ``[N, D]`` divided by its L2 norm, in ``dtype`` (default: ``x``'s own). A row whose
    norm is below 1e-12 is divided by 1e-12, so zero rows stay zero."""
    x = np.asarray(x, dtype=dtype)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


class FeatureExtractor:
    """Embed face crops with a torch module or an ONNX file.

    Args:
        model: a ``torch.nn.Module`` returning raw embeddings ``[B, D]`` (put in eval mode here), or the
            path of an ``.onnx`` file (run with onnxruntime, see ``device``; the input name is read from
            the session; a fixed batch dimension is respected by padding the last batch).
        device: torch device for a torch model; for ONNX, ``cuda*`` runs on onnxruntime's CUDA provider when
            the installed onnxruntime has it (``onnxruntime-gpu``), else on the CPU provider.
        batch_size: images per forward pass (each pass runs the flipped copies separately).
        fp16: torch autocast (float16 on CUDA, bfloat16 on CPU); features are returned as float32.
        channels_last: run a torch model in the channels-last memory format (the module is converted in
            place): 1.2-1.3x the images/s of NCHW for r50/mbf on CPU, features equal to float rounding
            (relative 1e-6). Ignored for ONNX.
        flip: one of :data:`FLIP_MODES` (see the module docstring).
    """

    def __init__(self, model, device="cpu", batch_size=64, fp16=False, flip="sum", channels_last=True):
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
                self.session = ort.InferenceSession(str(path), providers=onnx_providers(device))
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
            self.memory_format = torch.channels_last if channels_last else torch.contiguous_format
            self.model.to(memory_format=self.memory_format)
            self.source = type(model).__name__

    def cache_key(self) -> dict:
        """What determines the features (for :class:`~qgface_plugin.eval.cache.FeatureCache`): a SHA-1 of
        the weights (ONNX file bytes, or every tensor of the torch state dict), the flip mode and fp16."""
        import hashlib
        h = hashlib.sha1()
        if self.session is not None:
            with open(self.source, "rb") as f:
                for block in iter(lambda: f.read(1 << 22), b""):
                    h.update(block)
            kind = "onnx"
        else:
            import torch
            for name, t in self.model.state_dict().items():
                t = t.detach().cpu().contiguous()
                h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
                h.update(t.view(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
            kind = "torch"
        return {"model_sha1": h.hexdigest(), "kind": kind, "flip": self.flip,
                "fp16": self.fp16 and self.session is None, "preprocess": "rgb,(x/255-0.5)/0.5"}

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
        t = torch.from_numpy(x).to(self.device).contiguous(memory_format=self.memory_format)
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
        bar = _progress_bar(n, "embedded", progress)
        for i in range(0, n, self.batch_size):
            x = preprocess(images[i:i + self.batch_size])
            f = self.embed(x)
            norm = np.linalg.norm(f, axis=1)
            if self.flip != "none":
                g = self.embed(np.ascontiguousarray(x[:, :, :, ::-1]))
                if self.flip == "sum":
                    f = f + g
                else:  # norm_weighted: sum of unit vectors weighted by their norms (== sum mathematically)
                    f = l2_normalise(f) * norm[:, None] + l2_normalise(g) * np.linalg.norm(g, axis=1)[:, None]
            feats.append(f.astype(np.float32))
            norms.append(norm.astype(np.float32))
            bar.update(len(f))
        bar.close()
        if not feats:
            return {"features": np.zeros((0, 0), np.float32), "norms": np.zeros((0,), np.float32)}
        return {"features": np.concatenate(feats), "norms": np.concatenate(norms)}


def load_model(model_path, network=None, root=None):
    """What a :class:`FeatureExtractor` takes, from an evaluator's ``--model``/``--network`` flags.

    Returns ``(model, info)``: an ``.onnx`` path as it is, or the backbone of a ``.pt`` (``model.pt``
    or a training checkpoint) built with arcface_torch's ``get_model`` (:func:`qgface_plugin.arcface.backbone.load_backbone`).
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
    from ..arcface.backbone import infer_embedding_size, load_backbone
    net = load_backbone(network, model_path, root=root)
    return net, {"kind": "torch", "network": network, "embedding_size": infer_embedding_size(net.state_dict())}


def onnx_providers(device="cpu") -> list:
    """onnxruntime providers for ``device``: CUDA first when asked for and available, CPU always."""
    import onnxruntime as ort
    if str(device).startswith("cuda") and "CUDAExecutionProvider" in ort.get_available_providers():
        index = str(device).partition(":")[2] or "0"
        return [("CUDAExecutionProvider", {"device_id": int(index)}), "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


def read_image(path, size=112) -> np.ndarray:
    """One image file with OpenCV, BGR -> RGB, resized to ``size`` x ``size`` if needed: ``[size,size,3]`` uint8."""
    import cv2
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise QGFaceInputError(f"{path}: cannot be read as an image (missing, unreadable or not an image)")
    if img.shape[:2] != (size, size):
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
    return cv2.cvtColor(img, cv2.COLOR_BGR2RGB)


def load_images(paths, size=112) -> np.ndarray:
    """Read images with :func:`read_image`: ``[N,size,size,3]`` uint8 RGB."""
    out = np.empty((len(paths), size, size, 3), dtype=np.uint8)
    for i, path in enumerate(paths):
        out[i] = read_image(path, size)
    return out


def default_workers() -> int:
    """Decoding threads: all cores up to 8 (OpenCV releases the GIL while decoding and warping)."""
    return max(1, min(8, os.cpu_count() or 1))


def embed_items(extractor, n, load, load_batch=1024, progress=False, what="images", workers=None, cache=None):
    """Fused features and norms of ``n`` items: ``([n, D] float32, [n] float32)``.

    Args:
        extractor: a :class:`FeatureExtractor` (anything callable like one).
        n: number of items.
        load: ``load(i) -> [112,112,3] uint8 RGB`` for item ``i`` (decoding, alignment, ...); called from
            ``workers`` threads, so it must be thread-safe (OpenCV/numpy code is).
        load_batch: items decoded and embedded per chunk; the next chunk is decoded while the current one
            is embedded. Also the cache's shard size.
        workers: decoding threads (default :func:`default_workers`; 0 = decode in this thread).
        cache: a :class:`~qgface_plugin.eval.cache.FeatureCache` (or ``None``): chunks already on disk are
            read back instead of recomputed, new ones are written as they finish, so an interrupted run
            resumes where it stopped.
        progress: a progress bar (tqdm, on stderr) labelled ``what``.
    """
    from concurrent.futures import ThreadPoolExecutor

    n = int(n)
    load_batch = max(1, int(load_batch))
    workers = default_workers() if workers is None else max(0, int(workers))
    if cache is not None:
        cache.check_layout(n, load_batch)
    starts = list(range(0, n, load_batch))
    feats, norms = [None] * len(starts), [None] * len(starts)
    bar = _progress_bar(n, what, progress)
    if cache is not None:
        for k in range(len(starts)):
            hit = cache.get(k)
            if hit is not None:
                feats[k], norms[k] = hit
                bar.update(len(hit[1]))
    missing = [k for k in range(len(starts)) if feats[k] is None]
    pool = ThreadPoolExecutor(workers) if workers > 0 and missing else None

    def submit(k):
        idx = range(starts[k], min(starts[k] + load_batch, n))
        return [load(i) for i in idx] if pool is None else [pool.submit(load, i) for i in idx]

    def collect(pending):
        return np.stack([p if pool is None else p.result() for p in pending])

    try:
        pending = submit(missing[0]) if missing else None
        for j, k in enumerate(missing):
            images = collect(pending)
            # decode the next chunk in the pool while this one is embedded
            pending = submit(missing[j + 1]) if j + 1 < len(missing) else None
            r = extractor(images)
            feats[k], norms[k] = r["features"], r["norms"]
            if cache is not None:
                cache.put(k, feats[k], norms[k])
            bar.update(len(images))
    finally:
        bar.close()
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
    if not feats:
        return np.zeros((0, 0), np.float32), np.zeros((0,), np.float32)
    return np.concatenate(feats), np.concatenate(norms)


def embed_files(extractor, paths, load_batch=1024, progress=False, what="images", workers=None, cache_dir=None,
                cache_name=None):
    """Fused features and norms of image files (:func:`read_image`): ``([N, D], [N])``; see :func:`embed_items`.

    With ``cache_dir``, features are cached under ``<cache_dir>/<cache_name>-<key>/`` (key: the model, the
    flip mode and the files' paths, sizes and modification times).
    """
    paths = list(paths)
    cache = None
    if cache_dir is not None:
        from .cache import files_digest, make_cache
        cache = make_cache(cache_dir, cache_name or what, extractor, files_digest(paths))
    return embed_items(extractor, len(paths), lambda i: read_image(paths[i]), load_batch=load_batch,
                       progress=progress, what=what, workers=workers, cache=cache)


def _progress_bar(total, what, enabled):
    """A tqdm bar on stderr (a do-nothing one when disabled)."""
    from tqdm import tqdm
    return tqdm(total=total, desc=what, unit="img", disable=not enabled, file=sys.stderr, dynamic_ncols=True,
                mininterval=1.0)
