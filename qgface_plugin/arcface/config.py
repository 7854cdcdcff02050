"""arcface_torch-format configs: load (by name or path), merge onto the documented base, validate.

A config is a Python file defining ``config = edict(...)`` with a few keys; it is merged onto
``recognition_configs/base.py`` (every key, documented). Unlike arcface_torch's ``get_config``,
loading never mutates a cached object (two loads in one process are independent), accepts any
path, and validates: unknown ``qgface_*`` keys (with the closest valid name), bad values and
missing required keys raise :class:`~qgface_plugin.errors.QGFaceConfigError` before training.
"""
from __future__ import annotations

import copy
import difflib
import runpy
import warnings
from pathlib import Path
from typing import Iterable

from easydict import EasyDict as edict

from ..errors import QGFaceConfigError

__all__ = ["load_config", "validate_config", "base_config", "derive", "config_dir", "available_configs", "parse_overrides",
           "LOSSES", "VIEW_MODES", "REQUIRED_KEYS"]

LOSSES = ("qgface", "arcface", "cosface")
VIEW_MODES = ("flip", "mixed")  # config.view_mode: the single-view losses' one view
REQUIRED_KEYS = ("rec", "num_classes", "num_image", "num_epoch")


def config_dir() -> Path:
    """The folder of the shipped configs (``recognition_configs``)."""
    import recognition_configs
    return Path(recognition_configs.__file__).resolve().parent


def available_configs() -> list[str]:
    """Names of the shipped job configs."""
    return sorted(p.stem for p in config_dir().glob("*.py") if p.stem not in ("__init__", "base"))


def _read(path: Path) -> edict:
    try:
        namespace = runpy.run_path(str(path))
    except Exception as exc:  # a syntax error or a failing import inside the config file
        raise QGFaceConfigError(f"cannot load config {path}: {type(exc).__name__}: {exc}") from exc
    if "config" not in namespace or not isinstance(namespace["config"], dict):
        raise QGFaceConfigError(f"config {path} must define `config = edict(...)`")
    return edict(copy.deepcopy(dict(namespace["config"])))


def base_config() -> edict:
    """``recognition_configs/base.py``'s config: every key with its default (a fresh copy)."""
    return _read(config_dir() / "base.py")


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A config file from a path, or a shipped config's name (``"qgface_demo_cpu"``)."""
    path = Path(name_or_path)
    if path.is_file():
        return path.resolve()
    shipped = config_dir() / (path.stem + ".py")
    if path.suffix in ("", ".py") and len(path.parts) <= 2 and shipped.is_file():
        return shipped
    raise QGFaceConfigError(
        f"config {str(name_or_path)!r} not found: give a path to a config file or one of the shipped "
        f"configs: {', '.join(available_configs())}")


def derive(name_or_path: str | Path, **changes) -> edict:
    """A job config's own keys (without the base) with ``changes`` applied, for twin configs::

        config = derive("arcface_ms1mv2_r100", loss="qgface", qgface_queue_size=65536)

    so a QGFace config and its baseline twin cannot drift apart in anything but what they change.
    """
    cfg = _read(resolve_config_path(name_or_path))
    cfg.update(changes)
    return cfg


def load_config(name_or_path: str | Path, overrides: dict | None = None, validate: bool = True) -> edict:
    """Base config merged with a job config (and optional overrides), as a new object.

    ``output`` defaults to ``work_dirs/<config name>``; ``config_name`` and ``config_path`` record
    where it came from.
    """
    path = resolve_config_path(name_or_path)
    cfg = base_config()
    job = _read(path)
    cfg.update(job)
    if overrides:
        cfg.update(overrides)
    cfg.config_name, cfg.config_path = path.stem, str(path)
    if cfg.output is None:
        cfg.output = str(Path("work_dirs") / path.stem)
    if validate:
        validate_config(cfg)
    return cfg


def _closest(key: str, names: Iterable[str]) -> str:
    match = difflib.get_close_matches(key, list(names), n=1)
    return f"; did you mean {match[0]!r}?" if match else ""


