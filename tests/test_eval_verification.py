"""qgface_plugin.eval (features + .bin verification protocol) and tools/eval_verification.py."""
import csv
import json
import pickle
import shutil

import cv2
import numpy as np
import pytest
import torch

import eval_verification as tool
from _models import TinyCNN, export_tiny_onnx
from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval import FeatureExtractor, evaluate, evaluate_bin, load_bin, lowres_variant
from qgface_plugin.eval.features import preprocess
from qgface_plugin.eval.verification import fold_indices, pair_min_norm, pair_quality_bins
from qgface_plugin.synthetic.training_set import make_dataset, write_verification_bin


# ------------------------------------------------------------------------------------------- helpers
def _unit(angle):
    return np.array([np.cos(angle), np.sin(angle)])


def _pairs_from_angles(angles):
    """Features [2P, 2] whose pair i subtends angles[i] (squared L2 distance 2 - 2 cos)."""
    rows = []
    for a in angles:
        rows += [_unit(0.3) * 5.0, _unit(0.3 + a) * 2.0]  # norms differ: evaluate must normalise
    return np.stack(rows)


def _rand_images(n, seed=0):
    return np.random.default_rng(seed).integers(0, 256, (n, 112, 112, 3), dtype=np.uint8)


@pytest.fixture(scope="module")
def onnx_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    return export_tiny_onnx(path, input_name="data", output_name="feat")


# ------------------------------------------------------------------------------------------ evaluate
def test_fold_indices_match_sklearn_kfold():
    from sklearn.model_selection import KFold
    for n in (20, 103, 6000):
        ours = fold_indices(n, 10)
        ref = [test for _, test in KFold(n_splits=10, shuffle=False).split(np.arange(n))]
        assert all(np.array_equal(a, b) for a, b in zip(ours, ref))


def test_evaluate_separable_pairs_is_perfect_at_the_first_separating_threshold():
    # same pairs at distance 0.5 or 1.0 (cos 0.75 / 0.5), different pairs at 1.5 (cos 0.25)
    same = [np.arccos(0.75), np.arccos(0.5)]
    angles, issame = [], []
    for i in range(50):
        angles += [same[i % 2], np.arccos(0.25)]
        issame += [True, False]
    r = evaluate(_pairs_from_angles(angles), issame)
    assert r["accuracy"] == 1.0 and r["std"] == 0.0 and r["pairs"] == 100
    # first threshold t with 1.0 < t is 1.01 (the same pair at distance 1.0 needs dist < t)
    assert r["fold_threshold"] == pytest.approx([1.01] * 10)
    assert r["threshold"] == pytest.approx(1.01)


