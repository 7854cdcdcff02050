"""Export a trained backbone to ONNX for the pip ``insightface`` package, and check the result.

* :func:`export_onnx` writes a single-file ONNX model with input ``input`` ``[N,3,112,112]`` (float32,
  RGB, already normalised to [-1, 1] exactly as in training) and one output ``embedding``: the *raw*
  backbone output, not L2-normalised, so its norm can still serve as the quality score. The batch axis is
  dynamic. The graph is checked with ``onnx.checker`` and compared with torch in ONNX Runtime.
* :func:`check_insightface` loads the file through ``insightface.model_zoo.get_model`` and checks that it
  is routed to the recognition model with mean = std = 127.5 and that ``get_feat`` on BGR uint8 crops
  matches torch on the same crops.

The model is any ``torch.nn.Module`` (an arcface_torch backbone comes from
:func:`qgface_plugin.arcface.backbone.load_backbone`). What insightface expects (its
``model_zoo/model_zoo.py`` and ``model_zoo/arcface_onnx.py``): routing is by shape only (a square input >= 112
that is a multiple of 16 and one output gives the recognition model ``ArcFaceONNX``; a dynamic H/W gives
``None``); ``get_feat`` always swaps BGR to RGB and applies ``(x - 127.5) / 127.5`` itself, so normalisation
must *not* be part of the graph (it would be applied twice).
"""
from __future__ import annotations

import time
import warnings
from pathlib import Path

import numpy as np
import torch

from .errors import QGFaceConfigError, QGFaceInputError
from .utils import atomic_write

__all__ = ["INPUT_NAME", "OUTPUT_NAME", "INPUT_SIZE", "export_onnx", "check_insightface", "insightface_preprocess"]

INPUT_NAME = "input"
OUTPUT_NAME = "embedding"
INPUT_SIZE = 112


def _ort_session(path):
    import onnxruntime as ort
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


