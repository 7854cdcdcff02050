"""------

:func:`make_scface` writes ``root/all.txt`` (one ``<key>\t<subject>`` line per image) and
``root/aligned_dir/<key>.jpg`` (aligned 112x112), the layout :mod:`qgface_plugin.eval.scface` reads. Subjects
are 3-digit numbers ``first_subject .. first_subject + num_subjects - 1``; each has a clean frontal mug-shot
``<s>_frontal`` (the gallery), 15 visible-light surveillance probes ``<s>_cam<c>_<d>`` (cameras ``c`` = 1..5,
distances ``d`` = 1 (4.2 m), 2 (2.6 m), 3 (1.0 m)) and six infrared images ``<s>_cam6_<d>``, ``<s>_cam7_<d>``
(grey, noisy), which the evaluator lists as excluded. A probe is degraded by distance: level U(0.75, 1.0) at
d1 (a face of ~12..19 px scaled back), U(0.4, 0.65) at d2, U(0.0, 0.25) at d3; each camera adds a colour
cast and gain of its own. The defaults (subjects 041..060) give both protocols subjects: ``all`` 20,
``test80`` (subjects 051..130) 10.

numpy + OpenCV.
"""
from __future__ import annotations

import os

import numpy as np

from ..errors import QGFaceConfigError
from .checks import check_int
from .degrade import degrade_quality
from .faces import render_face
from .jpeg import write_jpeg
from .streams import STREAM_SC_CAMERA, STREAM_SC_IMAGE, STREAM_SC_SUBJECT, identity, keyed_rng

__all__ = ["make_scface", "scface_image", "SCFACE_LEVELS"]

#: degrade_quality level range per SCface distance (1 = 4.2 m, hardest; 3 = 1.0 m, best).
SCFACE_LEVELS = {1: (0.75, 1.0), 2: (0.4, 0.65), 3: (0.0, 0.25)}
_SC_VISIBLE, _SC_IR, _SC_DISTANCES = (1, 2, 3, 4, 5), (6, 7), (1, 2, 3)


def _camera_look(seed, cam):
    """A camera's fixed per-channel gain (colour cast and brightness)."""
    r = keyed_rng(seed, STREAM_SC_CAMERA, cam)
    return (r.uniform(0.8, 1.1) * (1.0 + r.normal(0.0, 0.06, 3))).astype(np.float32)


def scface_image(seed, subject, cam=0, dist=0):
    """The image :func:`make_scface` (same ``seed``) writes for ``subject``: its frontal mug-shot for
    ``cam=0``, else the image of camera ``cam`` (1..5 visible, 6..7 infrared) at distance ``dist`` (1..3)."""
    r = keyed_rng(seed, STREAM_SC_IMAGE, subject, cam, dist)
    face = render_face(identity(int(seed), STREAM_SC_SUBJECT, int(subject)), r, 112)
    if cam == 0:
        return face
    level = float(r.uniform(*SCFACE_LEVELS[int(dist)]))
    if cam in _SC_IR:  # night vision: grey, low contrast, noisy
        grey = face.astype(np.float32) @ np.array([0.299, 0.587, 0.114], np.float32)
        face = np.repeat(np.clip(0.6 * grey + 60.0 + 0.5, 0, 255).astype(np.uint8)[..., None], 3, axis=2)
        return degrade_quality(face, r, max(level, 0.5))
    f = face.astype(np.float32) * _camera_look(seed, cam)
    return degrade_quality(np.clip(f + 0.5, 0, 255).astype(np.uint8), r, level)


def make_scface(root, num_subjects=20, seed=0, first_subject=41) -> dict:
    """Write a synthetic SCface set (layout: module docstring) and return its summary.

    Args:
        root: output folder (created); ``all.txt`` and ``aligned_dir/`` go in it (same-named files replaced).
        num_subjects: subjects (>= 1), numbered ``first_subject ..``; with the defaults 041..060, so the
            ``test80`` protocol (subjects 051..130) has 10 of them and ``all`` 20.
        seed: int seed (>= 0); the files are byte-identical for the same arguments. A subject's identity
            depends on ``seed`` and its number only.
        first_subject: number of the first subject (>= 1; the last must be <= 999).

    Returns:
        dict with ``root``, ``seed``, ``subjects`` (ints), ``num_subjects``, ``num_gallery``,
        ``num_probes`` (visible, cameras 1..5), ``num_ir`` (cameras 6, 7: excluded by the evaluator),
        ``num_test80_subjects`` and ``keys`` (all.txt order).
    """
    num_subjects = check_int("num_subjects", num_subjects, 1)
    seed = check_int("seed", seed, 0)
    first_subject = check_int("first_subject", first_subject, 1)
    if first_subject + num_subjects - 1 > 999:
        raise QGFaceConfigError(f"first_subject={first_subject}, num_subjects={num_subjects}: subject numbers "
                                f"have 3 digits, the last must be <= 999")
    subjects = list(range(first_subject, first_subject + num_subjects))
    img_dir = os.path.join(str(root), "aligned_dir")
    os.makedirs(img_dir, exist_ok=True)
    rows = []  # (key, subject, cam, dist)
    for s in subjects:
        rows.append((f"{s:03d}_frontal", s, 0, 0))
        rows += [(f"{s:03d}_cam{c}_{d}", s, c, d) for c in _SC_VISIBLE + _SC_IR for d in _SC_DISTANCES]
    for key, s, c, d in rows:
        write_jpeg(os.path.join(img_dir, f"{key}.jpg"), scface_image(seed, s, c, d))
    with open(os.path.join(str(root), "all.txt"), "w") as f:
        f.writelines(f"{key}\t{s}\n" for key, s, _, _ in rows)
    return {
        "root": str(root), "seed": seed, "subjects": subjects, "num_subjects": num_subjects,
        "num_gallery": num_subjects, "num_probes": sum(1 for r in rows if r[2] in _SC_VISIBLE),
        "num_ir": sum(1 for r in rows if r[2] in _SC_IR),
        "num_test80_subjects": sum(1 for s in subjects if 51 <= s <= 130),
        "keys": [r[0] for r in rows],
    }
