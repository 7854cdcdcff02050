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

Accuracies are fractions in [0, 1]; norms are L2 norms of raw features (no unit).
"""
from __future__ import annotations

import pickle
from pathlib import Path

import cv2
import numpy as np

from ..errors import QGFaceInputError

__all__ = ["IMAGE_SIZE", "load_bin", "lowres_variant", "fold_indices", "evaluate", "evaluate_bin"]

IMAGE_SIZE = 112


def _read_pickle(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except UnicodeDecodeError:  # Python 2 pickle of str
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")


def load_bin(path, image_size=IMAGE_SIZE):
    """Read an insightface verification ``.bin``.

    Returns:
        ``(images, issame)``: ``images`` [2P, 112, 112, 3] uint8 RGB (pair ``i`` = rows ``2i``,
        ``2i+1``; other sizes are resized to 112x112), ``issame`` [P] bool.

    Raises:
        QGFaceInputError: naming the file -- missing, not a pickle of ``(bins, issame)``, an odd number
            of images, ``len(bins) != 2 * len(issame)``, or an image (index given) that cannot be decoded.
    """
    path = Path(path)
    if not path.is_file():
        raise QGFaceInputError(f"{path}: verification .bin file not found")
    try:
        obj = _read_pickle(path)
    except Exception as e:  # UnpicklingError, EOFError, ValueError, ... all mean "not a .bin"
        raise QGFaceInputError(f"{path}: not a verification .bin (cannot unpickle: {type(e).__name__}: {e})") from e
    if not isinstance(obj, (tuple, list)) or len(obj) != 2:
        raise QGFaceInputError(f"{path}: not a verification .bin (expected a pickled (bins, issame) pair, "
                               f"got {type(obj).__name__})")
    bins, issame = obj
    try:
        bins, issame = list(bins), [bool(v) for v in issame]
    except TypeError as e:
        raise QGFaceInputError(f"{path}: not a verification .bin (bins/issame are not sequences)") from e
    if len(bins) % 2:
        raise QGFaceInputError(f"{path}: odd number of images ({len(bins)}); images come in pairs")
    if len(bins) != 2 * len(issame):
        raise QGFaceInputError(f"{path}: {len(bins)} images but {len(issame)} issame labels "
                               f"(need 2 images per label)")
    images = np.empty((len(bins), image_size, image_size, 3), np.uint8)
    for i, b in enumerate(bins):
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


def _l2_normalise(x):
    x = np.asarray(x, dtype=np.float64)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)


def evaluate(features, issame, nfolds=10):
    """10-fold verification accuracy of flip-fused features ``[2P, D]`` (pair ``i`` = rows 2i, 2i+1).

    Returns:
        ``{"accuracy": mean fold accuracy (fraction), "std": std of the fold accuracies (fraction),
        "threshold": mean chosen squared-L2 threshold, "fold_accuracy": list, "fold_threshold": list,
        "pairs": P}``.
    """
    features = np.asarray(features)
    issame = np.asarray(issame, dtype=bool)
    if features.ndim != 2 or len(features) != 2 * len(issame):
        raise QGFaceInputError(f"evaluate: features {features.shape} do not match {len(issame)} pairs "
                               "(need [2P, D])")
    if len(issame) < nfolds:
        raise QGFaceInputError(f"evaluate: {len(issame)} pairs is fewer than nfolds={nfolds}")
    if not np.all(np.isfinite(features)):
        raise QGFaceInputError("evaluate: features contain NaN or inf")
    f = _l2_normalise(features)
    dist = np.sum(np.square(f[0::2] - f[1::2]), axis=1)
    thresholds = np.arange(0, 4, 0.01)
    correct = (dist[:, None] < thresholds[None, :]) == issame[:, None]  # [P, T]
    total = correct.sum(0)
    accs, thrs = [], []
    for test in fold_indices(len(issame), nfolds):
        train_correct = total - correct[test].sum(0)
        best = int(np.argmax(train_correct))  # first best, as np.argmax in upstream
        accs.append(float(correct[test, best].mean()))
        thrs.append(float(thresholds[best]))
    return {"accuracy": float(np.mean(accs)), "std": float(np.std(accs)), "threshold": float(np.mean(thrs)),
            "fold_accuracy": accs, "fold_threshold": thrs, "pairs": int(len(issame))}


def evaluate_bin(extractor, path, lowres_sizes=(), nfolds=10, progress=False):
    """Evaluate one ``.bin`` with ``extractor`` (a :class:`~qgface_plugin.eval.features.FeatureExtractor`).

    Variants: ``"original"`` and, per ``s`` in ``lowres_sizes``, ``"lr{s}"`` (see :func:`lowres_variant`;
    only the first images are re-embedded, the second images' features are reused).

    Returns:
        ``{variant: {"accuracy", "std", "threshold", "pairs", "lowres_size" (None for original),
        "norm_mean" (mean raw feature norm over all images), "norm_mean_first" (over the first image
        of each pair, the degraded one in lr variants), "fold_accuracy", "fold_threshold"}}``.
    """
    images, issame = load_bin(path)
    rows = {}
    base = extractor(images, progress=progress)
    variants = [("original", None)] + [(f"lr{int(s)}", int(s)) for s in lowres_sizes]
    for name, size in variants:
        if size is None:
            feats, norms = base["features"], base["norms"]
        else:
            first = _downsample_each(images[0::2], size)
            out = extractor(first, progress=progress)
            feats, norms = base["features"].copy(), base["norms"].copy()
            feats[0::2], norms[0::2] = out["features"], out["norms"]
        row = evaluate(feats, issame, nfolds=nfolds)
        row.update(lowres_size=size, norm_mean=float(np.mean(norms)), norm_mean_first=float(np.mean(norms[0::2])))
        rows[name] = row
    return rows
