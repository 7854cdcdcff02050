"""A small synthetic IJB-B/IJB-C 1:1 tree, in the layout of insightface's IJB evaluators.

:func:`make_ijb` writes, under ``root`` (``t`` = ``target.lower()``, ``ijbc`` or ``ijbb``)::

    root/loose_crop/<k>.jpg                       one "loose crop" per image row (JPEG, k = 1..N)
    root/meta/<t>_name_5pts_score.txt             "<k>.jpg x1 y1 x2 y2 x3 y3 x4 y4 x5 y5 score"
    root/meta/<t>_face_tid_mid.txt                "<k>.jpg tid mid"   (same row order as the 5pts file)
    root/meta/<t>_template_pair_label.txt         "tid1 tid2 label"   (1 = same subject, 0 = different)

Fields are separated by single spaces; there is no header. The five landmarks are in loose-crop
pixels, in the order left eye, right eye, nose, left mouth corner, right mouth corner, and the score
is a detector ("faceness") score in [0.5, 1.0], lower for degraded images. This is what upstream
arcface_torch's ``eval_ijbc.py`` / ``onnx_ijbc.py`` read: it aligns each image with a
``skimage`` ``SimilarityTransform`` from the five points to the ArcFace 112x112 template
(:data:`qgface_plugin.formats.face_crop.ARCFACE_TEMPLATE`) and ``cv2.warpAffine``.

How an image is made: :func:`aligned_face` renders an aligned 112x112 face of the subject with
:func:`qgface_plugin.synthetic.faces.render_face` (degraded with
:func:`~qgface_plugin.synthetic.degrade.degrade_quality` for a share ``lq_fraction`` of the images, as in the
training set), then a random similarity transform (scale 0.8-1.4, rotation +-20 deg, a translation
that keeps the face region inside) places it in a ``crop_size`` canvas; outside the face image the
canvas holds its edge pixels smeared outwards and blurred, so there are no flat borders. The
landmarks written are the ArcFace template points mapped through that transform, so aligning with
them gives back the aligned face (up to resampling and the JPEG round trip).

Structure: ``num_subjects`` subjects with ``templates_per_subject`` templates each; a template has a
random number of media in ``medias_per_template`` (inclusive range), a media a random number of
images in ``images_per_media`` (inclusive). Template ids are distinct integers drawn from
``1..10*T`` (T templates) and media ids distinct integers from ``1..10*M`` (M media; one id per
(template, media)), so neither is contiguous. Image rows are shuffled, so a template's rows are not
adjacent. Pairs: every genuine template pair (same subject, two different templates) and
``impostor_ratio`` times as many impostor pairs sampled without replacement (all impostor pairs if
there are fewer), shuffled, each in a random orientation.

Deterministic for a seed: every subject and every image has its own random stream keyed by
``(seed, purpose, index)`` (:mod:`.streams`, purposes of their own).

The meta file names have one home, :mod:`qgface_plugin.formats.ijb_meta` (:func:`meta_paths`), shared with the
evaluator. numpy + OpenCV.
"""
from __future__ import annotations

import itertools
import math
import numbers
import os

import cv2
import numpy as np

from ..errors import QGFaceConfigError
from ..formats.face_crop import ARCFACE_TEMPLATE
from ..formats.ijb_meta import TARGETS, meta_paths
from .checks import check_fraction, check_int
from .degrade import degrade_quality
from .faces import render_face
from .jpeg import write_jpeg
from .streams import (STREAM_IJB_GEOMETRY, STREAM_IJB_IMAGE, STREAM_IJB_LAYOUT, STREAM_IJB_PAIRS,
                      STREAM_IJB_SUBJECT, identity, keyed_rng)

__all__ = ["make_ijb", "aligned_face", "meta_paths", "TARGETS"]

#: region of the aligned 112x112 frame that holds the face (x0, y0, x1, y1); kept inside the loose crop.
_FACE_BOX = (18.0, 18.0, 94.0, 110.0)
_SCALE_RANGE = (0.8, 1.4)
_MAX_ROTATION_DEG = 20.0
_MARGIN = 2.0


def aligned_face(seed, subject, index, level=None):
    """The aligned 112x112 RGB face of image row ``index`` (1-based ``k`` of ``<k>.jpg``) of ``subject``.

    This is the face :func:`make_ijb` (same ``seed``) put into the loose crop ``<index>.jpg``, degraded
    when ``level`` is a number in [0, 1] (``None`` or a negative level: clean).
    """
    r = keyed_rng(seed, STREAM_IJB_IMAGE, index)
    face = render_face(identity(int(seed), STREAM_IJB_SUBJECT, int(subject)), r, 112)
    if level is not None and level >= 0:
        face = degrade_quality(face, r, level)
    return face


def _check_target(target) -> str:
    if not isinstance(target, str) or target.upper() not in TARGETS:
        raise QGFaceConfigError(f"target={target!r} must be one of {', '.join(TARGETS)}")
    return target.upper()


