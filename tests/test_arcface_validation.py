"""qgface_plugin.arcface.validation: the training loop's .bin verification through upstream's protocol."""
import cv2
import numpy as np
import pytest
from easydict import EasyDict as edict

from qgface_plugin.arcface.validation import load_verification_sets
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
from qgface_plugin.formats.verification_bin import write_bin


def _bin(path, pairs=4):
    rng = np.random.default_rng(0)
    imgs = [cv2.imencode(".jpg", rng.integers(0, 255, (112, 112, 3), dtype=np.uint8))[1].tobytes()
            for _ in range(2 * pairs)]
    write_bin(path, imgs, [bool(i % 2) for i in range(pairs)])


def test_loading_the_sets_prints_nothing(tmp_path, ns, capfd):
    # upstream's load_bin prints "loading bin <i>" and a shape per flip: a run's console is the plugin's
    _bin(tmp_path / "tiny.bin")
    sets = load_verification_sets(edict(rec=str(tmp_path), val_targets=["tiny"]), ns)
    assert capfd.readouterr().out == ""
    assert tuple(sets["tiny"][0][0].shape) == (8, 3, 112, 112) and len(sets["tiny"][1]) == 4


def test_bad_targets_are_named():
    with pytest.raises(QGFaceConfigError, match="val_targets = \\[\\]"):
        load_verification_sets(edict(rec="synthetic", val_targets=["lfw"]), None)
    with pytest.raises(QGFaceInputError, match="lfw.bin"):
        load_verification_sets(edict(rec="/nonexistent", val_targets=["lfw"]), None)


def _junk(path):
    path.write_bytes(b"not a pickle at all")


def _undecodable(path):
    write_bin(path, [b"\0" * 100] * 8, [True, False, True, False])


@pytest.mark.parametrize("spoil, says", [
    (_junk, "broken.bin: not a verification .bin (cannot unpickle: UnpicklingError"),
    (_undecodable, "broken.bin (config.val_targets): arcface_torch's load_bin failed: "),
])
def test_a_set_upstream_cannot_read_is_named_with_the_reason(tmp_path, ns, spoil, says):
    spoil(tmp_path / "broken.bin")
    with pytest.raises(QGFaceInputError) as info:
        load_verification_sets(edict(rec=str(tmp_path), val_targets=["broken"]), ns)
    assert says in str(info.value)
