"""The synthetic benchmarks (qgface_plugin.synthetic.ijb / tinyface / scface / benchmarks): the IJB-B/C tree (layout, alignment, determinism,
pair labels), TinyFace and SCface (parsed by the evaluators' own listers, quality ordering) and make_benchmarks
(found by tools/eval_suite.py, tools/make_synthetic_benchmarks.py)."""
import hashlib
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import transform as sk_transform

from _proc import tool
from qgface_plugin.errors import QGFaceConfigError
from qgface_plugin.eval.ijb import read_meta
from qgface_plugin.eval.scface import list_scface, select_subjects
from qgface_plugin.eval.tinyface import list_tinyface
from qgface_plugin.synthetic.benchmarks import SIZES, SUMMARY_FILE, make_benchmarks
from qgface_plugin.synthetic.ijb import aligned_face, make_ijb
from qgface_plugin.synthetic.scface import make_scface, scface_image
from qgface_plugin.synthetic.tinyface import make_tinyface, tinyface_image

SMALL = dict(num_subjects=5, templates_per_subject=3, seed=7, lq_fraction=0.4)

# The ArcFace 112x112 template exactly as upstream's eval_ijbc.py builds it (96x112 template, x + 8).
UPSTREAM_SRC = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                         [33.5493, 92.3655], [62.7299, 92.2041]], dtype=np.float32)
UPSTREAM_SRC[:, 0] += 8.0


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    root = tmp_path_factory.mktemp("ijb")
    return root, make_ijb(root, **SMALL)


def _rows(path):
    return [line.rstrip("\n").split(" ") for line in Path(path).read_text().splitlines()]


def _align(bgr, landmarks):
    """Upstream's alignment, written independently: similarity 5 points -> template, warp to 112x112, RGB."""
    tform = sk_transform.SimilarityTransform()
    tform.estimate(np.asarray(landmarks, np.float32).reshape(5, 2), UPSTREAM_SRC)
    warped = cv2.warpAffine(bgr, tform.params[0:2, :], (112, 112), borderValue=0.0)
    return cv2.cvtColor(warped, cv2.COLOR_BGR2RGB)


def test_layout_and_row_alignment(tree):
    root, info = tree
    assert sorted(p.name for p in root.iterdir()) == ["loose_crop", "meta"]
    assert sorted(p.name for p in (root / "meta").iterdir()) == [
        "ijbc_face_tid_mid.txt", "ijbc_name_5pts_score.txt", "ijbc_template_pair_label.txt"]
    pts = _rows(root / "meta" / "ijbc_name_5pts_score.txt")
    tid = _rows(root / "meta" / "ijbc_face_tid_mid.txt")
    pairs = _rows(root / "meta" / "ijbc_template_pair_label.txt")
    n = info["num_images"]
    assert len(pts) == len(tid) == n == len(list((root / "loose_crop").iterdir()))
    assert all(len(r) == 12 for r in pts) and all(len(r) == 3 for r in tid) and all(len(r) == 3 for r in pairs)
    assert [r[0] for r in pts] == [r[0] for r in tid] == info["names"] == [f"{k}.jpg" for k in range(1, n + 1)]
    assert [int(r[1]) for r in tid] == info["templates"] and [int(r[2]) for r in tid] == info["medias"]
    np.testing.assert_allclose(np.array([r[1:11] for r in pts], float).reshape(n, 5, 2), info["landmarks"],
                               atol=1e-4)
    scores = np.array([r[11] for r in pts], float)
    assert scores.min() >= 0.5 and scores.max() <= 1.0
    levels = np.array(info["levels"])
    assert (levels >= 0).sum() == info["num_lq"] == round(SMALL["lq_fraction"] * n)
    assert scores[levels >= 0].mean() < scores[levels < 0].mean()  # degraded images score lower
    for name in info["names"][:5]:
        img = cv2.imread(str(root / "loose_crop" / name))
        assert img is not None and img.shape == (170, 150, 3)

    # templates, media: counts, non-contiguous ids, each media in one template, each template one subject
    tids, mids = np.array(info["templates"]), np.array(info["medias"])
    assert len(set(tids)) == info["num_templates"] == SMALL["num_subjects"] * SMALL["templates_per_subject"]
    assert len(set(mids)) == info["num_medias"]
    assert tids.max() > info["num_templates"]
    for m in set(mids):
        assert len(set(tids[mids == m])) == 1
    for t in set(tids):
        assert {info["subjects"][i] for i in np.flatnonzero(tids == t)} == {info["template_subject"][int(t)]}
        assert 1 <= len(set(mids[tids == t])) <= 3
    assert list(tids) != sorted(tids)  # rows are shuffled


