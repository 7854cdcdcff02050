"""Tests for the IJB-B/C 1:1 core (qgface_plugin.eval.ijb)."""
import numpy as np
import pytest

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.ijb import pair_scores, read_meta, template_features


# ------------------------------------------------------------------------------------------------ meta
def _write_meta(root, t="ijbc", tid=None, pts=None, pairs=None):
    meta = root / "meta"
    meta.mkdir(parents=True, exist_ok=True)
    tid = tid if tid is not None else ["1.jpg 1 10", "2.jpg 1 11", "3.jpg 2 12"]
    pts = pts if pts is not None else [
        f"{n}.jpg " + " ".join(str(float(10 * n + k)) for k in range(10)) + f" {0.5 + 0.1 * n}" for n in (1, 2, 3)]
    pairs = pairs if pairs is not None else ["1 2 0", "1 1 1"]
    (meta / f"{t}_face_tid_mid.txt").write_text("\n".join(tid) + "\n")
    (meta / f"{t}_name_5pts_score.txt").write_text("\n".join(pts) + "\n")
    (meta / f"{t}_template_pair_label.txt").write_text("\n".join(pairs) + "\n")
    return meta


def test_read_meta_layout(tmp_path):
    _write_meta(tmp_path)
    m = read_meta(str(tmp_path), "IJBC")
    assert list(m["names"]) == ["1.jpg", "2.jpg", "3.jpg"]
    np.testing.assert_array_equal(m["templates"], [1, 1, 2])
    np.testing.assert_array_equal(m["medias"], [10, 11, 12])
    assert m["landmarks"].shape == (3, 5, 2)
    np.testing.assert_allclose(m["landmarks"][1].ravel(), np.arange(20, 30))
    np.testing.assert_allclose(m["det_scores"], [0.6, 0.7, 0.8], rtol=1e-6)
    np.testing.assert_array_equal(m["p1"], [1, 1])
    np.testing.assert_array_equal(m["p2"], [2, 1])
    np.testing.assert_array_equal(m["labels"], [0, 1])


def test_read_meta_pairs_slow_path_matches(tmp_path):
    # double spaces force the exact line parser; result must be the same
    _write_meta(tmp_path, t="ijbb", pairs=["1  2 0", "1 1 1"])
    m = read_meta(str(tmp_path), "ijbb")
    np.testing.assert_array_equal(np.c_[m["p1"], m["p2"], m["labels"]], [[1, 2, 0], [1, 1, 1]])


def test_read_meta_missing_file(tmp_path):
    meta = _write_meta(tmp_path)
    (meta / "ijbc_template_pair_label.txt").unlink()
    with pytest.raises(QGFaceInputError, match="ijbc_template_pair_label.txt"):
        read_meta(str(tmp_path), "IJBC")


@pytest.mark.parametrize("which,kw,pat", [
    ("tid", {"tid": ["1.jpg 1 10", "2.jpg 1", "3.jpg 2 12"]}, r"ijbc_face_tid_mid.txt:2"),
    ("tid", {"tid": ["1.jpg 1 10", "2.jpg 1 11", "3.jpg x 12"]}, r"ijbc_face_tid_mid.txt:3"),
    ("pts", {"pts": ["1.jpg 1 2 3", "2.jpg", "3.jpg"]}, r"ijbc_name_5pts_score.txt:1"),
    ("pairs", {"pairs": ["1 2 0", "1 1 one"]}, r"ijbc_template_pair_label.txt:2"),
    ("pairs", {"pairs": ["1 2 0", "1 1"]}, r"ijbc_template_pair_label.txt:2"),
])
def test_read_meta_malformed_line(tmp_path, which, kw, pat):
    _write_meta(tmp_path, **kw)
    with pytest.raises(QGFaceInputError, match=pat):
        read_meta(str(tmp_path), "IJBC")


def test_read_meta_row_count_mismatch(tmp_path):
    _write_meta(tmp_path, tid=["1.jpg 1 10", "2.jpg 1 11"])
    with pytest.raises(QGFaceInputError, match=r"ijbc_face_tid_mid.txt has 2 rows.*5pts_score.txt has 3 rows"):
        read_meta(str(tmp_path), "IJBC")


def test_read_meta_names_not_aligned(tmp_path):
    _write_meta(tmp_path, tid=["1.jpg 1 10", "3.jpg 2 12", "2.jpg 1 11"])
    with pytest.raises(QGFaceInputError, match=r"row 2.*'3.jpg'.*'2.jpg'"):
        read_meta(str(tmp_path), "IJBC")


