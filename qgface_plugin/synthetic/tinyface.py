"""--------

:func:`make_tinyface` writes ``root/{Probe,Gallery_Match,Gallery_Distractor}/*.jpg``, aligned 112x112 (the
layout of AdaFace's aligned TinyFace copy that :mod:`qgface_plugin.eval.tinyface` reads). Identities are
``1..num_identities``; identity ``i`` has probes ``Probe/<i>_<k>.jpg`` (``k = 1..P``) and gallery matches
``Gallery_Match/<i>_<k>.jpg`` (``k = P+1..P+G``, so every file name is unique); the distractors
``Gallery_Distractor/<j>.jpg`` (``j`` six digits, from 000001) are each one image of another identity, never
a probe identity. Probes are what TinyFace probes are, tiny faces: rendered, shrunk to a side of 16..24 px
(``INTER_AREA``) and scaled back, then degraded (:func:`~qgface_plugin.synthetic.degrade.degrade_quality`, level
0..0.4: blur, noise, light, colour, JPEG). Gallery matches and distractors are mixed: a share
``gallery_lq_fraction`` is degraded at a level ``sqrt(U(0, 1))`` (as the training set), the rest clean.

numpy + OpenCV.
"""
from __future__ import annotations

import os

import cv2
import numpy as np

from ..errors import QGFaceConfigError
from .checks import check_fraction, check_int
from .degrade import degrade_quality
from .faces import render_face
from .jpeg import write_jpeg
from .streams import STREAM_TF_DISTRACTOR, STREAM_TF_ID, STREAM_TF_IMAGE, STREAM_TF_LAYOUT, identity, keyed_rng

__all__ = ["make_tinyface", "tinyface_image"]

_TF_FOLDERS = ("Probe", "Gallery_Match", "Gallery_Distractor")
_TF_PROBE, _TF_MATCH, _TF_DISTRACTOR = 0, 1, 2
_TF_PROBE_SIDE = (16, 24)        # inclusive: side (px) a probe face is shrunk to
_TF_PROBE_LEVEL = (0.0, 0.4)     # degrade_quality level on top of the shrinking
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _check_no_strays(folder, names):
    """Refuse to write into ``folder`` when it holds images this call would not write (the TinyFace
    evaluator lists every image of the folder, so a left-over image would join the benchmark)."""
    if not os.path.isdir(folder):
        return
    keep = set(names)
    stray = sorted(n for n in os.listdir(folder)
                   if os.path.splitext(n)[1].lower() in _IMAGE_EXTS and n not in keep)
    if stray:
        shown = ", ".join(stray[:3]) + (" ..." if len(stray) > 3 else "")
        raise QGFaceConfigError(f"{folder} already holds {len(stray)} image(s) this call would not write ({shown}); "
                                f"the evaluator lists every image there, so use an empty or new folder")


def _tiny(face, rng, side):
    small = cv2.resize(face, (side, side), interpolation=cv2.INTER_AREA)
    return cv2.resize(small, (face.shape[1], face.shape[0]),
                      interpolation=(cv2.INTER_LINEAR, cv2.INTER_CUBIC)[int(rng.integers(2))])


def tinyface_image(seed, role, ident, k, level=None, side=None):
    """The image :func:`make_tinyface` (same ``seed``) writes for ``role`` (0 probe, 1 gallery match,
    2 distractor), identity ``ident`` (1-based; for a distractor its 1-based number ``j``) and image ``k``
    (0 for a distractor): rendered, shrunk to ``side`` px and back when ``side`` is given (a probe), then
    degraded when ``level`` is a number >= 0."""
    r = keyed_rng(seed, STREAM_TF_IMAGE, role, ident, k)
    stream = STREAM_TF_DISTRACTOR if role == _TF_DISTRACTOR else STREAM_TF_ID
    face = render_face(identity(int(seed), stream, int(ident)), r, 112)
    if side is not None:
        face = _tiny(face, r, int(side))
    if level is not None and level >= 0:
        face = degrade_quality(face, r, level)
    return face


