"""qgface_plugin.formats: the mxnet-free record writer (byte-identical to mxnet's), the header0 layout and its
``property`` file, the verification ``.bin`` pickle, the ArcFace template and the IJB meta file names.

The comparisons with mxnet's writer skip, with the reason, where mxnet cannot be imported.
"""
from __future__ import annotations

import pickle
import struct
import subprocess
import sys

import numpy as np
import pytest

from _proc import ROOT
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
from qgface_plugin.formats import ijb_meta
from qgface_plugin.formats.face_crop import ARCFACE_TEMPLATE, CROP_SIZE
from qgface_plugin.formats.recordio import MAGIC, IRHeader, RecordReader
from qgface_plugin.formats.recordio_writer import RecordWriter, frame, pack
from qgface_plugin.formats.records import header0_payload, read_property, write_header0_set, write_property
from qgface_plugin.formats.verification_bin import PICKLE_PROTOCOL, read_bin, write_bin

M = struct.pack("<I", MAGIC)

from test_recordio import MXNET_MISSING, mx  # mxnet, or None with the reason it cannot be imported
needs_mxnet = pytest.mark.skipif(mx is None, reason=f"{MXNET_MISSING}: the comparison with mxnet's writer needs it")


def _headers():
    """IRHeaders as mx.recordio.pack takes them: scalar labels, array labels (flag > 0), ids holding the magic."""
    return [IRHeader(0, 3.0, 0, 0), IRHeader(7, 1.5, 1, 7), IRHeader(0, np.array([5.0, 0.25, -1.0], np.float32), 3, 0),
            IRHeader(0, [6.0] + [-1.0] * 236, 4, 0), IRHeader(0, 1.0, MAGIC, 0), IRHeader(0, [2.0, 3.0], 5, MAGIC),
            IRHeader(0, 0.0, 6, 1)]


def _payloads():
    """Payloads whose framing differs: plain, the magic at aligned offsets (start, middle, end, twice in a row,
    all of it), unaligned (not split), empty, lengths 1..7 (padding)."""
    return [b"plain", M + b"xy", b"0123" + M + M + b"45678" + M, M, b"12" + M + b"abcd", b"", b"a", b"ab", b"abc",
            b"abcd", b"abcde", bytes(range(256)) * 3, M * 5 + b"z"]


def _write(writer, records):
    for key, payload in records:
        writer.write_idx(key, payload)
    writer.close()


# ------------------------------------------------------------------------------------------- recordio_writer
def test_frame_is_what_the_reader_reads_back(tmp_path):
    records = list(enumerate(_payloads()))
    _write(RecordWriter(tmp_path / "train.idx", tmp_path / "train.rec"), records)
    r = RecordReader(tmp_path)
    assert r.keys == [k for k, _ in records]
    assert all(r.read(k) == p for k, p in records)
    data = frame(b"0123" + M + b"45")
    assert struct.unpack_from("<I", data, 4)[0] >> 29 == 1 and len(data) % 4 == 0
    assert frame(b"abc") == M + (3).to_bytes(4, "little") + b"abc\x00"


@needs_mxnet
def test_pack_equals_mxnet_pack():
    for h in _headers():
        for data in (b"", b"jpeg bytes", M):
            assert pack(h, data) == mx.recordio.pack(mx.recordio.IRHeader(*h), data), h


@needs_mxnet
def test_writer_is_byte_identical_to_mxnet(tmp_path):
    records = [(k, p) for k, p in enumerate(_payloads())]
    records += [(100 + j, pack(h, b"img" * j)) for j, h in enumerate(_headers())]
    records.append((50, b"a key out of order"))
    w = mx.recordio.MXIndexedRecordIO(str(tmp_path / "mx.idx"), str(tmp_path / "mx.rec"), "w")
    _write(w, records)
    with RecordWriter(tmp_path / "py.idx", tmp_path / "py.rec") as w:
        for key, payload in records:
            w.write_idx(key, payload)
    assert (tmp_path / "py.rec").read_bytes() == (tmp_path / "mx.rec").read_bytes()
    assert (tmp_path / "py.idx").read_bytes() == (tmp_path / "mx.idx").read_bytes()
    theirs = mx.recordio.MXIndexedRecordIO(str(tmp_path / "py.idx"), str(tmp_path / "py.rec"), "r")
    try:
        assert all(theirs.read_idx(k) == p for k, p in records)
    finally:
        theirs.close()


def test_writer_rejects_a_record_too_long_for_recordio(monkeypatch):
    from qgface_plugin.formats import recordio_writer
    monkeypatch.setattr(recordio_writer, "LEN_MASK", 7)
    with pytest.raises(QGFaceInputError, match="too long"):
        recordio_writer.frame(b"12345678")


# ------------------------------------------------------------------------------------------- records (header0)
def _samples(n_per=(3, 1, 2)):
    return [(b"\xff\xd8 image %d" % k, label) for k, label in enumerate(np.repeat(np.arange(len(n_per)), n_per).tolist())]


def test_header0_set_layout(tmp_path):
    n, ncls = write_header0_set(tmp_path, _samples(), num_classes=4, size=96, writer="python")
    assert (n, ncls) == (6, 4)
    assert (tmp_path / "property").read_text() == "4,96,96\n" and read_property(tmp_path) == (4, 96, 96)
    r = RecordReader(tmp_path)
    assert r.header0 == (7, 10) and r.imgidx.tolist() == list(range(1, 7))
    assert r.identity_ranges().tolist() == [[1, 4], [4, 5], [5, 7]]
    h0, data0 = r.unpack(0)
    assert (h0.flag, h0.id, h0.id2, data0) == (2, 0, 1, b"") and r.read(0) == header0_payload(7, 10)
    h, data = r.unpack(4)
    assert (h.flag, h.label, h.id, data) == (0, 1.0, 4, b"\xff\xd8 image 3")


