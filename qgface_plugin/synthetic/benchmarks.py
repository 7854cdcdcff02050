"""Small synthetic versions of the evaluation benchmarks, each in its upstream layout.

* :func:`make_ijb` -- an IJB-B / IJB-C 1:1 tree (insightface's IJB evaluators; described below).
* :func:`make_tinyface` -- a TinyFace test split (``Probe/``, ``Gallery_Match/``, ``Gallery_Distractor/``).
* :func:`make_scface` -- an SCface set (``all.txt`` + ``aligned_dir/<key>.jpg``, cameras x distances).
* :func:`make_benchmarks` -- all of them under one root, in the layout ``tools/eval_suite.py --data ROOT``
  discovers (the verification ``.bin`` sets come from :func:`qgface_plugin.synthetic.faces.make_dataset`).

Every identity of these sets is drawn from random streams of its own (purposes 31..) -- never the
streams of :func:`qgface_plugin.synthetic.faces.make_dataset`'s training identities (purpose 1) or its held-out
``.bin`` identities (purpose 11) -- so, like real benchmark subjects, they are new to a model trained on
the synthetic training set.

IJB-B / IJB-C
-------------

A small synthetic IJB-B/IJB-C 1:1 tree, in the layout of insightface's IJB evaluators.

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
(:data:`ARCFACE_TEMPLATE`) and ``cv2.warpAffine``.

How an image is made: :func:`aligned_face` renders an aligned 112x112 face of the subject with
:func:`qgface_plugin.synthetic.faces.render_face` (degraded with
:func:`~qgface_plugin.synthetic.faces.degrade_quality` for a share ``lq_fraction`` of the images, as in the
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
``(seed, purpose, index)`` (:func:`qgface_plugin.synthetic.faces`'s scheme, with purposes of their own).

TinyFace
--------

:func:`make_tinyface` writes ``root/{Probe,Gallery_Match,Gallery_Distractor}/*.jpg``, aligned 112x112 (the
layout of AdaFace's aligned TinyFace copy that :mod:`qgface_plugin.eval.tinyface` reads). Identities are
``1..num_identities``; identity ``i`` has probes ``Probe/<i>_<k>.jpg`` (``k = 1..P``) and gallery matches
``Gallery_Match/<i>_<k>.jpg`` (``k = P+1..P+G``, so every file name is unique); the distractors
``Gallery_Distractor/<j>.jpg`` (``j`` six digits, from 000001) are each one image of another identity, never
a probe identity. Probes are what TinyFace probes are, tiny faces: rendered, shrunk to a side of 16..24 px
(``INTER_AREA``) and scaled back, then degraded (:func:`~qgface_plugin.synthetic.faces.degrade_quality`, level
0..0.4: blur, noise, light, colour, JPEG). Gallery matches and distractors are mixed: a share
``gallery_lq_fraction`` is degraded at a level ``sqrt(U(0, 1))`` (as the training set), the rest clean.

SCface
------

:func:`make_scface` writes ``root/all.txt`` (one ``<key>\t<subject>`` line per image) and
``root/aligned_dir/<key>.jpg`` (aligned 112x112), the layout :mod:`qgface_plugin.eval.scface` reads. Subjects
are 3-digit numbers ``first_subject .. first_subject + num_subjects - 1``; each has a clean frontal mug-shot
``<s>_frontal`` (the gallery), 15 visible-light surveillance probes ``<s>_cam<c>_<d>`` (cameras ``c`` = 1..5,
distances ``d`` = 1 (4.2 m), 2 (2.6 m), 3 (1.0 m)) and six infrared images ``<s>_cam6_<d>``, ``<s>_cam7_<d>``
(grey, noisy), which the evaluator lists as excluded. A probe is degraded by distance: level U(0.75, 1.0) at
d1 (a face of ~12..19 px scaled back), U(0.4, 0.65) at d2, U(0.0, 0.25) at d3; each camera adds a colour
cast and gain of its own. The defaults (subjects 041..060) give both protocols subjects: ``all`` 20,
``test80`` (subjects 051..130) 10.

numpy + OpenCV only.
"""
from __future__ import annotations

import itertools
import json
import math
import numbers
import os
import time

import cv2
import numpy as np

from ..errors import QGFaceConfigError
from .faces import ARCFACE_TEMPLATE, _check_fraction, _check_int, _identity, _rng, degrade_quality, render_face

__all__ = ["make_ijb", "make_tinyface", "make_scface", "make_benchmarks", "aligned_face", "tinyface_image",
           "scface_image", "meta_paths",
           "ARCFACE_TEMPLATE", "TARGETS", "SIZES"]

#: the targets upstream's evaluators accept.
TARGETS = ("IJBC", "IJBB")

# Purposes of the keyed random streams (part of the determinism contract; distinct from synthetic.py's).
_STREAM_SUBJECT, _STREAM_LAYOUT, _STREAM_IMAGE, _STREAM_GEOMETRY, _STREAM_PAIRS = 31, 32, 33, 34, 35
_STREAM_IJB_SEED = 36
_STREAM_TF_ID, _STREAM_TF_DISTRACTOR, _STREAM_TF_IMAGE, _STREAM_TF_LAYOUT = 41, 42, 43, 44
_STREAM_SC_SUBJECT, _STREAM_SC_IMAGE, _STREAM_SC_CAMERA = 51, 52, 53

