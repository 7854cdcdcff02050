"""Read insightface / arcface_torch record sets (``train.rec`` + ``train.idx``) without mxnet.

A pure-Python reader of dmlc RecordIO as insightface uses it (numpy + the standard library; OpenCV,
or Pillow where OpenCV is missing, only to decode the images), for environments where mxnet cannot be
installed (numpy >= 1.24, Python >= 3.12, ARM hosts). The torch ``Dataset`` on it, with the contract of
arcface_torch's ``MXFaceDataset``, is :class:`~qgface_plugin.formats.record_dataset.RecordDataset`.

The format, as mxnet 1.9.1 (dmlc-core) writes and reads it:

* ``train.idx``: text, one ``key<TAB>byte_offset`` line per record; the offset is where the
  record's first part starts in ``train.rec``.
* ``train.rec``: a sequence of parts, each ``uint32 magic 0xced7230a``, ``uint32 lrecord``
  (continuation flag ``cflag = lrecord >> 29``, length ``lrecord & (2**29 - 1)``), the part's bytes,
  zero padding to a multiple of 4. The writer splits a payload wherever the magic number occurs in
  it at a 4-byte-aligned offset (below the payload's last, partial word): the magic is dropped and
  the pieces are written as parts with ``cflag`` 1 (start), 2 (middle), 3 (end); a payload without
  the magic is one part with ``cflag`` 0. The reader joins the pieces with the magic re-inserted
  between them, which restores the payload byte for byte.
* payload = ``IRHeader`` (``struct`` ``IfQQ``, little-endian: ``flag``, ``label``, ``id``, ``id2``)
  + (when ``flag > 0``) ``flag`` float32 labels + the image bytes (JPEG/PNG); with ``flag > 0`` the
  header's own ``label`` field is 0 and the labels are the float32 array (``mx.recordio.unpack``).
* insightface's "header0" layout: record 0 has ``flag = 2`` and label ``[a, b]``: the images are
  keys ``1 .. a-1``, the per-identity records (label ``[first_key, end_key)``) keys ``a .. b-1``.
  arcface_torch treats any record 0 with ``flag > 0`` as such a header; without one, every key of
  the index is an image.

Differences from mxnet's reader, all on files mxnet reads wrongly or not at all: every defect is a
:class:`RecordIOError` (a :class:`~qgface_plugin.errors.QGFaceInputError`) naming the file, key and
byte offset, where mxnet raises a bare ``MXNetError: Invalid RecordIO File``, returns ``None``
(an offset at the end of the file) or a part of a record (an offset inside a multi-part record);
a key listed twice in the index is an error (mxnet keeps the last offset and lists the key twice).

Writing: :mod:`.recordio_writer` (``mx.recordio.pack`` and ``MXIndexedRecordIO(..., "w")`` without mxnet);
the header0 layout and the ``property`` file: :mod:`.records`.
"""
from __future__ import annotations

import collections
import io
import operator
import os
import struct
import threading
from pathlib import Path

import numpy as np

from ..errors import QGFaceInputError

try:  # OpenCV decodes exactly as mxnet's bundled OpenCV does (tests/test_recordio.py)
    import cv2
except ImportError:  # pragma: no cover - exercised only where OpenCV is missing
    cv2 = None

__all__ = ["MAGIC", "LEN_MASK", "IR_STRUCT", "IRHeader", "RecordIOError", "RecordReader", "unpack",
           "decode_image", "read_index"]

#: dmlc RecordIO's magic number (little-endian uint32 at the start of every part).
MAGIC = 0xCED7230A
_MAGIC_BYTES = struct.pack("<I", MAGIC)
#: the length bits of a part's ``lrecord`` (the top 3 bits are the continuation flag).
LEN_MASK = (1 << 29) - 1
_PART = struct.Struct("<II")
#: mxnet's ``_IR_FORMAT`` ``'IfQQ'`` (native = little-endian, no padding): flag, label, id, id2.
IR_STRUCT = struct.Struct("<IfQQ")
_IR_SIZE = IR_STRUCT.size  # 24
_MAX_FIRST_READ = 1 << 22  # bytes read at once for one record (4 MiB); more only for bigger records
_MORE = 1 << 16
_HEADER_PEEK = 256