def test_landmarks_align_back_to_the_face(tree):
    root, info = tree
    seed = SMALL["seed"]
    x0, y0, x1, y1 = 18, 18, 94, 110  # the face region that make_ijb keeps inside the crop
    checked_lq = 0
    for i in range(0, info["num_images"], 3):
        got = _align(cv2.imread(str(root / "loose_crop" / info["names"][i])), info["landmarks"][i])
        level = info["levels"][i]
        own = aligned_face(seed, info["subjects"][i], i + 1, level)
        j = next(q for q in range(info["num_images"]) if info["subjects"][q] != info["subjects"][i])
        other = aligned_face(seed, info["subjects"][j], j + 1, info["levels"][j])
        d_own = np.abs(got.astype(float) - own)[y0:y1, x0:x1].mean()
        d_other = np.abs(got.astype(float) - other)[y0:y1, x0:x1].mean()
        assert d_own < 10.0, (i, d_own)
        assert d_own < 0.25 * d_other, (i, d_own, d_other)
        checked_lq += level >= 0
    assert checked_lq > 0


def _digest(root):
    h = hashlib.sha256()
    for p in sorted(Path(root).rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(root)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def test_deterministic(tmp_path, tree):
    root, info = tree
    again = make_ijb(tmp_path / "a", **SMALL)
    assert _digest(tmp_path / "a") == _digest(root)
    assert again["p1"] == info["p1"] and again["levels"] == info["levels"]
    other = make_ijb(tmp_path / "b", **{**SMALL, "seed": SMALL["seed"] + 1})
    assert _digest(tmp_path / "b") != _digest(root)
    assert other["templates"] != info["templates"]


def test_pair_labels_match_subjects(tree):
    root, info = tree
    pairs = np.array(_rows(root / "meta" / "ijbc_template_pair_label.txt"), int)
    subject = info["template_subject"]
    assert [subject[a] == subject[b] for a, b in pairs[:, :2]] == list(pairs[:, 2] == 1)
    assert all(a != b for a, b in pairs[:, :2])
    unordered = {tuple(sorted(p)) for p in pairs[:, :2].tolist()}
    assert len(unordered) == len(pairs)  # no pair twice, in either orientation
    n_t, s = SMALL["templates_per_subject"], SMALL["num_subjects"]
    n_gen = s * n_t * (n_t - 1) // 2  # every genuine pair
    assert (pairs[:, 2] == 1).sum() == n_gen == info["num_genuine"]
    assert (pairs[:, 2] == 0).sum() == 3 * n_gen == info["num_impostor"]
    assert list(pairs[:, 2]) != sorted(pairs[:, 2])  # shuffled
    assert info["p1"] == list(pairs[:, 0]) and info["labels"] == list(pairs[:, 2])


def test_ijbb_and_all_impostors(tmp_path):
    # one template per subject: no genuine pair, so every impostor pair is written
    info = make_ijb(tmp_path, target="ijbb", num_subjects=4, templates_per_subject=1, medias_per_template=(1, 1),
                    images_per_media=(1, 1), lq_fraction=0.0, crop_size=(112, 112))
    assert (tmp_path / "meta" / "ijbb_template_pair_label.txt").is_file()
    assert info["target"] == "IJBB" and info["num_genuine"] == 0 and info["num_pairs"] == 6
    assert info["num_images"] == 4 and info["num_lq"] == 0


@pytest.mark.parametrize("kw", [dict(target="LFW"), dict(num_subjects=1), dict(medias_per_template=(2, 1)),
                                dict(images_per_media=(0, 2)), dict(lq_fraction=1.5), dict(crop_size=(100, 170))])
def test_bad_arguments(tmp_path, kw):
    with pytest.raises(QGFaceConfigError):
        make_ijb(tmp_path, **kw)


# ------------------------------------------------------------------------------- TinyFace, SCface, the suite
BENCH_SEED = 3


@pytest.fixture(scope="module")
def bench(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    return root, make_benchmarks(root, seed=BENCH_SEED)


def _sharpness(path):
    """Variance of the Laplacian of the grey image: a simple sharpness / detail measure."""
    grey = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
    return float(cv2.Laplacian(grey.astype(np.float64), cv2.CV_64F).var())


def test_benchmarks_are_discovered_by_the_suite(bench):
    root, info = bench
    suite = tool("eval_suite")
    assert suite.discover(root) == {"bins": None, "tinyface": root / "tinyface", "scface": root / "scface",
                                    "ijbb": None, "ijbc": root / "IJBC"}
    assert json.loads((root / SUMMARY_FILE).read_text()) == {k: v for k, v in info.items() if k != "seconds"}
    assert info["size"] == "small" and info["seed"] == BENCH_SEED
    meta = read_meta(str(root / "IJBC"), "IJBC")
    n = info["counts"]["ijbc"]
    assert len(meta["names"]) == n["images"] and len(meta["labels"]) == n["pairs"]
    assert int(meta["labels"].sum()) == n["genuine"] and n["impostor"] == n["pairs"] - n["genuine"]
    t = n["templates"]
    assert n["impostor"] == t * (t - 1) // 2 - n["genuine"]  # every impostor template pair: the finest FAR grid
    images = sum(1 for p in root.rglob("*.jpg"))
    assert images == info["images"]


def test_tinyface_layout_parses(bench):
    root, info = bench
    lst = list_tinyface(root / "tinyface")
    c = info["counts"]["tinyface"]
    assert lst["root"] == root / "tinyface"
    assert len(lst["probe_paths"]) == c["probes"] == c["identities"] * 2
    assert (lst["n_match"], lst["n_distractor"]) == (c["gallery_match"], c["distractors"])
    assert sorted(set(lst["probe_ids"].tolist())) == list(range(1, c["identities"] + 1))
    assert sorted(set(lst["gallery_ids"][:lst["n_match"]].tolist())) == list(range(1, c["identities"] + 1))
    assert (lst["gallery_ids"][lst["n_match"]:] == -1).all()
    probe_names = {p.name for p in lst["probe_paths"]}
    assert not probe_names & {p.name for p in lst["gallery_paths"]}  # every file name is unique
    for p in lst["probe_paths"][:3] + lst["gallery_paths"][-3:]:
        assert cv2.imread(str(p)).shape == (112, 112, 3)


def test_scface_layout_parses_and_test80_is_not_empty(bench):
    root, info = bench
    c = info["counts"]["scface"]
    lst = list_scface(root / "scface")
    subjects = lst["gallery_ids"].tolist()
    assert len(subjects) == c["subjects"] and subjects == sorted(subjects)
    assert len(lst["probes"]) == c["probes"] == 15 * c["subjects"]
    assert lst["skipped"] == c["ir_excluded"] == 6 * c["subjects"]  # cameras 6, 7: listed, excluded
    assert {(p[3], p[4]) for p in lst["probes"]} == {(cam, d) for cam in range(1, 6) for d in (1, 2, 3)}
    first = (root / "scface" / "all.txt").read_text().splitlines()[0].split("\t")
    assert first == [f"{subjects[0]:03d}_frontal", str(subjects[0])]
    t80, label, _ = select_subjects(lst, "test80")
    assert label == "test80" and len(t80["gallery_ids"]) == c["test80_subjects"] > 0
    assert c["test80_subjects"] < c["subjects"]  # the two protocols differ
    assert len(t80["probes"]) == 15 * c["test80_subjects"]
    for _, path, *_ in lst["probes"][:2]:
        assert cv2.imread(str(path)).shape == (112, 112, 3)


def test_quality_ordering(bench):
    root, _ = bench
    tf = list_tinyface(root / "tinyface")
    probe = np.mean([_sharpness(p) for p in tf["probe_paths"]])
    match = np.mean([_sharpness(p) for p in tf["gallery_paths"][:tf["n_match"]]])
    assert probe < 0.5 * match, (probe, match)  # tiny probes, mixed gallery
    sc = list_scface(root / "scface")
    by_d = {d: np.mean([_sharpness(p[1]) for p in sc["probes"] if p[4] == d]) for d in (1, 2, 3)}
    gallery = np.mean([_sharpness(p) for p in sc["gallery_paths"]])
    assert by_d[1] < by_d[2] < by_d[3] < gallery, (by_d, gallery)  # 4.2 m worst, mug-shots best


def test_benchmarks_deterministic_and_cli(bench, tmp_path, capsys):
    root, info = bench
    cli = tool("make_synthetic_benchmarks")
    assert cli.main(["--output", str(tmp_path / "a"), "--seed", str(BENCH_SEED)]) == 0
    out = capsys.readouterr().out
    assert "tinyface" in out and "scface" in out and "ijbc" in out and SUMMARY_FILE in out
    assert _digest(tmp_path / "a") == _digest(root)
    # a subject / identity depends on the seed and its number only; other seeds give other images
    assert np.array_equal(scface_image(BENCH_SEED, 51, 2, 3), scface_image(BENCH_SEED, 51, 2, 3))
    assert not np.array_equal(scface_image(BENCH_SEED, 51, 2, 3), scface_image(BENCH_SEED + 1, 51, 2, 3))
    assert not np.array_equal(tinyface_image(BENCH_SEED, 0, 1, 1), tinyface_image(BENCH_SEED + 1, 0, 1, 1))
    assert cli.main(["--output", str(tmp_path / "b"), "--seed", "-1"]) == 2


def test_tinyface_small_and_stray_images(tmp_path):
    info = make_tinyface(tmp_path, num_identities=3, probes_per_identity=1, gallery_per_identity=2, distractors=4,
                         seed=5, gallery_lq_fraction=0.5)
    assert info["names"]["Probe"] == ["1_1.jpg", "2_1.jpg", "3_1.jpg"]
    assert info["names"]["Gallery_Match"][:2] == ["1_2.jpg", "1_3.jpg"]
    assert info["names"]["Gallery_Distractor"] == [f"{j:06d}.jpg" for j in range(1, 5)]
    assert info["num_gallery_lq"] == 3 + 2 and all(16 <= s <= 24 for s in info["probe_sides"])
    again = make_tinyface(tmp_path, num_identities=3, probes_per_identity=1, gallery_per_identity=2, distractors=4,
                          seed=5, gallery_lq_fraction=0.5)  # same files: rewritten in place
    assert again["probe_levels"] == info["probe_levels"]
    with pytest.raises(QGFaceConfigError, match="would not write"):  # fewer distractors: stale ones left over
        make_tinyface(tmp_path, num_identities=3, probes_per_identity=1, gallery_per_identity=2, distractors=2)


@pytest.mark.parametrize("fn,kw", [(make_scface, dict(num_subjects=5, first_subject=997)),
                                   (make_scface, dict(num_subjects=0)),
                                   (make_tinyface, dict(distractors=0)),
                                   (make_tinyface, dict(gallery_lq_fraction=2.0)),
                                   (make_benchmarks, dict(size="large"))])
def test_bad_suite_arguments(tmp_path, fn, kw):
    with pytest.raises(QGFaceConfigError):
        fn(tmp_path, **kw)


def test_scface_defaults_cover_both_protocols(tmp_path):
    info = make_scface(tmp_path, num_subjects=3, first_subject=50, seed=1)
    assert info["subjects"] == [50, 51, 52] and info["num_test80_subjects"] == 2
    assert info["keys"][:3] == ["050_frontal", "050_cam1_1", "050_cam1_2"]
    assert select_subjects(list_scface(tmp_path), "test80")[0]["gallery_ids"].tolist() == [51, 52]
    # the make_scface defaults themselves: subjects 041..060, ten of them in test80
    import inspect
    d = inspect.signature(make_scface).parameters
    first, n = d["first_subject"].default, d["num_subjects"].default
    assert sum(51 <= s <= 130 for s in range(first, first + n)) == 10 and first < 51


def test_ijbb_gets_other_subjects_than_ijbc():
    from qgface_plugin.synthetic.benchmarks import _ijb_seed
    assert _ijb_seed(0, "IJBC") == 0 and _ijb_seed(0, "IJBB") not in (0, 1)
    assert _ijb_seed(0, "IJBB") == _ijb_seed(0, "IJBB") != _ijb_seed(1, "IJBB")
    assert set(SIZES) == {"small", "medium"} and "IJBB" in SIZES["medium"]
