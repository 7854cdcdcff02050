"""insightface's "header0" record set: ``train.rec`` / ``train.idx`` with a header record 0, plus ``property``.

The layout MS1M / Glint / WebFace packs use and arcface_torch's ``MXFaceDataset`` reads (one home: written
here, read by :class:`qgface_plugin.formats.recordio.RecordReader`, checked by
:func:`qgface_plugin.arcface.records.check_record_dataset`):

* record 0: ``IRHeader`` ``flag = 2``, label ``[N + 1, N + 1 + num_ids]``, ``id2 = 1``, no data (the header);
* records ``1 .. N``: the images, scalar float labels, ``id`` = key;
* records ``N + 1 .. N + num_ids``: per label in order, label ``[first_key, end_key)`` of its images, no data;
* ``property``: one line ``num_classes,height,width``.

:func:`write_header0_set` writes through mxnet's ``MXIndexedRecordIO`` when mxnet imports, else through the
mxnet-free :class:`~qgface_plugin.formats.recordio_writer.RecordWriter` (the files are byte-identical).
"""
from __future__ import annotations

import numbers
import os
from pathlib import Path

import numpy as np

from ..errors import QGFaceConfigError, QGFaceInputError
from .recordio import IRHeader
from .recordio_writer import RecordWriter, pack

__all__ = ["REC_FILE", "IDX_FILE", "PROPERTY_FILE", "HEADER0_FLAG", "header0_payload", "write_header0_set",
           "write_property", "read_property"]

REC_FILE, IDX_FILE, PROPERTY_FILE = "train.rec", "train.idx", "property"
#: record 0's ``flag``: its label is the two-value array ``[a, b]``.
HEADER0_FLAG = 2
_RECORD0_AT = 8  # record 0's payload starts after its part's magic (4) and length (4)


def header0_payload(first_identity_key: int, end_key: int) -> bytes:
    """Record 0's payload: flag 2, label ``[first_identity_key, end_key]`` (= ``[N+1, N+1+num_ids]``), id2 = 1."""
    return pack(IRHeader(0, np.array([first_identity_key, end_key], np.float32), 0, 1), b"")


def write_property(root, num_classes: int, height: int, width: int | None = None) -> Path:
    """``root/property``: ``num_classes,height,width`` (width defaults to height)."""
    path = Path(root) / PROPERTY_FILE
    path.write_text(f"{int(num_classes)},{int(height)},{int(height if width is None else width)}\n")
    return path


def read_property(root):
    """``(num_classes, height, width)`` from ``root/property``, or None when there is none.

    Raises:
        QGFaceInputError: the file is not ``num_classes,height,width`` (a missing size is tolerated).
    """
    path = Path(root) / PROPERTY_FILE
    if not path.is_file():
        return None
    text = path.read_text().strip()
    fields = text.split(",")
    try:
        values = [int(v) for v in fields[:3]]
    except ValueError:
        raise QGFaceInputError(f"{path}: expected 'num_classes,height,width', got {text[:60]!r}") from None
    values += [None] * (3 - len(values))
    return tuple(values)


def _writer(idx_path: str, rec_path: str):
    try:
        from ..utils import import_mxnet
        mx = import_mxnet()
    except Exception:  # ImportError, or an mxnet that fails to load (numpy >= 1.24)
        return RecordWriter(idx_path, rec_path)
    return mx.recordio.MXIndexedRecordIO(idx_path, rec_path, "w")


def _check_label(label) -> int:
    if isinstance(label, bool) or not isinstance(label, numbers.Integral) or label < 0:
        raise QGFaceConfigError(f"label={label!r} must be an integer >= 0")
    return int(label)


def write_header0_set(out_dir, samples, num_classes=None, size=112, writer=None) -> tuple:
    """Write ``train.rec`` / ``train.idx`` / ``property`` in the header0 layout (module docstring).

    Args:
        out_dir: folder (created if missing); existing files of these names are replaced.
        samples: iterable of ``(image_bytes, label)``; labels are ints ``0..num_classes-1``, **grouped** (all
            images of a label contiguous).
        num_classes: defaults to ``max(label) + 1``.
        size: image side written to ``property``.
        writer: ``"mxnet"``, ``"python"`` or None (mxnet when it imports, else the mxnet-free writer).

    Returns:
        ``(num_images, num_classes)``.

    Raises:
        ValueError (``QGFaceConfigError``): no samples, a bad or ungrouped label, a label >= num_classes.
    """
    os.makedirs(out_dir, exist_ok=True)
    idx_path, rec_path = os.path.join(out_dir, IDX_FILE), os.path.join(out_dir, REC_FILE)
    if writer is None:
        w = _writer(idx_path, rec_path)
    elif writer == "python":
        w = RecordWriter(idx_path, rec_path)
    elif writer == "mxnet":
        from ..utils import import_mxnet
        w = import_mxnet().recordio.MXIndexedRecordIO(idx_path, rec_path, "w")
    else:
        raise QGFaceConfigError(f"writer={writer!r} must be 'mxnet', 'python' or None")
    ranges, order = {}, []
    n = 0
    placeholder = header0_payload(0, 0)
    try:
        # Record 0 first, with a placeholder label of the same size; its two floats are
        # patched in place once N and the number of identities are known.
        w.write_idx(0, placeholder)
        for key, (data, label) in enumerate(samples, start=1):
            label = _check_label(label)
            if label not in ranges:
                ranges[label] = [key, key + 1]
                order.append(label)
            elif ranges[label][1] != key:
                raise QGFaceConfigError(f"labels must be grouped: label {label} reappears at image {key}")
            else:
                ranges[label][1] = key + 1
            w.write_idx(key, pack(IRHeader(0, float(label), key, 0), bytes(data)))
            n = key
        if n == 0:
            raise QGFaceConfigError("write_train_rec: no samples")
        if num_classes is None:
            ncls = max(order) + 1
        elif isinstance(num_classes, bool) or not isinstance(num_classes, numbers.Integral) or num_classes < 1:
            raise QGFaceConfigError(f"num_classes={num_classes!r} must be an integer >= 1")
        else:
            ncls = int(num_classes)
        if max(order) >= ncls:
            raise QGFaceConfigError(f"label {max(order)} is out of range for num_classes={ncls}")
        for j, label in enumerate(sorted(order)):
            k = n + 1 + j
            w.write_idx(k, pack(IRHeader(0, np.array(ranges[label], np.float32), k, 0), b""))
    finally:
        w.close()
    # patch record 0 in place: its part's magic and length precede the payload
    final = header0_payload(n + 1, n + 1 + len(order))
    with open(rec_path, "r+b") as f:
        head = f.read(_RECORD0_AT + len(final))
        if head[_RECORD0_AT:] != placeholder:
            raise RuntimeError(f"{rec_path}: record 0 is not where it was written")
        f.seek(_RECORD0_AT)
        f.write(final)
    write_property(out_dir, ncls, size)
    return n, ncls