#: A record's header: ``label`` is a float when ``flag == 0``, else a float32 array of ``flag`` values
#: (the fields and values of ``mx.recordio.IRHeader`` after ``mx.recordio.unpack``).
IRHeader = collections.namedtuple("IRHeader", ["flag", "label", "id", "id2"])


class RecordIOError(QGFaceInputError):
    """A record set is missing, malformed or inconsistent; the message names the file, key and offset."""


class _MissingKey(RecordIOError, KeyError):
    """A key that the index does not list (also a ``KeyError``, as mxnet's reader raises)."""

    __str__ = Exception.__str__


# --------------------------------------------------------------------------------------------- payloads
def unpack(payload, where: str = "record") -> tuple:
    """Split a record's payload into ``(IRHeader, image bytes)``, as ``mx.recordio.unpack`` does."""
    header, start = _unpack_header(memoryview(payload), where)
    return header, bytes(memoryview(payload)[start:])


def _unpack_header(view: memoryview, where: str) -> tuple:
    if len(view) < _IR_SIZE:
        raise RecordIOError(f"{where}: payload of {len(view)} bytes is shorter than the "
                            f"{_IR_SIZE}-byte IRHeader")
    flag, label, id_, id2 = IR_STRUCT.unpack_from(view, 0)
    start = _IR_SIZE
    if flag > 0:
        start += 4 * flag
        if len(view) < start:
            raise RecordIOError(f"{where}: IRHeader flag {flag} announces {flag} float32 labels, but the "
                                f"payload has only {len(view) - _IR_SIZE} bytes after the header")
        label = np.frombuffer(view, np.float32, flag, _IR_SIZE).copy()
    return IRHeader(flag, label, id_, id2), start


def _first_label(label):
    """The class label arcface_torch's MXFaceDataset takes: the scalar, or an array's first element."""
    return label if isinstance(label, float) else label[0]


if cv2 is not None:
    _RGB_FLAG = getattr(cv2, "IMREAD_COLOR_RGB", None)  # OpenCV >= 4.10 decodes straight to RGB
    # mxnet 1.9.1's OpenCV 3.4.2 imdecode ignores the EXIF orientation; OpenCV 4 applies it unless told not to
    _CV_FLAGS = (cv2.IMREAD_COLOR if _RGB_FLAG is None else _RGB_FLAG) | cv2.IMREAD_IGNORE_ORIENTATION


_SIGNATURES = ((b"\xff\xd8\xff", "JPEG"), (b"\x89PNG\r\n\x1a\n", "PNG"))


def _undecodable(data, where: str, detail: str = "") -> RecordIOError:
    """The error for image bytes that do not decode: how many there are, how they begin, and what that means."""
    head = bytes(data[:8])
    kind = next((name for sig, name in _SIGNATURES if head.startswith(sig)), None)
    found = ("there are none" if not head else
             f"they begin {head.hex(' ')}: a {kind} header, but the {kind} data is truncated or corrupt" if kind else
             f"they begin {head.hex(' ')}, neither a JPEG (ff d8 ff) nor a PNG (89 50 4e 47) signature")
    return RecordIOError(f"{where}: the {len(data)} image bytes do not decode as an image (JPEG/PNG){detail}: {found}")


def decode_image(data, where: str = "image") -> np.ndarray:
    """JPEG/PNG bytes -> RGB uint8 HWC (C-contiguous), pixel for pixel what arcface_torch gets from
    ``mx.image.imdecode(data).asnumpy()`` (OpenCV; Pillow where OpenCV is not installed); else a :class:`RecordIOError`
    (also for a JPEG cut short, which mxnet's bundled OpenCV 3.4 returns partly grey)."""
    if cv2 is not None:
        try:
            img = cv2.imdecode(np.frombuffer(data, np.uint8), _CV_FLAGS)
        except cv2.error:  # an empty buffer
            img = None
        if img is None:
            raise _undecodable(data, where)
        if _RGB_FLAG is None:
            img = cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
        return img
    from PIL import Image  # pragma: no cover
    try:  # pragma: no cover
        with Image.open(io.BytesIO(bytes(data))) as im:
            return np.ascontiguousarray(np.asarray(im.convert("RGB")))
    except Exception as exc:  # pragma: no cover
        raise _undecodable(data, where, f" ({type(exc).__name__}: {exc})") from None


