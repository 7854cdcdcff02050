"""IJB-B / IJB-C 1:1 verification core (pure numpy): meta readers, template pooling, pair scores, TAR@FAR.

Mirrors the protocol of arcface_torch ``eval_ijbc.py`` (MIT, (c) Jiankang Deng and Jia Guo; re-written here,
not copied):

* meta files under ``<data_dir>/meta/`` (``t = target.lower()``), single-space separated, no header:
  ``<t>_face_tid_mid.txt`` (``image_name template_id media_id``), ``<t>_template_pair_label.txt``
  (``tid1 tid2 label``, 1 = same subject) and ``<t>_name_5pts_score.txt`` (``image_name x1 y1 .. x5 y5 score``).
  Upstream aligns the tid/mid and 5pts files **by row index**; here the names are checked to be row-aligned.
* image features -> (optional per-image L2 normalisation when the norm is *not* used) -> (optional x detector
  score) -> mean within each (template, media) -> **sum** over the medias of a template -> L2-normalise.
* score = cosine of the two template features; TAR at FAR read off ``sklearn.metrics.roc_curve`` at the ROC point
  nearest to each FAR (no interpolation), ties going to the largest TPR, as upstream (:mod:`.roc`).

Deliberate differences from upstream: a pair naming a template id that has no images raises
:class:`~qgface_plugin.errors.QGFaceInputError` (upstream silently maps it to row 0 or raises ``IndexError``);
template features are returned as float32 (upstream keeps float64; scores agree to float32 tolerance).
Image alignment is :mod:`qgface_plugin.eval.align`; feature extraction :mod:`qgface_plugin.eval.features`.
"""
from __future__ import annotations

import os
from typing import Dict, Iterable, Optional, Sequence, Tuple

import numpy as np

from ..errors import QGFaceInputError
from ..formats.ijb_meta import meta_paths
from .features import l2_normalise
from .quality_view import bin_rows
from .roc import FAR_DECADES, far_key, tar_at_far

__all__ = ["DEFAULT_FARS", "DEFAULT_ERC_FAR", "read_meta", "read_pairs", "template_features",
           "pair_scores", "template_quality", "pair_min_template_quality", "quality_tar", "evaluate_ijb"]

DEFAULT_FARS = FAR_DECADES  # the FARs the TAR is read at
DEFAULT_ERC_FAR = 1e-4  # the error-versus-reject curve's FAR (or the smallest larger decade the set resolves)


# ----------------------------------------------------------------------------------------------------------
# meta readers
# ----------------------------------------------------------------------------------------------------------
def _check_exists(path: str) -> None:
    if not os.path.isfile(path):
        raise QGFaceInputError(f"IJB meta file not found: {path}")


