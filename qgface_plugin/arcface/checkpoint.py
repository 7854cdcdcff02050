"""The training loop's files on disk: per-rank full-state checkpoints, their RNG state, and ``model.pt``.

``<output>/checkpoint_gpu_<rank>.pt`` (:func:`save_checkpoint`, every rank, with ``save_all_states``)
holds everything a step depends on — backbone, Partial FC shard, optimizer, LR scheduler, GradScaler,
the QGFace loss's queue and quality statistics, and every RNG — so :func:`load_checkpoint` resumes
with the same next-step loss. Its tensors and primitives load with ``weights_only=True``.
``<output>/model.pt`` (:func:`save_model`, rank 0) is the backbone alone in arcface_torch's key
layout, for upstream's tools and the ONNX export. Every file is written atomically and flushed to
disk (:func:`qgface_plugin.utils.atomic_write`): a crash leaves the previous file intact.
"""
from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import torch

from ..errors import QGFaceConfigError, QGFaceInputError
from ..utils import atomic_write
from .factory import load_qgface_state_dict, qgface_state_dict

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_PARTS", "checkpoint_path", "save_checkpoint", "load_checkpoint",
           "save_model", "rng_state", "set_rng_state"]

CHECKPOINT_FORMAT = "qgface_plugin/checkpoint-v1"
CHECKPOINT_PARTS = ("state_dict_backbone", "state_dict_softmax_fc", "state_optimizer", "state_lr_scheduler",
                    "state_scaler", "state_qgface", "rng")


def rng_state() -> dict:
    """Every RNG a step draws from, as tensors and primitives (loadable with weights_only=True)."""
    name, keys, pos, has_gauss, cached = np.random.get_state()
    state = {"torch": torch.get_rng_state(), "python": random.getstate(),
             "numpy": (name, torch.from_numpy(keys.astype(np.int64)), int(pos), int(has_gauss), float(cached))}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state()
    return state


def set_rng_state(state: dict) -> None:
    """Restore :func:`rng_state`."""
    torch.set_rng_state(state["torch"].cpu())
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, keys.cpu().numpy().astype(np.uint32), pos, has_gauss, cached))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(state["cuda"].cpu())


def _save(obj, path: Path) -> None:
    atomic_write(path, lambda tmp: torch.save(obj, tmp), fsync=True)


def checkpoint_path(output: str | Path, rank: int) -> Path:
    """``<output>/checkpoint_gpu_<rank>.pt`` (arcface_torch's name)."""
    return Path(output) / f"checkpoint_gpu_{rank}.pt"


def save_model(backbone, output: str | Path) -> Path:
    """``<output>/model.pt``: the (DDP-wrapped) backbone's weights in arcface_torch's key layout."""
    path = Path(output) / "model.pt"
    _save(backbone.module.state_dict(), path)
    return path


def save_checkpoint(cfg, rank, world, epoch, step, backbone, pfc, criterion, opt, sched, scaler) -> None:
    """This rank's full state after ``epoch`` epochs (``step`` steps) to :func:`checkpoint_path`."""
    state = {
        "format": CHECKPOINT_FORMAT, "parts": list(CHECKPOINT_PARTS), "world_size": world, "rank": rank,
        "embedding_size": cfg.embedding_size, "num_classes": cfg.num_classes, "network": cfg.network,
        "loss": cfg.loss, "epoch": epoch, "global_step": step,
        "state_dict_backbone": backbone.module.state_dict(), "state_dict_softmax_fc": pfc.state_dict(),
        "state_optimizer": opt.state_dict(), "state_lr_scheduler": sched.state_dict(),
        "state_scaler": scaler.state_dict(),
        "state_qgface": qgface_state_dict(criterion) if criterion is not None else {},
        "rng": rng_state(),
    }
    _save(state, checkpoint_path(cfg.output, rank))


def load_checkpoint(cfg, rank, world, device, backbone, pfc, criterion, opt, sched, scaler):
    """Restore :func:`save_checkpoint`'s state into the run's parts; returns ``(epoch, global_step)``.

    Raises:
        QGFaceInputError: no checkpoint, another format, or a part missing.
        QGFaceConfigError: the checkpoint was written with another world size, embedding size, number
            of classes, network or loss.
    """
    path = checkpoint_path(cfg.output, rank)
    if not path.is_file():
        raise QGFaceInputError(f"config.resume is set but {path} does not exist (save_all_states writes it)")
    state = torch.load(path, map_location=device, weights_only=True)
    if state.get("format") != CHECKPOINT_FORMAT:
        raise QGFaceInputError(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format {state.get('format')!r})")
    for key, now in (("world_size", world), ("embedding_size", cfg.embedding_size),
                     ("num_classes", cfg.num_classes), ("network", cfg.network), ("loss", cfg.loss)):
        if state[key] != now:
            hint = (" Partial FC shards the class centres per rank, so resuming needs the same number of "
                    "processes; to change it, start a new run from model.pt." if key == "world_size" else "")
            raise QGFaceConfigError(f"{path} was written with {key}={state[key]!r} but this run has {now!r}.{hint}")
    missing = [p for p in CHECKPOINT_PARTS if p not in state]
    if missing:
        raise QGFaceInputError(f"{path} lacks {missing}")
    backbone.module.load_state_dict(state["state_dict_backbone"])
    pfc.load_state_dict(state["state_dict_softmax_fc"])
    opt.load_state_dict(state["state_optimizer"])
    sched.load_state_dict(state["state_lr_scheduler"])
    scaler.load_state_dict(state["state_scaler"])
    if criterion is not None:
        load_qgface_state_dict(criterion, state["state_qgface"])
    set_rng_state(state["rng"])
    return state["epoch"], state["global_step"]
