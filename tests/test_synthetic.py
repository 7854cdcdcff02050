"""The synthetic mixed-quality data set (qgface_plugin.synthetic: identity, faces, degrade, jpeg, training_set):
layout, colour order, .bin format, learnability, arguments, the make_synthetic_data CLI.

Tests that need the upstream arcface_torch code (``MXFaceDataset``, ``eval/verification.py``)
skip unless ``ARCFACE_TORCH_ROOT`` points at a ``recognition/arcface_torch`` checkout.
"""
import json
import math
import os
import pickle
import sys

import cv2
import numpy as np
import pytest

from _proc import tool, upstream_root
from qgface_plugin.formats.face_crop import ARCFACE_TEMPLATE
from qgface_plugin.synthetic.degrade import degrade_quality
from qgface_plugin.synthetic.faces import render_face
from qgface_plugin.synthetic.identity import draw_identity
from qgface_plugin.synthetic.jpeg import decode_jpeg, encode_jpeg
from qgface_plugin.synthetic.training_set import make_dataset, write_train_rec, write_verification_bin

mx = pytest.importorskip("mxnet")

SMALL = dict(num_identities=12, images_per_identity=6, lq_fraction=0.5, num_val_identities=8, val_pairs=40, seed=3)
N_SMALL = 12 * 6


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    out = tmp_path_factory.mktemp("synthetic")
    summary = make_dataset(str(out), **SMALL)
    return out, summary


def _upstream_root():
    """The upstream folder on ``sys.path`` (for tests marked ``upstream``); skips if it has no dataset.py."""
    root = str(upstream_root())
    if not os.path.isfile(os.path.join(root, "dataset.py")):
        pytest.skip(f"ARCFACE_TORCH_ROOT={root!r} has no dataset.py")
    if root not in sys.path:
        sys.path.insert(0, root)
    return root


def _read_records(folder):
    rec = mx.recordio.MXIndexedRecordIO(str(folder / "train.idx"), str(folder / "train.rec"), "r")
    try:
        return {k: mx.recordio.unpack(rec.read_idx(k)) for k in rec.keys}
    finally:
        rec.close()


# --------------------------------------------------------------------------- #
# layout
# --------------------------------------------------------------------------- #
def test_same_seed_gives_the_same_bytes_and_another_seed_does_not(small, tmp_path):
    out, _ = small
    again = make_dataset(str(tmp_path / "again"), **SMALL)
    names = ["train.rec", "train.idx", "property", "train_quality.txt", "synthetic_val.bin",
             "synthetic_val_hq.bin", "synthetic_val_lq.bin", "dataset.json"]
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes(), name
    assert again["num_images"] == N_SMALL
    other = make_dataset(str(tmp_path / "other"), **{**SMALL, "seed": 4})
    assert other["num_images"] == N_SMALL
    assert (out / "train.rec").read_bytes() != (tmp_path / "other" / "train.rec").read_bytes()


def test_forked_workers_write_the_same_bytes(small, tmp_path):
    out, _ = small
    make_dataset(str(tmp_path / "w2"), **SMALL, workers=2)
    for name in ("train.rec", "train.idx", "synthetic_val.bin", "train_quality.txt"):
        assert (out / name).read_bytes() == (tmp_path / "w2" / name).read_bytes(), name