def _check_range(name, value):
    ok = (isinstance(value, (tuple, list)) and len(value) == 2
          and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) for v in value)
          and 1 <= value[0] <= value[1])
    if not ok:
        raise QGFaceConfigError(f"{name}={value!r} must be an inclusive range (lo, hi) of integers, 1 <= lo <= hi")
    return int(value[0]), int(value[1])


def _placement(rng, crop_w, crop_h):
    """A random 2x3 similarity (aligned 112 frame -> loose crop) keeping :data:`_FACE_BOX` inside."""
    scale = rng.uniform(*_SCALE_RANGE)
    angle = math.radians(rng.uniform(-_MAX_ROTATION_DEG, _MAX_ROTATION_DEG))
    c, s = math.cos(angle), math.sin(angle)
    x0, y0, x1, y1 = _FACE_BOX
    box = np.array([[x0, y0], [x1, y0], [x1, y1], [x0, y1]])
    rot = np.array([[c, -s], [s, c]])
    turned = box @ rot.T
    extent = turned.max(0) - turned.min(0)
    room = np.array([crop_w, crop_h]) - 2 * _MARGIN
    scale = min(scale, float(np.min(room / extent)))  # only binds for crops smaller than the default
    turned *= scale
    lo = _MARGIN - turned.min(0)
    hi = np.array([crop_w, crop_h]) - _MARGIN - turned.max(0)
    shift = lo + rng.uniform(0.0, 1.0, 2) * (hi - lo)
    return np.hstack([scale * rot, shift[:, None]])


