"""A study's data: the synthetic mixed-quality record set, its three pair sets, and the norm's probe set.

* The record set and two pair sets are :func:`qgface_plugin.synthetic.make_dataset`'s (``tools/make_synthetic_data.py``):
  ``synthetic_val_hq.bin`` (HQ–HQ pairs) and ``synthetic_val_lq.bin`` (LQ–HQ: the first image degraded), of
  held-out identities. A folder that already holds the set made with the same arguments is reused.
* The **LQ–LQ** set, ``study_val_lqlq.bin``, is built here: the HQ–HQ pairs with **both** images degraded by the
  synthetic set's own :func:`~qgface_plugin.synthetic.degrade.degrade_quality`, at a severity ``sqrt(U(0, 1))``
  as in the training set, each image from its own keyed stream ``(seed, STREAM_STUDY_LQLQ, image index)``, so the
  file is the same for the same seed.
* The **probe set** of the quality indicator: the first ``n`` (clean) images of the HQ–HQ set and a degraded copy
  of each (keyed stream ``(seed, STREAM_STUDY_PROBE, index)``, same severity law). Not stored: rebuilt, the same,
  when asked.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from ..eval.verification import load_bin
from ..formats.verification_bin import read_bin
from ..synthetic import make_dataset
from ..synthetic.degrade import degrade_quality
from ..synthetic.streams import keyed_rng
from ..synthetic.training_set import write_verification_bin
from ..utils import atomic_write

__all__ = ["PAIR_TYPES", "PAIR_FILES", "STREAM_STUDY_LQLQ", "STREAM_STUDY_PROBE", "prepare_data", "make_lqlq_bin",
           "probe_set"]

#: the study's pair types, in report order, and their files in the data folder
PAIR_TYPES = ("HQ–HQ", "HQ–LQ", "LQ–LQ")
PAIR_FILES = {"HQ–HQ": "synthetic_val_hq.bin", "HQ–LQ": "synthetic_val_lq.bin", "LQ–LQ": "study_val_lqlq.bin"}
# keyed-stream purposes of the study's own sets (after the synthetic data's 1..53, see qgface_plugin.synthetic.streams)
STREAM_STUDY_LQLQ, STREAM_STUDY_PROBE = 61, 62


def _severity(rng) -> float:
    return float(math.sqrt(rng.uniform(0.0, 1.0)))  # the training set's law: skewed to the hard end


def _degraded(images, seed, stream):
    return np.stack([degrade_quality(img, keyed_rng(seed, stream, i), _severity(keyed_rng(seed, stream, i, 1)))
                     for i, img in enumerate(images)])


def make_lqlq_bin(hq_bin, path, seed=0) -> Path:
    """Write the LQ–LQ set: ``hq_bin``'s pairs with both images degraded (see the module docstring)."""
    images, issame = load_bin(hq_bin, workers=0)
    degraded = _degraded(images, seed, STREAM_STUDY_LQLQ)
    return atomic_write(path, lambda tmp: write_verification_bin(tmp, list(degraded), issame))


def probe_set(hq_bin, n, seed=0):
    """``(clean [n, 112, 112, 3], degraded [n, ...])`` uint8 RGB: the first ``n`` images of ``hq_bin`` and a
    degraded copy of each."""
    images, _ = load_bin(hq_bin, workers=0)
    if n < 1 or n > len(images):
        raise QGFaceInputError(f"probe set: {n} probes asked, {hq_bin} has {len(images)} images")
    clean = images[:n]
    return clean, _degraded(clean, seed, STREAM_STUDY_PROBE)


def prepare_data(folder, dataset: dict, seed=0, workers=0, log=print, replace=False) -> dict:
    """The record set in ``folder`` (made with ``make_dataset(folder, **dataset, seed=seed)`` unless its
    ``dataset.json`` says it was made with those arguments) and the LQ–LQ set. Returns ``{"rec", "num_classes",
    "num_image", "pairs": {pair type: path}, "dataset": the summary}``.

    A record set already in ``folder`` that was made otherwise is replaced only with ``replace=True`` (the study's
    own ``<output>/data``); else (a folder the user named) :class:`QGFaceInputError` says why and nothing is
    written: a record set without the generator's ``dataset.json`` (the user's own data) or a synthetic set
    made with other arguments (each named)."""
    folder = Path(folder)
    summary_path = folder / "dataset.json"
    want = dict(dataset, seed=seed)
    keys = {"num_identities": "num_classes", "images_per_identity": "images_per_identity", "lq_fraction": "lq_fraction",
            "num_val_identities": "num_val_identities", "val_pairs": "val_pairs", "seed": "seed"}
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    fresh = not (summary is not None and all(summary.get(v) == want[k] for k, v in keys.items() if k in want))
    existing = [name for name in ("train.rec", "train.idx") if (folder / name).exists()]
    if fresh and existing and not replace:
        if summary is None:
            raise QGFaceInputError(
                f"{folder} holds a record set ({', '.join(existing)}) that the synthetic generator did not make (no "
                "dataset.json): the study trains on its own synthetic mixed-quality set and will not overwrite it; "
                "give --rec an empty or new folder (or leave --rec out: <output>/data)")
        differ = ", ".join(f"{k} {summary.get(v)!r} (wanted {want[k]!r})" for k, v in keys.items()
                           if k in want and summary.get(v) != want[k])
        raise QGFaceInputError(
            f"{folder} holds a synthetic set made with other arguments: {differ}; give --rec another folder, or "
            "delete this one to have it made again")
    if not fresh:
        log(f"[study] data: reusing {folder} ({summary['num_images']} images, {summary['num_classes']} identities)")
    else:
        log(f"[study] data: generating the synthetic set into {folder}", flush=True)
        summary = make_dataset(folder, seed=seed, workers=workers, **dataset)
        summary = {k: v for k, v in summary.items() if k not in ("seconds", "workers")}
    lqlq = folder / PAIR_FILES["LQ–LQ"]
    hq = folder / PAIR_FILES["HQ–HQ"]
    if fresh or not lqlq.is_file() or len(read_bin(lqlq)[1]) != len(read_bin(hq)[1]):
        make_lqlq_bin(hq, lqlq, seed)
    return {"rec": str(folder), "num_classes": int(summary["num_classes"]), "num_image": int(summary["num_images"]),
            "pairs": {t: str(folder / f) for t, f in PAIR_FILES.items()}, "dataset": summary}