_JPEG_QUALITY = 95
#: region of the aligned 112x112 frame that holds the face (x0, y0, x1, y1); kept inside the loose crop.
_FACE_BOX = (18.0, 18.0, 94.0, 110.0)
_SCALE_RANGE = (0.8, 1.4)
_MAX_ROTATION_DEG = 20.0
_MARGIN = 2.0


def meta_paths(root, target="IJBC") -> dict:
    """The three meta files of the tree at ``root`` for ``target``: ``{"name_5pts_score", "face_tid_mid",
    "template_pair_label"}`` -> path."""
    t = _check_target(target).lower()
    meta = os.path.join(str(root), "meta")
    return {"name_5pts_score": os.path.join(meta, f"{t}_name_5pts_score.txt"),
            "face_tid_mid": os.path.join(meta, f"{t}_face_tid_mid.txt"),
            "template_pair_label": os.path.join(meta, f"{t}_template_pair_label.txt")}


def aligned_face(seed, subject, index, level=None):
    """The aligned 112x112 RGB face of image row ``index`` (1-based ``k`` of ``<k>.jpg``) of ``subject``.

    This is the face :func:`make_ijb` (same ``seed``) put into the loose crop ``<index>.jpg``, degraded
    when ``level`` is a number in [0, 1] (``None`` or a negative level: clean).
    """
    r = _rng(seed, _STREAM_IMAGE, index)
    face = render_face(_identity(int(seed), _STREAM_SUBJECT, int(subject)), r, 112)
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
        ``levels`` (-1.0 = clean, else the :func:`~qgface_plugin.synthetic.faces.degrade_quality` level),
        ``scores`` (detector) and ``landmarks`` (``[N, 5, 2]`` float32, as written), and
        ``template_subject`` (tid -> subject) and the pairs ``p1``/``p2``/``labels`` (file order).

    Raises:
        ValueError (``QGFaceConfigError``): a bad argument; the message names it.
    """
    target = _check_target(target)
    num_subjects = _check_int("num_subjects", num_subjects, 2)
    templates_per_subject = _check_int("templates_per_subject", templates_per_subject, 1)
    m_lo, m_hi = _check_range("medias_per_template", medias_per_template)
    i_lo, i_hi = _check_range("images_per_media", images_per_media)
    seed = _check_int("seed", seed, 0)
    lq_fraction = _check_fraction("lq_fraction", lq_fraction)
    impostor_ratio = _check_int("impostor_ratio", impostor_ratio, 0)
    if not (isinstance(crop_size, (tuple, list)) and len(crop_size) == 2
            and all(isinstance(v, numbers.Integral) and not isinstance(v, bool) and v >= 112 for v in crop_size)):
        raise QGFaceConfigError(f"crop_size={crop_size!r} must be (width, height), integers >= 112")
    crop_w, crop_h = int(crop_size[0]), int(crop_size[1])

    # ---- layout: templates, media, images
    lay = _rng(seed, _STREAM_LAYOUT)
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
    levels[lq_rows] = np.sqrt(lay.uniform(0.0, 1.0, n_lq))  # skewed to the severe end, as in synthetic.py

    # ---- images
    image_dir = os.path.join(str(root), "loose_crop")
    os.makedirs(image_dir, exist_ok=True)
    os.makedirs(os.path.join(str(root), "meta"), exist_ok=True)
    names, scores, landmarks = [], [], []
    for i, (subject, _, _) in enumerate(rows):
        k = i + 1
        level = float(levels[i])
        face = aligned_face(seed, subject, k, level)
        g = _rng(seed, _STREAM_GEOMETRY, k)
        fwd = _placement(g, crop_w, crop_h)
        crop = _loose_crop(face, fwd, crop_w, crop_h)
        name = f"{k}.jpg"
        if not cv2.imwrite(os.path.join(image_dir, name), np.ascontiguousarray(crop[..., ::-1]),
                           [int(cv2.IMWRITE_JPEG_QUALITY), _JPEG_QUALITY]):
            raise OSError(f"cv2.imwrite failed for {os.path.join(image_dir, name)}")
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
    pr = _rng(seed, _STREAM_PAIRS)
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


# ------------------------------------------------------------------------------------------------ TinyFace
_TF_FOLDERS = ("Probe", "Gallery_Match", "Gallery_Distractor")
_TF_PROBE, _TF_MATCH, _TF_DISTRACTOR = 0, 1, 2
_TF_PROBE_SIDE = (16, 24)        # inclusive: side (px) a probe face is shrunk to
_TF_PROBE_LEVEL = (0.0, 0.4)     # degrade_quality level on top of the shrinking
_IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")


def _write_jpeg(path, rgb):
    if not cv2.imwrite(str(path), np.ascontiguousarray(rgb[..., ::-1]), [int(cv2.IMWRITE_JPEG_QUALITY), _JPEG_QUALITY]):
        raise OSError(f"cv2.imwrite failed for {path}")


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
    r = _rng(seed, _STREAM_TF_IMAGE, role, ident, k)
    stream = _STREAM_TF_DISTRACTOR if role == _TF_DISTRACTOR else _STREAM_TF_ID
    face = render_face(_identity(int(seed), stream, int(ident)), r, 112)
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
    num_identities = _check_int("num_identities", num_identities, 1)
    probes_per_identity = _check_int("probes_per_identity", probes_per_identity, 1)
    gallery_per_identity = _check_int("gallery_per_identity", gallery_per_identity, 1)
    distractors = _check_int("distractors", distractors, 1)
    seed = _check_int("seed", seed, 0)
    gallery_lq_fraction = _check_fraction("gallery_lq_fraction", gallery_lq_fraction)
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

    lay = _rng(seed, _STREAM_TF_LAYOUT)
    levels = {}
    for f in ("Gallery_Match", "Gallery_Distractor"):
        n = len(plan[f])
        n_lq = int(round(gallery_lq_fraction * n))
        lv = np.full(n, -1.0)
        lv[lay.choice(n, n_lq, replace=False)] = np.sqrt(lay.uniform(0.0, 1.0, n_lq))
        levels[f] = lv
    sides, probe_levels = [], []
    for i, (name, role, ident, k) in enumerate(plan["Probe"]):
        g = _rng(seed, _STREAM_TF_LAYOUT, role, ident, k)
        sides.append(int(g.integers(_TF_PROBE_SIDE[0], _TF_PROBE_SIDE[1] + 1)))
        probe_levels.append(float(g.uniform(*_TF_PROBE_LEVEL)))
    levels["Probe"] = np.array(probe_levels)

    for f in _TF_FOLDERS:
        os.makedirs(dirs[f], exist_ok=True)
        for i, (name, role, ident, k) in enumerate(plan[f]):
            img = tinyface_image(seed, role, ident, k, float(levels[f][i]), sides[i] if role == _TF_PROBE else None)
            _write_jpeg(os.path.join(dirs[f], name), img)
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


# -------------------------------------------------------------------------------------------------- SCface
#: degrade_quality level range per SCface distance (1 = 4.2 m, hardest; 3 = 1.0 m, best).
SCFACE_LEVELS = {1: (0.75, 1.0), 2: (0.4, 0.65), 3: (0.0, 0.25)}
_SC_VISIBLE, _SC_IR, _SC_DISTANCES = (1, 2, 3, 4, 5), (6, 7), (1, 2, 3)


def _camera_look(seed, cam):
    """A camera's fixed per-channel gain (colour cast and brightness)."""
    r = _rng(seed, _STREAM_SC_CAMERA, cam)
    return (r.uniform(0.8, 1.1) * (1.0 + r.normal(0.0, 0.06, 3))).astype(np.float32)


