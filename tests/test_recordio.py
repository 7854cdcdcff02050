"""qgface_plugin.formats.recordio (+ record_dataset): the mxnet-free reader of insightface record sets.

Two groups of tests:

* Always run: record sets written by a small reference writer in this file (written from the format
  description -- dmlc framing with the magic-number split, IRHeader ``<IfQQ`` -- and sharing no code with
  the reader), read back exactly; every defect's error message; pickling, threads, fork, DataLoader
  workers; the module imports and reads where ``import mxnet`` fails.
* With mxnet (skipped, with the reason, where it cannot be imported): equality with
  ``mx.recordio.MXIndexedRecordIO`` + ``mx.recordio.unpack`` + ``mx.image.imdecode`` -- keys, headers, labels
  (scalars and flag > 0 arrays), payload bytes and decoded pixels -- on sets written by mxnet's own writer
  (``pack_img``/``pack``), by this project's writer (``synthetic.make_dataset``), with multi-part records,
  and by insightface's ``RecBuilder``; and, with ``ARCFACE_TORCH_ROOT`` too, ``RecordDataset`` against
  arcface_torch's ``MXFaceDataset`` item by item.
"""
from __future__ import annotations

import io
import multiprocessing
import os
import pickle
import struct
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from _proc import ROOT
from qgface_plugin import QGFaceInputError
from qgface_plugin.formats.record_dataset import RecordDataset
from qgface_plugin.formats.recordio import MAGIC, RecordIOError, RecordReader, decode_image, unpack

try:
    from qgface_plugin.utils import import_mxnet
    mx = import_mxnet()
    MXNET_MISSING = None
except Exception as exc:  # ImportError, or an mxnet that fails to load (numpy >= 1.24: np.bool)
    mx = None
    MXNET_MISSING = f"mxnet cannot be imported ({type(exc).__name__}: {str(exc).splitlines()[0][:80]})"
needs_mxnet = pytest.mark.skipif(mx is None, reason=f"{MXNET_MISSING}: the comparisons with mxnet's reader need it")


# --------------------------------------------------------------------------------------------- reference writer
# Written from the format description only (dmlc-core RecordIOWriter::WriteRecord, mxnet.recordio.pack).
REF_MAGIC = bytes([0x0A, 0x23, 0xD7, 0xCE])  # 0xced7230a, little-endian


def ref_frame(payload: bytes) -> bytes:
    """One record's bytes in train.rec: split where the magic sits at a 4-aligned offset below the last
    partial word, magic dropped; parts flagged 1 (start), 2 (middle), 3 (end), or 0 for a single part."""
    whole_words = len(payload) - len(payload) % 4
    cuts = [i for i in range(0, whole_words, 4) if payload[i:i + 4] == REF_MAGIC]
    pieces, prev = [], 0
    for c in cuts:
        pieces.append(payload[prev:c])
        prev = c + 4
    pieces.append(payload[prev:])
    out = b""
    for j, piece in enumerate(pieces):
        cflag = 0 if len(pieces) == 1 else 1 if j == 0 else 3 if j == len(pieces) - 1 else 2
        out += REF_MAGIC + ((cflag << 29) | len(piece)).to_bytes(4, "little") + piece + bytes(-len(piece) % 4)
    return out


def ref_pack(label, data: bytes = b"", id_: int = 0, id2: int = 0) -> bytes:
    """IRHeader ``<IfQQ`` + (flag float32 labels) + data, as mx.recordio.pack does."""
    if isinstance(label, (int, float)):
        return struct.pack("<IfQQ", 0, float(label), id_, id2) + data
    arr = np.asarray(label, "<f4").ravel()
    return struct.pack("<IfQQ", arr.size, 0.0, id_, id2) + arr.tobytes() + data


def ref_write(root: Path, records) -> Path:
    """``records``: (key, payload) pairs, in file order -> root/train.rec + root/train.idx."""
    root.mkdir(parents=True, exist_ok=True)
    rec, lines = b"", []
    for key, payload in records:
        lines.append(f"{key}\t{len(rec)}\n")
        rec += ref_frame(payload)
    (root / "train.rec").write_bytes(rec)
    (root / "train.idx").write_text("".join(lines))
    return root


def png(img_rgb) -> bytes:
    return cv2.imencode(".png", np.ascontiguousarray(img_rgb[..., ::-1]))[1].tobytes()


def jpg(img_rgb, quality=95) -> bytes:
    return cv2.imencode(".jpg", np.ascontiguousarray(img_rgb[..., ::-1]), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].tobytes()


