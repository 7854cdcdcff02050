"""Verification during training: ``config.val_targets``' ``.bin`` sets through arcface_torch's protocol.

Rank 0 loads the sets once (:func:`load_verification_sets`, upstream's ``verification.load_bin``) and,
every ``config.verbose`` steps and at the end, scores the backbone with upstream's 10-fold, flip-fused
``verification.test`` (:func:`run_verification`); :func:`verify_and_log` prints and logs the accuracies.
The evaluation tools use this package's own re-statement of the protocol (:mod:`qgface_plugin.eval`).
"""
from __future__ import annotations

import contextlib
import os
from pathlib import Path

import torch

from ..errors import QGFaceConfigError, QGFaceInputError

__all__ = ["load_verification_sets", "run_verification", "verify_and_log"]


class _OnDevice(torch.nn.Module):
    """Feeds upstream verification's CPU float64 batches to a model on any device."""

    def __init__(self, model, device):
        super().__init__()
        self.model, self.device = model, device

    def forward(self, x):
        return self.model(x.to(self.device, torch.float32))


def load_verification_sets(cfg, ns) -> dict:
    """``{name: upstream's loaded set}`` for each ``config.val_targets`` name (``<rec>/<name>.bin``).

    Raises:
        QGFaceConfigError: ``rec = "synthetic"`` with verification targets.
        QGFaceInputError: a ``.bin`` file that does not exist.
    """
    sets = {}
    if cfg.rec == "synthetic" and cfg.val_targets:
        raise QGFaceConfigError("config.rec = 'synthetic' has no verification sets: set val_targets = []")
    for name in cfg.val_targets:
        path = Path(cfg.rec) / f"{name}.bin"
        if not path.is_file():
            raise QGFaceInputError(f"verification set {path} (config.val_targets) does not exist")
        with open(os.devnull, "w") as devnull, contextlib.redirect_stdout(devnull):  # its per-flip shape lines
            sets[name] = ns.verification.load_bin(str(path), (112, 112))
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