@needs_mxnet
def test_header0_set_is_the_same_through_mxnet(tmp_path):
    for writer in ("mxnet", "python"):
        write_header0_set(tmp_path / writer, _samples((2, 5, 1)), writer=writer)
    for name in ("train.rec", "train.idx", "property"):
        assert (tmp_path / "mxnet" / name).read_bytes() == (tmp_path / "python" / name).read_bytes(), name


@pytest.mark.parametrize("samples, message", [
    ([], "no samples"),
    ([(b"x", 0), (b"x", 1), (b"x", 0)], "label 0 reappears at image 3"),
    ([(b"x", -1)], "label=-1"),
    ([(b"x", 1.0)], "label=1.0"),
])
def test_header0_set_bad_input(tmp_path, samples, message):
    with pytest.raises(QGFaceConfigError, match=message):
        write_header0_set(tmp_path, samples, writer="python")
    with pytest.raises(QGFaceConfigError, match="out of range for num_classes=2"):
        write_header0_set(tmp_path, [(b"x", 2)], num_classes=2, writer="python")
    with pytest.raises(QGFaceConfigError, match="writer="):
        write_header0_set(tmp_path, [(b"x", 0)], writer="pillow")


def test_property_file(tmp_path):
    assert read_property(tmp_path) is None
    write_property(tmp_path, 12, 112)
    assert read_property(tmp_path) == (12, 112, 112)
    (tmp_path / "property").write_text("twelve,112,112\n")
    with pytest.raises(QGFaceInputError, match="expected 'num_classes,height,width'"):
        read_property(tmp_path)


def test_training_set_writes_without_mxnet_the_same_bytes(tmp_path):
    """make_dataset where ``import mxnet`` fails: the mxnet-free writer; the files equal those written in this
    process (through mxnet when it imports here)."""
    from qgface_plugin.synthetic import make_dataset
    args = dict(num_identities=3, images_per_identity=2, num_val_identities=2, val_pairs=40, seed=5)
    make_dataset(tmp_path / "here", **args)
    code = ("import sys; sys.modules['mxnet'] = None\n"
            "from qgface_plugin.synthetic import make_dataset\n"
            f"make_dataset({str(tmp_path / 'nomx')!r}, **{args!r})\n"
            "assert sys.modules['mxnet'] is None\n")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    for name in ("train.rec", "train.idx", "property", "synthetic_val.bin", "dataset.json"):
        assert (tmp_path / "here" / name).read_bytes() == (tmp_path / "nomx" / name).read_bytes(), name


# ------------------------------------------------------------------------------------------- verification .bin
def test_bin_round_trip_and_protocol(tmp_path):
    write_bin(tmp_path / "a.bin", [b"1", bytearray(b"2"), b"3", b"4"], [1, 0])
    with open(tmp_path / "a.bin", "rb") as f:
        raw = f.read()
    assert raw[:2] == bytes([0x80, PICKLE_PROTOCOL])
    assert pickle.loads(raw) == ([b"1", b"2", b"3", b"4"], [True, False])
    assert read_bin(tmp_path / "a.bin") == ([b"1", b"2", b"3", b"4"], [True, False])
    with pytest.raises(QGFaceConfigError, match="3 images for 2 pairs"):
        write_bin(tmp_path / "b.bin", [b"1", b"2", b"3"], [True, False])
    # read_bin's errors (missing, not a pickle, odd, mismatched): tests/test_eval_verification.py, via load_bin


def test_bin_python2_pickle(tmp_path):
    """The original insightface .bin files are Python 2 pickles (str = bytes): read with encoding='bytes'."""
    # protocol 2: ([str '\xff\xd8a', str '\xff\xd8b'], [True]) as Python 2 writes str (SHORT_BINSTRING)
    data = b"\x80\x02](U\x03\xff\xd8aU\x03\xff\xd8be]\x88a\x86."
    (tmp_path / "py2.bin").write_bytes(data)
    bins, issame = read_bin(tmp_path / "py2.bin")
    assert [bytes(b) for b in bins] == [b"\xff\xd8a", b"\xff\xd8b"] and issame == [True]


# ------------------------------------------------------------------------------------------- face crop, IJB meta
def test_arcface_template_as_upstream_builds_it():
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0
    assert ARCFACE_TEMPLATE.dtype == np.float32 and np.array_equal(ARCFACE_TEMPLATE, src) and CROP_SIZE == 112
    assert not ARCFACE_TEMPLATE.flags.writeable
    from qgface_plugin.eval.align import ARCFACE_TEMPLATE as used_by_eval
    assert used_by_eval is ARCFACE_TEMPLATE


def test_ijb_meta_paths_one_naming_for_reader_and_writer(tmp_path):
    paths = ijb_meta.meta_paths(tmp_path, "IJBB")
    assert paths == {"face_tid_mid": str(tmp_path / "meta" / "ijbb_face_tid_mid.txt"),
                     "template_pair_label": str(tmp_path / "meta" / "ijbb_template_pair_label.txt"),
                     "name_5pts_score": str(tmp_path / "meta" / "ijbb_name_5pts_score.txt")}
    from qgface_plugin.eval.ijb import meta_paths as eval_paths
    from qgface_plugin.synthetic.ijb import meta_paths as synthetic_paths
    assert synthetic_paths is ijb_meta.meta_paths
    assert sorted(eval_paths(str(tmp_path), "ijbb").values()) == sorted(paths.values())