def scface_image(seed, subject, cam=0, dist=0):
    """The image :func:`make_scface` (same ``seed``) writes for ``subject``: its frontal mug-shot for
    ``cam=0``, else the image of camera ``cam`` (1..5 visible, 6..7 infrared) at distance ``dist`` (1..3)."""
    r = _rng(seed, _STREAM_SC_IMAGE, subject, cam, dist)
    face = render_face(_identity(int(seed), _STREAM_SC_SUBJECT, int(subject)), r, 112)
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
    num_subjects = _check_int("num_subjects", num_subjects, 1)
    seed = _check_int("seed", seed, 0)
    first_subject = _check_int("first_subject", first_subject, 1)
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
        _write_jpeg(os.path.join(img_dir, f"{key}.jpg"), scface_image(seed, s, c, d))
    with open(os.path.join(str(root), "all.txt"), "w") as f:
        f.writelines(f"{key}\t{s}\n" for key, s, _, _ in rows)
    return {
        "root": str(root), "seed": seed, "subjects": subjects, "num_subjects": num_subjects,
        "num_gallery": num_subjects, "num_probes": sum(1 for r in rows if r[2] in _SC_VISIBLE),
        "num_ir": sum(1 for r in rows if r[2] in _SC_IR),
        "num_test80_subjects": sum(1 for s in subjects if 51 <= s <= 130),
        "keys": [r[0] for r in rows],
    }


# ----------------------------------------------------------------------------------------------- the suite
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
    return int(np.random.SeedSequence([int(seed), _STREAM_IJB_SEED]).generate_state(1)[0] & 0x7FFFFFFF)


def make_benchmarks(root, seed=0, size="small") -> dict:
    """Every synthetic benchmark under ``root``, where ``tools/eval_suite.py --data ROOT`` finds them:
    ``root/tinyface/``, ``root/scface/``, ``root/IJBC/`` (and ``root/IJBB/`` for ``size="medium"``), plus
    ``root/benchmarks.json`` (the summary returned, less its ``seconds``).

    The verification ``.bin`` sets are not made here: :func:`qgface_plugin.synthetic.faces.make_dataset` writes them
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
    seed = _check_int("seed", seed, 0)
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