def _parse_lines(path: str, ncols: int, kinds: Sequence[type]):
    """Slow, exact parser: yields per-column lists; raises naming ``path:line`` on the first bad line."""
    cols = [[] for _ in range(ncols)]
    with open(path, "r", encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            fields = line.split()
            if not fields:
                continue  # blank line (pandas skips these too)
            if len(fields) != ncols:
                raise QGFaceInputError(f"{path}:{lineno}: expected {ncols} space-separated fields, got "
                                       f"{len(fields)}: {line.rstrip()!r}")
            for j, (v, kind) in enumerate(zip(fields, kinds)):
                try:
                    cols[j].append(kind(v) if kind is not str else v)
                except ValueError:
                    raise QGFaceInputError(f"{path}:{lineno}: field {j + 1} {v!r} is not "
                                           f"{'an integer' if kind is int else 'a number'}") from None
    return cols


def _read_int_table(path: str, ncols: int) -> np.ndarray:
    """All-integer table ``[n, ncols]``; a C fast path for the 15.6M-line pair file, exact fallback otherwise."""
    _check_exists(path)
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    body = text.strip("\n")
    n_lines = body.count("\n") + 1 if body else 0
    # fast path only for the canonical layout: single spaces, no blank lines, no CR, no stray text
    if (n_lines and "\r" not in body and "\n\n" not in body and "  " not in body
            and body.count(" ") == n_lines * (ncols - 1)):
        import warnings
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            try:
                arr = np.fromstring(body, dtype=np.int64, sep=" ")  # noqa: NPY201 (text mode, not deprecated)
            except (DeprecationWarning, ValueError):
                arr = None
        if arr is not None and arr.size == n_lines * ncols:
            return arr.reshape(n_lines, ncols)
    cols = _parse_lines(path, ncols, [int] * ncols)
    return np.asarray(cols, dtype=np.int64).T.reshape(-1, ncols)


def read_meta(data_dir: str, target: str = "IJBC") -> Dict[str, np.ndarray]:
    """Read the IJB-B/C meta files of ``target`` under ``<data_dir>/meta``.

    Returns a dict: ``names`` [N] (str), ``templates`` [N] int64, ``medias`` [N] int64, ``landmarks`` [N,5,2]
    float32 (original-image pixels), ``det_scores`` [N] float32, ``p1``/``p2``/``labels`` [P] int64.
    Raises :class:`QGFaceInputError` on a missing file, a malformed line (``file:line``), tid/mid and 5pts row
    counts that differ, or names that are not row-aligned (first mismatching line).
    """
    paths = meta_paths(data_dir, target)
    for p in paths.values():
        _check_exists(p)
    names, tids, mids = _parse_lines(paths["face_tid_mid"], 3, [str, int, int])
    pts_cols = _parse_lines(paths["name_5pts_score"], 12, [str] + [float] * 11)
    pts_names = pts_cols[0]
    if len(names) != len(pts_names):
        raise QGFaceInputError(f"row counts differ: {paths['face_tid_mid']} has {len(names)} rows, {paths['name_5pts_score']} has "
                               f"{len(pts_names)} rows (upstream aligns the two files by row index)")
    if names != pts_names:
        i = next(k for k, (a, b) in enumerate(zip(names, pts_names)) if a != b)
        raise QGFaceInputError(f"names not row-aligned at data row {i + 1}: {paths['face_tid_mid']} has {names[i]!r}, "
                               f"{paths['name_5pts_score']} has {pts_names[i]!r}")
    pts = np.asarray(pts_cols[1:], dtype=np.float64).T.reshape(-1, 11)
    pairs = _read_int_table(paths["template_pair_label"], 3)
    if pairs.size and not np.isin(pairs[:, 2], (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(pairs[:, 2], (0, 1)))[0])
        raise QGFaceInputError(f"{paths['template_pair_label']}: data row {bad + 1}: label {pairs[bad, 2]} is not 0 or 1")
    return {"names": np.asarray(names, dtype=str),
            "templates": np.asarray(tids, dtype=np.int64),
            "medias": np.asarray(mids, dtype=np.int64),
            "landmarks": pts[:, :10].reshape(-1, 5, 2).astype(np.float32),
            "det_scores": pts[:, 10].astype(np.float32),
            "p1": pairs[:, 0].copy(), "p2": pairs[:, 1].copy(), "labels": pairs[:, 2].copy()}


def read_pairs(data_dir: str, target: str = "IJBC") -> Dict[str, np.ndarray]:
    """Only the pair file of ``target``: ``{"p1", "p2", "labels"}`` (int64), as :func:`read_meta` returns them."""
    path = meta_paths(data_dir, target)["template_pair_label"]
    pairs = _read_int_table(path, 3)
    if pairs.size and not np.isin(pairs[:, 2], (0, 1)).all():
        bad = int(np.flatnonzero(~np.isin(pairs[:, 2], (0, 1)))[0])
        raise QGFaceInputError(f"{path}: data row {bad + 1}: label {pairs[bad, 2]} is not 0 or 1")
    return {"p1": pairs[:, 0].copy(), "p2": pairs[:, 1].copy(), "labels": pairs[:, 2].copy()}


# ----------------------------------------------------------------------------------------------------------
# template pooling
# ----------------------------------------------------------------------------------------------------------
def template_features(img_feats, templates, medias, use_norm: bool = True, scores=None,
                      chunk: int = 65536) -> Tuple[np.ndarray, np.ndarray]:
    """Pool raw image features ``[N, D]`` into L2-normalised template features, as upstream ``eval_ijbc.py``.

    * ``use_norm=True`` (upstream N1, its default): the raw features are used as they are, so the feature norm
      weights each image. ``use_norm=False``: each image feature is L2-normalised first.
    * ``scores`` (``[N]`` detector/faceness scores; upstream D1, its default, passes them): each image feature
      is multiplied by its score after the step above. ``None`` = no score weighting.
    * mean over the images of each (template, media), **sum** over the medias of a template, L2-normalise.

    All of it is one weighted sum per template, ``T_t = sum_i w_i x_i`` with ``w_i = score_i / |x_i|^[not
    use_norm] / (images in i's media)``, computed as a sparse ``[T, N] x [N, D]`` product in float64, ``chunk``
    images at a time (no float64 copy of all the features).
    Returns ``(unique_templates [T] int64 sorted, feats [T, D] float32)``.
    """
    import scipy.sparse as sp
    x = np.asarray(img_feats)
    if x.dtype not in (np.float32, np.float64):
        x = x.astype(np.float32)
    templates = np.asarray(templates).astype(np.int64, copy=False).ravel()
    medias = np.asarray(medias).astype(np.int64, copy=False).ravel()
    if x.ndim != 2 or len(templates) != len(x) or len(medias) != len(x):
        raise QGFaceInputError(f"template_features: img_feats must be [N, D] with N == len(templates) == "
                               f"len(medias); got {x.shape}, {templates.shape}, {medias.shape}")
    n = len(x)
    w = np.ones(n)
    step = max(1, int(chunk))
    for i in range(0, n, step):
        xi = x[i:i + step]
        if not np.isfinite(xi).all():
            raise QGFaceInputError("template_features: img_feats has non-finite values")
        if not use_norm:
            norm = np.sqrt(np.einsum("ij,ij->i", xi, xi, dtype=np.float64))
            w[i:i + step] = 1.0 / np.where(norm > 0, norm, 1.0)  # zero rows stay zero (as sklearn normalize)
    if scores is not None:
        sc = np.asarray(scores, dtype=np.float64).ravel()
        if len(sc) != n:
            raise QGFaceInputError(f"template_features: scores has {len(sc)} entries for {n} images")
        w *= sc
    uniq_tm, g = np.unique(np.stack([templates, medias], 1), axis=0, return_inverse=True)
    g = g.ravel()
    w /= np.bincount(g, minlength=len(uniq_tm))[g]  # mean within a media
    uniq_t, t_of_group = np.unique(uniq_tm[:, 0], return_inverse=True)  # uniq_tm is sorted by template
    rows = t_of_group.ravel()[g]
    tmpl = np.zeros((len(uniq_t), x.shape[1]))
    for i in range(0, n, step):
        j = min(i + step, n)
        m = sp.csr_matrix((w[i:j], (rows[i:j], np.arange(j - i))), shape=(len(uniq_t), j - i))
        tmpl += m @ x[i:j].astype(np.float64)
    return uniq_t, l2_normalise(tmpl).astype(np.float32)


# ----------------------------------------------------------------------------------------------------------
# pair scores
# ----------------------------------------------------------------------------------------------------------
def _rows_of(template_ids: np.ndarray, ids: np.ndarray, which: str) -> np.ndarray:
    order = None
    if np.any(template_ids[1:] < template_ids[:-1]):
        order = np.argsort(template_ids, kind="stable")
        template_ids = template_ids[order]
    pos = np.searchsorted(template_ids, ids)
    pos_c = np.minimum(pos, len(template_ids) - 1)
    bad = template_ids[pos_c] != ids
    if bad.any():
        k = int(np.flatnonzero(bad)[0])
        raise QGFaceInputError(f"pair_scores: {which}[{k}] = {ids[k]} is not a known template id "
                               f"({int(bad.sum())} such pairs; upstream would silently score them against row 0)")
    return pos_c if order is None else order[pos_c]


def pair_scores(template_ids, template_feats, p1, p2, method: str = "matrix",
                chunk: Optional[int] = None) -> np.ndarray:
    """Cosine score of each template pair ``(p1[k], p2[k])`` (template *ids*), as a ``[P]`` array.

    ``template_feats`` ``[T, D]`` must already be L2-normalised (as :func:`template_features` returns).

    * ``"matrix"`` (fast, exact): pairs are put in upper-triangle form ``(a <= b)`` of row indices and bucketed
      by ``a // chunk``; for each row block the block x ``feats[block_start:]`` similarity is one GEMM, and the
      pair scores are gathered from it. Only row blocks that have pairs are computed; memory is
      ``chunk x T`` floats per block (``chunk`` default 1024).
    * ``"pairs"``: upstream-style, chunks of ``chunk`` pairs (default 100,000), gather both rows, row-wise dot.
    Scores are in the dtype of ``template_feats`` (float32 from :func:`template_features`).
    """
    tids = np.asarray(template_ids).astype(np.int64, copy=False).ravel()
    F = np.asarray(template_feats)
    if F.dtype not in (np.float32, np.float64):
        F = F.astype(np.float32)
    p1 = np.asarray(p1).astype(np.int64, copy=False).ravel()
    p2 = np.asarray(p2).astype(np.int64, copy=False).ravel()
    if F.ndim != 2 or len(F) != len(tids):
        raise QGFaceInputError(f"pair_scores: template_feats {F.shape} does not match {len(tids)} template ids")
    if len(p1) != len(p2):
        raise QGFaceInputError(f"pair_scores: p1 has {len(p1)} entries, p2 has {len(p2)}")
    out = np.empty(len(p1), dtype=F.dtype)
    if len(p1) == 0:
        return out
    r1 = _rows_of(tids, p1, "p1")
    r2 = _rows_of(tids, p2, "p2")
    if method == "pairs":
        step = int(chunk or 100_000)
        for s in range(0, len(p1), step):
            out[s:s + step] = np.einsum("ij,ij->i", F[r1[s:s + step]], F[r2[s:s + step]])
        return out
    if method != "matrix":
        raise QGFaceInputError(f"pair_scores: method must be 'matrix' or 'pairs', got {method!r}")
    F = np.ascontiguousarray(F)
    B = int(chunk or 1024)
    a = np.minimum(r1, r2)
    b = np.maximum(r1, r2)
    del r1, r2
    blk = a // B
    nblk = int(blk.max()) + 1
    key = blk.astype(np.uint16) if nblk <= 65535 else blk
    order = np.argsort(key, kind="stable")  # radix sort for uint16 keys
    del key
    bounds = np.r_[0, np.cumsum(np.bincount(blk, minlength=nblk))]
    del blk
    for i in range(nblk):
        lo, hi = bounds[i], bounds[i + 1]
        if lo == hi:
            continue
        sel = order[lo:hi]
        r0 = i * B
        S = F[r0:r0 + B] @ F[r0:].T  # [<=B, T - r0]
        out[sel] = S.ravel()[(a[sel] - r0) * S.shape[1] + (b[sel] - r0)]
    return out


# ----------------------------------------------------------------------------------------------------------
# quality view
# ----------------------------------------------------------------------------------------------------------
def template_quality(norms, templates, template_ids) -> np.ndarray:
    """Quality of each template of ``template_ids`` (sorted, as :func:`template_features` returns): the mean
    raw feature norm of its images."""
    norms = np.asarray(norms, dtype=np.float64).ravel()
    templates = np.asarray(templates).astype(np.int64, copy=False).ravel()
    rows = _rows_of(np.asarray(template_ids, dtype=np.int64), templates, "templates")
    total = np.bincount(rows, weights=norms, minlength=len(template_ids))
    count = np.bincount(rows, minlength=len(template_ids))
    return total / np.maximum(count, 1)


def pair_min_template_quality(template_ids, template_qualities, p1, p2) -> np.ndarray:
    """Quality of each pair ``(p1[k], p2[k])`` (template ids): the lower of its two templates' qualities
    (``template_qualities`` per id of ``template_ids``, as :func:`template_quality` returns them)."""
    tids = np.asarray(template_ids, dtype=np.int64)
    tq = np.asarray(template_qualities, dtype=np.float64)
    return np.minimum(tq[_rows_of(tids, np.asarray(p1, dtype=np.int64), "p1")],
                      tq[_rows_of(tids, np.asarray(p2, dtype=np.int64), "p2")])


def quality_tar(scores, labels, pair_quality, roc, bins: int = 3) -> list:
    """TAR by pair-quality bin at the **global** thresholds of ``roc`` (from
    :func:`~qgface_plugin.eval.roc.tar_at_far`).

    Pairs (genuine and impostor together) are sorted by ``pair_quality`` (the lower of the two templates'
    qualities, :func:`pair_min_template_quality`; stable sort) and split into ``bins`` near-equal groups,
    lowest quality first (:func:`~qgface_plugin.eval.quality_view.bin_rows`). For each bin and each FAR of
    ``roc["far_points"]``: ``TAR`` = fraction of the bin's genuine pairs with ``score >= threshold`` and ``FAR``
    = the same for its impostor pairs, with the threshold that gives the global FAR (so the bins'
    genuine-count-weighted TARs add up to the global TAR). A bin without genuine (impostor) pairs reports
    ``None`` for its TARs (FARs).

    Returns ``[{"bin", "count" (pairs), "quality_min", "quality_max", "genuine", "impostor", "TAR@FAR=<far>",
    "FAR@FAR=<far>", ...}, ...]`` (:func:`~qgface_plugin.eval.roc.far_key`).
    """
    scores = np.asarray(scores, dtype=np.float64).ravel()
    labels = np.asarray(labels).ravel()
    out = []
    for row, idx in bin_rows(pair_quality, bins, "quality_tar"):
        gen = scores[idx][labels[idx] == 1]
        imp = scores[idx][labels[idx] == 0]
        row.update(genuine=int(len(gen)), impostor=int(len(imp)))
        for _, _, thr, far in roc["far_points"].values():
            row[far_key(far)] = float((gen >= thr).mean()) if len(gen) else None
            row[far_key(far, "FAR")] = float((imp >= thr).mean()) if len(imp) else None
        out.append(row)
    return out


# ----------------------------------------------------------------------------------------------------------
# the whole protocol
# ----------------------------------------------------------------------------------------------------------
def image_dir(data_dir) -> str:
    d = os.path.join(str(data_dir), "loose_crop")
    if not os.path.isdir(d):
        raise QGFaceInputError(f"IJB image folder not found: {d} (expected <data>/loose_crop/ beside <data>/meta/)")
    return d


def evaluate_ijb(extractor, data_dir, target: str = "IJBC", use_norm: bool = True, use_detector: bool = True,
                 fars: Iterable[float] = DEFAULT_FARS, bins: int = 3, load_batch: int = 1024, workers=None,
                 cache_dir=None, progress: bool = False, erc=None) -> dict:
    """IJB-B/C 1:1 verification with a :class:`~qgface_plugin.eval.features.FeatureExtractor`.

    Reads the meta files (:func:`read_meta`), aligns every ``loose_crop`` image with its 5 landmarks
    (:func:`~qgface_plugin.eval.align.align_face`), embeds it (the extractor's flip fusion; upstream: sum of
    original and flipped raw features), pools templates (:func:`template_features`; ``use_norm`` and
    ``use_detector`` are upstream's N1 and D1), scores the pairs (:func:`pair_scores`) and reads TAR@FAR
    (:func:`~qgface_plugin.eval.roc.tar_at_far`). ``cache_dir`` keeps image features on disk (resumable; see
    :mod:`~qgface_plugin.eval.cache`).

    Returns a dict with ``tar_at_far``, ``auc``, ``far_points`` (per key: ``far``, ``fpr`` and ``threshold``
    of the ROC point read), ``counts``, ``protocol``, ``quality_bins``
    (:func:`quality_tar`, template quality = mean raw feature norm of its images, pair quality = the lower
    of the two), ``norm_mean`` and the arrays ``scores`` / ``labels`` / ``pair_quality`` / ``roc`` (for plots; not JSON).
    Also not JSON, the quality tables (columns, for :func:`~qgface_plugin.eval.cli.write_quality`):
    ``per_image`` = ``{"image" (name as in the meta files), "template", "media", "det_score", "norm" (raw,
    non-flipped feature norm)}`` in meta-file order and ``per_template`` = ``{"template" (sorted ids),
    "images" (its image count), "quality" (mean norm of its images, as the quality view uses)}``.

    ``"erc"``: the error-versus-reject curve (:func:`~qgface_plugin.eval.erc.fnmr_erc`): FNMR = 1 - TAR at the
    global threshold of FAR ``erc["fmr"]`` (default :data:`DEFAULT_ERC_FAR`, or the smallest larger decade
    the set resolves, see :func:`~qgface_plugin.eval.roc.far_resolved`), rejecting the pairs of lowest pair
    quality; ``erc`` = ``None`` (defaults), a dict of :data:`~qgface_plugin.eval.erc.OPTION_KEYS` or ``False``
    (no ``"erc"`` key).
    """
    from . import erc as erc_mod
    from .align import align_face
    erc_opts = erc_mod.options(erc, DEFAULT_ERC_FAR)
    from .features import embed_items
    meta = read_meta(data_dir, target)
    img_dir = image_dir(data_dir)
    names, lms = meta["names"], meta["landmarks"]
    pts_file = meta_paths(data_dir, target)["name_5pts_score"]

    def load(i):
        import cv2
        path = os.path.join(img_dir, names[i])
        img = cv2.imread(path, cv2.IMREAD_COLOR)
        if img is None:
            raise QGFaceInputError(f"{path}: cannot be read as an image (listed at {pts_file}:{i + 1})")
        try:
            return align_face(img, lms[i])
        except QGFaceInputError as e:
            raise QGFaceInputError(f"{pts_file}:{i + 1}: {e}") from None

    cache = None
    if cache_dir is not None:
        from .cache import digest, files_digest, make_cache
        items = digest(files_digest(os.path.join(img_dir, n) for n in names), lms, "align=arcface-similarity-v1")
        cache = make_cache(cache_dir, str(target).lower(), extractor, items)
    feats, norms = embed_items(extractor, len(names), load, load_batch=load_batch, progress=progress,
                               what=f"{target} images", workers=workers, cache=cache)
    tids, tfeats = template_features(feats, meta["templates"], meta["medias"], use_norm=use_norm,
                                     scores=meta["det_scores"] if use_detector else None)
    scores = pair_scores(tids, tfeats, meta["p1"], meta["p2"])
    tar, roc = tar_at_far(scores, meta["labels"], fars, return_roc=True)
    tq = template_quality(norms, meta["templates"], tids)
    pq = pair_min_template_quality(tids, tq, meta["p1"], meta["p2"])
    erc_rep = None
    if erc_opts is not None:
        far, _ = erc_mod.choose_fmr(erc_opts["fmr"], int((meta["labels"] == 0).sum()))
        point = roc["far_points"].get(far_key(far))
        erc_rep = erc_mod.fnmr_erc(scores, meta["labels"], pq, threshold=None if point is None else point[2],
                                   quality_desc="pair quality (the lower of the two templates' qualities, a "
                                   "template's = the mean raw feature norm of its images)",
                                   score_desc="cosine similarity of the template features", **erc_opts)
    return {
        "benchmark": str(target).upper(),
        "tar_at_far": tar,
        "auc": roc["auc"],
        "far_points": {k: {"far": far, "fpr": f, "threshold": t} for k, (_, f, t, far) in roc["far_points"].items()},
        "protocol": {"flip": getattr(extractor, "flip", None), "norm_score": bool(use_norm),
                     "detector_score": bool(use_detector),
                     "template": "mean within media, sum over media, L2-normalise; cosine score"},
        "counts": {"images": int(len(names)), "templates": int(len(tids)), "pairs": int(len(scores)),
                   "genuine": int((meta["labels"] == 1).sum()), "impostor": int((meta["labels"] == 0).sum())},
        # below 1 / impostor pairs a FAR cannot be resolved: the nearest ROC point is FAR 0
        "min_resolvable_far": 1.0 / max(1, int((meta["labels"] == 0).sum())),
        "quality": "template quality = mean raw feature norm of its images; pair quality = the lower of the two",
        "quality_bins": quality_tar(scores, meta["labels"], pq, roc, bins) if bins else [],
        "norm_mean": float(norms.mean()),
        **({"erc": erc_rep} if erc_opts is not None else {}),
        "scores": scores, "labels": meta["labels"], "roc": roc, "pair_quality": pq,
        "per_image": {"image": names, "template": meta["templates"], "media": meta["medias"],
                      "det_score": meta["det_scores"], "norm": norms},
        "per_template": {"template": tids, "images": np.bincount(_rows_of(tids, meta["templates"], "templates"),
                                                                 minlength=len(tids)), "quality": tq},
    }