def images(n, seed=0, size=(20, 24)):
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size[0], :size[1]]
    out = []
    for _ in range(n):
        base = rng.integers(0, 256, 3)[None, None] * 0.5 + 60 * np.sin(xx[..., None] / 3 + rng.uniform(0, 6, 3))
        out.append(np.clip(base + 40 * np.cos(yy[..., None] / 4) + rng.normal(0, 8, (*size, 3)), 0, 255).astype(np.uint8))
    return out


def ref_header0_set(root: Path, per_label=(3, 1, 2), encode=png, seed=0):
    """An insightface header0 set: record 0 flag 2 [N+1, N+1+ids], images 1..N, identity records."""
    imgs = images(sum(per_label), seed)
    n, ids = len(imgs), len(per_label)
    records, truth, ranges, key = [(0, ref_pack([n + 1, n + 1 + ids], id2=1))], {}, [], 1
    for label, count in enumerate(per_label):
        first = key
        for _ in range(count):
            img = imgs[key - 1]
            records.append((key, ref_pack(label, encode(img), id_=key)))
            truth[key] = (img, float(label))
            key += 1
        ranges.append((first, key))
    records += [(n + 1 + j, ref_pack(list(r), id_=n + 1 + j)) for j, r in enumerate(ranges)]
    ref_write(root, records)
    return truth, ranges, dict(records)


# payloads that the writer splits: the magic at aligned offsets (start, middle, end, twice in a row,
# the whole payload), and unaligned (not split)
def multipart_payloads():
    M = REF_MAGIC
    return {
        0: ref_pack(1.0, b"plain"),
        1: M + b"xy",
        2: b"0123" + M + M + b"45678" + M,
        3: M,
        4: b"12" + M + b"abcd",
        5: b"",
        6: ref_pack([7.0, 8.0], b"abcd" + M + b"ef" + M * 3 + b"g"),
        7: ref_pack(2.0, struct.pack("<I", MAGIC) * 5),
    }


# --------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def header0_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("h0")
    truth, ranges, payloads = ref_header0_set(root)
    return root, truth, ranges, payloads


def _index(root):
    return {int(k): int(v) for k, v in (l.split("\t") for l in (root / "train.idx").read_text().splitlines())}


