"""insightface's verification ``.bin`` (LFW, CFP-FP, AgeDB-30, ...): a pickle of ``(bins, issame_list)``.

``bins`` holds the encoded images (JPEG/PNG bytes), two per pair: pair ``i`` is ``bins[2i]``, ``bins[2i+1]``;
``issame_list`` one bool per pair. arcface_torch's ``eval/verification.py::load_bin`` reads it with
``pickle.load`` (``encoding="bytes"`` for the Python 2 pickles of the original release) and decodes with
``mx.image.imdecode`` (RGB). One home: written by :func:`qgface_plugin.synthetic.training_set.make_dataset`,
read by :func:`qgface_plugin.eval.verification.load_bin`. Standard library only.
"""
from __future__ import annotations

import pickle
from pathlib import Path

from ..errors import QGFaceConfigError, QGFaceInputError

__all__ = ["PICKLE_PROTOCOL", "write_bin", "read_bin"]

#: readable by every Python 3 that insightface supports.
PICKLE_PROTOCOL = 4


def write_bin(path, bins, issame) -> None:
    """Write ``(bins, issame)`` to ``path``: ``bins`` a sequence of ``2 * len(issame)`` encoded images
    (bytes), ``issame`` a sequence of bools.

    Raises:
        ValueError (``QGFaceConfigError``): not two images per pair.
    """
    issame = [bool(v) for v in issame]
    bins = [bytes(b) for b in bins]
    if len(bins) != 2 * len(issame):
        raise QGFaceConfigError(f"write_verification_bin: {len(bins)} images for {len(issame)} pairs "
                                f"(need 2 per pair)")
    with open(path, "wb") as f:
        pickle.dump((bins, issame), f, protocol=PICKLE_PROTOCOL)


def _load(path: Path):
    try:
        with open(path, "rb") as f:
            return pickle.load(f)
    except UnicodeDecodeError:  # Python 2 pickle of str
        with open(path, "rb") as f:
            return pickle.load(f, encoding="bytes")


def read_bin(path) -> tuple:
    """``(bins, issame)`` of a verification ``.bin``: a list of the encoded images (bytes-like, undecoded) and
    a list of bools.

    Raises:
        QGFaceInputError: naming the file -- missing, not a pickle of ``(bins, issame)``, an odd number of
            images, or ``len(bins) != 2 * len(issame)``.
    """
    path = Path(path)
    if not path.is_file():
        raise QGFaceInputError(f"{path}: verification .bin file not found")
    try:
        obj = _load(path)
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
    return bins, issame
