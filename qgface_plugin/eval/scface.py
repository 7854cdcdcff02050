"""SCface closed-set rank-1 identification per distance (d1/d2/d3), with a feature-norm quality view.

Protocol (as QGFace's ``validation/validation_lq/scface_helper.py::SCFaceTest`` reports it):

* **Gallery** = the frontal mug-shots, keys ``<subject>_frontal*`` (one or more per subject).
* **Probes** = the visible-light surveillance images ``<subject>_cam<c>_<d>`` with cameras ``c`` = 1..5.
  Cameras 6, 7 and 8 are infrared / night-vision and are excluded, as are the mug-shot rotation series
  ``<subject>_L<n>`` / ``<subject>_R<n>``.
* **Distance** ``d`` = 1 (4.20 m, hardest), 2 (2.60 m), 3 (1.00 m); rank-1 is reported separately for
  each distance (``d1``, ``d2``, ``d3``) and over all probes.
* **Subject** = the 3-digit prefix before the first ``"_"`` of the key (``001_cam1_1`` -> 1).
* **Score / ranking** = cosine similarity with the pessimistic tie rule of
  :func:`qgface_plugin.eval.identification.probe_ranks` (a non-matching gallery image tied with the best
  correct one counts as ahead). There are no distractors.
* **Protocols**: ``"all"`` = every subject, no fine-tuning (what the QGFace authors report);
  ``"test80"`` = subjects 51..130 only, both gallery and probes (the 50/80 train/test split common in
  the SCface literature, whose fine-tuned methods train on subjects 1..50). An explicit ``subjects`` list
  replaces the 51..130 set and is labelled ``"custom"``.

Data layout: ``<data>/all.txt`` (tab-separated, first column the image key such as ``001_cam1_1``) with
images at ``<data>/aligned_dir/<key>.jpg``. Without ``all.txt`` the ``*.jpg`` files of
``<data>/aligned_dir`` (or, failing that, of ``<data>`` itself) are listed and their stems are the keys.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from . import erc as erc_mod
from .features import embed_files
from .identification import SCORE, TIE_RULE, probe_ranks, quality_bins

__all__ = ["DISTANCES", "PROTOCOLS", "TEST80_SUBJECTS", "parse_key", "list_scface", "select_subjects",
           "read_subjects", "rank1_by_distance", "evaluate_scface", "quality_table"]

DISTANCES = {1: "d1", 2: "d2", 3: "d3"}
DISTANCE_M = {"d1": 4.2, "d2": 2.6, "d3": 1.0}
VISIBLE_CAMERAS = (1, 2, 3, 4, 5)
PROTOCOLS = ("all", "test80")
TEST80_SUBJECTS = tuple(range(51, 131))

_FRONTAL = re.compile(r"^(\d{3})_frontal\w*$", re.IGNORECASE)
_CAM = re.compile(r"^(\d{3})_cam(\d+)_(\d+)$", re.IGNORECASE)
_IR_CAM = re.compile(r"^(\d{3})_cam[678](_\w+)?$", re.IGNORECASE)      # IR / night cameras: known, skipped
_ROTATION = re.compile(r"^(\d{3})_[LR]\d+$", re.IGNORECASE)              # mug-shot rotation series: skipped


def parse_key(key: str):
    """Classify one SCface key.

    Returns ``("gallery", subject)``, ``("probe", subject, camera, distance)``, ``("skip", subject)`` for a
    known excluded kind (IR cameras 6-8, rotation mug-shots) or ``None`` when the key is not understood.
    """
    m = _FRONTAL.match(key)
    if m:
        return ("gallery", int(m.group(1)))
    m = _CAM.match(key)
    if m:
        subj, cam, dist = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if cam in VISIBLE_CAMERAS and dist in DISTANCES:
            return ("probe", subj, cam, dist)
        if cam in (6, 7, 8):
            return ("skip", subj)
        return None
    m = _IR_CAM.match(key) or _ROTATION.match(key)
    if m:
        return ("skip", int(m.group(1)))
    return None


def _keys(root: Path):
    """``[(key, where)]`` from all.txt (``where`` = ``all.txt line N``) or from an image folder, and the image dir."""
    lst = root / "all.txt"
    if lst.is_file():
        img_dir = root / "aligned_dir"
        out = []
        for n, line in enumerate(lst.read_text(encoding="utf-8", errors="replace").splitlines(), 1):
            if not line.strip():
                continue
            key = line.split("\t")[0].strip()
            if key.lower().endswith(".jpg"):
                key = key[:-4]
            out.append((key, f"{lst}: line {n}"))
        if not out:
            raise QGFaceInputError(f"{lst}: lists no image keys")
        return out, img_dir
    for img_dir in (root / "aligned_dir", root):
        if img_dir.is_dir():
            files = sorted(p for p in img_dir.iterdir() if p.is_file() and p.suffix.lower() == ".jpg")
            if files:
                return [(p.stem, str(p)) for p in files], img_dir
    raise QGFaceInputError(f"{root}: no all.txt and no *.jpg images in {root / 'aligned_dir'} or {root}")


def list_scface(root) -> dict:
    """List the SCface gallery and visible-light probes under ``root``.

    Returns:
        ``{"root", "image_dir", "gallery_keys", "gallery_paths", "gallery_ids" (int64), "probes": [(key, path,
        subject, camera, distance)], "skipped": number of known excluded keys}``.
    """
    root = Path(root)
    if not root.is_dir():
        raise QGFaceInputError(f"{root}: SCface data folder not found")
    keys, img_dir = _keys(root)
    seen = {}
    gk, gp, gi, probes, skipped = [], [], [], [], 0
    for key, where in keys:
        kind = parse_key(key)
        if kind is None:
            raise QGFaceInputError(f"{where}: key {key!r} is neither <subject>_frontal* nor "
                                   f"<subject>_cam<1-8>_<1-3> (nor a known excluded kind)")
        if kind[0] == "skip":
            skipped += 1
            continue
        if key in seen:
            raise QGFaceInputError(f"{where}: key {key!r} already listed at {seen[key]}")
        seen[key] = where
        path = img_dir / f"{key}.jpg"
        if not path.is_file():
            raise QGFaceInputError(f"{path}: image for key {key!r} ({where}) not found")
        if kind[0] == "gallery":
            gk.append(key)
            gp.append(path)
            gi.append(kind[1])
        else:
            probes.append((key, path, kind[1], kind[2], kind[3]))
    if not probes:
        raise QGFaceInputError(f"{root}: no visible-light probes (<subject>_cam<1-5>_<1-3>) found")
    no_gallery = sorted({p[2] for p in probes} - set(gi))
    if no_gallery:
        shown = ", ".join(f"{s:03d}" for s in no_gallery[:10]) + (" ..." if len(no_gallery) > 10 else "")
        raise QGFaceInputError(f"{root}: subject {shown} has probes but no frontal gallery image "
                               f"(<subject>_frontal*.jpg)")
    return {"root": root, "image_dir": img_dir, "gallery_keys": gk, "gallery_paths": gp,
            "gallery_ids": np.array(gi, dtype=np.int64), "probes": probes, "skipped": skipped}


def read_subjects(path) -> list:
    """Subject ids from a file, one per line (``051`` or ``51``); blank lines and ``#`` comments ignored."""
    path = Path(path)
    if not path.is_file():
        raise QGFaceInputError(f"{path}: subjects file not found")
    out = []
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        s = line.split("#")[0].strip()
        if not s:
            continue
        if not s.isdigit():
            raise QGFaceInputError(f"{path}: line {n}: {s!r} is not a subject id")
        out.append(int(s))
    if not out:
        raise QGFaceInputError(f"{path}: lists no subjects")
    return out


