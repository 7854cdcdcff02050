"""Verification during training: ``config.val_targets``' ``.bin`` sets through arcface_torch's protocol.

Rank 0 loads the sets once (:func:`load_verification_sets`, upstream's ``verification.load_bin``) and,
every ``config.verbose`` steps and at the end, scores the backbone with upstream's 10-fold, flip-fused
``verification.test`` (:func:`run_verification`); :func:`verify_and_log` prints and logs the accuracies.
The evaluation tools use this package's own re-statement of the protocol (:mod:`qgface_plugin.eval`).

Where mxnet cannot be imported (``ns.mxnet_missing``), upstream's ``load_bin`` cannot decode (it calls
``mx.image.imdecode``): :func:`load_bin_without_mxnet` gives the same tensors through OpenCV, and upstream's
``verification.test`` (numpy, scikit-learn) scores them as before.
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import cv2
import numpy as np
import torch

from ..errors import QGFaceConfigError, QGFaceInputError
from ..formats.verification_bin import read_bin

__all__ = ["load_bin_without_mxnet", "load_verification_sets", "run_verification", "verify_and_log"]


class _OnDevice(torch.nn.Module):
    """Feeds upstream verification's CPU float64 batches to a model on any device."""

    def __init__(self, model, device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x):
        return self.model(x.to(self.device, torch.float32))


def _resize_short(rgb, size: int):
    """mxnet's ``mx.image.resize_short(img, size)``: the shorter side to ``size``, the other scaled by integer
    division, bicubic (its default ``interp=2``, OpenCV's ``INTER_CUBIC``)."""
    h, w = rgb.shape[:2]
    new_h, new_w = (size * h // w, size) if h > w else (size, size * w // h)
    return cv2.resize(rgb, (new_w, new_h), interpolation=cv2.INTER_CUBIC)


def load_bin_without_mxnet(path, image_size=(112, 112)):
    """Upstream's ``eval/verification.py::load_bin`` without mxnet: ``([images, flipped images], issame)``,
    each a float32 tensor ``[2P, 3, H, W]`` of RGB values in 0..255 (``flipped``: mirrored left-right), decoded
    with OpenCV (mxnet's ``imdecode`` is OpenCV's: the same pixels), an image whose width is not ``image_size[0]``
    resized as ``mx.image.resize_short`` does (bicubic; a few pixels come out one grey level apart from
    mxnet's own OpenCV build -- the published sets are 112 px and need no resize).

    Raises:
        QGFaceInputError: naming the file -- not a verification ``.bin`` (see
            :func:`~qgface_plugin.formats.verification_bin.read_bin`), or an image (index given) that cannot be
            decoded or does not come out ``image_size``.
    """
    bins, issame = read_bin(path)
    data = [torch.empty((len(bins), 3, image_size[0], image_size[1])) for _ in range(2)]
    for i, b in enumerate(bins):
        buf = np.frombuffer(b.tobytes() if isinstance(b, np.ndarray) else bytes(b), np.uint8)
        bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        if bgr is None:
            raise QGFaceInputError(f"{path}: image {i} (pair {i // 2}) cannot be decoded")
        rgb = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
        if rgb.shape[1] != image_size[0]:
            rgb = _resize_short(rgb, image_size[0])
        if rgb.shape[:2] != tuple(image_size):
            raise QGFaceInputError(f"{path}: image {i} (pair {i // 2}) is {rgb.shape[1]}x{rgb.shape[0]} after "
                                   f"resizing, not {image_size[1]}x{image_size[0]}: the set's faces must be square")
        chw = torch.from_numpy(np.ascontiguousarray(rgb.transpose(2, 0, 1)))
        data[0][i] = chw
        data[1][i] = chw.flip(2)
    return data, issame


def load_verification_sets(cfg, ns) -> dict:
    """``{name: upstream's loaded set}`` for each ``config.val_targets`` name (``<rec>/<name>.bin``);
    :func:`load_bin_without_mxnet` where mxnet cannot be imported (``ns.mxnet_missing``).

    Raises:
        QGFaceConfigError: ``rec = "synthetic"`` with verification targets.
        QGFaceInputError: a ``.bin`` file that does not exist or that upstream's ``load_bin`` cannot read (the
            file named, and what is wrong with it).
    """
    sets = {}
    if cfg.rec == "synthetic" and cfg.val_targets:
        raise QGFaceConfigError("config.rec = 'synthetic' has no verification sets: set val_targets = []")
    for name in cfg.val_targets:
        path = Path(cfg.rec) / f"{name}.bin"
        if not path.is_file():
            raise QGFaceInputError(f"verification set {path} (config.val_targets) does not exist")
        if getattr(ns, "mxnet_missing", None):
            sets[name] = load_bin_without_mxnet(path, (112, 112))
            continue
        try:
            with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # its per-flip shape lines
                sets[name] = ns.verification.load_bin(str(path), (112, 112))
        except Exception as exc:  # upstream says neither the file nor why (UnpicklingError, MXNetError, ...)
            read_bin(path)  # names the file and what is wrong with the pickle, if that is it
            raise QGFaceInputError(f"verification set {path} (config.val_targets): arcface_torch's load_bin failed: "
                                   f"{type(exc).__name__}: {str(exc).strip()[:300]}") from exc
    return sets


def run_verification(sets, ns, backbone, device, batch_size=64) -> dict:
    """10-fold accuracy (flip-fused) per set; returns {name: {accuracy, std, xnorm}}."""
    results = {}
    model = backbone.module
    was_training = model.training
    model.eval()
    # upstream's test prints its own lines: hidden, the caller prints one line per set
    with torch.no_grad(), open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):
        for name, data in sets.items():
            batch = min(batch_size, data[0][0].shape[0])  # upstream's last batch reaches back batch_size rows
            _, _, acc, std, xnorm, _ = ns.verification.test(data, _OnDevice(model, device), batch, 10)
            results[name] = {"accuracy": float(acc), "std": float(std), "xnorm": float(xnorm)}
    model.train(was_training)
    return results


def verify_and_log(val_sets, ns, backbone, device, writer, step) -> dict:
    """:func:`run_verification`, one printed line per set, and ``val/<name>`` tensorboard scalars."""
    results = run_verification(val_sets, ns, backbone, device)
    for name, r in results.items():
        print(f"  verification {name}: accuracy {100 * r['accuracy']:.2f}% ± {100 * r['std']:.2f} "
              f"(xnorm {r['xnorm']:.2f}) at step {step}", flush=True)
        writer.add_scalar(f"val/{name}", r["accuracy"], step)
    return results