def test_evaluate_known_errors_per_fold():
    # 100 pairs -> 10 folds of 10. Same pairs: distance 0; different pairs: distance 2, except that
    # fold k holds k % 4 "impostor twins" (different pairs at distance 0) that no threshold can separate
    # from the same pairs. Every training split then prefers t = 0.01 (accept dist 0), so fold k loses
    # exactly its k % 4 twins.
    angles, issame = [], []
    for k in range(10):
        for j in range(10):
            same = j % 2 == 0
            twin = (not same) and (j // 2) < (k % 4)
            angles.append(0.0 if same or twin else np.pi / 2)
            issame.append(same)
    r = evaluate(_pairs_from_angles(angles), issame)
    expected = np.array([1 - (k % 4) / 10 for k in range(10)])
    assert r["fold_accuracy"] == pytest.approx(list(expected))
    assert r["accuracy"] == pytest.approx(expected.mean())
    assert r["std"] == pytest.approx(expected.std())
    assert r["threshold"] == pytest.approx(0.01)


def test_evaluate_rejects_bad_shapes():
    with pytest.raises(QGFaceInputError, match="pairs"):
        evaluate(np.zeros((10, 4)), [True] * 4)
    with pytest.raises(QGFaceInputError, match="NaN"):
        evaluate(np.full((40, 4), np.nan), [True, False] * 10)


@pytest.mark.upstream
def test_evaluate_matches_upstream_verification():
    from qgface_plugin.arcface import upstream
    ver = upstream.load().verification
    rng = np.random.default_rng(1)
    for n_pairs, signal in ((200, 0.8), (203, 1.5), (600, 0.5)):
        issame = np.array([i % 2 == 0 for i in range(n_pairs)])
        base = rng.normal(size=(n_pairs, 16))
        other = rng.normal(size=(n_pairs, 16))
        second = np.where(issame[:, None], base + rng.normal(size=base.shape) / signal, other)
        feats = np.empty((2 * n_pairs, 16))
        feats[0::2], feats[1::2] = base, second
        ours = evaluate(feats, issame)
        unit = feats / np.linalg.norm(feats, axis=1, keepdims=True)  # upstream's test() normalises first
        _, _, acc, _, _, _ = ver.evaluate(unit, issame, nrof_folds=10)
        assert ours["fold_accuracy"] == pytest.approx(list(acc), abs=1e-12)
        assert ours["accuracy"] == pytest.approx(float(np.mean(acc)), abs=1e-12)
        assert ours["std"] == pytest.approx(float(np.std(acc)), abs=1e-12)
        assert 0.5 < ours["accuracy"] < 1.0  # a non-trivial case


# ------------------------------------------------------------------------------------- quality bins
def _quality_case():
    """60 pairs (10 folds of 6) with hand-placed kinds, shuffled so bins and folds do not line up.

    Kinds: "g0" genuine at distance 0 and "i2" impostor at distance 2 are right under any threshold in
    (0, 2]; "g4" genuine at distance 4 (never accepted: thresholds stop at 3.99) and "i0" impostor twin
    at distance 0 are always wrong there. Every training split then picks t = 0.01. Quality (min norm):
    lowest third (1..20) all wrong, middle (21..40) half wrong, highest (41..60) all right.
    """
    kinds = (["g4"] * 18 + ["i0"] * 2            # lowest: 20 wrong, 18 genuine
             + ["g4"] * 5 + ["i0"] * 5 + ["g0"] * 6 + ["i2"] * 4  # middle: 10 wrong, 11 genuine
             + ["g0"] * 14 + ["i2"] * 6)         # highest: all right, 14 genuine
    quality = np.arange(1.0, 61.0)
    perm = np.random.default_rng(0).permutation(60)
    kinds, quality = [kinds[i] for i in perm], quality[perm]
    angle = {"g0": 0.0, "i0": 0.0, "i2": np.pi / 2, "g4": np.pi}
    feats = _pairs_from_angles([angle[k] for k in kinds])
    issame = np.array([k.startswith("g") for k in kinds])
    norms = np.empty(120)
    norms[0::2], norms[1::2] = quality + 100.0, quality  # the second image sets the pair quality
    norms[0::2][::2], norms[1::2][::2] = quality[::2], quality[::2] + 0.5  # ... or the first one
    return feats, issame, norms, quality


def test_pair_quality_is_the_smaller_norm():
    assert pair_min_norm([3.0, 5.0, 7.0, 2.0]).tolist() == [3.0, 2.0]
    with pytest.raises(QGFaceInputError, match="odd"):
        pair_min_norm([1.0, 2.0, 3.0])


def test_pair_quality_bins_hand_placed():
    feats, issame, norms, quality = _quality_case()
    np.testing.assert_array_equal(pair_min_norm(norms), quality)
    overall = evaluate(feats, issame)
    assert overall["fold_threshold"] == pytest.approx([0.01] * 10)
    assert overall["accuracy"] == pytest.approx(30 / 60)
    bins = pair_quality_bins(feats, issame, norms)
    assert [b["bin"] for b in bins] == ["lowest", "middle", "highest"]
    assert [b["count"] for b in bins] == [20, 20, 20]
    assert [b["accuracy"] for b in bins] == [0.0, 0.5, 1.0]
    assert [b["genuine_fraction"] for b in bins] == [18 / 20, 11 / 20, 14 / 20]
    assert [(b["quality_min"], b["quality_max"]) for b in bins] == [(1.0, 20.0), (21.0, 40.0), (41.0, 60.0)]
    combined = sum(b["count"] * b["accuracy"] for b in bins) / 60
    assert combined == pytest.approx(overall["accuracy"], abs=1e-12)
    q = pair_quality_bins(feats, issame, norms, bins=4)
    assert [b["bin"] for b in q] == ["q1", "q2", "q3", "q4"] and [b["count"] for b in q] == [15] * 4
    assert [b["accuracy"] for b in q] == [0.0, 0.0, 1.0, 1.0]  # the middle third's wrong pairs are 21..30
    one = pair_quality_bins(feats, issame, norms, bins=1)
    assert one[0]["bin"] == "q1" and one[0]["accuracy"] == pytest.approx(overall["accuracy"])


def test_pair_quality_bins_use_each_folds_own_threshold():
    # the threshold differs between folds, so per-pair correctness must come from the testing fold
    rng = np.random.default_rng(5)
    for n_pairs in (200, 600):
        issame = np.arange(n_pairs) % 2 == 0
        base = rng.normal(size=(n_pairs, 8))
        second = np.where(issame[:, None], base + rng.normal(size=base.shape), rng.normal(size=base.shape))
        feats = np.empty((2 * n_pairs, 8))
        feats[0::2], feats[1::2] = base, second
        norms = rng.uniform(1, 30, 2 * n_pairs)
        overall = evaluate(feats, issame)
        assert len(set(overall["fold_threshold"])) > 1 and 0.5 < overall["accuracy"] < 1.0
        for nb in (1, 3, 7):
            bins = pair_quality_bins(feats, issame, norms, bins=nb)
            assert sum(b["count"] for b in bins) == n_pairs
            combined = sum(b["count"] * b["accuracy"] for b in bins) / n_pairs
            assert combined == pytest.approx(overall["accuracy"], abs=1e-12)  # equal folds: exact
            gen = sum(b["count"] * b["genuine_fraction"] for b in bins) / n_pairs
            assert gen == pytest.approx(0.5)
            lows = [b["quality_min"] for b in bins]
            assert lows == sorted(lows) and all(b["quality_min"] <= b["quality_max"] for b in bins)


def test_pair_quality_bins_unequal_folds_are_within_the_stated_bound():
    rng = np.random.default_rng(7)
    for n_pairs in (13, 37, 203, 1005):
        r, k = n_pairs % 10, 10
        issame = rng.random(n_pairs) < 0.5
        base = rng.normal(size=(n_pairs, 8))
        second = np.where(issame[:, None], base + 1.5 * rng.normal(size=base.shape), rng.normal(size=base.shape))
        feats = np.empty((2 * n_pairs, 8))
        feats[0::2], feats[1::2] = base, second
        overall = evaluate(feats, issame)
        bins = pair_quality_bins(feats, issame, rng.uniform(1, 30, 2 * n_pairs), bins=3)
        combined = sum(b["count"] * b["accuracy"] for b in bins) / n_pairs
        sizes = np.array([len(t) for t in fold_indices(n_pairs)])
        pooled = float(np.dot(overall["fold_accuracy"], sizes)) / n_pairs
        assert combined == pytest.approx(pooled, abs=1e-12)  # always: bins partition the pairs
        assert abs(combined - overall["accuracy"]) <= r * (k - r) / (k * n_pairs) + 1e-12


def test_pair_quality_bins_rejects_bad_input():
    feats, issame, norms, _ = _quality_case()
    for bad in (0, -1, 61):
        with pytest.raises(QGFaceInputError, match=f"bins={bad} must be in 1..60"):
            pair_quality_bins(feats, issame, norms, bins=bad)
    with pytest.raises(QGFaceInputError, match="118 norms do not match 60 pairs"):
        pair_quality_bins(feats, issame, norms[:-2])
    bad_norms = norms.copy()
    bad_norms[3] = np.nan
    with pytest.raises(QGFaceInputError, match="NaN"):
        pair_quality_bins(feats, issame, bad_norms)
    with pytest.raises(QGFaceInputError, match="pairs"):
        pair_quality_bins(feats[:-2], issame, norms)


# ------------------------------------------------------------------------------------------ load_bin
def _png_bin(path, images_rgb, issame):
    bins = [cv2.imencode(".png", cv2.cvtColor(im, cv2.COLOR_RGB2BGR))[1].tobytes() for im in images_rgb]
    with open(path, "wb") as f:
        pickle.dump((bins, list(issame)), f)


def test_load_bin_round_trip_png_exact_and_rgb_order(tmp_path):
    imgs = _rand_images(6)
    imgs[0] = 0
    imgs[0, ..., 0] = 255  # pure red in RGB
    _png_bin(tmp_path / "a.bin", imgs, [True, False, True])
    got, issame = load_bin(tmp_path / "a.bin")
    assert got.dtype == np.uint8 and got.shape == (6, 112, 112, 3)
    assert np.array_equal(got, imgs)
    assert issame.tolist() == [True, False, True]


def test_load_bin_round_trip_synthetic_writer_jpeg(tmp_path):
    imgs = np.zeros((4, 112, 112, 3), np.uint8)
    imgs[..., 0] = 200
    imgs[..., 2] = 30
    imgs[1, 40:70, 40:70] = (20, 220, 90)
    write_verification_bin(tmp_path / "b.bin", list(imgs), [True, False])
    got, issame = load_bin(tmp_path / "b.bin")
    assert issame.tolist() == [True, False]
    assert np.abs(got.astype(int) - imgs.astype(int)).mean() < 3.0  # JPEG, but RGB order kept


def test_load_bin_resizes_other_sizes(tmp_path):
    small = [np.full((56, 56, 3), 128, np.uint8)] * 2
    _png_bin(tmp_path / "s.bin", small, [True])
    got, _ = load_bin(tmp_path / "s.bin")
    assert got.shape == (2, 112, 112, 3) and np.all(got == 128)


def test_load_bin_errors_name_the_file(tmp_path):
    with pytest.raises(QGFaceInputError, match="missing.bin.*not found"):
        load_bin(tmp_path / "missing.bin")
    (tmp_path / "junk.bin").write_bytes(b"this is not a pickle")
    with pytest.raises(QGFaceInputError, match="junk.bin.*not a verification"):
        load_bin(tmp_path / "junk.bin")
    good = cv2.imencode(".png", np.zeros((112, 112, 3), np.uint8))[1].tobytes()
    with open(tmp_path / "odd.bin", "wb") as f:
        pickle.dump(([good] * 3, [True]), f)
    with pytest.raises(QGFaceInputError, match="odd.bin.*odd number of images"):
        load_bin(tmp_path / "odd.bin")
    with open(tmp_path / "mismatch.bin", "wb") as f:
        pickle.dump(([good] * 4, [True]), f)
    with pytest.raises(QGFaceInputError, match="mismatch.bin.*4 images but 1 issame"):
        load_bin(tmp_path / "mismatch.bin")
    with open(tmp_path / "bad.bin", "wb") as f:
        pickle.dump(([good, good, good, b"\xff\xd8 garbage"], [True, False]), f)
    with pytest.raises(QGFaceInputError, match=r"bad.bin: image 3 \(pair 1\) cannot be decoded"):
        load_bin(tmp_path / "bad.bin")


def test_load_bin_threaded_decoding_equals_serial_and_names_the_bad_image(tmp_path):
    imgs = _rand_images(200, seed=3)
    _png_bin(tmp_path / "big.bin", imgs, [True, False] * 50)
    serial, _ = load_bin(tmp_path / "big.bin", workers=1)
    threaded, issame = load_bin(tmp_path / "big.bin", workers=3)
    assert np.array_equal(serial, imgs) and np.array_equal(threaded, imgs)
    with open(tmp_path / "big.bin", "rb") as f:
        bins, labels = pickle.load(f)
    bins[151] = b"\x89PNG broken"
    with open(tmp_path / "bad.bin", "wb") as f:
        pickle.dump((bins, labels), f)
    with pytest.raises(QGFaceInputError, match=r"bad.bin: image 151 \(pair 75\) cannot be decoded"):
        load_bin(tmp_path / "bad.bin", workers=3)


def test_lowres_variant_degrades_only_first_images():
    imgs = _rand_images(4)
    lr = lowres_variant(imgs, 8)
    assert lr.shape == imgs.shape and lr.dtype == np.uint8
    assert np.array_equal(lr[1::2], imgs[1::2])
    expect = cv2.resize(cv2.resize(imgs[2], (8, 8), interpolation=cv2.INTER_AREA), (112, 112),
                        interpolation=cv2.INTER_LINEAR)
    assert np.array_equal(lr[2], expect)
    assert not np.array_equal(lr[0], imgs[0])


# ---------------------------------------------------------------------------------- FeatureExtractor
def test_feature_extractor_flip_modes_and_norms():
    net = TinyCNN().eval()
    imgs = _rand_images(5, seed=3)
    x = torch.from_numpy(preprocess(imgs))
    assert torch.allclose(x[0, :, 0, 0], (torch.from_numpy(imgs[0, 0, 0]).float() / 255 - 0.5) / 0.5)
    with torch.no_grad():
        f, g = net(x).numpy(), net(torch.flip(x, dims=[3])).numpy()
    assert not np.allclose(f, g)  # the tiny CNN is not flip invariant
    out = FeatureExtractor(net, batch_size=2, flip="sum")(imgs)
    np.testing.assert_allclose(out["features"], f + g, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out["norms"], np.linalg.norm(f, axis=1), rtol=1e-5)
    nw = FeatureExtractor(net, batch_size=3, flip="norm_weighted")(imgs)
    np.testing.assert_allclose(nw["features"], out["features"], rtol=1e-5, atol=1e-6)  # same maths
    none = FeatureExtractor(net, flip="none")(imgs)
    np.testing.assert_allclose(none["features"], f, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(none["norms"], out["norms"], rtol=1e-5)
    with pytest.raises(QGFaceInputError, match="flip"):
        FeatureExtractor(net, flip="concat")
    with pytest.raises(QGFaceInputError, match="uint8"):
        FeatureExtractor(net)(imgs.astype(np.float32))


def test_feature_extractor_onnx_matches_torch(onnx_model, capsys):
    imgs = _rand_images(7, seed=4)
    ref = FeatureExtractor(TinyCNN(), batch_size=3)(imgs)
    got = FeatureExtractor(onnx_model, batch_size=3)(imgs, progress=True)
    np.testing.assert_allclose(got["features"], ref["features"], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(got["norms"], ref["norms"], rtol=1e-4)
    assert "7/7" in capsys.readouterr().err
    with pytest.raises(QGFaceInputError, match="nope.onnx"):
        FeatureExtractor(onnx_model.parent / "nope.onnx")


# ----------------------------------------------------------------------------- the quality-table writer
def test_write_quality_cells_and_errors(tmp_path):
    from qgface_plugin.eval.cli import write_quality
    name = write_quality(tmp_path / "o", "x", {"a": np.array([1, 2]), "b": [None, "d1"], "ok": np.array([True, False]),
                                                "norm": np.array([12.3456789, 1e-7], np.float32)})
    assert name == "x_quality.csv" and sorted(p.name for p in (tmp_path / "o").iterdir()) == ["x_quality.csv"]
    assert (tmp_path / "o" / name).read_text().splitlines() == ["a,b,ok,norm", "1,,1,12.3457", "2,d1,0,1e-07"]
    with pytest.raises(ValueError, match="differ in length"):
        write_quality(tmp_path / "o", "y", {"a": [1, 2], "b": [1]})


# ------------------------------------------------------------------------------------------- the tool
@pytest.fixture(scope="module")
def bin_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("synth")
    make_dataset(d, num_identities=4, images_per_identity=2, num_val_identities=8, val_pairs=40)
    data = d / "bins"
    data.mkdir()
    shutil.copy(d / "synthetic_val.bin", data / "lfw.bin")
    return data


def test_evaluate_bin_variants(bin_dir, onnx_model):
    rows = evaluate_bin(FeatureExtractor(onnx_model), bin_dir / "lfw.bin", lowres_sizes=(8, 16))
    assert list(rows) == ["original", "lr8", "lr16", "per_image"]
    table = rows.pop("per_image")
    assert list(table) == ["image", "pair", "issame", "norm", "norm_lr8", "norm_lr16"]
    for name, row in rows.items():
        assert 0.0 <= row["accuracy"] <= 1.0 and row["pairs"] == 40 and row["norm_mean"] > 0
    assert rows["lr8"]["lowres_size"] == 8 and rows["original"]["lowres_size"] is None
    # the second images are unchanged, so only first-image norms move
    assert rows["lr8"]["norm_mean_first"] != rows["original"]["norm_mean_first"]
    images, issame = load_bin(bin_dir / "lfw.bin")
    direct = FeatureExtractor(onnx_model)(lowres_variant(images, 8))
    assert evaluate(direct["features"], issame)["accuracy"] == pytest.approx(rows["lr8"]["accuracy"])
    # quality bins of the variant = pair_quality_bins on the variant's own features and raw norms
    expect = pair_quality_bins(direct["features"], issame, direct["norms"])
    assert [b["bin"] for b in rows["lr8"]["quality_bins"]] == ["lowest", "middle", "highest"]
    for got, ref in zip(rows["lr8"]["quality_bins"], expect):
        assert got["count"] == ref["count"] and got["accuracy"] == pytest.approx(ref["accuracy"])
        assert got["quality_min"] == pytest.approx(ref["quality_min"], rel=1e-5)
    for row in rows.values():
        assert sum(b["count"] for b in row["quality_bins"]) == 40
        combined = sum(b["count"] * b["accuracy"] for b in row["quality_bins"]) / 40
        assert combined == pytest.approx(row["accuracy"], abs=1e-12)  # 40 pairs: equal folds


def test_evaluate_bin_quality_bins_option(bin_dir, onnx_model):
    ext = FeatureExtractor(onnx_model)
    assert "quality_bins" not in evaluate_bin(ext, bin_dir / "lfw.bin", bins=0)["original"]
    assert "quality_bins" not in evaluate_bin(ext, bin_dir / "lfw.bin", bins=None)["original"]
    assert len(evaluate_bin(ext, bin_dir / "lfw.bin", bins=5)["original"]["quality_bins"]) == 5

    def no_embedding(*a, **k):
        raise AssertionError("bins must be checked before embedding")
    for bad in (-1, 41):
        with pytest.raises(QGFaceInputError, match=f"lfw.bin: quality bins: bins={bad} must be in 1..40"):
            evaluate_bin(no_embedding, bin_dir / "lfw.bin", bins=bad)


def test_tool_end_to_end_onnx(bin_dir, onnx_model, tmp_path, capsys):
    out = tmp_path / "out"
    rc = tool.main(["--model", str(onnx_model), "--data", str(bin_dir), "--output", str(out),
                    "--lowres", "8", "12", "16", "20", "--batch-size", "16"])
    assert rc == 0
    report = json.loads((out / "verification.json").read_text())
    assert list(report["results"]) == ["lfw"]
    assert list(report["results"]["lfw"]) == ["original", "lr8", "lr12", "lr16", "lr20"]
    for row in report["results"]["lfw"].values():
        assert {"accuracy", "std", "norm_mean", "quality_bins"} <= set(row)
        bins = row["quality_bins"]
        assert [b["bin"] for b in bins] == ["lowest", "middle", "highest"]
        assert {"count", "quality_min", "quality_max", "accuracy", "genuine_fraction"} <= set(bins[0])
        assert all(0.0 <= b["accuracy"] <= 1.0 for b in bins)  # fractions in JSON
    assert report["quality_bins"] == 3
    md = (out / "verification.md").read_text()
    assert "| lfw |" in md and "lr20" in md and "±" in md
    assert "| target | variant | lowest | middle | highest |" in md
    assert "| lfw | lr8 |" in md and "| lfw | original |" in md
    b = report["results"]["lfw"]["lr8"]["quality_bins"][0]
    assert f"{100 * b['accuracy']:.2f} [{100 * b['genuine_fraction']:.0f}]" in md.split("| lfw | lr8 |")[1]
    assert "| lfw |" in capsys.readouterr().out
    # the quality of every image: original norm and, per variant, the norm after degrading the first images
    assert report["quality_file"] == {"lfw": "verification_lfw_quality.csv"}
    with open(out / "verification_lfw_quality.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "pair", "issame", "norm", "norm_lr8", "norm_lr12", "norm_lr16", "norm_lr20"]
    images, issame = load_bin(bin_dir / "lfw.bin")
    assert [int(r["image"]) for r in rows] == list(range(80)) and [int(r["pair"]) for r in rows] == [
        i // 2 for i in range(80)]
    assert [r["issame"] for r in rows] == [str(int(v)) for v in np.repeat(issame, 2)]
    net = TinyCNN().eval()

    def norms(imgs):  # raw TinyCNN norms, computed here without the package's extractor
        with torch.no_grad():
            x = ((imgs / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32)
            return np.linalg.norm(net(torch.from_numpy(x)).numpy(), axis=1)
    orig = norms(images)
    np.testing.assert_allclose([float(r["norm"]) for r in rows], orig, rtol=2e-5)
    for s in (8, 20):
        col = np.array([float(r[f"norm_lr{s}"]) for r in rows])
        np.testing.assert_allclose(col[1::2], orig[1::2], rtol=2e-5)  # second images keep the original norm
        np.testing.assert_allclose(col[0::2], norms(lowres_variant(images, s)[0::2]), rtol=2e-5)
        assert np.abs(col[0::2] - orig[0::2]).max() > 1e-3  # the degraded first images do move
    # error-versus-reject per variant: FNMR at a threshold fixed on all pairs; 20 impostor pairs resolve FMR 0.1 only
    for row in report["results"]["lfw"].values():
        e = row["erc"]
        assert e["metric"] == "fnmr" and e["items"] == 40 and (e["fmr_requested"], e["fmr"]) == (1e-3, 0.1)
        assert e["counted"] == int(issame.sum()) and len(e["norm"]["error"]) == len(e["fractions"]) == 11
    assert report["erc_plot"] == {"lfw": "verification_lfw_erc.png"} and (out / "verification_lfw_erc.png").is_file()
    assert "| lfw lr8 norm |" in md and "| lfw lr8 random |" in md
    with np.load(out / report["items_file"]["lfw"]) as items:
        assert items["issame"].tolist() == issame.tolist() and len(items["lr8_score"]) == 40
        assert items["original_correct"].mean() == pytest.approx(report["results"]["lfw"]["original"]["accuracy"])


def test_tool_quality_bins_flag(bin_dir, onnx_model, tmp_path, capsys):
    base = ["--model", str(onnx_model), "--data", str(bin_dir), "--batch-size", "40"]
    assert tool.main(base + ["--output", str(tmp_path / "a"), "--quality-bins", "0"]) == 0
    report = json.loads((tmp_path / "a" / "verification.json").read_text())
    assert "quality_bins" not in report["results"]["lfw"]["original"]
    assert "pair quality" not in (tmp_path / "a" / "verification.md").read_text()
    assert tool.main(base + ["--output", str(tmp_path / "b"), "--quality-bins", "4"]) == 0
    report = json.loads((tmp_path / "b" / "verification.json").read_text())
    assert [b["bin"] for b in report["results"]["lfw"]["original"]["quality_bins"]] == ["q1", "q2", "q3", "q4"]
    assert "| target | variant | q1 | q2 | q3 | q4 |" in (tmp_path / "b" / "verification.md").read_text()
    capsys.readouterr()
    assert tool.main(base + ["--output", str(tmp_path / "c"), "--quality-bins", "41"]) == 2
    assert "bins=41 must be in 1..40" in capsys.readouterr().err


def test_tool_errors(bin_dir, onnx_model, tmp_path, capsys):
    args = ["--model", str(onnx_model), "--output", str(tmp_path / "o")]
    assert tool.main(args + ["--data", str(bin_dir), "--targets", "lfw", "cplfw"]) == 2
    assert "cplfw.bin" in capsys.readouterr().err
    assert tool.main(args + ["--data", str(tmp_path)]) == 2
    assert "lfw.bin" in capsys.readouterr().err
    assert tool.main(["--model", str(tmp_path / "m.pt"), "--data", str(bin_dir), "--output", str(tmp_path)]) == 2


@pytest.mark.upstream
def test_tool_pt_model_with_upstream_backbone(bin_dir, tmp_path):
    from qgface_plugin.arcface import upstream
    net = upstream.load().get_model("r18", dropout=0.0, fp16=False, num_features=32)
    torch.save({"module." + k: v for k, v in net.state_dict().items()}, tmp_path / "model.pt")
    out = tmp_path / "out"
    rc = tool.main(["--network", "r18", "--model", str(tmp_path / "model.pt"), "--data", str(bin_dir),
                    "--output", str(out), "--batch-size", "40", "--flip", "none"])
    assert rc == 0
    report = json.loads((out / "verification.json").read_text())
    assert report["model_info"]["embedding_size"] == 32


@pytest.mark.upstream
def test_whole_pipeline_matches_upstream_test(bin_dir):
    """Our load_bin + FeatureExtractor(flip="sum") + evaluate == upstream verification.test on the same data."""
    from qgface_plugin.arcface import upstream
    ver = upstream.load().verification
    images, issame = load_bin(bin_dir / "lfw.bin")
    net = TinyCNN().eval()
    x = torch.from_numpy(np.ascontiguousarray(images.transpose(0, 3, 1, 2))).float()  # upstream: 0-255 NCHW RGB
    with torch.no_grad():
        _, _, acc2, std2, _, emb_list = ver.test(([x, torch.flip(x, dims=[3])], issame.tolist()), net, 10, 10)
    ours = evaluate_bin(FeatureExtractor(net, batch_size=16), bin_dir / "lfw.bin")["original"]
    assert ours["accuracy"] == pytest.approx(acc2, abs=1e-12)
    assert ours["std"] == pytest.approx(std2, abs=1e-12)
    # our norm_mean is over the non-flipped view only (upstream's XNorm averages both views)
    assert ours["norm_mean"] == pytest.approx(np.linalg.norm(emb_list[0], axis=1).mean(), rel=1e-5)
