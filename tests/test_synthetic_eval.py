"""The synthetic IJB-B/C tree (qgface_plugin.synthetic_eval): layout, alignment, determinism, pair labels."""
import hashlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from skimage import transform as sk_transform

from qgface_plugin.errors import QGFaceConfigError
from qgface_plugin.synthetic_eval import aligned_face, make_ijb

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