# --------------------------------------------------------------------------------------------- always run
def test_reference_writer_splits_on_the_magic():
    parts = []
    data = ref_frame(b"0123" + REF_MAGIC + b"45" + REF_MAGIC[:2])
    off = 0
    while off < len(data):
        magic, lrec = struct.unpack_from("<II", data, off)
        assert magic == MAGIC
        parts.append((lrec >> 29, lrec & (2 ** 29 - 1)))
        off += 8 + (-(-(lrec & (2 ** 29 - 1)) // 4)) * 4
    assert parts == [(1, 4), (3, 4)]


def test_header0_set_read_back_exactly(header0_set):
    root, truth, ranges, payloads = header0_set
    r = RecordReader(root)
    n = len(truth)
    assert len(r) == 1 + n + len(ranges) and r.keys == list(range(1 + n + len(ranges)))
    assert r.header0 == (n + 1, n + 1 + len(ranges)) and r.header0_note is None
    assert r.imgidx.tolist() == list(range(1, n + 1)) and r.imgidx.dtype == np.int64
    for key, payload in payloads.items():
        assert r.read(key) == payload
    h = r.header(0)
    assert h.flag == 2 and h.label.dtype == np.float32 and h.label.tolist() == [n + 1, n + 1 + len(ranges)]
    assert (h.id, h.id2) == (0, 1)
    for key, (img, label) in truth.items():
        h, data = r.unpack(key)
        assert (h.flag, h.label, h.id, h.id2) == (0, label, key, 0) and isinstance(h.label, float)
        got, got_label = r.read_image(key)
        assert np.array_equal(got, img) and got.dtype == np.uint8 and got.flags.c_contiguous
        assert got_label == label
    assert r.identity_ranges().tolist() == [list(x) for x in ranges]


def test_header_less_set_uses_the_index_order(tmp_path):
    imgs = images(4, seed=3)
    order = [3, 0, 2, 1]  # file order, as MXIndexedRecordIO.keys lists it
    ref_write(tmp_path, [(k, ref_pack(float(k % 2), png(imgs[k]), id_=k)) for k in order])
    r = RecordReader(tmp_path)
    assert r.header0 is None and r.keys == order and r.imgidx.tolist() == order
    ds = RecordDataset(tmp_path, transform=None)
    assert len(ds) == 4 and not hasattr(ds, "header0")
    for i, k in enumerate(order):
        img, label = ds[i]
        assert np.array_equal(img, imgs[k]) and label.dtype == torch.long and int(label) == k % 2


def test_sparse_keys_and_label_arrays(tmp_path):
    imgs = images(3, seed=4)
    keys = [10, 7, 1000000007]
    labels = [[4.0, 0.5], [2.0] + [-1.0] * 236, [9.0, 1.0, 2.0]]  # 237 floats: rec_add_mask_param's layout
    ref_write(tmp_path, [(k, ref_pack(l, jpg(im), id_=k)) for k, l, im in zip(keys, labels, imgs)])
    r = RecordReader(tmp_path)
    assert r.keys == keys and 7 in r and 8 not in r and "x" not in r
    for k, l, im in zip(keys, labels, imgs):
        h = r.header(k)
        assert h.flag == len(l) and h.label.tolist() == l and h.label.dtype == np.float32
        img, label = r.read_image(k)
        assert label == l[0] and img.shape == im.shape
        assert np.array_equal(img, cv2.cvtColor(cv2.imdecode(np.frombuffer(jpg(im), np.uint8), 1), cv2.COLOR_BGR2RGB))
    with pytest.raises(KeyError, match="has no key 8"):
        r.read(8)
    with pytest.raises(RecordIOError, match="has no key 8"):
        r.header(8)


def test_multipart_records(tmp_path):
    payloads = multipart_payloads()
    ref_write(tmp_path, payloads.items())
    data = (tmp_path / "train.rec").read_bytes()
    flags = {struct.unpack_from("<I", data, off + 4)[0] >> 29 for off in _index(tmp_path).values()}
    assert flags == {0, 1}  # the set does contain multi-part records
    r = RecordReader(tmp_path)
    for key, payload in payloads.items():
        assert r.read(key) == payload, key
    h, rest = r.unpack(6)
    assert h.label.tolist() == [7.0, 8.0] and rest == b"abcd" + REF_MAGIC + b"ef" + REF_MAGIC * 3 + b"g"
    assert r.header(7).label == 2.0 and r.header(6).flag == 2


def test_header_split_by_the_magic(tmp_path):
    """An IRHeader whose id is the magic number is split inside the header: header() reads the whole record."""
    payload = struct.pack("<IfQQ", 0, 3.0, MAGIC, 0) + png(images(1)[0])
    assert ref_frame(payload)[4:8] != (len(payload)).to_bytes(4, "little")  # multi-part indeed
    ref_write(tmp_path, [(0, payload)])
    r = RecordReader(tmp_path)
    assert r.header(0).id == MAGIC and r.header(0).label == 3.0 and r.read(0) == payload
    assert np.array_equal(r.read_image(0)[0], images(1)[0])


def test_unpack_matches_the_format():
    h, rest = unpack(ref_pack([1.0, 2.0, 3.0], b"img", 5, 6))
    assert h.flag == 3 and h.label.tolist() == [1, 2, 3] and (h.id, h.id2) == (5, 6) and rest == b"img"
    h, rest = unpack(ref_pack(4, b""))
    assert (h.flag, h.label, rest) == (0, 4.0, b"")
    with pytest.raises(RecordIOError, match="shorter than the 24-byte IRHeader"):
        unpack(b"short")
    with pytest.raises(RecordIOError, match="flag 3 announces 3 float32 labels"):
        unpack(struct.pack("<IfQQ", 3, 0.0, 0, 0) + b"\0" * 8)


# --------------------------------------------------------------------------------------------- errors
def _copy(header0_set, tmp_path):
    root = header0_set[0]
    dst = tmp_path / "copy"
    dst.mkdir()
    for name in ("train.rec", "train.idx"):
        (dst / name).write_bytes((root / name).read_bytes())
    return dst


def test_error_wrong_magic(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    off = _index(root)[5]
    data = bytearray((root / "train.rec").read_bytes())
    data[off:off + 4] = b"\0\0\0\0"
    (root / "train.rec").write_bytes(bytes(data))
    r = RecordReader(root)  # record 0 is fine
    with pytest.raises(RecordIOError, match=rf"copy/train.rec: record 5 at byte offset {off}: bad magic "
                                            r"0x00000000 \(expected 0xced7230a\)"):
        r.read(5)
    with pytest.raises(QGFaceInputError, match="record 5"):
        r.read_image(5)
    data[0:4] = b"JUNK"
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(RecordIOError, match="record 0 at byte offset 0: bad magic"):
        RecordReader(root)


def test_error_record_past_the_end(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    idx = _index(root)
    last_image = len(header0_set[1])
    data = (root / "train.rec").read_bytes()
    cut = idx[last_image] + 20  # inside the last image's payload
    (root / "train.rec").write_bytes(data[:cut])
    (root / "train.idx").write_text("".join(f"{k}\t{v}\n" for k, v in idx.items() if k <= last_image))
    r = RecordReader(root)
    with pytest.raises(RecordIOError, match=rf"record {last_image} at byte offset {idx[last_image]} runs past the end "
                                            rf"of the file .* the file has {cut}\): train.rec is truncated"):
        r.read(last_image)


def test_error_index_entry_beyond_the_file(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    size = (root / "train.rec").stat().st_size
    with open(root / "train.idx", "a") as f:
        f.write(f"99\t{size + 400}\n")
    with pytest.raises(RecordIOError, match=rf"train.idx: key 99 points at byte offset {size + 400}, beyond the end "
                                            rf"of .*train.rec \({size} bytes; 1 such entries\)"):
        RecordReader(root)


def test_error_missing_files(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    (root / "train.idx").unlink()
    with pytest.raises(RecordIOError, match=r"copy/train.idx is missing"):
        RecordReader(root)
    with pytest.raises(RecordIOError, match=r"nowhere/train.rec is missing"):
        RecordReader(tmp_path / "nowhere")
    (root / "train.idx").write_text("")
    with pytest.raises(RecordIOError, match="train.idx is empty"):
        RecordReader(root)


def test_error_malformed_or_repeated_index_lines(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    good = (root / "train.idx").read_text()
    (root / "train.idx").write_text(good + "7 0\n")
    n = len(good.splitlines())
    with pytest.raises(RecordIOError, match=rf"train.idx:{n + 1}: expected 'key<TAB>offset', got '7 0'"):
        RecordReader(root)
    (root / "train.idx").write_text(good + "3\t0\n")
    with pytest.raises(RecordIOError, match=rf"train.idx: key 3 is listed twice \(lines 4 and {n + 1}\)"):
        RecordReader(root)


def test_error_header0_range_disagrees_with_the_index(header0_set, tmp_path):
    root = _copy(header0_set, tmp_path)
    idx = _index(root)
    (root / "train.idx").write_text("".join(f"{k}\t{v}\n" for k, v in idx.items() if k != 4))
    n = len(header0_set[1])
    with pytest.raises(RecordIOError, match=rf"record 0 \(header0: flag 2, label \[{n + 1}.0, \d+.0\]\) says the "
                                            rf"images are keys 1..{n}, but .*train.idx lacks key 4 \(1 of them"):
        RecordReader(root)
    with pytest.raises(RecordIOError, match="lacks key 4"):
        RecordDataset(root)


def test_error_header0_shapes(tmp_path):
    ref_write(tmp_path / "flag1", [(0, ref_pack([3.0])), (1, ref_pack(0.0, png(images(1)[0])))])
    with pytest.raises(RecordIOError, match=r"record 0 \(header0: flag 1, label \[3.0\]\): an insightface header"):
        RecordReader(tmp_path / "flag1")
    ref_write(tmp_path / "back", [(0, ref_pack([3.0, 1.0])), (1, ref_pack(0.0, b"x")), (2, ref_pack(0.0, b"x"))])
    with pytest.raises(RecordIOError, match=r"expected 1 <= a <= b"):
        RecordReader(tmp_path / "back")


def test_record0_image_with_label_array(tmp_path):
    """RecBuilder.add_image(img, [label, ...]) puts an image with flag > 0 at key 0: MXFaceDataset would
    take it for header0; the reader reads the set as header-less, the Dataset refuses it."""
    imgs = images(3, seed=5)
    ref_write(tmp_path, [(k, ref_pack([float(k), 0.0], png(im), id_=k)) for k, im in enumerate(imgs)])
    r = RecordReader(tmp_path)
    assert r.header0 is None and r.imgidx.tolist() == [0, 1, 2] and "RecBuilder.add_image" in r.header0_note
    assert np.array_equal(r.read_image(0)[0], imgs[0]) and r.read_image(2)[1] == 2.0
    with pytest.raises(RecordIOError, match=r"record 0 is an image with a 2-value label array .* keys 1..-1"):
        RecordDataset(tmp_path)


def test_error_index_inside_a_multipart_record(tmp_path):
    ref_write(tmp_path, [(0, ref_pack(0.0, b"abcd")), (1, b"0123" + REF_MAGIC + b"4567")])
    data = (tmp_path / "train.rec").read_bytes()
    off = _index(tmp_path)[1] + 8 + 4  # the end part of record 1
    assert struct.unpack_from("<I", data, off + 4)[0] >> 29 == 3
    (tmp_path / "train.idx").write_text(f"0\t0\n1\t{off}\n")
    with pytest.raises(RecordIOError, match=rf"record 1 at byte offset {off}: first part at offset {off} has "
                                            r"continuation flag 3: the index points inside a multi-part record"):
        RecordReader(tmp_path).read(1)


def test_error_undecodable_image(tmp_path):
    ref_write(tmp_path, [(0, ref_pack(0.0, b"not an image")), (1, ref_pack(0.0, b""))])
    r = RecordReader(tmp_path)
    for key in (0, 1):
        with pytest.raises(RecordIOError, match=rf"train.rec: record {key}: the \d+ image bytes do not decode"):
            r.read_image(key)


# --------------------------------------------------------------------------------------------- processes
def _read_all(reader):
    return {k: reader.read(k) for k in reader.keys}


def test_pickle_drops_the_handle(header0_set):
    r = RecordReader(header0_set[0])
    before = _read_all(r)
    assert r._fd is not None
    state = r.__getstate__()
    assert state["_fd"] is None and state["_pid"] is None
    r2 = pickle.loads(pickle.dumps(r))
    assert r2._fd is None and _read_all(r2) == before and r2.header0 == r.header0
    ds = pickle.loads(pickle.dumps(RecordDataset(header0_set[0], transform=None)))
    assert np.array_equal(ds[0][0], header0_set[1][1][0])
    r.close()
    assert r._fd is None and _read_all(r) == before  # reopens


def test_threads_share_one_reader(header0_set):
    r = RecordReader(header0_set[0])
    keys = r.keys * 30
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(r.read, keys))
    expected = _read_all(r)
    assert got == [expected[k] for k in keys]


def _child_reads(reader, q):
    try:
        q.put((os.getpid(), reader._fileno(), {k: reader.read(k) for k in reader.keys}))
    except Exception as exc:  # pragma: no cover
        q.put(repr(exc))


@pytest.mark.skipif("fork" not in multiprocessing.get_all_start_methods(), reason="no fork start method")
def test_fork_opens_its_own_descriptor(header0_set):
    r = RecordReader(header0_set[0])
    expected = _read_all(r)  # the parent's descriptor is open before the fork
    ctx = multiprocessing.get_context("fork")
    q = ctx.Queue()
    p = ctx.Process(target=_child_reads, args=(r, q))
    p.start()
    pid, _fd, got = q.get(timeout=60)
    p.join(60)
    assert pid != os.getpid() and got == expected
    assert r._pid == os.getpid() and _read_all(r) == expected  # the parent's reader is untouched


def test_dataloader_workers(header0_set):
    root, truth = header0_set[0], header0_set[1]
    ds = RecordDataset(root, transform=None)
    loader = torch.utils.data.DataLoader(ds, batch_size=2, num_workers=2, shuffle=False,
                                         multiprocessing_context="fork" if "fork" in
                                         multiprocessing.get_all_start_methods() else None)
    imgs, labels = zip(*loader)
    assert torch.cat(labels).tolist() == [int(truth[k][1]) for k in sorted(truth)]
    assert np.array_equal(torch.cat(imgs).numpy(), np.stack([truth[k][0] for k in sorted(truth)]))


def test_dataset_default_transform(header0_set):
    ds = RecordDataset(header0_set[0])
    x, y = ds[0]
    img = header0_set[1][1][0]
    assert x.shape == (3, *img.shape[:2]) and x.dtype == torch.float32 and y.dtype == torch.long and y.ndim == 0
    ref = torch.from_numpy(img).permute(2, 0, 1).float() / 255 * 2 - 1
    assert torch.allclose(x, ref, atol=1e-6) or torch.allclose(x, ref.flip(-1), atol=1e-6)
    ds.transform = lambda im: im.shape
    assert ds[1][0] == img.shape


def test_imports_and_reads_without_mxnet(header0_set):
    code = (
        "import sys; sys.modules['mxnet'] = None\n"  # `import mxnet` raises ImportError from here on
        "from qgface_plugin.formats.record_dataset import RecordDataset\nfrom qgface_plugin.formats.recordio import RecordReader\n"
        f"r = RecordReader({str(header0_set[0])!r}); ds = RecordDataset({str(header0_set[0])!r})\n"
        "img, label = r.read_image(1); x, y = ds[0]\n"
        "assert img.shape == (20, 24, 3) and x.shape == (3, 20, 24) and int(y) == 0, (img.shape, x.shape, y)\n"
        "assert sys.modules['mxnet'] is None\n"
        "print('ok')\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-2000:]


# --------------------------------------------------------------------------------------------- mxnet equality
def assert_same_as_mxnet(root: Path, decode_keys=None, raw=False):
    """Keys, headers, labels, payload bytes and (for ``decode_keys``, default the images) decoded pixels;
    ``raw``: keys and payload bytes only (records that are not IRHeader + image)."""
    ours = RecordReader(root)
    theirs = mx.recordio.MXIndexedRecordIO(str(root / "train.idx"), str(root / "train.rec"), "r")
    try:
        assert ours.keys == list(theirs.keys)
        if raw:
            assert all(ours.read(key) == theirs.read_idx(key) for key in theirs.keys)
            return ours
        h0 = mx.recordio.unpack(theirs.read_idx(0))[0] if 0 in theirs.idx else None
        if h0 is not None and h0.flag > 0 and ours.header0_note is None:
            assert ours.header0 == (int(h0.label[0]), int(h0.label[1]))
        for key in theirs.keys:
            payload = theirs.read_idx(key)
            assert ours.read(key) == payload, key
            h, img = mx.recordio.unpack(payload)
            for got in (ours.header(key), ours.unpack(key)[0]):
                assert (got.flag, got.id, got.id2) == (h.flag, h.id, h.id2), key
                if h.flag > 0:
                    assert isinstance(got.label, np.ndarray) and got.label.dtype == h.label.dtype
                    assert np.array_equal(got.label, h.label), key
                else:
                    assert type(got.label) is type(h.label) and got.label == h.label, key
            assert ours.unpack(key)[1] == img
            if (decode_keys is None and len(img)) or (decode_keys is not None and key in decode_keys):
                ref = mx.image.imdecode(img).asnumpy()
                got, label = ours.read_image(key)
                assert got.dtype == ref.dtype and got.shape == ref.shape and np.array_equal(got, ref), key
                assert label == (h.label if h.flag == 0 else h.label[0])
    finally:
        theirs.close()
    return ours


def mx_write(root: Path, records):
    root.mkdir(parents=True, exist_ok=True)
    w = mx.recordio.MXIndexedRecordIO(str(root / "train.idx"), str(root / "train.rec"), "w")
    for key, payload in records:
        w.write_idx(key, payload)
    w.close()
    return root


@needs_mxnet
def test_mxnet_writer_pack_img(tmp_path):
    """(a) mxnet's MXIndexedRecordIO + pack_img (JPEG and PNG) + pack with label arrays (flag > 0)."""
    imgs = images(6, seed=7, size=(112, 112))
    hdr = mx.recordio.IRHeader
    recs = [(0, mx.recordio.pack_img(hdr(0, 3.0, 0, 0), imgs[0][..., ::-1], quality=95, img_fmt=".jpg")),
            (1, mx.recordio.pack_img(hdr(0, 1.0, 1, 7), imgs[1][..., ::-1], quality=80, img_fmt=".jpg")),
            (2, mx.recordio.pack_img(hdr(0, 2.0, 2, 0), imgs[2][..., ::-1], img_fmt=".png")),
            (3, mx.recordio.pack(hdr(0, np.array([5.0, 0.25, -1.0], np.float32), 3, 0), jpg(imgs[3]))),
            (4, mx.recordio.pack(hdr(0, [6.0] + [-1.0] * 236, 4, 0), jpg(imgs[4], 90))),
            (5, mx.recordio.pack(hdr(0, 0.0, 5, 0), cv2.imencode(".jpg", cv2.cvtColor(imgs[5], cv2.COLOR_RGB2GRAY))[1].tobytes()))]
    root = mx_write(tmp_path, recs)
    r = assert_same_as_mxnet(root)
    assert r.header0 is None and r.imgidx.tolist() == list(range(6))


@needs_mxnet
def test_project_writer(tmp_path):
    """(b) this project's writer: synthetic.make_dataset (write_train_rec: header0 + identity records)."""
    from qgface_plugin.synthetic import make_dataset
    make_dataset(tmp_path, num_identities=5, images_per_identity=3, num_val_identities=2, val_pairs=40, seed=2)
    r = assert_same_as_mxnet(tmp_path)
    assert r.header0 == (16, 21) and r.imgidx.tolist() == list(range(1, 16))
    assert r.identity_ranges().tolist() == [[1 + 3 * i, 4 + 3 * i] for i in range(5)]
    from qgface_plugin.arcface.records import check_record_dataset
    assert check_record_dataset(tmp_path, num_classes=5)["header0"] == r.header0


@needs_mxnet
def test_multipart_mxnet_and_reference_writer_agree(tmp_path):
    """(c) records whose payload holds the magic number: mxnet writes multi-part records, byte-identical to
    the reference writer's; both read back through mxnet and through this reader."""
    payloads = multipart_payloads()
    mx_root = mx_write(tmp_path / "mx", payloads.items())
    ref_root = ref_write(tmp_path / "ref", payloads.items())
    assert (mx_root / "train.rec").read_bytes() == (ref_root / "train.rec").read_bytes()
    assert (mx_root / "train.idx").read_text() == (ref_root / "train.idx").read_text()
    assert_same_as_mxnet(mx_root, raw=True)
    # an image record split by the magic: an IRHeader id equal to the magic, and a PNG that holds it
    img = images(1, seed=9)[0]
    recs = [(0, mx.recordio.pack(mx.recordio.IRHeader(0, 1.0, MAGIC, 0), png(img))),
            (1, mx.recordio.pack(mx.recordio.IRHeader(0, np.array([2.0, 3.0], np.float32), 1, MAGIC), jpg(img)))]
    root = mx_write(tmp_path / "img", recs)
    data = (root / "train.rec").read_bytes()
    assert struct.unpack_from("<I", data, 4)[0] >> 29 == 1
    assert_same_as_mxnet(root)


@needs_mxnet
def test_insightface_layouts(tmp_path):
    """(d) insightface's layouts: its RecBuilder (header-less, scalar labels; add_image with a label list)
    and the MS1M/Glint header0 layout written through mxnet (flag 2 header, identity records)."""
    try:
        from insightface.data.rec_builder import RecBuilder
    except Exception as exc:  # pragma: no cover
        RecBuilder = None
        reason = f"{type(exc).__name__}: {exc}"
    imgs = images(5, seed=11, size=(112, 112))
    if RecBuilder is not None:
        b = RecBuilder(str(tmp_path / "rb"), image_size=(112, 112))
        b.add([im[..., ::-1] for im in imgs[:3]])  # BGR arrays, as RecBuilder wants
        b.add([jpg(imgs[3])])
        b.close()
        b.writer.close()  # RecBuilder.close() leaves its writer to the garbage collector
        r = assert_same_as_mxnet(tmp_path / "rb")
        assert r.header0 is None and r.imgidx.tolist() == [0, 1, 2, 3]
        assert [RecordDataset(tmp_path / "rb", transform=None)[i][1].item() for i in range(4)] == [0, 0, 0, 1]
        b = RecBuilder(str(tmp_path / "rb_list"), image_size=(112, 112))
        for i, im in enumerate(imgs[:2]):
            b.add_image(im[..., ::-1], [float(i), 0.0] + [0.5] * 235)  # rec_add_mask_param's 237 floats
        b.close()
        b.writer.close()
        r = assert_same_as_mxnet(tmp_path / "rb_list")
        assert r.header0 is None and r.header0_note is not None
    # header0 layout as the MS1M / Glint packs have it
    n, hdr = len(imgs), mx.recordio.IRHeader
    recs = [(0, mx.recordio.pack(hdr(2, [n + 1, n + 3], 0, 0), b""))]
    recs += [(k, mx.recordio.pack_img(hdr(0, float(k > 2), k, 0), imgs[k - 1][..., ::-1], quality=95)) for k in range(1, n + 1)]
    recs += [(n + 1, mx.recordio.pack(hdr(2, [1, 3], n + 1, 0), b"")), (n + 2, mx.recordio.pack(hdr(2, [3, n + 1], n + 2, 0), b""))]
    r = assert_same_as_mxnet(mx_write(tmp_path / "ms1m", recs))
    assert r.header0 == (n + 1, n + 3) and r.imgidx.tolist() == list(range(1, n + 1))
    assert r.identity_ranges().tolist() == [[1, 3], [3, n + 1]]
    if RecBuilder is None:  # pragma: no cover
        pytest.skip(f"insightface's RecBuilder cannot be imported ({reason}); the header0 layout passed")


def _exif_jpeg(img):
    from PIL import Image
    pim = Image.fromarray(img)
    exif = pim.getexif()
    exif[0x0112] = 6  # orientation: rotate 90 -- mxnet's OpenCV 3.4 ignores it
    buf = io.BytesIO()
    pim.save(buf, "JPEG", quality=95, exif=exif.tobytes())
    return buf.getvalue()


def _pil(img, fmt, mode):
    from PIL import Image
    buf = io.BytesIO()
    Image.fromarray(img).convert(mode).save(buf, fmt)
    return buf.getvalue()


@needs_mxnet
@pytest.mark.parametrize("kind", ["jpg95", "jpg75", "jpg444", "jpg422", "jpg411", "progressive", "gray_jpg",
                                  "cmyk_jpg", "exif_rotated", "png", "gray_png", "rgba_png", "palette_png", "png16"])
def test_decode_is_pixel_exact(kind):
    img = images(1, seed=13, size=(96, 112))[0]
    bgr = np.ascontiguousarray(img[..., ::-1])
    enc = lambda ext, *p: cv2.imencode(ext, bgr, list(p))[1].tobytes()
    data = {
        "jpg95": lambda: jpg(img), "jpg75": lambda: jpg(img, 75),
        "jpg444": lambda: enc(".jpg", cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_444),
        "jpg422": lambda: enc(".jpg", cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_422),
        "jpg411": lambda: enc(".jpg", cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_411),
        "progressive": lambda: enc(".jpg", cv2.IMWRITE_JPEG_PROGRESSIVE, 1),
        "gray_jpg": lambda: cv2.imencode(".jpg", cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY))[1].tobytes(),
        "cmyk_jpg": lambda: _pil(img, "JPEG", "CMYK"), "exif_rotated": lambda: _exif_jpeg(img),
        "png": lambda: png(img), "gray_png": lambda: _pil(img, "PNG", "L"), "rgba_png": lambda: _pil(img, "PNG", "RGBA"),
        "palette_png": lambda: _pil(img, "PNG", "P"),
        "png16": lambda: cv2.imencode(".png", bgr.astype(np.uint16) * 257)[1].tobytes(),
    }[kind]()
    ref = mx.image.imdecode(data).asnumpy()
    got = decode_image(data)
    assert got.shape == ref.shape and got.dtype == ref.dtype and np.array_equal(got, ref)


@needs_mxnet
def test_decode_440_subsampling_differs_by_at_most_2():
    """4:4:0 JPEGs (vertical-only chroma subsampling; not what OpenCV, Pillow or insightface write by
    default): mxnet's libjpeg-turbo 2.0.2 and OpenCV 4's 3.0 upsample the chroma differently; Pillow agrees
    with OpenCV. Documented here: at most 2 levels apart."""
    img = images(1, seed=13, size=(96, 112))[0]
    data = cv2.imencode(".jpg", np.ascontiguousarray(img[..., ::-1]),
                        [cv2.IMWRITE_JPEG_SAMPLING_FACTOR, cv2.IMWRITE_JPEG_SAMPLING_FACTOR_440])[1].tobytes()
    diff = np.abs(decode_image(data).astype(int) - mx.image.imdecode(data).asnumpy().astype(int))
    assert diff.max() <= 2


@needs_mxnet
@pytest.mark.upstream
def test_dataset_matches_mxfacedataset(header0_set, tmp_path, arcface_root):
    from qgface_plugin.arcface import upstream
    ns = upstream.load(arcface_root)
    imgs = images(3, seed=17)
    ref_write(tmp_path / "flat", [(k, ref_pack(float(k), jpg(im), id_=k)) for k, im in zip([2, 0, 1], imgs)])
    for root in (header0_set[0], tmp_path / "flat"):
        theirs = ns.MXFaceDataset(root_dir=str(root), local_rank=0)
        ours = RecordDataset(root, local_rank=0)
        assert len(ours) == len(theirs) and np.array_equal(ours.imgidx, theirs.imgidx)
        assert ours.imgidx.dtype == theirs.imgidx.dtype and getattr(ours, "header0", None) == getattr(theirs, "header0", None)
        for i in range(len(theirs)):
            torch.manual_seed(i)
            x1, y1 = theirs[i]
            torch.manual_seed(i)
            x2, y2 = ours[i]
            assert torch.equal(x1, x2) and torch.equal(y1, y2) and y1.dtype == y2.dtype
        theirs.transform = ours.transform = None
        for i in range(len(theirs)):
            assert np.array_equal(theirs[i][0], ours[i][0])


def test_bench_records_prints_one_json_line(header0_set):
    import json
    out = subprocess.run([sys.executable, str(ROOT / "tools" / "bench_records.py"), "--rec", str(header0_set[0]),
                          "--images", "6", "--rounds", "1"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert result["images"] == 6 and result["python_records_per_s"] > 0 and result["python_images_per_s"] > 0
    if mx is not None:
        assert result["mxnet_images_per_s"] > 0 and result["images_speedup"] > 0