def select_subjects(lst: dict, protocol="all", subjects=None):
    """Restrict a :func:`list_scface` listing to a protocol's subjects: ``(listing, label, subject set or None)``."""
    if protocol not in PROTOCOLS:
        raise QGFaceInputError(f"SCface protocol {protocol!r}; use one of {', '.join(PROTOCOLS)}")
    if subjects is not None:
        keep, label = {int(s) for s in subjects}, "custom"
    elif protocol == "test80":
        keep, label = set(TEST80_SUBJECTS), "test80"
    else:
        return lst, "all", None
    gmask = np.isin(lst["gallery_ids"], sorted(keep))
    out = dict(lst)
    out["gallery_keys"] = [k for k, m in zip(lst["gallery_keys"], gmask) if m]
    out["gallery_paths"] = [p for p, m in zip(lst["gallery_paths"], gmask) if m]
    out["gallery_ids"] = lst["gallery_ids"][gmask]
    out["probes"] = [p for p in lst["probes"] if p[2] in keep]
    if not out["probes"]:
        raise QGFaceInputError(f"SCface protocol {label}: none of the {len(keep)} selected subjects has probes")
    return out, label, keep


def rank1_by_distance(probe_feats, probe_ids, probe_distances, gallery_feats, gallery_ids, chunk=256):
    """Rank-1 (fraction) per distance and overall; returns ``(result dict, per-probe ranks)``.

    ``result`` = ``{"rank1": {"d1", "d2", "d3", "overall"}, "probes": {"d1", "d2", "d3", "overall"}}``; a
    distance with no probes gets rank-1 ``None``.
    """
    r = probe_ranks(probe_feats, probe_ids, gallery_feats, gallery_ids, chunk=chunk)
    dist = np.asarray(probe_distances, dtype=np.int64).reshape(-1)
    if len(dist) != len(r):
        raise QGFaceInputError(f"scface: {len(r)} probes vs {len(dist)} distances")
    rank1, counts = {}, {}
    for d, name in DISTANCES.items():
        m = dist == d
        counts[name] = int(m.sum())
        rank1[name] = float((r[m] == 1).mean()) if m.any() else None
    counts["overall"] = int(len(r))
    rank1["overall"] = float((r == 1).mean()) if len(r) else None
    return {"rank1": rank1, "probes": counts}, r


