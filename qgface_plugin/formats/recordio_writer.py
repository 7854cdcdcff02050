"""Write insightface / arcface_torch record sets (``train.rec`` + ``train.idx``) without mxnet.

:class:`RecordWriter` is ``mx.recordio.MXIndexedRecordIO(idx, rec, "w")`` in pure Python and :func:`pack` is
``mx.recordio.pack``: for the same records they write byte-identical files (``tests/test_formats.py`` compares
them with mxnet's). The format is described in :mod:`qgface_plugin.formats.recordio` (the reader): dmlc parts
``uint32 magic``, ``uint32 cflag << 29 | length``, the bytes, zero padding to 4; a payload is split wherever
the magic number sits at a 4-byte-aligned offset below its last partial word (dmlc-core
``RecordIOWriter::WriteRecord``). numpy + the standard library.
"""
from __future__ import annotations

import numbers
import os

import numpy as np

from .recordio import IR_STRUCT, LEN_MASK, MAGIC, IRHeader, RecordIOError

__all__ = ["RecordWriter", "pack", "frame"]

_MAGIC_BYTES = MAGIC.to_bytes(4, "little")


def pack(header, data: bytes = b"") -> bytes:
    """``IRHeader`` + image bytes -> a record's payload, as ``mx.recordio.pack`` makes it: a numeric ``label``
    gives ``flag`` 0; an array label gives ``flag = label.size``, header label 0 and the float32 labels
    after the header."""
    header = IRHeader(*header)
    if isinstance(header.label, numbers.Number):
        header = header._replace(flag=0)
    else:
        label = np.asarray(header.label, dtype=np.float32)
        header = header._replace(flag=label.size, label=0)
        data = label.tobytes() + bytes(data)
    return IR_STRUCT.pack(*header) + bytes(data)


def frame(payload) -> bytes:
    """One record's bytes in ``train.rec`` (dmlc-core's ``WriteRecord``: split at the aligned magic numbers)."""
    payload = bytes(payload)
    n = len(payload)
    if n > LEN_MASK:
        raise RecordIOError(f"a record of {n} bytes is too long for RecordIO (at most {LEN_MASK} bytes)")
    parts, start = [], 0
    for i in range(0, n - n % 4, 4):
        if payload[i:i + 4] == _MAGIC_BYTES:
            cflag = 1 if start == 0 else 2
            parts += [_MAGIC_BYTES, ((cflag << 29) | (i - start)).to_bytes(4, "little"), payload[start:i]]
            start = i + 4
    cflag = 3 if start else 0
    parts += [_MAGIC_BYTES, ((cflag << 29) | (n - start)).to_bytes(4, "little"), payload[start:], bytes(-n % 4)]
    return b"".join(parts)


class RecordWriter:
    """``MXIndexedRecordIO(idx_path, rec_path, "w")`` without mxnet: both files are created (replaced);
    :meth:`write_idx` appends one record and its ``key<TAB>offset`` line. A context manager."""

    def __init__(self, idx_path, rec_path):
        self.idx_path, self.rec_path = os.fspath(idx_path), os.fspath(rec_path)
        self._rec = open(self.rec_path, "wb")
        try:
            self._idx = open(self.idx_path, "w")
        except BaseException:
            self._rec.close()
            raise
        self._pos = 0

    def tell(self) -> int:
        return self._pos

    def write(self, payload) -> None:
        """Append a record that the index does not list (``MXRecordIO.write``)."""
        data = frame(payload)
        self._rec.write(data)
        self._pos += len(data)

    def write_idx(self, key, payload) -> None:
        """Append record ``key`` (``MXIndexedRecordIO.write_idx``)."""
        pos = self._pos
        self.write(payload)
        self._idx.write(f"{key}\t{pos}\n")

    def close(self) -> None:
        for f in (self._rec, self._idx):
            if not f.closed:
                f.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
