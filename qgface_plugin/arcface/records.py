"""Checks of an arcface_torch record dataset (``train.rec``/``train.idx``/``property``) before training.

Training on a broken record set fails late and obscurely (a crash in a DataLoader worker hours
in, or a loss stuck at 69.08 when labels exceed ``num_classes``). :func:`check_record_dataset`
reads the index, the header record and the labels (all of them for sets up to ``full_scan``
images, a sample beyond), decodes a sample of images, and raises
:class:`~qgface_plugin.errors.QGFaceInputError` naming the file, record and value. It reads through
the mxnet-free :class:`~qgface_plugin.formats.recordio.RecordReader` (the layout:
:mod:`qgface_plugin.formats.records`), so it needs no mxnet.
"""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError
from ..formats.recordio import RecordIOError, RecordReader, decode_image
from ..formats.records import IDX_FILE, REC_FILE, read_property

__all__ = ["check_record_dataset"]


def check_record_dataset(root: str | os.PathLike, num_classes: int, full_scan: int = 200_000,
                         decode_sample: int = 64, seed: int = 0) -> dict:
    """Validate a record set; returns ``{"num_images", "max_label", "header0", "scanned"}``.

    Args:
        root: folder holding ``train.rec`` and ``train.idx`` (and optionally ``property``).
        num_classes: the configured number of classes; every label must lie in [0, num_classes).
        full_scan: read every label when the set has at most this many images, else a sample.
        decode_sample: images decoded (first, last and random ones).
    """
    root = Path(root)
    rec_path, idx_path = root / REC_FILE, root / IDX_FILE
    if not root.is_dir():
        raise QGFaceInputError(f"dataset folder {root} does not exist (config.rec)")
    for path in (rec_path, idx_path):
        if not path.is_file():
            raise QGFaceInputError(
                f"{path} is missing: an arcface_torch record set needs train.rec and train.idx "
                "(tools/make_synthetic_data.py writes a small one; insightface's RecBuilder writes real ones)")
    prop = read_property(root)
    if prop is not None and prop[0] > num_classes:
        raise QGFaceInputError(
            f"{root / 'property'} says {prop[0]} classes but config.num_classes={num_classes}; "
            f"set num_classes = {prop[0]}")
    # the index (malformed lines, repeated keys, entries beyond the file) and record 0 (header0) are checked here
    with RecordReader(root) as reader:
        if reader.header0_note:
            raise QGFaceInputError(reader.header0_note)

        def read(key, whole):
            try:
                return reader.unpack(key) if whole else (reader.header(key), None)
            except RecordIOError as exc:  # bad magic, a truncated record, a short payload
                raise QGFaceInputError(f"{rec_path}: record {key} is corrupt ({exc})") from None

        keys = [int(k) for k in reader.imgidx]
        if not keys:
            raise QGFaceInputError(f"{rec_path} holds no images")
        rng = np.random.default_rng(seed)
        scan = keys if len(keys) <= full_scan else sorted(
            set(keys[:1000]) | set(keys[-1000:]) | set(rng.choice(keys, size=min(len(keys), full_scan), replace=False).tolist()))
        to_decode = set(keys[:1] + keys[-1:]) | set(rng.choice(keys, size=min(len(keys), decode_sample), replace=False).tolist())
        max_label = -1
        for key in scan:
            h, payload = read(key, key in to_decode)
            label = h.label if np.isscalar(h.label) else h.label[0]
            if not (0 <= label < num_classes):
                raise QGFaceInputError(
                    f"{rec_path}: record {key} has label {label}, outside [0, num_classes={num_classes}); "
                    "fix config.num_classes or the record set")
            if label != int(label):
                raise QGFaceInputError(f"{rec_path}: record {key} has label {label}, which is not a whole number: "
                                       "labels are class indices; fix the record set")
            max_label = max(max_label, int(label))
            if payload is not None:
                where = f"{rec_path}: record {key}"
                try:
                    img = decode_image(payload, where)
                except RecordIOError as exc:  # keep the decoder's reason: how the bytes begin
                    raise QGFaceInputError(f"{where} does not decode as an image ({str(exc)[len(where) + 2:]})") from None
                if img.ndim != 3:
                    raise QGFaceInputError(f"{rec_path}: record {key} decodes to shape {img.shape}, not an image")
        header0 = reader.header0
    return {"num_images": len(keys), "max_label": max_label, "header0": header0, "scanned": len(scan)}
