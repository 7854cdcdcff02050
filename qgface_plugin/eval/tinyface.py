"""TinyFace closed-set identification (CMC rank-1/5/20), with a feature-norm quality view.

Protocol (as the TinyFace benchmark is reported by AdaFace / QGFace / CVLFace):

* **Probes** = every image in ``Probe/``.
* **Gallery** = every image in ``Gallery_Match/`` **plus every image in** ``Gallery_Distractor/``.
  Distractors carry no identity: they get the label ``-1`` here (AdaFace uses ``-100``) and can never be
  a correct match, but they do take rank positions away from the correct match.
* **Identity** = the integer before the first ``"_"`` of the file name (``12_3.jpg`` -> 12). Probe and
  gallery-match files must have one; distractor names are not parsed.
* **Score, metric, tie rule**: those of :mod:`qgface_plugin.eval.identification` -- cosine similarity of the
  L2-normalised fused features; closed-set CMC (rank-k = the fraction of probes whose identity appears among
  the k highest-scoring gallery images; every probe identity must be present in ``Gallery_Match``); the
  pessimistic tie rule (a non-matching gallery image tied with the best correct one counts as ahead).

Data layout: AdaFace's aligned copy ``<data>/{Probe,Gallery_Match,Gallery_Distractor}/*.jpg`` (aligned,
112x112; other sizes are resized to 112). :func:`resolve_root` also looks in
``<data>/aligned_pad_0.1_pad_high/``, ``<data>/tinyface/Testing_Set/`` and any other direct sub-folder
of ``<data>``, and reports the root it used.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from . import erc as erc_mod
from .features import embed_files
from .identification import SCORE, TIE_RULE, probe_ranks, quality_bins

__all__ = ["FOLDERS", "IMAGE_EXTS", "resolve_root", "list_tinyface", "evaluate_tinyface", "quality_table"]

FOLDERS = ("Probe", "Gallery_Match", "Gallery_Distractor")
IMAGE_EXTS = (".jpg", ".jpeg", ".png", ".bmp")
DISTRACTOR_ID = -1


# ------------------------------------------------------------------------------------------- listing
def resolve_root(data) -> Path:
    """The folder holding ``Probe/``, ``Gallery_Match/`` and ``Gallery_Distractor/``.

    Tried in order: ``data``, ``data/aligned_pad_0.1_pad_high``, ``data/tinyface/Testing_Set``, then the
    other direct sub-folders of ``data`` (sorted). The first one holding all three folders wins; failing
    that, the first holding any of them (so that :func:`list_tinyface` names the missing one).
    """
    data = Path(data)
    if not data.is_dir():
        raise QGFaceInputError(f"{data}: TinyFace data folder not found")
    cands = [data, data / "aligned_pad_0.1_pad_high", data / "tinyface" / "Testing_Set"]
    cands += [p for p in sorted(data.iterdir()) if p.is_dir() and p not in cands]
    for c in cands:
        if all((c / f).is_dir() for f in FOLDERS):
            return c
    for c in cands:
        if any((c / f).is_dir() for f in FOLDERS):
            return c
    raise QGFaceInputError(f"{data}: no {'/'.join(FOLDERS)} folders found in it or one level below "
                           f"(expected e.g. {data}/Probe/*.jpg)")


def _images(folder: Path) -> list:
    if not folder.is_dir():
        raise QGFaceInputError(f"{folder}: TinyFace folder not found")
    files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_EXTS)
    if not files:
        raise QGFaceInputError(f"{folder}: TinyFace folder holds no images ({', '.join(IMAGE_EXTS)})")
    return files


def _identity(path: Path) -> int:
    prefix, sep, _ = path.stem.partition("_")
    if not sep or not prefix:
        raise QGFaceInputError(f"{path}: file name has no '<identity>_' prefix (expected e.g. 12_3.jpg)")
    try:
        ident = int(prefix)
    except ValueError:
        raise QGFaceInputError(f"{path}: identity prefix {prefix!r} is not an integer") from None
    if ident < 0:
        raise QGFaceInputError(f"{path}: identity prefix {prefix!r} is negative")
    return ident


def list_tinyface(root) -> dict:
    """List the TinyFace test split under ``root`` (resolved with :func:`resolve_root`).

    Returns:
        ``{"root": Path used, "probe_paths", "probe_ids" (int64), "gallery_paths" (Gallery_Match then
        Gallery_Distractor), "gallery_ids" (int64; distractors = -1), "n_match", "n_distractor"}``.
    """
    root = resolve_root(root)
    probes = _images(root / "Probe")
    match = _images(root / "Gallery_Match")
    distractors = _images(root / "Gallery_Distractor")
    probe_ids = np.array([_identity(p) for p in probes], dtype=np.int64)
    match_ids = [_identity(p) for p in match]
    gallery_ids = np.array(match_ids + [DISTRACTOR_ID] * len(distractors), dtype=np.int64)
    return {"root": root, "probe_paths": probes, "probe_ids": probe_ids, "gallery_paths": match + distractors,
            "gallery_ids": gallery_ids, "n_match": len(match), "n_distractor": len(distractors)}


# ---------------------------------------------------------------------------------------- evaluation
def evaluate_tinyface(extractor, root, ranks=(1, 5, 20), bins=3, load_batch=1024, chunk=256,
                      progress=False, workers=None, cache_dir=None, erc=None) -> dict:
    """Run the TinyFace protocol with a :class:`~qgface_plugin.eval.features.FeatureExtractor`.

    Images are read ``load_batch`` at a time by ``workers`` threads (so the 158k-image gallery never sits in
    memory as pixels); ``cache_dir`` keeps the features on disk (resumable, see :mod:`~qgface_plugin.eval.cache`).

    Returns:
        ``{"root", "score", "tie_rule", "cmc": {"rank1", ...}, "counts": {"probes", "gallery_match",
        "distractors", "identities"}, "quality_bins": [...] (:func:`~qgface_plugin.eval.identification.quality_bins`),
        "norm_mean": {"probe", "gallery_match",
        "distractor"}, "per_image": {"role", "file", "identity", "norm", "rank"}}`` (fractions, not percent).
        ``per_image`` holds one entry per image (probes, gallery matches, distractors) and is not JSON: the
        raw (non-flipped) feature norm and, for probes, the CMC rank (see :func:`quality_table`).
        ``"erc"``: the error-versus-reject curve of the rank-1 error, rejecting the lowest-norm probes
        (:func:`~qgface_plugin.eval.erc.rank1_erc`; ``erc`` = ``None`` for the defaults, a dict of
        ``fractions``/``draws``/``seed``, or ``False`` for none). ``per_probe`` (not JSON): ``{"rank", "norm"}``
        of the probes, full precision.
    """
    erc_opts = erc_mod.options(erc)
    lst = list_tinyface(root)
    pf, pn = embed_files(extractor, lst["probe_paths"], int(load_batch), progress, "probes", workers,
                         cache_dir, "tinyface-probes")
    gf, gn = embed_files(extractor, lst["gallery_paths"], int(load_batch), progress, "gallery", workers,
                         cache_dir, "tinyface-gallery")
    r = probe_ranks(pf, lst["probe_ids"], gf, lst["gallery_ids"], chunk=chunk)
    nm = lst["n_match"]
    return {
        "root": str(lst["root"]),
        "score": SCORE,
        "tie_rule": TIE_RULE,
        "cmc": {f"rank{int(k)}": float((r <= int(k)).mean()) for k in ranks},
        "counts": {"probes": len(lst["probe_paths"]), "gallery_match": nm, "distractors": lst["n_distractor"],
                   "identities": int(len(np.unique(lst["probe_ids"])))},
        "quality_bins": quality_bins(pn, r == 1, bins=bins),
        "norm_mean": {"probe": float(pn.mean()), "gallery_match": float(gn[:nm].mean()),
                      "distractor": float(gn[nm:].mean())},
        **({"erc": erc_mod.rank1_erc(r, pn, **erc_opts)} if erc_opts is not None else {}),
        "per_image": quality_table(lst, pn, gn, r),
        "per_probe": {"rank": r, "norm": pn},
    }


def quality_table(lst: dict, probe_norms, gallery_norms, ranks) -> dict:
    """The per-image quality table (columns, for :func:`~qgface_plugin.eval.cli.write_quality`): probes, then
    the gallery (match, then distractors); ``file`` relative to the root, ``rank`` empty for the gallery."""
    root, nm, ng = Path(lst["root"]), lst["n_match"], len(lst["gallery_paths"])
    paths = list(lst["probe_paths"]) + list(lst["gallery_paths"])
    return {
        "role": ["probe"] * len(lst["probe_paths"]) + ["gallery_match"] * nm + ["distractor"] * (ng - nm),
        "file": [Path(p).relative_to(root).as_posix() for p in paths],
        "identity": np.concatenate([lst["probe_ids"], lst["gallery_ids"]]),
        "norm": np.concatenate([probe_norms, gallery_norms]),
        "rank": [int(x) for x in ranks] + [None] * ng,
    }
