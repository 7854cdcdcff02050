"""Bad inputs of README's Reliability table that no other test file covered.

Always run: an undecodable image read in DataLoader workers (the error names the file, the record, its byte
offset and how the bytes begin), a JPEG cut short inside an intact record (and, with mxnet, that mxnet decodes
it without an error), the record check's reasons and its refusal of negative and fractional labels, bad configs
and a missing arcface_torch checkout through ``tools/train.py``'s ``main`` (exit 2, nothing written), and a checkout
with another API.
With ``ARCFACE_TORCH_ROOT``: broken record sets stop ``tools/train.py`` before the first step (only
``config.json`` written); an undecodable image that the record check's sample missed stops it at that step
with the record named (python reader, 2 workers); arcface_torch's ``MXFaceDataset`` (mxnet) on that record;
bad QGFace values stop ``tools/train.py`` before the first step.
"""
from __future__ import annotations

import re
import shutil
import types

import cv2
import numpy as np
import pytest
import torch

from _proc import ROOT
from qgface_plugin import QGFaceInputError
from qgface_plugin.arcface import checkout, records, training
from qgface_plugin.arcface.records import check_record_dataset
from qgface_plugin.formats.record_dataset import RecordDataset
from qgface_plugin.formats.recordio import IRHeader, RecordIOError
from qgface_plugin.formats.recordio_writer import RecordWriter, pack

# --------------------------------------------------------------------------------------------- record sets
def _image(seed: int) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (112, 112, 3), dtype=np.uint8)


def _jpeg(seed: int) -> bytes:
    return cv2.imencode(".jpg", _image(seed))[1].tobytes()


def _headerless_set(root, samples):
    """A header-less record set (every key an image) of ``(label, image bytes)``; returns each key's offset."""
    root.mkdir(parents=True, exist_ok=True)
    offsets = {}
    with RecordWriter(root / "train.idx", root / "train.rec") as w:
        for key, (label, data) in enumerate(samples):
            offsets[key] = w.tell()
            w.write_idx(key, pack(IRHeader(0, float(label), key, 0), data))
    return offsets


def _offsets(root) -> dict:
    return {int(k): int(v) for k, v in (line.split("\t") for line in (root / "train.idx").read_text().splitlines())}


def _zero_image_start(root, key: int, n: int = 64) -> None:
    """Overwrite the first ``n`` image bytes of record ``key`` (past its 8-byte framing and 24-byte IRHeader)."""
    data = bytearray((root / "train.rec").read_bytes())
    start = _offsets(root)[key] + 8 + 24
    data[start:start + n] = b"\0" * n
    (root / "train.rec").write_bytes(bytes(data))


@pytest.fixture(scope="module")
def small_set(tmp_path_factory):
    from qgface_plugin.synthetic import make_dataset
    root = tmp_path_factory.mktemp("small")
    make_dataset(root, num_identities=4, images_per_identity=4, num_val_identities=2, val_pairs=40, seed=5)
    return root