def test_property_idx_and_header0_layout(small):
    out, summary = small
    n, c, per = N_SMALL, SMALL["num_identities"], SMALL["images_per_identity"]
    assert (out / "property").read_text().strip() == f"{c},112,112"
    keys = [int(line.split("\t")[0]) for line in (out / "train.idx").read_text().splitlines()]
    offsets = [int(line.split("\t")[1]) for line in (out / "train.idx").read_text().splitlines()]
    assert keys == list(range(n + 1 + c))
    assert offsets == sorted(offsets) and offsets[0] == 0          # record 0 is physically first

    records = _read_records(out)
    h0, data0 = records[0]
    assert h0.flag == 2 and list(h0.label) == [n + 1, n + 1 + c] and h0.id2 == 1 and data0 == b""
    labels = []
    for k in range(1, n + 1):
        h, data = records[k]
        assert h.flag == 0 and h.id == k
        assert float(h.label).is_integer()
        labels.append(int(h.label))
        assert data[:2] == b"\xff\xd8"                              # JPEG
    assert labels == sorted(labels)                                  # grouped by identity
    assert set(labels) == set(range(c)) and all(labels.count(i) == per for i in range(c))
    for i in range(c):
        h, data = records[n + 1 + i]
        assert h.flag == 2 and list(h.label) == [1 + i * per, 1 + (i + 1) * per] and data == b""

    assert summary["num_images"] == n and summary["num_classes"] == c
    on_disk = json.loads((out / "dataset.json").read_text())
    assert on_disk["seed"] == SMALL["seed"] and on_disk["lq_fraction"] == SMALL["lq_fraction"]
    assert on_disk["files"]["rec"] == "train.rec" and on_disk["val_pairs"] == SMALL["val_pairs"]
    assert "seconds" in summary and "seconds" not in on_disk


def test_quality_list_marks_the_degraded_images(small):
    out, summary = small
    rows = [line.split() for line in (out / "train_quality.txt").read_text().splitlines()
            if not line.startswith("#")]
    assert len(rows) == N_SMALL
    records = _read_records(out)
    n_lq_per_id = round(SMALL["lq_fraction"] * SMALL["images_per_identity"])
    for c in range(SMALL["num_identities"]):
        mine = [r for r in rows if int(r[1]) == c]
        assert sum(float(r[2]) >= 0 for r in mine) == n_lq_per_id
    for k, c, _ in rows:
        assert int(records[int(k)][0].label) == int(c)
    assert summary["lq_images"] == n_lq_per_id * SMALL["num_identities"]
    assert all(-1.0 == float(r[2]) or 0.0 <= float(r[2]) <= 1.0 for r in rows)


# --------------------------------------------------------------------------- #
# colour order
# --------------------------------------------------------------------------- #
def test_colours_survive_the_rec_round_trip_in_rgb(tmp_path):
    idn = draw_identity(np.random.default_rng(0))
    idn.update(skin=[225.0, 35.0, 30.0], background=[200.0, 20.0, 20.0], hair_colour=[150.0, 10.0, 10.0],
               glasses=None, beard="none")
    face = render_face(idn, np.random.default_rng(1))
    assert face[..., 0].mean() > 1.5 * max(face[..., 1].mean(), face[..., 2].mean())
    red = np.zeros((112, 112, 3), np.uint8)
    red[..., 0] = 255
    write_train_rec(str(tmp_path), [(red, 0), (face, 1)])
    rec = mx.recordio.MXIndexedRecordIO(str(tmp_path / "train.idx"), str(tmp_path / "train.rec"), "r")
    try:
        decoded = [mx.image.imdecode(mx.recordio.unpack(rec.read_idx(k))[1]).asnumpy() for k in (1, 2)]
    finally:
        rec.close()
    r, g, b = decoded[0].reshape(-1, 3).mean(0)
    assert r > 245 and g < 10 and b < 10
    means = decoded[1].reshape(-1, 3).mean(0)
    assert means[0] > 1.5 * max(means[1], means[2])
    # the package's own decoder agrees with mxnet's RGB decoder
    assert np.abs(decode_jpeg(encode_jpeg(red)).astype(int) - decoded[0]).max() <= 2