# --------------------------------------------------------------------------------------------- index
_DIGITS = np.zeros(256, bool)
_DIGITS[list(b"0123456789\t\n")] = True


def read_index(idx_path) -> tuple:
    """``train.idx`` -> ``(keys, offsets)``, two int64 arrays in file order.

    Raises:
        RecordIOError: the file is missing or empty, a line is not ``key<TAB>offset``, or a key repeats.
    """
    idx_path = Path(idx_path)
    try:
        data = idx_path.read_bytes()
    except FileNotFoundError:
        raise RecordIOError(f"{idx_path} is missing: an arcface_torch record set needs train.idx next to "
                            "train.rec (one 'key<TAB>offset' line per record)") from None
    if data and not data.endswith(b"\n"):
        data += b"\n"
    arr = np.frombuffer(data, np.uint8)
    seps = arr[(arr == 9) | (arr == 10)]
    fast = (len(seps) % 2 == 0 and _DIGITS[arr].all() and (seps[0::2] == 9).all() and (seps[1::2] == 10).all())
    values = np.fromstring(data.decode("ascii"), np.int64, sep=" ") if fast and len(data) else None
    if values is None or len(values) != len(seps):
        keys, offsets = _read_index_lines(idx_path, data)  # exact messages for malformed lines
    else:
        keys, offsets = values[0::2].copy(), values[1::2].copy()
    if len(keys) == 0:
        raise RecordIOError(f"{idx_path} is empty: the record set was not closed properly when written")
    if (np.diff(keys) > 0).all():  # the usual, increasing keys: no repeats
        return keys, offsets
    uniq, counts = np.unique(keys, return_counts=True)
    if len(uniq) != len(keys):
        dup = uniq[counts > 1][0]
        lines = np.flatnonzero(keys == dup)[:2] + 1
        raise RecordIOError(f"{idx_path}: key {dup} is listed twice (lines {lines[0]} and {lines[1]}); "
                            "the index was appended to or concatenated")
    return keys, offsets


def _read_index_lines(idx_path: Path, data: bytes) -> tuple:
    keys, offsets = [], []
    for line_no, raw in enumerate(data.decode("utf-8", "replace").split("\n"), 1):
        line = raw.strip()
        if not line:
            continue
        parts = line.split("\t")
        try:
            if len(parts) != 2:
                raise ValueError
            key, offset = int(parts[0]), int(parts[1])
        except ValueError:
            raise RecordIOError(f"{idx_path}:{line_no}: expected 'key<TAB>offset', got {line[:60]!r}") from None
        if offset < 0:
            raise RecordIOError(f"{idx_path}:{line_no}: key {key} has a negative offset {offset}")
        keys.append(key)
        offsets.append(offset)
    return np.array(keys, np.int64), np.array(offsets, np.int64)


# --------------------------------------------------------------------------------------------- reader
def _pread_loop(pread, fd, size: int, offset: int) -> bytes:
    data = pread(fd, size, offset)
    if len(data) < size and data:  # a short read before the end of the file (huge reads, some file systems)
        chunks = [data]
        got = len(data)
        while got < size:
            more = pread(fd, size - got, offset + got)
            if not more:
                break
            chunks.append(more)
            got += len(more)
        data = b"".join(chunks)
    return data


def _seek_read(fd, size: int, offset: int) -> bytes:  # pragma: no cover - platforms without os.pread
    os.lseek(fd, offset, os.SEEK_SET)
    return os.read(fd, size)


_HAVE_PREAD = hasattr(os, "pread")
_OPEN_LOCK = threading.Lock()
if hasattr(os, "register_at_fork"):  # a lock held by another thread at fork time would stay held in the child
    def _new_lock():
        global _OPEN_LOCK
        _OPEN_LOCK = threading.Lock()
    os.register_at_fork(after_in_child=_new_lock)


