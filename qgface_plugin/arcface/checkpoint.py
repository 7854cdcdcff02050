"""The training loop's files on disk: one rank's full-state checkpoint, its RNG state, and ``model.pt``.

A checkpoint (:func:`save_checkpoint`, every rank) holds everything the next step depends on — backbone,
Partial FC shard, optimizer, LR scheduler, GradScaler, the QGFace loss's queue and quality statistics,
every RNG, the position in the data (epoch and batches taken in it; the order is a function of the seed),
the skipped-step counters and the logged history — plus what it must fit: the world size, the step and
the run's config (:func:`run_config`, with its hash). Epoch ends go to ``checkpoint_gpu_<rank>.pt``
(arcface_torch's name), step checkpoints (``config.save_every_steps``) to
``checkpoint_step<step>_gpu_<rank>.pt``; :mod:`.resume` chooses among them. Tensors and primitives
only: they load with ``weights_only=True``. ``<output>/model.pt`` (:func:`save_model`, rank 0) is the
backbone alone in arcface_torch's key layout, for upstream's tools and the ONNX export. Every file is
written atomically and flushed to disk (:func:`qgface_plugin.utils.atomic_write`): a crash during a
write leaves the previous file intact.
"""
from __future__ import annotations

import hashlib
import json
import random
import re
from pathlib import Path

import numpy as np
import torch

from ..errors import QGFaceConfigError, QGFaceInputError
from ..utils import atomic_write
from .factory import load_qgface_state_dict, qgface_state_dict

__all__ = ["CHECKPOINT_FORMAT", "CHECKPOINT_PARTS", "RESUME_FREE_KEYS", "CheckpointUnreadable", "checkpoint_path",
           "step_checkpoint_path", "step_of", "run_config", "config_hash", "save_checkpoint", "read_checkpoint",
           "check_fits", "restore", "save_model", "rng_state", "set_rng_state"]

CHECKPOINT_FORMAT = "qgface_plugin/checkpoint-v2"
_FORMATS = (CHECKPOINT_FORMAT, "qgface_plugin/checkpoint-v1")  # v1: epoch ends only, no config or position
CHECKPOINT_PARTS = ("state_dict_backbone", "state_dict_softmax_fc", "state_optimizer", "state_lr_scheduler",
                    "state_scaler", "state_qgface", "rng")

#: config keys that do not change what the next step computes: a resumed run may differ in them.
RESUME_FREE_KEYS = frozenset({
    "output", "resume", "resume_check_config", "save_all_states", "save_every_steps", "keep_checkpoints",
    "stop_after_epoch", "stop_after_steps", "frequent", "verbose", "val_targets", "num_workers", "record_reader",
    "rec", "config_name", "config_path", "max_nonfinite_steps", "using_wandb", "wandb_key", "wandb_entity",
    "wandb_project", "wandb_log_all", "save_artifacts", "wandb_resume", "notes", "suffix_run_name"})

_STEP_NAME = re.compile(r"^checkpoint_step(\d+)_gpu_(\d+)\.pt$")


class CheckpointUnreadable(QGFaceInputError):
    """A checkpoint file that cannot be used: truncated, corrupt, another format, or a part missing."""


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
    """The epoch-end checkpoint ``<output>/checkpoint_gpu_<rank>.pt`` (arcface_torch's name)."""
    return Path(output) / f"checkpoint_gpu_{rank}.pt"


def step_checkpoint_path(output: str | Path, rank: int, step: int) -> Path:
    """The step checkpoint ``<output>/checkpoint_step<step, 8 digits>_gpu_<rank>.pt``."""
    return Path(output) / f"checkpoint_step{step:08d}_gpu_{rank}.pt"


def step_of(path: str | Path, rank: int) -> int | None:
    """The step in a step checkpoint's name of this rank, else None."""
    match = _STEP_NAME.match(Path(path).name)
    return int(match.group(1)) if match and int(match.group(2)) == rank else None


def run_config(cfg) -> dict:
    """The config keys that decide the training trajectory (all but :data:`RESUME_FREE_KEYS`), JSON-ready."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in sorted(cfg.items()) if k not in RESUME_FREE_KEYS}


def config_hash(config: dict) -> str:
    """sha256 (16 hex digits) of :func:`run_config`'s canonical JSON."""
    return hashlib.sha256(json.dumps(config, sort_keys=True, default=str).encode()).hexdigest()[:16]


def save_model(backbone, output: str | Path) -> Path:
    """``<output>/model.pt``: the (DDP-wrapped) backbone's weights in arcface_torch's key layout."""
    path = Path(output) / "model.pt"
    _save(backbone.module.state_dict(), path)
    return path