# ------------------------------------------------------------------------------------------------ pooling
def _hand_case():
    # template 7: media 1 = two images, media 2 = one image; template 3: one image
    feats = np.array([[2.0, 0.0], [0.0, 2.0], [0.0, 4.0], [3.0, 4.0]])
    templates = np.array([7, 7, 7, 3])
    medias = np.array([1, 1, 2, 5])
    return feats, templates, medias


def test_template_features_use_norm():
    feats, t, m = _hand_case()
    ut, tf = template_features(feats, t, m, use_norm=True)
    np.testing.assert_array_equal(ut, [3, 7])
    # t7: mean(media1) = (1, 1); + media2 (0, 4) = (1, 5) -> normalise
    np.testing.assert_allclose(tf[1], np.array([1, 5]) / np.sqrt(26), rtol=1e-6)
    np.testing.assert_allclose(tf[0], [0.6, 0.8], rtol=1e-6)
    assert tf.dtype == np.float32


def test_template_features_no_norm_and_scores():
    feats, t, m = _hand_case()
    _, tf = template_features(feats, t, m, use_norm=False)
    # unit features: (1,0),(0,1) -> mean (.5,.5); + (0,1) = (.5, 1.5)
    np.testing.assert_allclose(tf[1], np.array([0.5, 1.5]) / np.linalg.norm([0.5, 1.5]), rtol=1e-6)
    s = np.array([1.0, 3.0, 0.5, 2.0])
    _, tf = template_features(feats, t, m, use_norm=True, scores=s)
    # (2,0)*1, (0,2)*3 -> mean (1, 3); + (0,4)*.5 = (1, 5)  (same direction by construction)
    np.testing.assert_allclose(tf[1], np.array([1, 5]) / np.sqrt(26), rtol=1e-6)
    _, tf = template_features(feats, t, m, use_norm=False, scores=s)
    # (1,0),(0,3) -> (.5, 1.5); + (0, .5) = (.5, 2)
    np.testing.assert_allclose(tf[1], np.array([0.5, 2.0]) / np.linalg.norm([0.5, 2.0]), rtol=1e-6)


@pytest.mark.parametrize("chunk", [65536, 37])  # 37: the sparse sum runs over 11 chunks of images
def test_template_features_matches_loop(chunk):
    rng = np.random.default_rng(0)
    n, d = 400, 8
    feats = rng.standard_normal((n, d))
    t = rng.integers(0, 30, n)
    m = rng.integers(0, 5, n) + 100 * t  # medias unique per template, as in IJB
    m[::7] = 3  # plus some media ids shared across templates
    sc = rng.uniform(0.1, 1.0, n)
    feats[5] = 0.0  # a zero feature stays zero when normalised (as sklearn's normalize)
    ut, tf = template_features(feats.astype(np.float32), t, m, use_norm=False, scores=sc, chunk=chunk)
    x = feats / np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-300) * sc[:, None]
    for k, tt in enumerate(ut):
        ms = [x[(t == tt) & (m == mm)].mean(0) for mm in np.unique(m[t == tt])]
        v = np.sum(ms, 0)
        np.testing.assert_allclose(tf[k], v / np.linalg.norm(v), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------------------------------ scores
def test_pair_scores_methods_agree_with_loop():
    rng = np.random.default_rng(1)
    T, D, P = 257, 16, 5000
    tids = rng.choice(10_000, T, replace=False)  # unsorted ids on purpose
    F = rng.standard_normal((T, D)).astype(np.float32)
    F /= np.linalg.norm(F, axis=1, keepdims=True)
    p1, p2 = tids[rng.integers(0, T, P)], tids[rng.integers(0, T, P)]
    row = {t: i for i, t in enumerate(tids)}
    naive = np.array([float(np.dot(F[row[a]].astype(np.float64), F[row[b]])) for a, b in zip(p1, p2)])
    s_mat = pair_scores(tids, F, p1, p2, method="matrix", chunk=50)
    s_mat_default = pair_scores(tids, F, p1, p2, method="matrix")
    s_pairs = pair_scores(tids, F, p1, p2, method="pairs", chunk=777)
    np.testing.assert_allclose(s_mat, naive, atol=1e-5)
    np.testing.assert_allclose(s_mat_default, naive, atol=1e-5)
    np.testing.assert_allclose(s_pairs, naive, atol=1e-5)


def test_pair_scores_unknown_template():
    F = np.eye(3, dtype=np.float32)
    with pytest.raises(QGFaceInputError, match="p2\\[1\\] = 9"):
        pair_scores([1, 2, 3], F, [1, 2], [3, 9])
