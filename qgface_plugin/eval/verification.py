"""insightface ``.bin`` verification sets: loading, low-resolution variants and the 10-fold protocol.

The protocol follows arcface_torch's ``eval/verification.py`` (``calculate_roc``), re-written in
numpy (no mxnet, no sklearn):

1. L2-normalise each (flip-fused) feature; pair ``i`` is rows ``2i`` and ``2i+1``.
2. Distance = squared Euclidean distance (in [0, 4]).
3. Thresholds ``np.arange(0, 4, 0.01)``; "same" is predicted when ``distance < threshold``.
4. Contiguous 10-fold split of the pairs (sklearn ``KFold(shuffle=False)``: the first ``P % k``
   folds get one extra pair). For each fold the threshold with the best accuracy on the other folds
   (the first one on ties) is applied to the held-out fold.
5. Report the mean and the (population) standard deviation of the fold accuracies.

Quality view (:func:`pair_quality_bins`): QGFace's raw feature norm is its quality score. A pair's
quality is the smaller of its two images' raw (non-flipped) feature norms (:func:`pair_min_norm`); pairs
are split into quantile bins of pair quality and each pair is judged with the threshold of the fold it is
tested in, so the bins break the 10-fold accuracy down without re-tuning anything.

Error-versus-reject (:mod:`.erc`, in :func:`evaluate_bin`): per variant, the FNMR at one threshold fixed
on all pairs at a chosen FMR (default 1e-3, or the smallest larger decade the set resolves: 1 / impostor
pairs), score = cosine similarity of the L2-normalised features, as pairs of the lowest pair quality
(same definition) are rejected.

Accuracies are fractions in [0, 1]; norms are L2 norms of raw features (no unit).
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from ..errors import QGFaceInputError
from ..formats.verification_bin import read_bin
from . import erc as erc_mod
from .features import default_workers, l2_normalise
from .quality_view import bin_rows

__all__ = ["IMAGE_SIZE", "DEFAULT_ERC_FMR", "load_bin", "lowres_variant", "fold_indices", "evaluate",
           "pair_min_norm", "pair_quality_bins", "pair_scores", "evaluate_bin"]

IMAGE_SIZE = 112
DEFAULT_ERC_FMR = 1e-3


def load_bin(path, image_size=IMAGE_SIZE, workers=None):
    """Read an insightface verification ``.bin``.

    Returns:
        ``(images, issame)``: ``images`` [2P, 112, 112, 3] uint8 RGB (pair ``i`` = rows ``2i``,
        ``2i+1``; other sizes are resized to 112x112), ``issame`` [P] bool. Images are decoded by
        ``workers`` threads (default :func:`~qgface_plugin.eval.features.default_workers`).

    Raises:
        QGFaceInputError: naming the file -- missing, not a pickle of ``(bins, issame)``, an odd number
            of images, ``len(bins) != 2 * len(issame)``, or an image (index given) that cannot be decoded.
    """
    path = Path(path)
    bins, issame = read_bin(path)  # the format's checks (formats.verification_bin)
    images = np.empty((len(bins), image_size, image_size, 3), np.uint8)

    def decode(i):
        b = bins[i]
        try:
            buf = np.frombuffer(bytes(b) if not isinstance(b, np.ndarray) else b.tobytes(), np.uint8)
            bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR) if buf.size else None
        except (TypeError, ValueError, cv2.error):
            bgr = None
        if bgr is None:
            raise QGFaceInputError(f"{path}: image {i} (pair {i // 2}) cannot be decoded")
        if bgr.shape[:2] != (image_size, image_size):
            bgr = cv2.resize(bgr, (image_size, image_size), interpolation=cv2.INTER_LINEAR)
        images[i] = cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)

    workers = default_workers() if workers is None else int(workers)
    if workers > 1 and len(bins) > 64:
        from concurrent.futures import ThreadPoolExecutor
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(decode, range(len(bins)), chunksize=64):  # re-raises the first failure
                pass
    else:
        for i in range(len(bins)):
            decode(i)
    return images, np.asarray(issame, dtype=bool)


def lowres_variant(images, size):
    """Copy of ``images`` whose FIRST image of each pair is downsampled to ``size`` px (INTER_AREA)
    and resized back to the original size (INTER_LINEAR); second images unchanged."""
    images = np.asarray(images)
    size = int(size)
    if size < 1:
        raise QGFaceInputError(f"lowres_variant: size={size} must be >= 1")
    out = images.copy()
    out[0::2] = _downsample_each(images[0::2], size)
    return out


def _downsample_each(images, size):
    h, w = images.shape[1:3]
    out = np.empty_like(images)
    for i, im in enumerate(images):
        small = cv2.resize(im, (size, size), interpolation=cv2.INTER_AREA)
        out[i] = cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR)
    return out


def fold_indices(n, nfolds=10):
    """Contiguous (test) index arrays of sklearn's ``KFold(n_splits=nfolds, shuffle=False)``."""
    sizes = np.full(nfolds, n // nfolds, dtype=int)
    sizes[: n % nfolds] += 1
    bounds = np.concatenate([[0], np.cumsum(sizes)])
    return [np.arange(bounds[k], bounds[k + 1]) for k in range(nfolds)]


def _check(features, issame, nfolds, what="evaluate"):
    features = np.asarray(features)
    issame = np.asarray(issame, dtype=bool)
    if features.ndim != 2 or len(features) != 2 * len(issame):
        raise QGFaceInputError(f"{what}: features {features.shape} do not match {len(issame)} pairs "
                               "(need [2P, D])")
    if len(issame) < nfolds:
        raise QGFaceInputError(f"{what}: {len(issame)} pairs is fewer than nfolds={nfolds}")
    if not np.all(np.isfinite(features)):
        raise QGFaceInputError(f"{what}: features contain NaN or inf")
    return features, issame


def _protocol(features, issame, nfolds):
    """The 10-fold protocol on checked inputs: ``(result dict, per-pair correctness [P] bool)``, where
    pair ``i`` is judged with the threshold chosen for the fold that tests it."""
    f = l2_normalise(features, np.float64)
    dist = np.sum(np.square(f[0::2] - f[1::2]), axis=1)
    thresholds = np.arange(0, 4, 0.01)
    correct = (dist[:, None] < thresholds[None, :]) == issame[:, None]  # [P, T]
    total = correct.sum(0)
    accs, thrs = [], []
    pair_ok = np.zeros(len(issame), dtype=bool)
    for test in fold_indices(len(issame), nfolds):
        train_correct = total - correct[test].sum(0)
        best = int(np.argmax(train_correct))  # first best, as np.argmax in upstream
        pair_ok[test] = correct[test, best]
        accs.append(float(pair_ok[test].mean()))
        thrs.append(float(thresholds[best]))
    return ({"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "threshold": float(np.mean(thrs)),
             "fold_accuracy": accs, "fold_threshold": thrs, "pairs": int(len(issame))}, pair_ok)


def evaluate(features, issame, nfolds=10):
    """10-fold verification accuracy of flip-fused features ``[2P, D]`` (pair ``i`` = rows 2i, 2i+1).

    Returns:
        ``{"accuracy": mean fold accuracy (fraction), "std": std of the fold accuracies (fraction),
        "threshold": mean chosen squared-L2 threshold, "fold_accuracy": list, "fold_threshold": list,
        "pairs": P}``.
    """
    features, issame = _check(features, issame, nfolds)
    return _protocol(features, issame, nfolds)[0]


def pair_scores(features):
    """Cosine similarity ``[P]`` of each pair (rows ``2i``, ``2i+1``) of L2-normalised ``features``."""
    f = l2_normalise(features, np.float64)
    return np.einsum("ij,ij->i", f[0::2], f[1::2])


def pair_min_norm(norms):
    """Pair quality ``[P]``: the smaller of the two images' raw feature norms (``norms`` is ``[2P]``,
    pair ``i`` = entries ``2i``, ``2i+1``)."""
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if len(norms) % 2:
        raise QGFaceInputError(f"pair_min_norm: {len(norms)} norms is odd (need 2 per pair)")
    return np.minimum(norms[0::2], norms[1::2])


def _check_bins(bins, pairs, what):
    try:
        b = int(bins)
    except (TypeError, ValueError) as e:
        raise QGFaceInputError(f"{what}: bins={bins!r} is not an integer") from e
    if b < 1 or b > pairs:
        raise QGFaceInputError(f"{what}: bins={b} must be in 1..{pairs} (the number of pairs)")
    return b


def _checked_quality(norms, pairs, what):
    norms = np.asarray(norms, dtype=np.float64).reshape(-1)
    if len(norms) != 2 * pairs:
        raise QGFaceInputError(f"{what}: {len(norms)} norms do not match {pairs} pairs (need 2P)")
    if not np.all(np.isfinite(norms)):
        raise QGFaceInputError(f"{what}: norms contain NaN or inf")
    return pair_min_norm(norms)


def _bins_table(quality, issame, pair_ok, bins):
    return [{**row, "accuracy": float(pair_ok[idx].mean()), "genuine_fraction": float(issame[idx].mean())}
            for row, idx in bin_rows(quality, bins, "pair_quality_bins")]


def pair_quality_bins(features, issame, norms, bins=3, nfolds=10):
    """Verification accuracy per quantile bin of pair quality (low norm = low quality), lowest bin first.

    Pair quality is :func:`pair_min_norm` of ``norms`` (the raw, non-flipped feature norms ``[2P]``;
    ``features`` ``[2P, D]`` are the flip-fused features that :func:`evaluate` scores). Pairs are sorted
    by quality (stable) and split into ``bins`` near-equal groups (``np.array_split``; named ``lowest`` /
    ``middle`` / ``highest`` with 3 bins, else ``q1..qB``), see
    :func:`~qgface_plugin.eval.quality_view.bin_rows`. Each pair is judged with the threshold that
    :func:`evaluate` chose for the fold testing it (best on the other ``nfolds - 1`` folds).

    What holds: the bins partition the pairs, so ``sum(count * accuracy) / P`` is exactly (up to float
    rounding) the pooled fraction of pairs judged correctly, ``sum_k c_k / P`` (``c_k`` correct pairs in
    fold ``k``). :func:`evaluate`'s ``accuracy`` is the mean of the fold accuracies ``c_k / n_k``; the two
    are equal when the folds are equal-sized (``P % nfolds == 0``, e.g. LFW, CFP-FP, AgeDB-30, CALFW,
    CPLFW). Otherwise, with ``r = P % nfolds``, they differ by at most ``r * (nfolds - r) / (nfolds * P)``
    (<= ``nfolds / (4 P)``).

    Returns:
        ``[{"bin", "count" (pairs), "quality_min", "quality_max" (range of pair quality in the bin),
        "accuracy" (fraction), "genuine_fraction" (fraction of same-identity pairs in the bin)}, ...]``.

    Raises:
        QGFaceInputError: bad shapes / non-finite values, or ``bins`` not in ``1..P``.
    """
    features, issame = _check(features, issame, nfolds, "pair_quality_bins")
    quality = _checked_quality(norms, len(issame), "pair_quality_bins")
    bins = _check_bins(bins, len(issame), "pair_quality_bins")
    return _bins_table(quality, issame, _protocol(features, issame, nfolds)[1], bins)


def evaluate_bin(extractor, path, lowres_sizes=(), nfolds=10, bins=3, progress=False, workers=None, erc=None,
                 return_pairs=False):
    """Evaluate one ``.bin`` with ``extractor`` (a :class:`~qgface_plugin.eval.features.FeatureExtractor`).

    Variants: ``"original"`` and, per ``s`` in ``lowres_sizes``, ``"lr{s}"`` (see :func:`lowres_variant`;
    only the first images are re-embedded, the second images' features are reused). ``bins`` quality
    bins per variant (see :func:`pair_quality_bins`); ``0`` or ``None`` leaves them out. In ``lr{s}``
    variants the degraded first image usually has the smaller norm and so sets the pair quality.

    Returns:
        ``{variant: {"accuracy", "std", "threshold", "pairs", "lowres_size" (None for original),
        "norm_mean" (mean raw feature norm over all images), "norm_mean_first" (over the first image
        of each pair, the degraded one in lr variants), "fold_accuracy", "fold_threshold",
        "quality_bins" (list, see :func:`pair_quality_bins`; absent when ``bins`` is 0/None)}, ...,
        "per_image": quality table}``. The last key is not a variant and not JSON: the columns (for
        :func:`~qgface_plugin.eval.cli.write_quality`) ``image`` (index in the ``.bin``), ``pair``, ``issame``,
        ``norm`` (raw, non-flipped feature norm of the original image) and one ``norm_lr{s}`` per low-res
        variant (the first image of each pair degraded, the second keeping its original norm).

        Each variant also has ``"erc"``: the error-versus-reject curve (:func:`~qgface_plugin.eval.erc.fnmr_erc`:
        FNMR at FMR ``erc["fmr"]``, default :data:`DEFAULT_ERC_FMR`, threshold fixed on all pairs; pairs
        rejected by pair quality; ``None`` without genuine or impostor pairs). ``erc`` = ``None`` (defaults), a
        dict of :data:`~qgface_plugin.eval.erc.OPTION_KEYS` or ``False`` (no ``"erc"`` key). With
        ``return_pairs`` each variant also has ``"per_pair"`` (not JSON): ``{"issame", "score" (cosine),
        "correct" (judged with its fold's threshold), "quality" (pair quality)}``, ``[P]`` arrays.

    Raises:
        QGFaceInputError: from :func:`load_bin`, ``bins`` not in ``0..P`` or bad ``erc`` options (checked before
            embedding).
    """
    erc_opts = erc_mod.options(erc, DEFAULT_ERC_FMR)
    images, issame = load_bin(path, workers=workers)
    bins = 0 if bins is None or bins == 0 else _check_bins(bins, len(issame), f"{path}: quality bins")
    rows = {}
    base = extractor(images, progress=progress)
    n = len(images)
    table = {"image": np.arange(n), "pair": np.arange(n) // 2, "issame": np.repeat(issame, 2),
             "norm": base["norms"]}
    variants = [("original", None)] + [(f"lr{int(s)}", int(s)) for s in lowres_sizes]
    for name, size in variants:
        if size is None:
            feats, norms = base["features"], base["norms"]
        else:
            first = _downsample_each(images[0::2], size)
            out = extractor(first, progress=progress)
            feats, norms = base["features"].copy(), base["norms"].copy()
            feats[0::2], norms[0::2] = out["features"], out["norms"]
        feats, _ = _check(feats, issame, nfolds)
        row, pair_ok = _protocol(feats, issame, nfolds)
        row.update(lowres_size=size, norm_mean=float(np.mean(norms)), norm_mean_first=float(np.mean(norms[0::2])))
        quality = _checked_quality(norms, len(issame), f"{path} ({name})")
        if bins:
            row["quality_bins"] = _bins_table(quality, issame, pair_ok, bins)
        scores = pair_scores(feats) if erc_opts is not None or return_pairs else None
        if erc_opts is not None:
            row["erc"] = erc_mod.fnmr_erc(scores, issame, quality, quality_desc="quality (per pair: the smaller "
                                          "of its two images' raw feature norms)", score_desc="cosine similarity", **erc_opts)
        if return_pairs:
            row["per_pair"] = {"issame": issame, "score": scores, "correct": pair_ok, "quality": quality}
        rows[name] = row
        if size is not None:
            table[f"norm_{name}"] = norms
    rows["per_image"] = table
    return rows