def save_checkpoint(path, cfg, rank, world, position, parts, extra=None) -> Path:
    """This rank's full state to ``path``.

    Args:
        position: ``(epoch, batch, step)``: the 0-based epoch, the batches already taken in it (0 at an epoch's
            start: an epoch end is ``(epoch + 1, 0, step)``) and the steps taken in all.
        parts: ``(backbone, pfc, criterion, opt, sched, scaler)``.
        extra: more JSON-like state (the loop's counters and history).
    """
    backbone, pfc, criterion, opt, sched, scaler = parts
    epoch, batch, step = position
    config = run_config(cfg)
    state = {
        "format": CHECKPOINT_FORMAT, "parts": list(CHECKPOINT_PARTS), "world_size": world, "rank": rank,
        "embedding_size": cfg.embedding_size, "num_classes": cfg.num_classes, "network": cfg.network,
        "loss": cfg.loss, "epoch": epoch, "batch_in_epoch": batch, "global_step": step, "data_seed": cfg.seed,
        "config": json.dumps(config, sort_keys=True, default=str), "config_hash": config_hash(config),
        "state_dict_backbone": backbone.module.state_dict(), "state_dict_softmax_fc": pfc.state_dict(),
        "state_optimizer": opt.state_dict(), "state_lr_scheduler": sched.state_dict(),
        "state_scaler": scaler.state_dict(),
        "state_qgface": qgface_state_dict(criterion) if criterion is not None else {},
        "rng": rng_state(), "extra": extra or {},
    }
    _save(state, Path(path))
    return Path(path)


def read_checkpoint(path, device="cpu", mmap: bool = False) -> dict:
    """Load a checkpoint file and check its format and parts (``mmap=True``: cheaply, for the header).

    Raises:
        CheckpointUnreadable: the file is missing, truncated or corrupt, of another format, or lacks a part.
    """
    path = Path(path)
    try:
        state = torch.load(path, map_location=device, weights_only=True, mmap=mmap)
    except FileNotFoundError:
        raise CheckpointUnreadable(f"{path} does not exist") from None
    except Exception as exc:  # zip reader / unpickler errors on a truncated or overwritten file
        raise CheckpointUnreadable(f"{path} is truncated or corrupt ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:160]})") from exc
    if not isinstance(state, dict) or state.get("format") not in _FORMATS:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointUnreadable(f"{path} is not a {CHECKPOINT_FORMAT} checkpoint (format {found!r})")
    missing = [p for p in CHECKPOINT_PARTS if p not in state]
    if missing:
        raise CheckpointUnreadable(f"{path} lacks {missing}")
    return state


def check_fits(state: dict, path, cfg, world: int, steps_per_epoch: int, total_step: int) -> list[str]:
    """Refuse a checkpoint that this run cannot continue; returns the config keys that differ and are
    accepted anyway (``config.resume_check_config = False``).

    Raises:
        QGFaceConfigError: another world size, embedding size, number of classes, network or loss; a step
            outside this run; or (unless ``resume_check_config`` is off) another run config, naming the keys.
    """
    for key, now in (("world_size", world), ("embedding_size", cfg.embedding_size),
                     ("num_classes", cfg.num_classes), ("network", cfg.network), ("loss", cfg.loss)):
        if state[key] != now:
            hint = (" Partial FC shards the class centres per rank, so resuming needs the same number of "
                    "processes; to change it, start a new run from model.pt." if key == "world_size" else "")
            raise QGFaceConfigError(f"{path} was written with {key}={state[key]!r} but this run has {now!r}.{hint}")
    step, epoch, batch = state["global_step"], state["epoch"], state.get("batch_in_epoch", 0)
    if not 0 <= step <= total_step or batch > steps_per_epoch:
        raise QGFaceConfigError(f"{path} is at step {step} (epoch {epoch}, batch {batch}), outside this run's "
                                f"{total_step} steps of {steps_per_epoch} per epoch")
    if "config" not in state:  # v1: no config recorded
        return []
    saved, now = json.loads(state["config"]), json.loads(json.dumps(run_config(cfg), sort_keys=True, default=str))
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k, "<unset>") != now.get(k, "<unset>"))
    if differ and cfg.get("resume_check_config", True):
        shown = "; ".join(f"{k}: {saved.get(k, '<unset>')!r} -> {now.get(k, '<unset>')!r}" for k in differ[:8])
        raise QGFaceConfigError(
            f"{path} was written by a run with another config ({shown}{' ...' if len(differ) > 8 else ''}). "
            "Resume with the same config, or set resume_check_config=False to continue with the new values.")
    return differ


def restore(state: dict, parts) -> tuple[int, int, int]:
    """Load a checkpoint's state into ``(backbone, pfc, criterion, opt, sched, scaler)`` and the RNGs;
    returns its position ``(epoch, batch, step)``."""
    backbone, pfc, criterion, opt, sched, scaler = parts
    backbone.module.load_state_dict(state["state_dict_backbone"])
    pfc.load_state_dict(state["state_dict_softmax_fc"])
    opt.load_state_dict(state["state_optimizer"])
    sched.load_state_dict(state["state_lr_scheduler"])
    scaler.load_state_dict(state["state_scaler"])
    if criterion is not None:
        load_qgface_state_dict(criterion, state["state_qgface"])
    set_rng_state(state["rng"])
    return state["epoch"], state.get("batch_in_epoch", 0), state["global_step"]