def validate_config(cfg: dict, known: set[str] | None = None, own_loop: bool = True) -> dict:
    """Check keys and values that can be checked without building anything; returns ``cfg``.

    Args:
        known: valid keys (default: the base config's, plus ``config_name``/``config_path``).
        own_loop: also apply the limits of this package's training loop (``gradient_acc`` = 1, no
            wandb); False for upstream's own ``train_v2.py`` (patched), which supports both.
    """
    known = known if known is not None else set(base_config()) | {"config_name", "config_path"}
    for key in cfg:
        if key not in known:
            if key.startswith("qgface_"):
                raise QGFaceConfigError(f"unknown config key {key!r}{_closest(key, known)}")
            warnings.warn(f"config key {key!r} is not used by qgface_plugin{_closest(key, known)}", stacklevel=2)
    missing = [k for k in REQUIRED_KEYS if cfg.get(k) is None]
    if missing:
        raise QGFaceConfigError(f"config {cfg.get('config_path', '')} must set {', '.join(missing)}")
    if cfg["loss"] not in LOSSES:
        raise QGFaceConfigError(f"config.loss must be one of {LOSSES}, got {cfg['loss']!r}")
    for key in ("num_classes", "num_image", "batch_size", "num_epoch", "embedding_size"):
        if isinstance(cfg[key], bool) or not isinstance(cfg[key], int) or cfg[key] <= 0:
            raise QGFaceConfigError(f"config.{key} must be a positive integer, got {cfg[key]!r}")
    if cfg.get("warmup_epoch", 0) < 0 or cfg["warmup_epoch"] > cfg["num_epoch"]:
        raise QGFaceConfigError(
            f"config.warmup_epoch must be in [0, num_epoch={cfg['num_epoch']}], got {cfg['warmup_epoch']}")
    if cfg.get("lr_schedule", "polynomial") not in ("polynomial", "step"):
        raise QGFaceConfigError(f"config.lr_schedule must be 'polynomial' or 'step', got {cfg['lr_schedule']!r}")
    if cfg.get("lr_schedule") == "step" and any(not 0 < e <= cfg["num_epoch"] for e in cfg.get("lr_steps", [])):
        raise QGFaceConfigError(f"config.lr_steps must be epochs in (0, num_epoch], got {cfg['lr_steps']}")
    _check_run_control(cfg)
    if cfg.get("record_reader", "auto") not in ("auto", "mxnet", "python"):
        raise QGFaceConfigError(f"config.record_reader must be 'auto', 'mxnet' or 'python', got {cfg['record_reader']!r}")
    if cfg.get("view_mode", "flip") not in VIEW_MODES:
        raise QGFaceConfigError(f"config.view_mode must be one of {VIEW_MODES}, got {cfg['view_mode']!r}")
    lq_p = cfg.get("view_lq_p", 0.5)
    if isinstance(lq_p, bool) or not isinstance(lq_p, (int, float)) or not 0.0 <= lq_p <= 1.0:
        raise QGFaceConfigError(f"config.view_lq_p must be a probability in [0, 1], got {lq_p!r}")
    if not own_loop and cfg.get("view_mode") == "mixed" and cfg["loss"] != "qgface":
        raise QGFaceConfigError("config.view_mode='mixed' needs this package's training loop (tools/train.py); "
                                "upstream's train_v2.py only flips")
    if cfg["optimizer"] not in ("sgd", "adamw"):
        raise QGFaceConfigError(f"config.optimizer must be 'sgd' or 'adamw', got {cfg['optimizer']!r}")
    if not 0.0 <= float(cfg["sample_rate"]) <= 1.0:
        raise QGFaceConfigError(f"config.sample_rate must be in [0, 1], got {cfg['sample_rate']}")
    if own_loop and cfg.get("gradient_acc", 1) != 1:
        raise QGFaceConfigError(f"config.gradient_acc={cfg['gradient_acc']} is not supported; use 1")
    if cfg.get("dali"):
        raise QGFaceConfigError("config.dali=True is not supported: DALI has no hook for QGFace's two views")
    if own_loop and cfg.get("using_wandb"):
        warnings.warn("config.using_wandb is ignored: qgface_plugin logs to tensorboardX", stacklevel=2)
    if cfg["num_image"] < cfg["batch_size"]:  # per rank; the loop checks the ranks' total when it knows them
        raise QGFaceConfigError(f"config.num_image={cfg['num_image']} is smaller than batch_size={cfg['batch_size']}: "
                                "no full batch per epoch")
    return cfg


def _check_run_control(cfg: dict) -> None:
    """resume, save_every_steps, keep_checkpoints, stop_after_steps."""
    if cfg.get("resume", False) not in (False, True, "auto"):
        raise QGFaceConfigError(f"config.resume must be False, True or 'auto', got {cfg['resume']!r}")
    for key, low, none_ok in (("save_every_steps", 0, False), ("keep_checkpoints", 1, False),
                              ("stop_after_steps", 1, True), ("stop_after_epoch", 1, True)):
        value = cfg.get(key)
        if value is None and (none_ok or key not in cfg):
            continue
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise QGFaceConfigError(f"config.{key} must be an integer >= {low}{' or None' if none_ok else ''}, "
                                    f"got {value!r}")


def parse_overrides(items: Iterable[str]) -> dict:
    """``["lr=0.05", "qgface_threshold=0.3", "val_targets=['lfw']"]`` → dict (values as Python literals)."""
    import ast
    out = {}
    for item in items:
        if "=" not in item:
            raise QGFaceConfigError(f"override {item!r} must look like key=value")
        key, value = item.split("=", 1)
        try:
            out[key.strip()] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key.strip()] = value  # a bare string such as rec=/data/ms1m
    return out
