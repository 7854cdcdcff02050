"""Closed-set identification, shared by TinyFace (:mod:`.tinyface`) and SCface (:mod:`.scface`).

* **Score** = cosine similarity, i.e. the inner product of the L2-normalised fused features (the flip
  fusion is the :class:`~qgface_plugin.eval.features.FeatureExtractor`'s).
* **Rank** of a probe = the position of its best correct gallery image. Gallery images with a negative
  identity are distractors: they never match, but take rank positions away from the correct match.
  Every probe identity must be present in the gallery.
* **Tie rule** (pessimistic): a probe's rank is ``1 +`` the number of *non-matching* gallery images
  (other identities and distractors) whose score is ``>=`` the best score of a correct gallery image. A
  probe is therefore correct at rank k iff its best correct match scores strictly higher than all but
  fewer than k of the non-matching gallery images; a non-matching image tied with it counts as ahead.
* **CMC** rank-k = the fraction of probes of rank ``<= k``.
* **Quality view**: rank-1 per quantile bin of probe feature norm (:func:`quality_bins`).
"""
from __future__ import annotations

import numpy as np

from ..errors import QGFaceInputError
from . import erc as erc_mod
from .features import l2_normalise
from .quality_view import bin_rows

__all__ = ["SCORE", "TIE_RULE", "probe_ranks", "cmc", "quality_bins", "quality_markdown"]

SCORE = "cosine similarity (inner product of L2-normalised fused features)"
TIE_RULE = ("pessimistic: rank = 1 + number of non-matching gallery images scoring >= the best correct "
            "gallery image")


def _unit_rows(x) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise QGFaceInputError(f"features must be [N, D], got shape {x.shape}")
    if not np.isfinite(x).all():
        raise QGFaceInputError("features contain non-finite values")
    return l2_normalise(x)


def probe_ranks(probe_feats, probe_ids, gallery_feats, gallery_ids, chunk=256) -> np.ndarray:
    """Per-probe rank (1 = best) of the best correct gallery image, with the module's tie rule.

    Gallery images with a negative id are distractors. Scores are computed ``chunk`` probes at a time,
    so memory is ``chunk x len(gallery)``.
    """
    p, g = _unit_rows(probe_feats), _unit_rows(gallery_feats)
    pid = np.asarray(probe_ids, dtype=np.int64).reshape(-1)
    gid = np.asarray(gallery_ids, dtype=np.int64).reshape(-1)
    if len(p) != len(pid) or len(g) != len(gid):
        raise QGFaceInputError(f"cmc: {len(p)} probe features vs {len(pid)} ids, {len(g)} gallery features vs "
                               f"{len(gid)} ids")
    if p.shape[1] != g.shape[1]:
        raise QGFaceInputError(f"cmc: probe dim {p.shape[1]} != gallery dim {g.shape[1]}")
    if (pid < 0).any():
        raise QGFaceInputError("cmc: probe ids must be >= 0 (negative ids mark distractors)")
    missing = np.setdiff1d(np.unique(pid), np.unique(gid[gid >= 0]))
    if len(missing):
        shown = ", ".join(str(int(m)) for m in missing[:10]) + (" ..." if len(missing) > 10 else "")
        raise QGFaceInputError(f"cmc: probe identity {shown} has no image in the gallery match set "
                               f"({len(missing)} identities missing)")
    ranks = np.empty(len(p), dtype=np.int64)
    for i in range(0, len(p), max(1, int(chunk))):
        s = p[i:i + chunk] @ g.T                                  # [b, G]
        mate = gid[None, :] == pid[i:i + chunk, None]             # [b, G]
        best = np.where(mate, s, -np.inf).max(axis=1)             # best correct score per probe
        ranks[i:i + chunk] = 1 + ((s >= best[:, None]) & ~mate).sum(axis=1)
    return ranks


def cmc(probe_feats, probe_ids, gallery_feats, gallery_ids, ranks=(1, 5, 20), chunk=256) -> dict:
    """Closed-set CMC: ``{"rank1": .., "rank5": .., "rank20": ..}`` as fractions of the probes."""
    r = probe_ranks(probe_feats, probe_ids, gallery_feats, gallery_ids, chunk=chunk)
    if len(r) == 0:
        raise QGFaceInputError("cmc: no probes")
    return {f"rank{int(k)}": float((r <= int(k)).mean()) for k in ranks}


def quality_bins(probe_norms, correct_rank1, bins=3) -> list:
    """Rank-1 per quantile bin of probe feature norm (low norm = low quality), lowest bin first.

    Probes are split by :func:`~qgface_plugin.eval.quality_view.bin_rows` (stable sort by norm, ``bins``
    near-equal groups named ``lowest`` / ``middle`` / ``highest`` with 3 bins, otherwise ``q1..qB``).

    Returns:
        ``[{"bin", "count" (probes), "quality_min", "quality_max" (range of probe norm in the bin), "rank1"
        (fraction)}, ...]``.
    """
    norms = np.asarray(probe_norms, dtype=np.float64).reshape(-1)
    ok = np.asarray(correct_rank1, dtype=bool).reshape(-1)
    if len(norms) != len(ok):
        raise QGFaceInputError(f"quality_bins: {len(norms)} norms vs {len(ok)} rank-1 flags")
    return [{**row, "rank1": float(ok[idx].mean())} for row, idx in bin_rows(norms, bins, "quality_bins")]


def quality_markdown(res: dict) -> list:
    """The Markdown lines every identification report ends with: rank-1 by probe feature-norm bin
    (``res["quality_bins"]``, from :func:`quality_bins`) and, when ``res`` has one, the error-versus-reject
    note and table (``res["erc"]``)."""
    lines = ["", "Rank-1 by probe feature-norm bin (quality view)", "",
             "| bin | probes | norm range | rank-1 |", "|---|---|---|---|"]
    for b in res["quality_bins"]:
        lines.append(f"| {b['bin']} | {b['count']} | {b['quality_min']:.3f}–{b['quality_max']:.3f} | "
                     f"{100 * b['rank1']:.2f} |")
    if res.get("erc"):
        lines += ["", erc_mod.markdown_note(res["erc"]), ""] + erc_mod.markdown_table([("probes", res["erc"])])
    return lines