def make_tinyface(root, num_identities=40, probes_per_identity=2, gallery_per_identity=2, distractors=160,
                  seed=0, gallery_lq_fraction=0.5) -> dict:
    """Write a synthetic TinyFace test split (layout: module docstring) and return its summary.

    Args:
        root: output folder (created); ``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/`` go in it.
            Same-named files are replaced; a folder that already holds other images is refused
            (``QGFaceConfigError``), since the evaluator would list them too.
        num_identities: probe identities (>= 1), ``1..num_identities``.
        probes_per_identity: probes per identity (>= 1).
        gallery_per_identity: gallery-match images per identity (>= 1).
        distractors: distractor images (>= 1), each of its own non-probe identity.
        seed: int seed (>= 0); the files are byte-identical for the same arguments.
        gallery_lq_fraction: share of the gallery-match and of the distractor images that are degraded.

    Returns:
        dict with ``root``, ``seed``, ``num_identities``, ``num_probes``, ``num_gallery_match``,
        ``num_distractors``, ``num_gallery_lq`` (match + distractor), per folder the file ``names`` (dict,
        sorted as written), ``probe_sides`` / ``probe_levels`` (per probe, in ``names["Probe"]`` order) and
        ``gallery_levels`` / ``distractor_levels`` (-1.0 = clean).
    """
    num_identities = check_int("num_identities", num_identities, 1)
    probes_per_identity = check_int("probes_per_identity", probes_per_identity, 1)
    gallery_per_identity = check_int("gallery_per_identity", gallery_per_identity, 1)
    distractors = check_int("distractors", distractors, 1)
    seed = check_int("seed", seed, 0)
    gallery_lq_fraction = check_fraction("gallery_lq_fraction", gallery_lq_fraction)
    P, G = probes_per_identity, gallery_per_identity
    plan = {  # folder -> [(name, role, ident, k)]
        "Probe": [(f"{i}_{k}.jpg", _TF_PROBE, i, k) for i in range(1, num_identities + 1) for k in range(1, P + 1)],
        "Gallery_Match": [(f"{i}_{k}.jpg", _TF_MATCH, i, k) for i in range(1, num_identities + 1)
                          for k in range(P + 1, P + G + 1)],
        "Gallery_Distractor": [(f"{j:06d}.jpg", _TF_DISTRACTOR, j, 0) for j in range(1, distractors + 1)],
    }
    dirs = {f: os.path.join(str(root), f) for f in _TF_FOLDERS}
    for f in _TF_FOLDERS:
        _check_no_strays(dirs[f], [row[0] for row in plan[f]])

    lay = keyed_rng(seed, STREAM_TF_LAYOUT)
    levels = {}
    for f in ("Gallery_Match", "Gallery_Distractor"):
        n = len(plan[f])
        n_lq = int(round(gallery_lq_fraction * n))
        lv = np.full(n, -1.0)
        lv[lay.choice(n, n_lq, replace=False)] = np.sqrt(lay.uniform(0.0, 1.0, n_lq))
        levels[f] = lv
    sides, probe_levels = [], []
    for i, (name, role, ident, k) in enumerate(plan["Probe"]):
        g = keyed_rng(seed, STREAM_TF_LAYOUT, role, ident, k)
        sides.append(int(g.integers(_TF_PROBE_SIDE[0], _TF_PROBE_SIDE[1] + 1)))
        probe_levels.append(float(g.uniform(*_TF_PROBE_LEVEL)))
    levels["Probe"] = np.array(probe_levels)

    for f in _TF_FOLDERS:
        os.makedirs(dirs[f], exist_ok=True)
        for i, (name, role, ident, k) in enumerate(plan[f]):
            img = tinyface_image(seed, role, ident, k, float(levels[f][i]), sides[i] if role == _TF_PROBE else None)
            write_jpeg(os.path.join(dirs[f], name), img)
    return {
        "root": str(root), "seed": seed, "num_identities": num_identities,
        "num_probes": len(plan["Probe"]), "num_gallery_match": len(plan["Gallery_Match"]),
        "num_distractors": distractors,
        "num_gallery_lq": int((levels["Gallery_Match"] >= 0).sum() + (levels["Gallery_Distractor"] >= 0).sum()),
        "names": {f: [row[0] for row in plan[f]] for f in _TF_FOLDERS},
        "probe_sides": sides, "probe_levels": [float(v) for v in levels["Probe"]],
        "gallery_levels": [float(v) for v in levels["Gallery_Match"]],
        "distractor_levels": [float(v) for v in levels["Gallery_Distractor"]],
    }