def _parity(model, session, batch: int, seed: int):
    """(max abs difference, that difference relative to the largest torch output) at ``batch``."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(batch, 3, INPUT_SIZE, INPUT_SIZE, generator=gen) * 2 - 1
    with torch.no_grad():
        ref = model(x).float().numpy()
    out = session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0]
    if out.shape != ref.shape:
        raise QGFaceInputError(f"ONNX Runtime output shape {out.shape} != torch {ref.shape} at batch {batch}")
    diff = float(np.max(np.abs(out - ref)))
    return diff, diff / max(float(np.max(np.abs(ref))), 1e-30)


def export_onnx(model, output, opset: int = 17, batch_axis: bool = True, check: bool = True) -> dict:
    """Export ``model`` (input RGB [N,3,112,112] in [-1, 1]) to a single ONNX file ``output``.

    The file is written atomically. With ``check`` it is verified by ``onnx.checker`` and run in ONNX
    Runtime on seeded random inputs at batch 1 and 8 (8 only with ``batch_axis``) against torch.

    Returns:
        dict with ``path``, ``opset``, ``size_bytes``, ``embedding_size``, ``export_s``, ``batch_axis``,
        ``checker`` (bool or None), ``max_abs_diff_b1`` and ``max_abs_diff_b8`` and the same relative to the
        largest torch output, ``max_rel_diff_b1``/``max_rel_diff_b8`` (None when not measured; an untrained
        IResNet's outputs can be huge, so the relative figure is the one to compare across models).
    """
    output = Path(output)
    if output.suffix != ".onnx":
        raise QGFaceConfigError(f"output {output} must end in .onnx (insightface only loads *.onnx paths directly)")
    model = model.to("cpu").float().eval()
    dummy = torch.zeros(1, 3, INPUT_SIZE, INPUT_SIZE)
    with torch.no_grad():
        probe = model(dummy)
    if not isinstance(probe, torch.Tensor) or probe.dim() != 2:
        raise QGFaceInputError(f"the model must return one [N, D] tensor, got "
                               f"{type(probe).__name__}{'' if not isinstance(probe, torch.Tensor) else list(probe.shape)}")
    dynamic_axes = {INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}} if batch_axis else None

    def write(tmp):
        # The legacy TorchScript exporter (dynamo=False): it writes one self-contained file (the dynamo
        # exporter puts weights in a side .data file by default), it exports both IResNet and MobileFaceNet
        # with a truly dynamic batch (dynamo bakes batch 1 into MobileFaceNet's reshape), honours the
        # requested opset, and takes a fraction of a second instead of seconds.
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")
            torch.onnx.export(model, (dummy,), tmp, dynamo=False, opset_version=int(opset),
                              input_names=[INPUT_NAME], output_names=[OUTPUT_NAME], dynamic_axes=dynamic_axes,
                              do_constant_folding=True, keep_initializers_as_inputs=False)

    t0 = time.perf_counter()
    atomic_write(output, write)
    figures = {"path": str(output), "opset": int(opset), "size_bytes": output.stat().st_size,
               "embedding_size": int(probe.shape[1]), "export_s": round(time.perf_counter() - t0, 3),
               "batch_axis": bool(batch_axis), "checker": None, "max_abs_diff_b1": None, "max_abs_diff_b8": None,
               "max_rel_diff_b1": None, "max_rel_diff_b8": None}
    if check:
        import onnx
        try:
            onnx.checker.check_model(str(output))
        except Exception as exc:
            raise QGFaceInputError(f"onnx.checker rejected {output}: {exc}") from exc
        figures["checker"] = True
        session = _ort_session(output)
        figures["max_abs_diff_b1"], figures["max_rel_diff_b1"] = _parity(model, session, 1, seed=0)
        if batch_axis:
            figures["max_abs_diff_b8"], figures["max_rel_diff_b8"] = _parity(model, session, 8, seed=1)
    return figures


def insightface_preprocess(images) -> torch.Tensor:
    """What insightface's ``get_feat`` feeds the network: BGR uint8 HxWx3 -> RGB, (x - 127.5) / 127.5, NCHW."""
    # Not qgface_plugin.views.normalise_images: that is training's (x / 255 - 0.5) / 0.5, which differs from
    # insightface's (x - mean) / std with mean = std = 127.5 in the last float32 bit for half of the 256 values;
    # this reproduces insightface's input, to compare its get_feat with torch.
    arr = np.stack([np.asarray(img) for img in images]).astype(np.float32)
    arr = arr[..., ::-1]
    arr = (arr - 127.5) / 127.5
    return torch.from_numpy(np.ascontiguousarray(arr.transpose(0, 3, 1, 2)))


def check_insightface(onnx_path, model, n: int = 3, seed: int = 0) -> dict:
    """Load ``onnx_path`` with ``insightface.model_zoo.get_model`` and compare ``get_feat`` with ``model``.

    Returns:
        dict with ``model_class``, ``taskname``, ``input_size``, ``input_mean``, ``input_std``,
        ``feat_shape``, ``max_abs_diff`` and ``max_rel_diff`` (get_feat on ``n`` random BGR uint8
        112x112 images vs torch).

    Raises:
        QGFaceInputError: the file is missing, insightface does not route it to a recognition model, or
            picks a normalisation other than mean = std = 127.5.
    """
    path = Path(onnx_path)
    if not path.is_file() or path.suffix != ".onnx":
        raise QGFaceInputError(f"ONNX file {path} does not exist or does not end in .onnx")
    from insightface.model_zoo import get_model as zoo_get_model

    try:
        rec = zoo_get_model(str(path), providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise QGFaceInputError(f"insightface.model_zoo.get_model({path}) failed: {type(exc).__name__}: {exc}") from exc
    if rec is None:
        raise QGFaceInputError(f"insightface.model_zoo.get_model({path}) returned None: the input must be a "
                               "static square [N,3,H,W] with H >= 112 and H % 16 == 0 (no dynamic H/W)")
    taskname = getattr(rec, "taskname", None)
    if taskname != "recognition":
        raise QGFaceInputError(f"insightface routed {path} to {type(rec).__name__} (task {taskname!r}), "
                               "not a recognition model; it needs exactly one output")
    info = {"model_class": type(rec).__name__, "taskname": taskname,
            "input_size": tuple(int(v) for v in rec.input_size),
            "input_mean": float(rec.input_mean), "input_std": float(rec.input_std)}
    if info["input_size"] != (INPUT_SIZE, INPUT_SIZE):
        raise QGFaceInputError(f"insightface sees input size {info['input_size']} in {path}, expected (112, 112)")
    if info["input_mean"] != 127.5 or info["input_std"] != 127.5:
        raise QGFaceInputError(f"insightface chose mean {info['input_mean']} / std {info['input_std']} for {path} "
                               "(it thinks normalisation is in the graph); expected 127.5 / 127.5")
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, size=(INPUT_SIZE, INPUT_SIZE, 3), dtype=np.uint8) for _ in range(int(n))]
    feat = np.asarray(rec.get_feat(images))
    model = model.to("cpu").float().eval()
    with torch.no_grad():
        ref = model(insightface_preprocess(images)).float().numpy()
    if feat.shape != ref.shape:
        raise QGFaceInputError(f"insightface get_feat returned shape {feat.shape}, torch {ref.shape}")
    info["feat_shape"] = tuple(int(v) for v in feat.shape)
    info["max_abs_diff"] = float(np.max(np.abs(feat - ref)))
    info["max_rel_diff"] = info["max_abs_diff"] / max(float(np.max(np.abs(ref))), 1e-30)
    return info