# --------------------------------------------------------------------------- #
# verification .bin
# --------------------------------------------------------------------------- #
def test_bins_are_plain_pickles_of_jpeg_bytes_and_balanced_bools(small):
    out, summary = small
    sets = {}
    for name in ("synthetic_val", "synthetic_val_hq", "synthetic_val_lq"):
        with open(out / f"{name}.bin", "rb") as f:
            bins, issame = pickle.load(f)
        assert isinstance(bins, list) and isinstance(issame, list)
        assert all(isinstance(b, bytes) for b in bins) and all(isinstance(s, bool) for s in issame)
        assert len(bins) == 2 * len(issame)
        # alternating same / different: every one of 10 consecutive folds holds both, balanced
        assert issame == [i % 2 == 0 for i in range(len(issame))]
        assert len(issame) % 20 == 0
        sets[name] = (bins, issame)
    pairs = SMALL["val_pairs"]
    assert len(sets["synthetic_val"][1]) == pairs
    assert len(sets["synthetic_val_hq"][1]) == len(sets["synthetic_val_lq"][1]) == pairs // 2
    # groups of four pairs: HQ same, HQ diff, LQ same, LQ diff; the halves are byte-identical subsets
    allb = sets["synthetic_val"][0]
    hq_idx = [p for p in range(pairs) if p % 4 < 2]
    lq_idx = [p for p in range(pairs) if p % 4 >= 2]
    assert sets["synthetic_val_hq"][0] == [allb[2 * p + j] for p in hq_idx for j in (0, 1)]
    assert sets["synthetic_val_lq"][0] == [allb[2 * p + j] for p in lq_idx for j in (0, 1)]
    img = decode_jpeg(allb[0])
    assert img.shape == (112, 112, 3)
    # the first image of an LQ pair is degraded, the second is not
    sharp = [_sharpness(decode_jpeg(b)) for b in sets["synthetic_val_lq"][0]]
    assert np.mean(sharp[0::2]) < 0.3 * np.mean(sharp[1::2])
    assert summary["val_same_pairs"] == pairs // 2


