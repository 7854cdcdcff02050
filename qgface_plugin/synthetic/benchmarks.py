"""All the synthetic benchmarks under one root: :func:`make_benchmarks`, in the layout
``tools/eval_suite.py --data ROOT`` discovers, at the sizes of :data:`SIZES`.

The layouts, one module each, in their upstream form:

* :func:`~qgface_plugin.synthetic.ijb.make_ijb` (:mod:`.ijb`) -- an IJB-B / IJB-C 1:1 tree (insightface's
  IJB evaluators);
* :func:`~qgface_plugin.synthetic.tinyface.make_tinyface` (:mod:`.tinyface`) -- a TinyFace test split
  (``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/``);
* :func:`~qgface_plugin.synthetic.scface.make_scface` (:mod:`.scface`) -- an SCface set (``all.txt`` +
  ``aligned_dir/<key>.jpg``, cameras x distances).

The verification ``.bin`` sets come from :func:`qgface_plugin.synthetic.training_set.make_dataset`. Every
identity of these sets is drawn from random streams of its own (purposes 31.., :mod:`.streams`) -- never the
streams of make_dataset's training identities (purpose 1) or its held-out ``.bin`` identities (purpose 11)
-- so, like real benchmark subjects, they are new to a model trained on the synthetic training set.

numpy + OpenCV only.
"""
from __future__ import annotations

import json
import os
import time

import numpy as np

from ..errors import QGFaceConfigError
from .checks import check_int
from .ijb import TARGETS, make_ijb
from .scface import make_scface
from .streams import STREAM_IJB_SEED
from .tinyface import make_tinyface

__all__ = ["make_benchmarks", "SIZES", "SUMMARY_FILE"]

#: ``make_benchmarks`` sizes: keyword arguments of each generator (IJB: ``make_ijb``'s, less target and seed).
SIZES = {
    "small": {  # 837 files, ~900 embeddings (SCface twice: all, test80); the demo's suite ~80 s on 2 CPU cores
        "tinyface": dict(num_identities=40, probes_per_identity=2, gallery_per_identity=2, distractors=120),
        "scface": dict(num_subjects=16, first_subject=45),
        "IJBC": dict(num_subjects=30, templates_per_subject=3, medias_per_template=(1, 2), images_per_media=(1, 2)),
    },
    "medium": {  # 7,217 files, ~7,700 embeddings (~5 CPU minutes); TAR@FAR=1e-4 resolved on IJB-C (79k impostors)
        "tinyface": dict(num_identities=150, probes_per_identity=3, gallery_per_identity=3, distractors=1500),
        "scface": dict(num_subjects=130, first_subject=1),
        "IJBC": dict(num_subjects=100, templates_per_subject=4, medias_per_template=(1, 3), images_per_media=(1, 2)),
        "IJBB": dict(num_subjects=60, templates_per_subject=4, medias_per_template=(1, 3), images_per_media=(1, 2)),
    },
}
#: every impostor template pair is written (the FAR resolution of a small set is 1 / impostor pairs).
_ALL_IMPOSTORS = 10 ** 9
SUMMARY_FILE = "benchmarks.json"


def _ijb_seed(seed, target):
    """IJB-C uses ``seed`` itself (so it equals ``make_ijb(seed=seed)``); IJB-B a seed derived from it, so its
    subjects are not IJB-C's (make_ijb's streams depend on the seed only)."""
    if target == "IJBC":
        return seed
    return int(np.random.SeedSequence([int(seed), STREAM_IJB_SEED]).generate_state(1)[0] & 0x7FFFFFFF)


def make_benchmarks(root, seed=0, size="small") -> dict:
    """Every synthetic benchmark under ``root``, where ``tools/eval_suite.py --data ROOT`` finds them:
    ``root/tinyface/``, ``root/scface/``, ``root/IJBC/`` (and ``root/IJBB/`` for ``size="medium"``), plus
    ``root/benchmarks.json`` (the summary returned, less its ``seconds``).

    The verification ``.bin`` sets are not made here: :func:`qgface_plugin.synthetic.training_set.make_dataset` writes them
    with the training set (pass its folder as the suite's ``--bins``).

    Args:
        root: output folder (created).
        seed: int seed (>= 0); the same arguments give byte-identical files.
        size: a key of :data:`SIZES` (``"small"``, ``"medium"``).

    Returns:
        ``{"generator", "format_version", "seed", "size", "counts": {"tinyface": {"identities", "probes",
        "gallery_match", "distractors"}, "scface": {"subjects", "gallery", "probes", "ir_excluded",
        "test80_subjects"}, "ijbc"/"ijbb": {"images", "templates", "pairs", "genuine", "impostor"}},
        "folders": {name: sub-folder}, "images": total image files, "seconds"}``.
    """
    if size not in SIZES:
        raise QGFaceConfigError(f"size={size!r} must be one of {', '.join(SIZES)}")
    seed = check_int("seed", seed, 0)
    spec = SIZES[size]
    t0 = time.perf_counter()
    root = str(root)
    os.makedirs(root, exist_ok=True)
    tf = make_tinyface(os.path.join(root, "tinyface"), seed=seed, **spec["tinyface"])
    sc = make_scface(os.path.join(root, "scface"), seed=seed, **spec["scface"])
    counts = {
        "tinyface": {"identities": tf["num_identities"], "probes": tf["num_probes"],
                     "gallery_match": tf["num_gallery_match"], "distractors": tf["num_distractors"]},
        "scface": {"subjects": sc["num_subjects"], "gallery": sc["num_gallery"], "probes": sc["num_probes"],
                   "ir_excluded": sc["num_ir"], "test80_subjects": sc["num_test80_subjects"]},
    }
    folders = {"tinyface": "tinyface", "scface": "scface"}
    images = tf["num_probes"] + tf["num_gallery_match"] + tf["num_distractors"] + len(sc["keys"])
    for target in TARGETS:
        if target not in spec:
            continue
        ijb = make_ijb(os.path.join(root, target), target, seed=_ijb_seed(seed, target),
                       impostor_ratio=_ALL_IMPOSTORS, **spec[target])
        counts[target.lower()] = {"images": ijb["num_images"], "templates": ijb["num_templates"],
                                  "pairs": ijb["num_pairs"], "genuine": ijb["num_genuine"],
                                  "impostor": ijb["num_impostor"]}
        folders[target.lower()] = target
        images += ijb["num_images"]
    summary = {"generator": "qgface_plugin.synthetic.benchmarks", "format_version": 1, "seed": seed, "size": size,
               "counts": counts, "folders": folders, "images": images}
    with open(os.path.join(root, SUMMARY_FILE), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    summary["seconds"] = round(time.perf_counter() - t0, 3)
    return summary
