"""Checks of an arcface_torch record dataset (``train.rec``/``train.idx``/``property``) before training.

Training on a broken record set fails late and obscurely (a crash in a DataLoader worker hours
in, or a loss stuck at 69.08 when labels exceed ``num_classes``). :func:`check_record_dataset`
reads the index, the header record and the labels (all of them for sets up to ``full_scan``
images, a sample beyond), decodes a sample of images, and raises
:class:`~qgface_plugin.errors.QGFaceInputError` naming the file, record and value.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError

__all__ = ["check_record_dataset"]


def _read_index(idx_path: Path) -> dict[int, int]:
    index = {}
    with open(idx_path) as f:
        for line_no, line in enumerate(f, 1):
            parts = line.strip().split("\t")
            try:
                key, offset = int(parts[0]), int(parts[1])
            except (ValueError, IndexError):
                raise QGFaceInputError(
                    f"{idx_path}:{line_no}: expected 'key<TAB>offset', got {line.strip()[:60]!r}") from None
            index[key] = offset
    if not index:
        raise QGFaceInputError(f"{idx_path} is empty: the record set was not closed properly when written")
    return index


def check_record_dataset(root: str | os.PathLike, num_classes: int, full_scan: int = 200_000,
                         decode_sample: int = 64, seed: int = 0) -> dict:
    """Validate a record set; returns ``{"num_images", "max_label", "header0", "scanned"}``.

    Args:
        root: folder holding ``train.rec`` and ``train.idx`` (and optionally ``property``).
        num_classes: the configured number of classes; every label must lie in [0, num_classes).
        full_scan: read every label when the set has at most this many images, else a sample.
        decode_sample: images decoded (first, last and random ones).
    """
    import cv2
    from ..utils import import_mxnet
    mx = import_mxnet()  # arcface_torch's reader; imported here so the package imports without it

    root = Path(root)
    rec_path, idx_path, prop_path = root / "train.rec", root / "train.idx", root / "property"
    if not root.is_dir():
        raise QGFaceInputError(f"dataset folder {root} does not exist (config.rec)")
    for path in (rec_path, idx_path):
        if not path.is_file():
            raise QGFaceInputError(
                f"{path} is missing: an arcface_torch record set needs train.rec and train.idx "
                "(tools/make_synthetic_data.py writes a small one; insightface's RecBuilder writes real ones)")
    if prop_path.is_file():
        text = prop_path.read_text().strip()
        try:
            prop_classes = int(text.split(",")[0])
        except ValueError:
            raise QGFaceInputError(f"{prop_path}: expected 'num_classes,height,width', got {text[:60]!r}") from None
        if prop_classes > num_classes:
            raise QGFaceInputError(
                f"{prop_path} says {prop_classes} classes but config.num_classes={num_classes}; "
                f"set num_classes = {prop_classes}")
    index = _read_index(idx_path)
    rec_size = rec_path.stat().st_size
    bad = [k for k, off in index.items() if off < 0 or off >= rec_size]
    if bad:
        raise QGFaceInputError(f"{idx_path}: record {bad[0]} points past the end of {rec_path}")

    reader = mx.recordio.MXIndexedRecordIO(str(idx_path), str(rec_path), "r")

    def read(key):
        try:
            return mx.recordio.unpack(reader.read_idx(key))
        except Exception as exc:  # mxnet raises MXNetError / struct errors on corrupt framing
            raise QGFaceInputError(f"{rec_path}: record {key} is corrupt ({type(exc).__name__}: "
                                   f"{str(exc).splitlines()[0][:120]})") from None

    try:
        header, _ = read(0) if 0 in index else (None, None)
        if header is not None and header.flag > 0:
            first_id = int(header.label[0])
            keys = list(range(1, first_id))
            missing = [k for k in keys if k not in index]
            if missing:
                raise QGFaceInputError(f"{idx_path} lacks record {missing[0]} announced by the header record")
            header0 = (int(header.label[0]), int(header.label[1]))
        else:
            keys, header0 = sorted(index), None
        if not keys:
            raise QGFaceInputError(f"{rec_path} holds no images")
        rng = np.random.default_rng(seed)
        scan = keys if len(keys) <= full_scan else sorted(
            set(keys[:1000]) | set(keys[-1000:]) | set(rng.choice(keys, size=min(len(keys), full_scan), replace=False).tolist()))
        to_decode = set(keys[:1] + keys[-1:]) | set(rng.choice(keys, size=min(len(keys), decode_sample), replace=False).tolist())
        max_label = -1
        for key in scan:
            h, payload = read(key)
            label = h.label if np.isscalar(h.label) else h.label[0]
            if not (0 <= label < num_classes) or label != int(label):
                raise QGFaceInputError(
                    f"{rec_path}: record {key} has label {label}, outside [0, num_classes={num_classes}); "
                    "fix config.num_classes or the record set")
            max_label = max(max_label, int(label))
            if key in to_decode:
                img = cv2.imdecode(np.frombuffer(payload, np.uint8), cv2.IMREAD_COLOR)
                if img is None or img.ndim != 3:
                    raise QGFaceInputError(f"{rec_path}: record {key} does not decode as an image")
    finally:
        reader.close()
    return {"num_images": len(keys), "max_label": max_label, "header0": header0, "scanned": len(scan)}