def evaluate_scface(extractor, root, protocol="all", subjects=None, bins=3, load_batch=1024, chunk=256,
                    progress=False, workers=None, cache_dir=None, erc=None) -> dict:
    """Run the SCface protocol with a :class:`~qgface_plugin.eval.features.FeatureExtractor`.

    Returns:
        ``{"protocol", "subjects", "root", "score", "tie_rule", "rank1": {"d1", "d2", "d3", "overall"},
        "probes": {...counts}, "per_camera": {"cam<c>": {"d1", ...}}, "counts": {"gallery", "probes",
        "skipped_keys"}, "quality_bins": [...], "norm_mean": {"probe", "gallery"}, "distance_m", "per_image"}``
        (fractions, not percent). ``per_image`` holds one entry per probe and gallery image and is not JSON:
        the raw (non-flipped) feature norm and, for probes, whether rank-1 was correct (see
        :func:`quality_table`). ``"erc"``: the error-versus-reject curve of the rank-1 error over all the
        protocol's probes (every distance), rejecting the lowest-norm probes
        (:func:`~qgface_plugin.eval.erc.rank1_erc`; ``erc`` as in
        :func:`~qgface_plugin.eval.tinyface.evaluate_tinyface`). ``per_probe`` (not JSON): ``{"rank", "norm",
        "distance" (1/2/3), "camera"}`` of the probes, full precision.
    """
    erc_opts = erc_mod.options(erc)
    lst, label, keep = select_subjects(list_scface(root), protocol, subjects)
    probes = lst["probes"]
    pids = np.array([p[2] for p in probes], dtype=np.int64)
    pcam = np.array([p[3] for p in probes], dtype=np.int64)
    pdist = np.array([p[4] for p in probes], dtype=np.int64)
    pf, pn = embed_files(extractor, [p[1] for p in probes], int(load_batch), progress, "probes", workers,
                         cache_dir, "scface-probes")
    gf, gn = embed_files(extractor, lst["gallery_paths"], int(load_batch), progress, "gallery", workers,
                         cache_dir, "scface-gallery")
    res, r = rank1_by_distance(pf, pids, pdist, gf, lst["gallery_ids"], chunk=chunk)
    per_cam = {}
    for c in sorted(set(pcam.tolist())):
        per_cam[f"cam{c}"] = {name: (float((r[(pcam == c) & (pdist == d)] == 1).mean())
                                     if ((pcam == c) & (pdist == d)).any() else None)
                              for d, name in DISTANCES.items()}
    n_subj = len(np.unique(lst["gallery_ids"]))
    return {
        "protocol": label,
        "protocol_requested": protocol,
        "subjects": int(n_subj),
        "subject_range": [int(lst["gallery_ids"].min()), int(lst["gallery_ids"].max())],
        "subjects_selected": None if keep is None else len(keep),
        "root": str(lst["root"]),
        "score": SCORE,
        "tie_rule": TIE_RULE,
        **res,
        "per_camera": per_cam,
        "counts": {"gallery": len(lst["gallery_paths"]), "probes": len(probes), "skipped_keys": lst["skipped"]},
        "quality_bins": quality_bins(pn, r == 1, bins=min(int(bins), len(pn))),
        "norm_mean": {"probe": float(pn.mean()), "gallery": float(gn.mean())},
        "distance_m": DISTANCE_M,
        **({"erc": erc_mod.rank1_erc(r, pn, **erc_opts)} if erc_opts is not None else {}),
        "per_image": quality_table(lst, pn, gn, r),
        "per_probe": {"rank": r, "norm": pn, "distance": pdist, "camera": pcam},
    }


def quality_table(lst: dict, probe_norms, gallery_norms, ranks) -> dict:
    """The per-image quality table (columns, for :func:`~qgface_plugin.eval.cli.write_quality`) of a
    :func:`select_subjects` listing: probes in listing order, then the gallery. ``camera``, ``distance``
    (``d1``/``d2``/``d3``) and ``rank1_correct`` (1/0) are empty for the gallery mug-shots."""
    probes, ng = lst["probes"], len(lst["gallery_keys"])
    return {
        "role": ["probe"] * len(probes) + ["gallery"] * ng,
        "key": [p[0] for p in probes] + list(lst["gallery_keys"]),
        "subject": [p[2] for p in probes] + [int(s) for s in lst["gallery_ids"]],
        "camera": [p[3] for p in probes] + [None] * ng,
        "distance": [DISTANCES[p[4]] for p in probes] + [None] * ng,
        "norm": np.concatenate([probe_norms, gallery_norms]),
        "rank1_correct": [bool(x == 1) for x in ranks] + [None] * ng,
    }