@pytest.mark.upstream
def test_upstream_load_bin_reads_the_bins(small):
    _upstream_root()
    verification = pytest.importorskip("eval.verification")
    out, _ = small
    for name, pairs in (("synthetic_val", SMALL["val_pairs"]), ("synthetic_val_lq", SMALL["val_pairs"] // 2)):
        data, issame = verification.load_bin(str(out / f"{name}.bin"), (112, 112))
        assert len(data) == 2
        for d in data:
            assert tuple(d.shape) == (2 * pairs, 3, 112, 112)
        assert sum(issame) == pairs // 2 and len(issame) == pairs
        # RGB all the way: load_bin's first image equals our RGB decoder's
        with open(out / f"{name}.bin", "rb") as f:
            first = decode_jpeg(pickle.load(f)[0][0])
        assert np.abs(data[0][0].permute(1, 2, 0).numpy() - first).max() <= 2
        assert np.array_equal(data[1][0].numpy(), data[0][0].flip(2).numpy())


@pytest.mark.upstream
def test_upstream_mxfacedataset_reads_the_rec(small):
    _upstream_root()
    dataset = pytest.importorskip("dataset")
    out, _ = small
    ds = dataset.MXFaceDataset(str(out), 0)
    assert len(ds) == N_SMALL
    records = _read_records(out)
    for i in (0, 1, N_SMALL // 2, N_SMALL - 1):
        img, label = ds[i]
        assert tuple(img.shape) == (3, 112, 112)
        assert -1.0 <= float(img.min()) and float(img.max()) <= 1.0
        assert int(label) == int(records[i + 1][0].label)
    assert [int(ds[i][1]) for i in range(0, N_SMALL, SMALL["images_per_identity"])] == \
        list(range(SMALL["num_identities"]))


# --------------------------------------------------------------------------- #
# learnability and quality
# --------------------------------------------------------------------------- #
def _sharpness(img):
    return cv2.Laplacian(cv2.cvtColor(img, cv2.COLOR_RGB2GRAY), cv2.CV_64F).var()


@pytest.fixture(scope="module")
def probe_set():
    """20 identities: 4 clean gallery images, 3 degraded and 3 clean probes each."""
    k, g, p = 20, 4, 3
    gallery, lq, hq = [], [], []
    for i in range(k):
        idn = draw_identity(np.random.default_rng([11, i]))
        gallery += [render_face(idn, np.random.default_rng([12, i, j])) for j in range(g)]
        for j in range(p):
            r = np.random.default_rng([13, i, j])
            lq.append(degrade_quality(render_face(idn, r), r, r.uniform()))
            hq.append(render_face(idn, np.random.default_rng([14, i, j])))
    return np.repeat(np.arange(k), g), gallery, np.repeat(np.arange(k), p), lq, hq


def _flat(images):
    return np.stack([im.astype(np.float32).ravel() for im in images])


def _dist(a, b):
    return np.sqrt(np.clip((a ** 2).sum(1)[:, None] + (b ** 2).sum(1)[None] - 2 * a @ b.T, 0, None))


def test_identity_signal_exists_in_pixels_but_pixels_do_not_solve_it(probe_set):
    g_lab, gallery, p_lab, lq, hq = probe_set
    g = _flat(gallery)
    d = _dist(g, g)
    same = g_lab[:, None] == g_lab[None]
    off = ~np.eye(len(g), dtype=bool)
    intra, inter = d[same & off].mean(), d[~same].mean()
    assert intra < 0.9 * inter, (intra, inter)           # same identity is closer on average (~0.8)

    rank1_lq = (g_lab[_dist(_flat(lq), g).argmin(1)] == p_lab).mean()
    rank1_hq = (g_lab[_dist(_flat(hq), g).argmin(1)] == p_lab).mean()
    chance = 1 / 20
    assert 3 * chance < rank1_lq < 0.9, rank1_lq          # far from perfect with LQ probes (~0.5)
    assert rank1_hq < 0.95, rank1_hq                      # even clean probes are not trivial (~0.6)


def test_quality_varies(probe_set):
    _, gallery, _, lq, _ = probe_set
    hq_sharp = np.mean([_sharpness(im) for im in gallery])
    lq_sharp = np.mean([_sharpness(im) for im in lq])
    assert lq_sharp < 0.25 * hq_sharp, (lq_sharp, hq_sharp)
    img = gallery[0]
    by_level = [np.mean([_sharpness(degrade_quality(img, np.random.default_rng(s), lv)) for s in range(6)])
                for lv in (0.0, 0.5, 1.0)]
    assert by_level[0] > by_level[1] > by_level[2], by_level
    assert by_level[0] < hq_sharp


def test_render_and_degrade_shapes_and_determinism():
    idn = draw_identity(np.random.default_rng(5))
    assert idn == draw_identity(np.random.default_rng(5))
    assert idn != draw_identity(np.random.default_rng(6))
    json.dumps(idn)                                        # plain values only
    a = render_face(idn, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == (112, 112, 3)
    assert np.array_equal(a, render_face(idn, np.random.default_rng(1)))
    assert not np.array_equal(a, render_face(idn, np.random.default_rng(2)))
    assert render_face(idn, np.random.default_rng(1), size=96).shape == (96, 96, 3)
    d = degrade_quality(a, np.random.default_rng(0), 0.7)
    assert d.dtype == np.uint8 and d.shape == a.shape and not np.shares_memory(d, a)
    assert np.array_equal(d, degrade_quality(a, np.random.default_rng(0), 0.7))


def test_identities_are_diverse():
    ids = [draw_identity(np.random.default_rng([21, i])) for i in range(300)]
    keys = ("face_w", "face_h", "skin", "hair_colour", "eye_dx", "nose_len", "mouth_w", "brow_angle")
    vecs = {tuple(np.round(np.hstack([idn[k] for k in keys]), 3)) for idn in ids}
    assert len(vecs) == len(ids)
    assert len({idn["hair_style"] for idn in ids}) >= 6
    assert 0.1 < np.mean([idn["glasses"] is not None for idn in ids]) < 0.45


# --------------------------------------------------------------------------- #
# arguments
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("kwargs, named", [
    (dict(num_identities=0), "num_identities=0"),
    (dict(num_identities=2.5), "num_identities=2.5"),
    (dict(num_identities=True), "num_identities=True"),
    (dict(images_per_identity=0), "images_per_identity=0"),
    (dict(lq_fraction=-0.1), "lq_fraction=-0.1"),
    (dict(lq_fraction=1.5), "lq_fraction=1.5"),
    (dict(lq_fraction=math.nan), "lq_fraction=nan"),
    (dict(num_val_identities=1), "num_val_identities=1"),
    (dict(val_pairs=0), "val_pairs=0"),
    (dict(val_pairs=60), "val_pairs=60"),
    (dict(val_pairs=601), "val_pairs=601"),
    (dict(seed=-1), "seed=-1"),
    (dict(size=4), "size=4"),
    (dict(workers=-1), "workers=-1"),
])
def test_bad_arguments_raise_value_error_naming_the_value(tmp_path, kwargs, named):
    out = tmp_path / "never"
    with pytest.raises(ValueError, match=named.replace(".", r"\.")):
        make_dataset(str(out), **kwargs)
    assert not out.exists()                                # nothing written before validation


def test_bad_component_arguments():
    img = np.zeros((112, 112, 3), np.uint8)
    with pytest.raises(ValueError, match="level=1.5"):
        degrade_quality(img, np.random.default_rng(0), 1.5)
    with pytest.raises(ValueError, match="uint8"):
        degrade_quality(img.astype(np.float32), np.random.default_rng(0), 0.5)
    with pytest.raises(ValueError, match="pairs"):
        write_verification_bin("unused.bin", [img], [True])


def test_write_train_rec_rejects_ungrouped_labels(tmp_path):
    img = np.zeros((16, 16, 3), np.uint8)
    with pytest.raises(ValueError, match="label 0 reappears"):
        write_train_rec(str(tmp_path), [(img, 0), (img, 1), (img, 0)])


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
def test_cli_writes_the_set_and_a_preview(tmp_path, capsys):
    cli = tool("make_synthetic_data")
    preview = tmp_path / "sheet.png"
    rc = cli.main(["--output", str(tmp_path / "ds"), "--identities", "5", "--images-per-identity", "4",
                   "--lq-fraction", "0.5", "--val-identities", "4", "--val-pairs", "40", "--seed", "1",
                   "--preview", str(preview), "--preview-rows", "3", "--preview-cols", "4"])
    assert rc == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["num_images"] == 20 and summary["num_classes"] == 5 and summary["val_pairs"] == 40
    assert summary["seconds"]["wall"] > 0
    assert os.path.isfile(summary["paths"]["rec"]) and os.path.isfile(summary["paths"]["val_lq"])
    assert "train:" in captured.err
    sheet = cv2.imread(str(preview))
    assert sheet.shape == (3 * 114 + 2, 4 * 114 + 2, 3)

    rc = cli.main(["--output", str(tmp_path / "bad"), "--val-pairs", "30"])
    assert rc == 2
    assert "val_pairs=30" in capsys.readouterr().err


def test_identity_geometry_follows_the_arcface_template():
    ids = [draw_identity(np.random.default_rng([31, i])) for i in range(400)]
    t = ARCFACE_TEMPLATE
    assert abs(np.mean([56 - idn["eye_dx"] for idn in ids]) - t[0, 0]) < 1.5
    assert abs(np.mean([56 + idn["eye_dx"] for idn in ids]) - t[1, 0]) < 1.5
    assert abs(np.mean([idn["eye_y"] for idn in ids]) - t[:2, 1].mean()) < 1.5
    assert abs(np.mean([idn["nose_len"] for idn in ids]) - t[2, 1]) < 1.5
    assert abs(np.mean([idn["mouth_y"] for idn in ids]) - t[3:, 1].mean()) < 1.5


def test_cli_workers_zero_renders_in_this_process(tmp_path, monkeypatch):
    cli = tool("make_synthetic_data")
    seen = []

    def fake_make_dataset(out, **kwargs):
        seen.append(kwargs["workers"])
        raise ValueError("stop here")

    monkeypatch.setattr(cli, "make_dataset", fake_make_dataset)
    assert cli.main(["--output", str(tmp_path / "w0"), "--workers", "0"]) == 2
    assert cli.main(["--output", str(tmp_path / "w3"), "--workers", "3"]) == 2
    assert cli.main(["--output", str(tmp_path / "default")]) == 2
    assert seen == [0, 3, os.cpu_count() or 1]
    assert "0 = none, render in this process" in " ".join(cli.build_parser().format_help().split())


def test_render_workers_are_not_forked_from_the_caller():
    # a forked child inherits the caller's OpenCV/torch thread-pool state: a full test run hung in the
    # first cv2.GaussianBlur of such a child (tools/make_synthetic_data.py --workers 3 inside pytest)
    from qgface_plugin.synthetic.training_set import _Mapper
    mapper = _Mapper(1)
    try:
        assert mapper.pool._ctx.get_start_method() in ("forkserver", "spawn")
        assert list(mapper(abs, [-1, 2, -3])) == [1, 2, 3]
    finally:
        mapper.close()
