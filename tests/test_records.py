"""check_record_dataset: a good set passes; missing idx, corrupt record, bad labels stop with the file named."""
import shutil

import pytest

from qgface_plugin import QGFaceInputError
from qgface_plugin.arcface.records import check_record_dataset
from qgface_plugin.synthetic import make_dataset


@pytest.fixture(scope="module")
def good_set(tmp_path_factory):
    root = tmp_path_factory.mktemp("rec")
    make_dataset(root, num_identities=6, images_per_identity=4, num_val_identities=4, val_pairs=40, seed=1)
    return root


def _copy(good_set, tmp_path):
    dst = tmp_path / "copy"
    shutil.copytree(good_set, dst)
    return dst


def test_good_set_passes(good_set):
    info = check_record_dataset(good_set, num_classes=6)
    assert info["num_images"] == 24 and info["max_label"] == 5 and info["scanned"] == 24
    assert info["header0"] == (25, 31)


def test_labels_beyond_num_classes(good_set):
    with pytest.raises(QGFaceInputError, match=r"property says 6 classes but config.num_classes=5"):
        check_record_dataset(good_set, num_classes=5)


def test_label_beyond_num_classes_without_property(good_set, tmp_path):
    root = _copy(good_set, tmp_path)
    (root / "property").unlink()
    with pytest.raises(QGFaceInputError, match=r"train.rec: record \d+ has label 5.0, outside \[0, num_classes=5\)"):
        check_record_dataset(root, num_classes=5)


def test_missing_idx_names_the_file(good_set, tmp_path):
    root = _copy(good_set, tmp_path)
    (root / "train.idx").unlink()
    with pytest.raises(QGFaceInputError, match=r"train.idx is missing"):
        check_record_dataset(root, num_classes=6)
    with pytest.raises(QGFaceInputError, match="does not exist"):
        check_record_dataset(tmp_path / "nowhere", num_classes=6)


def test_corrupt_record_names_file_and_record(good_set, tmp_path):
    root = _copy(good_set, tmp_path)
    offsets = dict(line.split("\t") for line in (root / "train.idx").read_text().splitlines())
    data = bytearray((root / "train.rec").read_bytes())
    start = int(offsets["5"])
    data[start:start + 4] = b"\x00\x00\x00\x00"  # break record 5's magic number
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(QGFaceInputError, match=r"train.rec: record 5 is corrupt"):
        check_record_dataset(root, num_classes=6)


def test_undecodable_image(good_set, tmp_path):
    root = _copy(good_set, tmp_path)
    offsets = dict(line.split("\t") for line in (root / "train.idx").read_text().splitlines())
    data = bytearray((root / "train.rec").read_bytes())
    start = int(offsets["1"]) + 8 + 24  # record 1: past the framing and the IRHeader: the JPEG bytes
    data[start:start + 64] = b"\x00" * 64
    (root / "train.rec").write_bytes(bytes(data))
    with pytest.raises(QGFaceInputError, match=r"record 1 does not decode"):
        check_record_dataset(root, num_classes=6)


def test_bad_idx_line(good_set, tmp_path):
    root = _copy(good_set, tmp_path)
    with open(root / "train.idx", "a") as f:
        f.write("garbage line\n")
    with pytest.raises(QGFaceInputError, match=r"train.idx:\d+: expected 'key<TAB>offset'"):
        check_record_dataset(root, num_classes=6)