def _loose_crop(face, fwd, crop_w, crop_h):
    """``face`` warped by ``fwd`` into a ``crop_w x crop_h`` canvas; outside the face image, its edge
    pixels smeared outwards and blurred (no flat borders, no mirrored copies of the face)."""
    sharp = cv2.warpAffine(face, fwd, (crop_w, crop_h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    blurred = cv2.GaussianBlur(sharp, (0, 0), 6.0)
    inside = cv2.warpAffine(np.ones(face.shape[:2], np.float32), fwd, (crop_w, crop_h), flags=cv2.INTER_LINEAR,
                            borderMode=cv2.BORDER_CONSTANT, borderValue=0.0)
    inside = cv2.GaussianBlur(inside, (0, 0), 1.0)[..., None]  # soft edge of the face image
    out = sharp.astype(np.float32) * inside + blurred.astype(np.float32) * (1.0 - inside)
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)


def _detector_score(rng, level):
    if level < 0:
        return float(rng.uniform(0.85, 1.0))
    return float(np.clip(0.95 - 0.4 * level + rng.normal(0.0, 0.04), 0.5, 1.0))


def make_ijb(root, target="IJBC", num_subjects=12, templates_per_subject=3, medias_per_template=(1, 3),
             images_per_media=(1, 2), seed=0, lq_fraction=0.3, crop_size=(150, 170), impostor_ratio=3) -> dict:
    """Write a synthetic IJB-B/C 1:1 tree (layout: module docstring) and return its summary.

    Args:
        root: output folder (created; same-named files are replaced).
        target: ``"IJBC"`` or ``"IJBB"`` (any case); names the meta files.
        num_subjects: subjects (>= 2).
        templates_per_subject: templates per subject (>= 1; >= 2 for genuine pairs).
        medias_per_template: inclusive range of media per template.
        images_per_media: inclusive range of images per media.
        seed: int seed (>= 0); the files are byte-identical for the same arguments.
        lq_fraction: share of images that are degraded, in [0, 1] (exactly ``round(lq_fraction * N)``).
        crop_size: ``(width, height)`` of the loose crops, each >= 112.
        impostor_ratio: impostor pairs per genuine pair (>= 0); all impostor pairs when fewer exist, or
            when there is no genuine pair.

    Returns:
        dict with ``root``, ``target``, ``seed``, ``image_dir``, ``meta`` (:func:`meta_paths`),
        ``num_images``/``num_templates``/``num_medias``/``num_pairs``/``num_genuine``/``num_impostor``/
        ``num_lq``, per image row (file order) ``names``, ``subjects``, ``templates``, ``medias``,
        ``levels`` (-1.0 = clean, else the :func:`~qgface_plugin.synthetic.degrade.degrade_quality` level),
        ``scores`` (detector) and ``landmarks`` (``[N, 5, 2]`` float32, as written), and
        ``template_subject`` (tid -> subject) and the pairs ``p1``/``p2``/``labels`` (file order).

    Raises:
        ValueError (``QGFaceConfigError``): a bad argument; the message names it.
    """
    target = _check_target(target)
    num_subjects = check_int("num_subjects", num_subjects, 2)
    templates_per_subject = check_int("templates_per_subject", templates_per_subject, 1)
    m_lo, m_hi = _check_range("medias_per_template", medias_per_template)
    i_lo, i_hi = _check_range("images_per_media", images_per_media)
    seed = check_int("seed", seed, 0)
    lq_fraction = check_fraction("lq_fraction", lq_fraction)
    impostor_ratio = check_int("impostor_ratio", impostor_ratio, 0)
    if not (isinstance(crop_size, (tuple, list)) and len(crop_size) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 112 for v in crop_size)):
        raise QGFaceConfigError(f"crop_size={crop_size!r} must be (width, height), integers >= 112")
    crop_w, crop_h = int(crop_size[0]), int(crop_size[1])

    # ---- layout: templates, media, images
    lay = keyed_rng(seed, STREAM_IJB_LAYOUT)
    n_templates = num_subjects * templates_per_subject
    tids = lay.choice(np.arange(1, 10 * n_templates + 1), n_templates, replace=False)
    template_subject = {int(tids[j]): j // templates_per_subject for j in range(n_templates)}
    media_of_template = [int(lay.integers(m_lo, m_hi + 1)) for _ in range(n_templates)]
    n_medias = sum(media_of_template)
    mids = lay.choice(np.arange(1, 10 * n_medias + 1), n_medias, replace=False)
    rows = []  # (subject, tid, mid)
    m = 0
    for j in range(n_templates):
        for _ in range(media_of_template[j]):
            for _ in range(int(lay.integers(i_lo, i_hi + 1))):
                rows.append((j // templates_per_subject, int(tids[j]), int(mids[m])))
            m += 1
    n_images = len(rows)
    rows = [rows[i] for i in lay.permutation(n_images)]
    n_lq = int(round(lq_fraction * n_images))
    levels = np.full(n_images, -1.0)
    lq_rows = lay.choice(n_images, n_lq, replace=False)
    levels[lq_rows] = np.sqrt(lay.uniform(0.0, 1.0, n_lq))  # skewed to the severe end, as in the training set

    # ---- images
    image_dir = os.path.join(str(root), "loose_crop")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(str(root), "meta"), exist_ok=True)
    names, scores, landmarks = [], [], []
    for i, (subject, _, _) in enumerate(rows):
        k = i + 1
        level = float(levels[i])
        face = aligned_face(seed, subject, k, level)
        g = keyed_rng(seed, STREAM_IJB_GEOMETRY, k)
        fwd = _placement(g, crop_w, crop_h)
        crop = _loose_crop(face, fwd, crop_w, crop_h)
        name = f"{k}.jpg"
        write_jpeg(os.path.join(image_dir, name), crop)
        pts = ARCFACE_TEMPLATE.astype(np.float64) @ fwd[:, :2].T + fwd[:, 2]
        names.append(name)
        landmarks.append(np.round(pts, 4).astype(np.float32))
        scores.append(round(_detector_score(g, level), 4))

    # ---- pairs
    by_subject = {}
    for tid, s in template_subject.items():
        by_subject.setdefault(s, []).append(tid)
    genuine = [pair for s in sorted(by_subject) for pair in itertools.combinations(sorted(by_subject[s]), 2)]
    impostor = [(a, b) for a, b in itertools.combinations(sorted(template_subject), 2)
                if template_subject[a] != template_subject[b]]
    pr = keyed_rng(seed, STREAM_IJB_PAIRS)
    n_imp = len(impostor) if not genuine else min(len(impostor), impostor_ratio * len(genuine))
    picked = [impostor[i] for i in sorted(pr.choice(len(impostor), n_imp, replace=False))]
    pairs = [(a, b, 1) for a, b in genuine] + [(a, b, 0) for a, b in picked]
    pairs = [pairs[i] for i in pr.permutation(len(pairs))]
    flip = pr.random(len(pairs)) < 0.5
    pairs = [(b, a, lab) if f else (a, b, lab) for (a, b, lab), f in zip(pairs, flip)]

    # ---- meta files
    paths = meta_paths(root, target)
    with open(paths["name_5pts_score"], "w") as f:
        for name, pts, score in zip(names, landmarks, scores):
            f.write(name + " " + " ".join(f"{v:.4f}" for v in pts.ravel()) + f" {score:.4f}\n")
    with open(paths["face_tid_mid"], "w") as f:
        f.writelines(f"{name} {tid} {mid}\n" for name, (_, tid, mid) in zip(names, rows))
    with open(paths["template_pair_label"], "w") as f:
        f.writelines(f"{a} {b} {lab}\n" for a, b, lab in pairs)

    return {
        "root": str(root), "target": target, "seed": seed, "image_dir": image_dir, "meta": paths,
        "num_images": n_images, "num_templates": n_templates, "num_medias": n_medias, "num_lq": n_lq,
        "num_pairs": len(pairs), "num_genuine": len(genuine), "num_impostor": n_imp,
        "names": names, "subjects": [r[0] for r in rows], "templates": [r[1] for r in rows],
        "medias": [r[2] for r in rows], "levels": [float(v) for v in levels], "scores": scores,
        "landmarks": np.stack(landmarks), "template_subject": template_subject,
        "p1": [p[0] for p in pairs], "p2": [p[1] for p in pairs], "labels": [p[2] for p in pairs],
    }