def test_undecodable_image_in_dataloader_workers_names_file_record_offset_and_bytes(small_set, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(small_set, root)
    _zero_image_start(root, 7)
    offset = _offsets(root)[7]
    for workers in (0, 2):
        loader = torch.utils.data.DataLoader(RecordDataset(root, transform=None), batch_size=4, num_workers=workers)
        with pytest.raises(RecordIOError) as info:
            for _ in loader:
                pass
        message = str(info.value)
        assert f"{root / 'train.rec'}: record 7: the " in message and "image bytes do not decode" in message
        assert "they begin 00 00 00 00 00 00 00 00, neither a JPEG (ff d8 ff) nor a PNG" in message
        assert f"record at byte offset {offset}" in message


def test_a_jpeg_cut_short_inside_an_intact_record_is_named(tmp_path):
    whole = _jpeg(1)
    offsets = _headerless_set(tmp_path, [(0, _jpeg(0)), (1, whole[:len(whole) // 2]), (1, _jpeg(2))])
    ds = RecordDataset(tmp_path, transform=None)
    assert np.array_equal(ds[0][0], cv2.cvtColor(cv2.imdecode(np.frombuffer(_jpeg(0), np.uint8), 1), cv2.COLOR_BGR2RGB))
    with pytest.raises(RecordIOError, match=rf"train.rec: record 1: the {len(whole) // 2} image bytes do not decode "
                                            r".*they begin ff d8 ff .*a JPEG header, but the JPEG data is truncated or "
                                            rf"corrupt \(record at byte offset {offsets[1]}\)"):
        ds[1]
    with pytest.raises(QGFaceInputError, match=r"record 1 does not decode as an image \(.*JPEG data is truncated"):
        check_record_dataset(tmp_path, num_classes=2)


def test_mxnet_decodes_a_jpeg_cut_short_without_an_error():
    """What upstream's reader (mxnet's bundled OpenCV 3.4) does with the JPEG of the test above: no error."""
    try:
        from qgface_plugin.utils import import_mxnet
        mx = import_mxnet()
    except Exception as exc:  # ImportError, or an mxnet that fails to load (numpy >= 1.24)
        pytest.skip(f"mxnet cannot be imported ({type(exc).__name__})")
    whole = _jpeg(1)
    img = mx.image.imdecode(whole[:len(whole) // 2]).asnumpy()
    assert img.shape == (112, 112, 3)
    assert not np.array_equal(img, mx.image.imdecode(whole).asnumpy())  # the part cut off is made up


def test_record_check_says_why_an_image_does_not_decode(small_set, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(small_set, root)
    _zero_image_start(root, 3)
    with pytest.raises(QGFaceInputError, match=r"train.rec: record 3 does not decode as an image \(.*they begin "
                                               r"00 00 00 00 .*neither a JPEG"):
        check_record_dataset(root, num_classes=4)


@pytest.mark.parametrize("label, says", [(-1, r"has label -1.0, outside \[0, num_classes=3\)"),
                                         (3, r"has label 3.0, outside \[0, num_classes=3\)"),
                                         (1.5, r"has label 1.5, which is not a whole number")])
def test_record_check_refuses_negative_large_and_fractional_labels(tmp_path, label, says):
    _headerless_set(tmp_path, [(0, _jpeg(0)), (label, _jpeg(1)), (2, _jpeg(2))])
    with pytest.raises(QGFaceInputError, match=rf"train.rec: record 1 {says}"):
        check_record_dataset(tmp_path, num_classes=3)


# --------------------------------------------------------------------------------------------- configs, checkout
@pytest.mark.parametrize("config, args, says", [
    ("qgface_demo_cpu", ["qgface_treshold=0.3"], "unknown config key 'qgface_treshold'; did you mean 'qgface_threshold'?"),
    ("qgface_demo_cpu", ["lr"], "override 'lr' must look like key=value"),
    ("qgface_demo_cpu", ["num_classes=0"], "config.num_classes must be a positive integer, got 0"),
    ("qgface_demo_cpu", ["record_reader='tfrecord'"],
     "config.record_reader must be 'auto', 'mxnet' or 'python', got 'tfrecord'"),
    ("no_such_config", [], "config 'no_such_config' not found: give a path to a config file or one of the shipped"),
])
def test_bad_config_exits_2_before_anything_is_written(tmp_path, capsys, config, args, says):
    out = tmp_path / "out"
    assert training.main([config, *args, "--output", str(out)]) == 2
    err = capsys.readouterr().err
    assert f"error: {says}" in err and "Traceback" not in err
    assert not out.exists()


def test_missing_checkout_exits_2_and_says_how_to_get_it(tmp_path, capsys):
    out = tmp_path / "out"
    assert training.main(["qgface_demo_cpu", "--output", str(out), "--arcface-root", str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err
    assert "error: insightface's recognition/arcface_torch (pinned commit" in err and "was not found" in err
    assert f"{tmp_path / 'nowhere'} (from the argument): does not exist" in err
    assert "python tools/fetch_arcface_torch.py --source <insightface clone or git dir>" in err
    assert not out.exists()


class _PartialFC:  # the pinned API's stand-ins: what check_symbols reads of each upstream name
    def __init__(self, margin_loss, embedding_size, num_classes, sample_rate, fp16):
        self.class_start = self.num_local = self.weight = self.margin_softmax = None

    def forward(self, local_embeddings, local_labels):
        pass


class _OlderPartialFC(_PartialFC):  # an arcface_torch whose PartialFC_V2 has no sample_rate
    def __init__(self, margin_loss, embedding_size, num_classes, fp16):
        self.class_start = self.num_local = self.weight = self.margin_softmax = None


class _MXFaceDataset:
    def __init__(self, root_dir, local_rank):
        pass


class _PolynomialLRWarmup:
    def __init__(self, optimizer, warmup_iters, total_iters):
        pass


class _CombinedMarginLoss:
    def __init__(self, s, m1, m2, m3, interclass_filtering_threshold):
        pass


def _get_model(name): pass
def _get_dataloader(root_dir, local_rank, batch_size): pass
def _get_config(config_file): pass
def _verification_test(data_set, backbone, batch_size, nfolds): pass
def _load_bin(path, image_size): pass
def _setup_seed(seed, cuda_deterministic): pass
def _sync_random_seed(seed, device): pass


def _modules(drop=(), pfc=_PartialFC) -> dict:
    """Stand-in upstream modules with the pinned API, less the ``module.name`` entries in ``drop``."""
    api = {"partial_fc_v2": {"PartialFC_V2": pfc, "AllGather": object},
           "backbones": {"get_model": _get_model},
           "dataset": {"MXFaceDataset": _MXFaceDataset, "SyntheticDataset": object, "get_dataloader": _get_dataloader},
           "lr_scheduler": {"PolynomialLRWarmup": _PolynomialLRWarmup},
           "losses": {"CombinedMarginLoss": _CombinedMarginLoss},
           "utils.utils_config": {"get_config": _get_config},
           "eval.verification": {"test": _verification_test, "load_bin": _load_bin},
           "utils.utils_distributed_sampler": {"DistributedSampler": object, "setup_seed": _setup_seed,
                                               "sync_random_seed": _sync_random_seed}}
    mods = {}
    for name, attrs in api.items():
        mod = types.ModuleType(name)
        mod.__file__ = f"/elsewhere/arcface_torch/{name.replace('.', '/')}.py"
        for attr, value in attrs.items():
            if f"{name}.{attr}" not in drop:
                setattr(mod, attr, value)
        mods[name] = mod
    return mods


def test_a_checkout_with_another_api_is_refused_with_every_difference_named():
    checkout.check_symbols(_modules())  # the stand-ins have the pinned API
    with pytest.raises(checkout.UpstreamAPIError) as info:
        checkout.check_symbols(_modules(drop={"dataset.MXFaceDataset", "utils.utils_config.get_config"},
                                        pfc=_OlderPartialFC))
    message = str(info.value)
    assert message.startswith("arcface_torch at /elsewhere/arcface_torch does not have the API of insightface commit "
                              f"{checkout.PINNED_COMMIT}:")
    assert "- partial_fc_v2.PartialFC_V2 lacks argument(s) sample_rate (has self, margin_loss, " in message
    assert "- dataset.MXFaceDataset is missing" in message and "- utils.utils_config.get_config is missing" in message
    assert "python tools/fetch_arcface_torch.py --force" in message and message.count("\n  - ") == 3


# --------------------------------------------------------------------------------------------- tools/train.py
@pytest.fixture(scope="module")
def sampled_set(tmp_path_factory):
    """A record set larger than the record check's decode sample, and one image key that the sample misses."""
    from qgface_plugin.synthetic import make_dataset
    root = tmp_path_factory.mktemp("sampled")
    make_dataset(root, num_identities=8, images_per_identity=10, num_val_identities=2, val_pairs=40, seed=4)
    decoded = []
    real = records.decode_image

    def spy(data, where="image"):
        decoded.append(int(re.search(r"record (\d+)", where).group(1)))
        return real(data, where)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(records, "decode_image", spy)
        check_record_dataset(root, num_classes=8)
    missed = sorted(set(range(1, 81)) - set(decoded))
    assert missed, "the record check decoded every image: make the set larger"
    return root, missed[len(missed) // 2]


def _corrupt_copy(sampled_set, tmp_path):
    src, key = sampled_set
    root = tmp_path / "data"
    shutil.copytree(src, root)
    _zero_image_start(root, key)
    check_record_dataset(root, num_classes=8)  # the check's sample misses it: only reading it fails
    return root, key


@pytest.mark.upstream
def test_an_undecodable_image_the_check_missed_stops_train_py_naming_it(tmp_path, sampled_set):
    from test_training import _config, _run
    root, key = _corrupt_copy(sampled_set, tmp_path)
    cfg = _config(tmp_path, root, num_image=80, num_epoch=1, num_workers=2, record_reader="python")
    r = _run([cfg])
    assert r.returncode == 2, r.stdout[-3000:]
    assert f"{root / 'train.rec'}: record {key}: the " in r.stdout and "neither a JPEG" in r.stdout, r.stdout[-3000:]
    assert "(in DataLoader worker process " in r.stdout and "Original Traceback" not in r.stdout  # one line
    out = tmp_path / "out"
    assert (out / "config.json").is_file() and (out / "tensorboard").is_dir()  # written before the first step
    assert not (out / "model.pt").exists() and not list(out.glob("checkpoint*")) and not (out / "summary.json").exists()


def _drop_idx(root):
    (root / "train.idx").unlink()


def _bad_magic(root):
    data, at = bytearray((root / "train.rec").read_bytes()), _offsets(root)[5]
    data[at:at + 4] = b"\0\0\0\0"  # record 5's magic number
    (root / "train.rec").write_bytes(bytes(data))


@pytest.mark.upstream
@pytest.mark.parametrize("spoil, num_classes, says", [
    (_drop_idx, 4, "/data/train.idx is missing: an arcface_torch record set needs train.rec and train.idx"),
    (_bad_magic, 4, "/data/train.rec: record 5 is corrupt ("),
    (lambda root: (root / "property").unlink(), 3, "/data/train.rec: record 13 has label 3.0, outside [0, num_classes=3)"),
    (lambda root: (root / "property").write_text("8,112,112\n"), 4, "/data/property says 8 classes but config.num_classes=4"),
    (lambda root: _zero_image_start(root, 2), 4, "/data/train.rec: record 2 does not decode as an image (the "),
    (lambda root: shutil.rmtree(root), 4, "/data does not exist (config.rec)"),
])
def test_bad_record_sets_stop_train_py_before_the_first_step(tmp_path, small_set, spoil, num_classes, says):
    root = tmp_path / "data"
    shutil.copytree(small_set, root)
    spoil(root)
    from test_training import _config, _run
    r = _run([_config(tmp_path, root, num_classes=num_classes, num_image=16)])
    assert r.returncode == 2 and says in r.stdout and "Traceback" not in r.stdout, r.stdout[-3000:]
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["config.json"]


@pytest.mark.upstream
def test_mxfacedataset_on_an_undecodable_image_names_the_file_and_record(ns, tmp_path, sampled_set):
    """Upstream's reader (record_reader="mxnet") on the same record: mxnet's own error names neither file nor
    record; the loop's wrapper (NamedRecordErrors) names both."""
    if ns.mxnet_missing:
        pytest.skip(f"mxnet cannot be imported here ({ns.mxnet_missing})")
    from qgface_plugin.arcface.loader import NamedRecordErrors
    root, key = _corrupt_copy(sampled_set, tmp_path)
    ds = ns.MXFaceDataset(root_dir=str(root), local_rank=0)
    index = int(np.flatnonzero(ds.imgidx == key)[0])
    with pytest.raises(Exception) as info:
        ds[index]
    assert type(info.value).__name__ == "MXNetError" and "Decoding failed. Invalid image file" in str(info.value)
    assert f"record {key}" not in str(info.value) and "train.rec" not in str(info.value)
    named = NamedRecordErrors(ds)
    assert len(named) == len(ds) and named.imgidx is ds.imgidx
    assert int(named[index - 1][1]) == int(ds[index - 1][1])  # other records read as before
    with pytest.raises(RecordIOError) as info:
        named[index]
    assert str(info.value) == (f"{root}/train.rec: record {key} (dataset index {index}): mxnet cannot read it "
                               "(MXNetError: Check failed: !res.empty(): Decoding failed. Invalid image file.)")


@pytest.mark.upstream
def test_an_undecodable_image_stops_train_py_naming_it_with_the_mxnet_reader(tmp_path, sampled_set):
    from test_training import _config, _run
    root, key = _corrupt_copy(sampled_set, tmp_path)
    r = _run([_config(tmp_path, root, num_image=80, num_epoch=1, num_workers=2, record_reader="mxnet")])
    assert r.returncode == 2, r.stdout[-3000:]
    assert f"{root / 'train.rec'}: record {key} (dataset index " in r.stdout and "Traceback" not in r.stdout, \
        r.stdout[-3000:]


@pytest.mark.upstream
@pytest.mark.parametrize("override, says", [("qgface_threshold=2", "qgface_threshold must be in [0, 1], got 2"),
                                            ("qgface_queue_size=0", "qgface_queue_size must be a positive integer")])
def test_bad_qgface_values_stop_train_py_before_the_first_step(tmp_path, small_set, override, says):
    from test_training import _config, _run
    r = _run([_config(tmp_path, small_set, num_classes=4, num_image=16), override])
    assert r.returncode == 2 and f"error: {says}" in r.stdout and "Traceback" not in r.stdout, r.stdout[-3000:]
    out = tmp_path / "out"
    assert [p.name for p in out.iterdir()] == ["config.json"]