class RecordReader:
    """Random access to an insightface record set, without mxnet.

    ``RecordReader(root)`` reads ``root/train.idx`` at once and opens ``root/train.rec`` lazily, once
    per process (a reader made before ``fork`` or sent to DataLoader workers opens its own file
    descriptor there; pickling drops it). Reads are positional (``os.pread``), so one reader may serve
    many threads.

    Attributes:
        keys: the index's keys in file order (``MXIndexedRecordIO.keys``).
        header0: ``(a, b)`` from record 0 when it is an insightface header (``flag > 0`` and no image
            bytes), else None.
        header0_note: why record 0 with ``flag > 0`` was not taken as a header (it holds an image), else
            None; :class:`RecordDataset` refuses such a set, which MXFaceDataset would misread.
        imgidx: the image keys in arcface_torch's order: ``1 .. a-1`` with a header0, else ``keys``.

    A record 0 shorter than an IRHeader (a set of raw records, not images) is no header either.

    Raises:
        RecordIOError: a missing file, a malformed index, an index entry beyond ``train.rec``, or a
            header0 whose image range names keys the index lacks (and, on reads: a wrong magic number,
            a record running past the end of the file).
    """

    def __init__(self, root, rec: str = "train.rec", idx: str = "train.idx"):
        root = Path(root)
        self.root = root
        self.rec_path = root / rec
        self.idx_path = root / idx
        if not self.rec_path.is_file():
            raise RecordIOError(f"{self.rec_path} is missing: an arcface_torch record set needs train.rec and "
                                "train.idx (tools/make_synthetic_data.py writes a small one)")
        self._size = self.rec_path.stat().st_size
        keys, offsets = read_index(self.idx_path)
        beyond = np.flatnonzero(offsets >= self._size)
        if len(beyond):
            i = beyond[0]
            raise RecordIOError(
                f"{self.idx_path}: key {keys[i]} points at byte offset {offsets[i]}, beyond the end of "
                f"{self.rec_path} ({self._size} bytes; {len(beyond)} such entries): the index belongs to "
                "another record file or train.rec is truncated")
        self._keys = keys
        self._offsets = offsets
        # bytes to read for one record: up to the next record's offset (one pread per record)
        uniq = np.unique(offsets)
        nxt = np.append(uniq, self._size)[np.searchsorted(uniq, offsets, side="right")]
        self._chunk = np.minimum(nxt - offsets, _MAX_FIRST_READ)
        self._k0 = int(keys[0])
        self._dense = bool(keys[-1] - keys[0] == len(keys) - 1 and (np.diff(keys) == 1).all())
        if not self._dense:
            self._order = np.argsort(keys, kind="stable")
            self._sorted = keys[self._order]
        self._keys_list = None
        self._fd = None
        self._pid = None
        self.header0 = None
        self.header0_note = None
        if 0 in self:
            payload = self._record_view(0)
            if len(payload) >= _IR_SIZE:  # else raw records, not an image set
                h, start = _unpack_header(payload, self._where(0))
                if h.flag > 0 and len(payload) > start:
                    self.header0_note = (
                        f"{self.rec_path}: record 0 is an image with a {h.flag}-value label array (as "
                        "insightface's RecBuilder.add_image(img, [label, ...]) writes), not a header record; "
                        "arcface_torch's MXFaceDataset would take it for one and read the keys "
                        f"1..{int(h.label[0]) - 1} as its images. Rewrite the set with an insightface header "
                        "record 0 (flag 2, label [a, b], no image), or with a scalar label on record 0")
                elif h.flag > 0:
                    self.header0 = self._check_header0(h)
        # MXFaceDataset: np.array(range(1, a)) or np.array(list(keys)) (same values and dtype)
        self.imgidx = np.arange(1, self.header0[0]) if self.header0 is not None else self._keys.copy()

    # -- keys
    @property
    def keys(self) -> list:
        if self._keys_list is None:
            self._keys_list = self._keys.tolist()
        return self._keys_list

    def __len__(self) -> int:
        return len(self._keys)

    def __contains__(self, key) -> bool:
        return self._position(key, missing_ok=True) is not None

    def _position(self, key, missing_ok: bool = False):
        try:
            k = operator.index(key)  # ints and numpy integers (imgidx), not floats or strings
        except TypeError:
            k = None
        if k is not None:
            if self._dense:
                pos = k - self._k0
                if 0 <= pos < len(self._keys):
                    return pos
            else:
                i = int(np.searchsorted(self._sorted, k))
                if i < len(self._sorted) and self._sorted[i] == k:
                    return int(self._order[i])
        if missing_ok:
            return None
        raise _MissingKey(f"{self.idx_path} has no key {key!r}")

    def _check_header0(self, h: IRHeader) -> tuple:
        where = f"{self.rec_path}: record 0 (header0: flag {h.flag}, label {h.label.tolist()})"
        if h.flag < 2:
            raise RecordIOError(f"{where}: an insightface header record has flag 2 and label [a, b]; "
                                "arcface_torch would fail on label[1]")
        a, b = int(h.label[0]), int(h.label[1])
        if not (1 <= a <= b):
            raise RecordIOError(f"{where}: expected 1 <= a <= b for images 1..a-1 and identities a..b-1 "
                                "(is record 0 an image with an array label?)")
        if self._dense:
            present = max(0, min(a - 1, self._k0 + len(self._keys) - 1) - max(1, self._k0) + 1)
        else:
            lo, hi = np.searchsorted(self._sorted, [1, a])
            present = int(hi - lo)
        if present != a - 1:
            missing = next(k for k in range(1, a) if k not in self)
            raise RecordIOError(
                f"{where} says the images are keys 1..{a - 1}, but {self.idx_path} lacks key {missing} "
                f"({a - 1 - present} of them missing): train.idx does not belong to this train.rec, or "
                "record 0 is not an insightface header")
        return a, b

    # -- file handle
    def _fileno(self) -> int:
        fd = self._fd
        if fd is not None and self._pid == os.getpid():
            return fd
        with _OPEN_LOCK:
            pid = os.getpid()
            if self._fd is not None and self._pid != pid:  # inherited through fork: the child's own copy
                try:
                    os.close(self._fd)
                except OSError:
                    pass
                self._fd = None
            if self._fd is None:
                flags = os.O_RDONLY | getattr(os, "O_BINARY", 0) | getattr(os, "O_CLOEXEC", 0)
                self._fd = os.open(self.rec_path, flags)
                self._pid = pid
            return self._fd

    def _pread(self, size: int, offset: int) -> bytes:
        fd = self._fileno()
        if _HAVE_PREAD:
            return _pread_loop(os.pread, fd, size, offset)
        with _OPEN_LOCK:  # pragma: no cover - seek + read share the descriptor's position
            return _pread_loop(_seek_read, fd, size, offset)

    def close(self) -> None:
        """Close this process's descriptor (a later read reopens it)."""
        with _OPEN_LOCK:
            fd, self._fd = self._fd, None
            if fd is not None and self._pid == os.getpid():
                os.close(fd)

    def __del__(self):
        try:
            self.close()
        except Exception:  # a half-made reader, interpreter shutdown
            pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __getstate__(self):
        d = dict(self.__dict__)
        d["_fd"] = d["_pid"] = None  # the descriptor stays with this process; the copy opens its own
        d["_keys_list"] = None
        return d

    # -- records
    def _more(self, buf: bytes, start: int, need: int, key, part_at: int) -> bytes:
        want = max(need - len(buf), _MORE)
        more = self._pread(want, start + len(buf))
        buf += more
        if len(buf) < need:
            raise RecordIOError(
                f"{self.rec_path}: record {key} at byte offset {start} runs past the end of the file (its part "
                f"at offset {part_at} needs bytes up to {start + need}, the file has {self._size}): "
                "train.rec is truncated")
        return buf

    def _record_view(self, key, peek: int = 0) -> memoryview:
        """The payload of ``key`` (a memoryview); with ``peek``, only a prefix of it: what the first
        ``peek`` bytes of the file hold of the first part (enough for a header, mostly)."""
        pos = self._position(key)
        start = int(self._offsets[pos])
        buf = self._pread(min(peek, int(self._chunk[pos])) if peek else int(self._chunk[pos]), start)
        p, pieces = 0, []
        while True:
            if len(buf) < p + 8:
                buf = self._more(buf, start, p + 8, key, start + p)
            magic, lrec = _PART.unpack_from(buf, p)
            if magic != MAGIC:
                what = "record" if p == 0 else f"part at byte offset {start + p} of record"
                raise RecordIOError(
                    f"{self.rec_path}: {what} {key} at byte offset {start}: bad magic 0x{magic:08x} "
                    f"(expected 0x{MAGIC:08x}): train.idx does not match train.rec, or the file is corrupt")
            cflag, length = lrec >> 29, lrec & LEN_MASK
            if cflag > 3 or (p == 0 and cflag >= 2) or (p > 0 and cflag < 2):
                state = "first part" if p == 0 else "continuation part"
                raise RecordIOError(
                    f"{self.rec_path}: record {key} at byte offset {start}: {state} at offset {start + p} has "
                    f"continuation flag {cflag}: the index points inside a multi-part record, or the file "
                    "is corrupt")
            end = p + 8 + length
            if peek:  # a prefix of the payload: the first part's bytes read so far
                return memoryview(buf)[8:min(end, len(buf))]
            if len(buf) < end:
                buf = self._more(buf, start, end, key, start + p)
            if cflag == 0:
                return memoryview(buf)[8:end]
            pieces.append(memoryview(buf)[p + 8:end])
            if cflag == 3:
                return memoryview(_MAGIC_BYTES.join(pieces))
            p += 8 + ((length + 3) & ~3)

    def _where(self, key) -> str:
        pos = self._position(key)
        return f"{self.rec_path}: record {key} at byte offset {int(self._offsets[pos])}"

    def read(self, key) -> bytes:
        """The payload of record ``key`` (``MXIndexedRecordIO.read_idx``: IRHeader + labels + image)."""
        return bytes(self._record_view(key))

    def unpack(self, key) -> tuple:
        """``(IRHeader, image bytes)`` of record ``key`` (``mx.recordio.unpack(read_idx(key))``)."""
        view = self._record_view(key)
        header, start = _unpack_header(view, self._where(key))
        return header, bytes(view[start:])

    def header(self, key) -> IRHeader:
        """The IRHeader of record ``key`` (reads the first few hundred bytes only, for a whole record)."""
        view = self._record_view(key, peek=_HEADER_PEEK)
        if len(view) < _IR_SIZE or len(view) < _IR_SIZE + 4 * IR_STRUCT.unpack_from(view, 0)[0]:
            view = self._record_view(key)  # a longer label array, or a header split by the magic number
        return _unpack_header(view, self._where(key))[0]

    def read_image(self, key) -> tuple:
        """``(RGB uint8 HWC image, label)``: the decode of ``mx.image.imdecode(img).asnumpy()`` and the
        label arcface_torch's MXFaceDataset takes (the scalar, or the first of the label array)."""
        view = self._record_view(key)
        header, start = _unpack_header(view, f"{self.rec_path}: record {key}")
        try:
            img = decode_image(view[start:], f"{self.rec_path}: record {key}")
        except RecordIOError as exc:  # where the record is, for a look at the file
            raise RecordIOError(f"{exc} (record at byte offset {int(self._offsets[self._position(key)])})") from None
        return img, _first_label(header.label)

    def identity_ranges(self) -> np.ndarray:
        """The header0 identity records ``a .. b-1`` as an int64 array of ``[first_key, end_key)`` rows."""
        if self.header0 is None:
            raise RecordIOError(f"{self.rec_path}: record 0 is not an insightface header (flag > 0), so the "
                                "set has no identity records")
        a, b = self.header0
        out = np.empty((b - a, 2), np.int64)
        for j, key in enumerate(range(a, b)):
            if key not in self:
                raise RecordIOError(f"{self.rec_path}: header0 {self.header0} announces identity record {key}, "
                                    f"which {self.idx_path} lacks")
            label = self.header(key).label
            if isinstance(label, float) or len(label) < 2:
                raise RecordIOError(f"{self._where(key)}: identity record without a [first, end) label")
            out[j] = int(label[0]), int(label[1])
        return out

    def __repr__(self) -> str:
        return f"RecordReader({str(self.root)!r}: {len(self)} records, header0={self.header0})"
