"""The arms of a study: what each one trains, as a config.

An arm is a config: a **shipped arm** (a name of :data:`ARMS`: the profile's base config with a few keys
changed), or a **config spec** ``CONFIG[+key=value...]`` (a shipped config's name or a config file, with
overrides as ``tools/train.py`` takes them, e.g. ``qgface_demo_cpu+qgface_lambda=0+qgface_threshold=0``),
optionally named ``NAME:SPEC``. ``--arms`` takes a list (commas outside brackets, or spaces) and the shipped
sets of :data:`ARM_SETS` (``paper``).

Whatever the arm, the study sets the data, the budget and the seed (:func:`study_config`), so every arm sees
the same record set for the same number of steps. Single-view arms (``loss`` ArcFace / CosFace) forward one
row per image, QGFace two (H and L), so with ``match_rows`` (the default) a single-view arm gets twice the
batch and twice the epochs: the same ``2B`` forwarded rows per step for the same number of steps (and so the
same LR schedule). Its one view is, with ``view_mode = "mixed"``, the L view with probability ``view_lq_p``
(0.5: the share of L rows QGFace forwards) else the H view -- QGFace's degradation distribution -- or, with
``"flip"``, the flipped H view only (the standard baseline); :func:`views_of` says which.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from ..arcface.config import load_config, parse_overrides, resolve_config_path
from ..errors import QGFaceConfigError

__all__ = ["Arm", "ARMS", "ARM_SETS", "IN_BATCH", "split_list", "parse_arms", "study_config", "views_of"]

IN_BATCH = "in-batch"  # qgface_queue_size placeholder: K = 2 B x world (the queue holds the current batch only)

#: name -> (overrides of the profile's base config, description)
ARMS = {
    "qgface": ({}, "QGFace: two views (H + L), HQ rows classified (AdaFace margin), LQ rows contrasted"),
    "adaface": ({"qgface_lambda": 0.0, "qgface_threshold": 0.0},
                "AdaFace only: the same loop and two views, lambda = 0, b = 0 (no partition: all 2B rows classified)"),
    "arcface": ({"loss": "arcface", "view_mode": "mixed", "view_lq_p": 0.5},
                "ArcFace, fair: one view per image, L with p = 0.5 else H; 2B images per step"),
    "arcface_flip": ({"loss": "arcface", "view_mode": "flip"},
                     "ArcFace, standard: one flipped H view per image (no degradation); 2B images per step"),
    "qgface_noproxy": ({"qgface_proxy_correction": False}, "QGFace without the queue's proxy correction"),
    "qgface_inbatch": ({"qgface_queue_size": IN_BATCH}, "QGFace with an in-batch-only queue (K = 2B x world)"),
    "qgface_b0.1": ({"qgface_threshold": 0.1}, "QGFace, b = 0.1"),
    "qgface_b0.2": ({"qgface_threshold": 0.2}, "QGFace, b = 0.2 (the authors')"),
    "qgface_b0.3": ({"qgface_threshold": 0.3}, "QGFace, b = 0.3"),
}

ARM_SETS = {
    "paper": ["qgface", "adaface", "arcface", "arcface_flip", "qgface_noproxy", "qgface_inbatch",
              "qgface_b0.1", "qgface_b0.2", "qgface_b0.3"],
}

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._=+-]*$")


@dataclass
class Arm:
    """One arm: ``name`` (its folder and label), ``config`` (None: the profile's base; else a config name or
    path), ``overrides`` and ``description``."""
    name: str
    config: str | None
    overrides: dict = field(default_factory=dict)
    description: str = ""
    spec: str = ""


def split_list(items) -> list[str]:
    """``["a,b", "c+margin_list=(1.0,0.5,0.0)"]`` -> ``["a", "b", "c+margin_list=(1.0,0.5,0.0)"]``: splits at
    commas outside brackets and quotes."""
    out = []
    for text in [items] if isinstance(items, str) else items:
        depth, quote, cur = 0, None, ""
        for ch in text:
            if quote:
                quote = None if ch == quote else quote
            elif ch in "'\"":
                quote = ch
            elif ch in "([{":
                depth += 1
            elif ch in ")]}":
                depth -= 1
            elif ch == "," and depth == 0:
                out.append(cur.strip())
                cur = ""
                continue
            cur += ch
        out.append(cur.strip())
    return [s for s in out if s]


def _folder_name(spec: str) -> str:
    return re.sub(r"[^A-Za-z0-9._=+-]+", "_", spec).strip("_") or "arm"


def parse_arms(items) -> list[Arm]:
    """Arms from ``--arms`` (see the module docstring); raises :class:`QGFaceConfigError` for an unknown name,
    a bad override or two arms of one name."""
    arms = []
    for item in split_list(items):
        if item in ARM_SETS:
            arms += [Arm(n, None, dict(ARMS[n][0]), ARMS[n][1], n) for n in ARM_SETS[item]]
            continue
        if item in ARMS:
            arms.append(Arm(item, None, dict(ARMS[item][0]), ARMS[item][1], item))
            continue
        name, sep, spec = item.partition(":")
        if not sep or "+" in name or "=" in name or "/" in name:
            name, spec = None, item
        config, *pairs = spec.split("+")
        if not config:
            raise QGFaceConfigError(f"arm {item!r}: no config before '+'")
        resolve_config_path(config)  # a missing config is bad input now, not after the data is made
        overrides = parse_overrides(pairs)
        if name is not None and not _NAME.match(name):
            raise QGFaceConfigError(f"arm name {name!r}: use letters, digits and . _ = + -")
        arms.append(Arm(name or _folder_name(spec), config, overrides, f"config {spec}", item))
    if not arms:
        raise QGFaceConfigError("no arm given")
    names = [a.name for a in arms]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise QGFaceConfigError(f"arms named twice: {', '.join(dup)} (name them NAME:SPEC)")
    return arms


def study_config(arm: Arm, base: str, base_overrides: dict, study: dict, match_rows: bool = True, world: int = 1):
    """The arm's config for one run: ``arm.config`` (or ``base`` with ``base_overrides`` for a shipped arm) with
    the arm's overrides, then the study's keys ``study`` (data, budget, seed, output: the same for every arm);
    for a single-view arm with ``match_rows``, batch and epochs (warm-up included) doubled. Validated."""
    merged = {} if arm.config is not None else dict(base_overrides)
    merged.update(arm.overrides)
    merged.update(study)
    cfg = load_config(arm.config or base, merged)
    if cfg.loss != "qgface" and match_rows:
        cfg.batch_size, cfg.num_epoch, cfg.warmup_epoch = 2 * cfg.batch_size, 2 * cfg.num_epoch, 2 * cfg.warmup_epoch
    if cfg.qgface_queue_size == IN_BATCH:
        cfg.qgface_queue_size = 2 * cfg.batch_size * world
    return cfg


def views_of(cfg) -> str:
    """What the arm's loop forwards, in words (for the report)."""
    rows = f"{cfg.batch_size * (2 if cfg.loss == 'qgface' else 1)} rows/step"
    if cfg.loss == "qgface":
        return f"two views, H + L ({cfg.batch_size} images, {rows})"
    if cfg.get("view_mode", "flip") == "mixed":
        return f"one view, L with p = {cfg.view_lq_p:g} else H ({cfg.batch_size} images, {rows})"
    return f"one view, flipped H only ({cfg.batch_size} images, {rows})"
