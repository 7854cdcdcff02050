"""IJB-B/C end to end: alignment, image loading, the feature cache, the quality view and tools/eval_ijb.py.

Images are flat colours whose red value is the image's index and the "backbone" (:class:`LookupNet`) maps
that value to a hand-placed feature, so every expected figure is computed here from the hand-placed
features with plain loops (an independent, slow implementation of upstream's protocol).
"""
import csv
import json
import math
import subprocess
import sys
import warnings

import cv2
import numpy as np
import pytest
import torch

from _models import TinyCNN, export_tiny_onnx
from _proc import ROOT
from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.align import ARCFACE_TEMPLATE, align_face, estimate_transform, to_five_points
from qgface_plugin.eval.features import FeatureExtractor, embed_items
from qgface_plugin.eval.ijb import evaluate_ijb, quality_tar
from qgface_plugin.eval.roc import tar_at_far


# ------------------------------------------------------------------------------------------- alignment
def _similarity(scale, angle_deg, tx, ty):
    a = math.radians(angle_deg)
    return np.array([[scale * math.cos(a), -scale * math.sin(a), tx], [scale * math.sin(a), scale * math.cos(a), ty]])


def test_template_is_upstreams_float32_plus_8():
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0
    assert ARCFACE_TEMPLATE.dtype == np.float32
    np.testing.assert_array_equal(ARCFACE_TEMPLATE, src)


def test_estimate_transform_inverts_a_known_similarity():
    A = _similarity(1.7, 25.0, 30.0, -12.0)  # template -> loose crop
    pts = ARCFACE_TEMPLATE.astype(np.float64) @ A[:, :2].T + A[:, 2]
    M = estimate_transform(pts.astype(np.float32))  # loose crop -> template = A^-1
    A3 = np.vstack([A, [0, 0, 1]])
    np.testing.assert_allclose(M, np.linalg.inv(A3)[:2], atol=1e-4)


def test_align_face_recovers_a_warped_face():
    rng = np.random.default_rng(0)
    face = cv2.GaussianBlur(rng.integers(0, 256, (112, 112, 3), dtype=np.uint8), (7, 7), 2)  # RGB
    A = _similarity(1.3, -15.0, 40.0, 55.0)
    loose_bgr = cv2.warpAffine(face[:, :, ::-1].copy(), A, (240, 260), flags=cv2.INTER_CUBIC)
    pts = ARCFACE_TEMPLATE.astype(np.float64) @ A[:, :2].T + A[:, 2]
    back = align_face(loose_bgr, pts)
    assert back.shape == (112, 112, 3) and back.dtype == np.uint8
    inner = (slice(12, 100), slice(12, 100))
    err = np.abs(back[inner].astype(float) - face[inner]).mean()
    other = np.abs(np.roll(face, 9, axis=1)[inner].astype(float) - face[inner]).mean()
    assert err < 3.0 < other


def test_crops_are_those_of_upstreams_embedding_get():
    """Upstream eval_ijbc.py Embedding.get, step by step: float32 landmarks from the text, skimage
    SimilarityTransform to the float32 template (+8), cv2.warpAffine(borderValue=0), BGR -> RGB."""
    from skimage import transform as trans
    rng = np.random.default_rng(5)
    img = rng.integers(0, 256, (170, 150, 3), dtype=np.uint8)
    src = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366], [33.5493, 92.3655],
                    [62.7299, 92.2041]], dtype=np.float32)
    src[:, 0] += 8.0
    for _ in range(5):
        A = _similarity(rng.uniform(0.8, 1.4), rng.uniform(-20, 20), rng.uniform(10, 30), rng.uniform(10, 40))
        text = " ".join(f"{v:.4f}" for v in (src.astype(np.float64) @ A[:, :2].T + A[:, 2]).ravel())
        lmk = np.array([float(x) for x in text.split()], dtype=np.float32).reshape((5, 2))
        tform = trans.SimilarityTransform()
        tform.estimate(lmk, src)
        ref = cv2.cvtColor(cv2.warpAffine(img, tform.params[0:2, :], (112, 112), borderValue=0.0), cv2.COLOR_BGR2RGB)
        np.testing.assert_array_equal(align_face(img, lmk), ref)


def test_sixty_eight_points_reduce_as_upstream():
    lm = np.arange(136, dtype=np.float32).reshape(68, 2)
    five = to_five_points(lm)
    np.testing.assert_array_equal(five, [(lm[36] + lm[39]) / 2, (lm[42] + lm[45]) / 2, lm[30], lm[48], lm[54]])


@pytest.mark.parametrize("lm", [np.zeros((5, 2)), np.ones((4, 2)), np.full((5, 2), np.nan)])
def test_bad_landmarks(lm):
    with pytest.raises(QGFaceInputError):
        estimate_transform(lm)


# ------------------------------------------------------------------------------------ lookup "backbone"
class LookupNet(torch.nn.Module):
    """Reads the red value at the centre of the (pre-processed) crop and returns ``table[value]``."""

    def __init__(self, table):
        super().__init__()
        self.register_buffer("table", torch.as_tensor(np.asarray(table, np.float32)))

    def forward(self, x):
        v = torch.round((x[:, 0, 56, 56] * 0.5 + 0.5) * 255).long()
        return self.table[v]


def _write_tree(root, feats_of, tmpl, media, det, pairs, t="ijbc", rng=None):
    """Flat-colour loose crops (red = image index) with random similarity landmarks; upstream's meta layout."""
    rng = rng or np.random.default_rng(0)
    (root / "loose_crop").mkdir(parents=True)
    (root / "meta").mkdir()
    tid_lines, pts_lines = [], []
    for i in range(len(tmpl)):
        img = np.zeros((150, 140, 3), np.uint8)
        img[..., 2] = i  # BGR: red
        img[..., 1] = 77
        name = f"img_{i}.png"
        cv2.imwrite(str(root / "loose_crop" / name), img)
        A = _similarity(rng.uniform(0.9, 1.1), rng.uniform(-10, 10), rng.uniform(5, 15), rng.uniform(5, 15))
        pts = ARCFACE_TEMPLATE.astype(np.float64) @ A[:, :2].T + A[:, 2]
        tid_lines.append(f"{name} {tmpl[i]} {media[i]}")
        pts_lines.append(name + " " + " ".join(f"{v:.3f}" for v in pts.ravel()) + f" {det[i]}")
    (root / "meta" / f"{t}_face_tid_mid.txt").write_text("\n".join(tid_lines) + "\n")
    (root / "meta" / f"{t}_name_5pts_score.txt").write_text("\n".join(pts_lines) + "\n")
    (root / "meta" / f"{t}_template_pair_label.txt").write_text("\n".join(f"{a} {b} {l}" for a, b, l in pairs) + "\n")


def _reference(feats, tmpl, media, det, pairs, use_norm=True, use_det=True):
    """Upstream's protocol with loops: F1 (flip sum = 2 f here), N1/N0, D1/D0, media mean, template sum."""
    x = [2.0 * np.asarray(f, np.float64) for f in feats]
    if not use_norm:
        x = [v / np.linalg.norm(v) for v in x]
    if use_det:
        x = [v * d for v, d in zip(x, det)]
    T = {}
    for t in sorted(set(tmpl)):
        medias = {}
        for i in range(len(x)):
            if tmpl[i] == t:
                medias.setdefault(media[i], []).append(x[i])
        s = sum(np.mean(v, axis=0) for v in medias.values())
        T[t] = s / np.linalg.norm(s)
    return np.array([float(T[a] @ T[b]) for a, b, _ in pairs])


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    rng = np.random.default_rng(1)
    n, D = 40, 8
    subj_of_t = {11: 0, 12: 0, 23: 1, 27: 1, 31: 2, 35: 2, 40: 3, 48: 3, 52: 4, 59: 4}
    tids = list(subj_of_t)
    centres = rng.standard_normal((5, D))
    tmpl = [tids[i % len(tids)] for i in range(n)]
    media = [1000 + tmpl[i] * 3 + (i // len(tids)) % 2 for i in range(n)]  # 2 medias per template
    noise = np.where(np.arange(n) % 3 == 0, 2.0, 0.4)  # some noisy images
    scale = rng.uniform(0.5, 3.0, n)  # raw norms vary
    feats = [(centres[subj_of_t[tmpl[i]]] + noise[i] * rng.standard_normal(D)) * scale[i] for i in range(n)]
    det = [round(float(d), 3) for d in rng.uniform(0.5, 1.0, n)]
    pairs = [(a, b, int(subj_of_t[a] == subj_of_t[b])) for k, a in enumerate(tids) for b in tids[k + 1:]]
    root = tmp_path_factory.mktemp("ijb") / "IJBC"
    _write_tree(root, feats, tmpl, media, det, pairs, rng=rng)
    table = np.zeros((256, D), np.float32)
    table[:n] = np.asarray(feats, np.float32)
    return {"root": root, "feats": feats, "tmpl": tmpl, "media": media, "det": det, "pairs": pairs,
            "table": table, "n": n}


@pytest.mark.parametrize("use_norm,use_det", [(True, True), (False, True), (True, False), (False, False)])
def test_evaluate_ijb_equals_loop_reference(tree, use_norm, use_det):
    ex = FeatureExtractor(LookupNet(tree["table"]), batch_size=7)
    res = evaluate_ijb(ex, tree["root"], "IJBC", use_norm=use_norm, use_detector=use_det, load_batch=9, workers=2)
    ref = _reference(tree["feats"], tree["tmpl"], tree["media"], tree["det"], tree["pairs"], use_norm, use_det)
    np.testing.assert_allclose(res["scores"], ref, atol=1e-5)
    labels = np.array([l for *_, l in tree["pairs"]])
    assert res["tar_at_far"] == pytest.approx(tar_at_far(ref, labels))
    assert res["counts"] == {"images": 40, "templates": 10, "pairs": 45, "genuine": 5, "impostor": 40}
    # template quality: mean raw norm of the original (not flipped) features of its images
    norms = [np.linalg.norm(f) for f in tree["feats"]]
    tq = {t: np.mean([norms[i] for i in range(tree["n"]) if tree["tmpl"][i] == t]) for t in set(tree["tmpl"])}
    np.testing.assert_allclose(res["pair_quality"], [min(tq[a], tq[b]) for a, b, _ in tree["pairs"]], rtol=1e-5)


def test_quality_tar_hand_worked():
    # 9 pairs; quality thirds {0,1,2} {3,4,5} {6,7,8} by quality
    scores = np.array([0.9, 0.2, 0.5, 0.8, 0.7, 0.1, 0.95, 0.3, 0.6])
    labels = np.array([1, 1, 0, 1, 1, 0, 1, 0, 0])
    quality = np.array([3, 1, 2, 6, 5, 4, 9, 7, 8], float)
    _, roc = tar_at_far(scores, labels, fars=(0.25,), return_roc=True)
    thr = roc["far_points"]["TAR@FAR=2.5e-1"][2]
    # roc_curve(drop_intermediate=True) keeps (fpr 0, tpr .8) at 0.7 and (.75, .8) at 0.3 of the flat stretch;
    # the point nearest to FAR .25 is fpr 0, threshold 0.7
    assert thr == pytest.approx(0.7)
    bins = quality_tar(scores, labels, quality, roc, bins=3)
    assert [b["bin"] for b in bins] == ["lowest", "middle", "highest"]
    assert [b["genuine"] for b in bins] == [2, 2, 1]
    assert [b["TAR@FAR=2.5e-1"] for b in bins] == [0.5, 1.0, 1.0]   # 0.9 yes 0.2 no | 0.8, 0.7 | 0.95
    assert [b["FAR@FAR=2.5e-1"] for b in bins] == [0.0, 0.0, 0.0]   # 0.5 | 0.1 | 0.3, 0.6 below 0.7
    _, roc = tar_at_far(scores, labels, fars=(0.5,), return_roc=True)  # nearest point: fpr .75 at 0.3
    bins = quality_tar(scores, labels, quality, roc, bins=3)
    assert [b["FAR@FAR=5e-1"] for b in bins] == [1.0, 0.0, 1.0]
    g = sum(b["genuine"] * b["TAR@FAR=5e-1"] for b in bins) / 5
    assert g == pytest.approx(tar_at_far(scores, labels, fars=(0.5,))["TAR@FAR=5e-1"])


# ----------------------------------------------------------------------------------------------- cache
class CountingNet(LookupNet):
    calls = 0

    def forward(self, x):
        CountingNet.calls += len(x)
        return super().forward(x)


def test_cache_resumes_and_is_keyed(tree, tmp_path):
    net = CountingNet(tree["table"])
    ref = evaluate_ijb(FeatureExtractor(net), tree["root"], load_batch=16)
    CountingNet.calls = 0
    first = evaluate_ijb(FeatureExtractor(net), tree["root"], load_batch=16, cache_dir=tmp_path)
    assert CountingNet.calls == 2 * 40  # original + flipped
    (shard_dir,) = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert sorted(p.name for p in shard_dir.glob("shard_*.npz")) == ["shard_00000.npz", "shard_00001.npz",
                                                                    "shard_00002.npz"]
    # an interrupted run: one shard missing, one truncated -> only those are recomputed
    (shard_dir / "shard_00001.npz").unlink()
    (shard_dir / "shard_00002.npz").write_bytes(b"PK\x03\x04 truncated")
    CountingNet.calls = 0
    with warnings.catch_warnings(record=True) as w:
        warnings.simplefilter("always")
        again = evaluate_ijb(FeatureExtractor(net), tree["root"], load_batch=16, cache_dir=tmp_path)
    assert CountingNet.calls == 2 * (16 + 8)
    assert any("unreadable cache shard" in str(x.message) for x in w)
    CountingNet.calls = 0
    third = evaluate_ijb(FeatureExtractor(net), tree["root"], load_batch=16, cache_dir=tmp_path)
    assert CountingNet.calls == 0
    for r in (first, again, third):
        np.testing.assert_array_equal(r["scores"], ref["scores"])
    # another flip mode or other weights get their own folder
    evaluate_ijb(FeatureExtractor(net, flip="none"), tree["root"], load_batch=16, cache_dir=tmp_path)
    other = CountingNet(tree["table"] * 2)
    evaluate_ijb(FeatureExtractor(other), tree["root"], load_batch=16, cache_dir=tmp_path)
    assert len([p for p in tmp_path.iterdir() if p.is_dir()]) == 3
    # another shard size: old shards are not reused
    CountingNet.calls = 0
    evaluate_ijb(FeatureExtractor(net), tree["root"], load_batch=10, cache_dir=tmp_path)
    assert CountingNet.calls == 2 * 40


def test_embed_items_threads_keep_order_and_raise():
    ex = FeatureExtractor(LookupNet(np.arange(256)[:, None] * np.array([1.0, 10.0, -1.0])), flip="none")

    def load(i):
        img = np.zeros((112, 112, 3), np.uint8)
        img[..., 0] = i
        return img
    f0, n0 = embed_items(ex, 50, load, load_batch=8, workers=0)
    f3, n3 = embed_items(ex, 50, load, load_batch=8, workers=3)
    np.testing.assert_array_equal(f0, f3)
    np.testing.assert_array_equal(f0, np.arange(50)[:, None] * np.array([1.0, 10.0, -1.0]))  # item i -> row i
    np.testing.assert_allclose(n0, np.arange(50) * np.sqrt(102.0), rtol=1e-6)

    def bad(i):
        if i == 13:
            raise QGFaceInputError("item 13 is broken")
        return load(i)
    with pytest.raises(QGFaceInputError, match="item 13"):
        embed_items(ex, 50, bad, load_batch=8, workers=2)


# ------------------------------------------------------------------------------------------------ tool
def _run_tool(*args):
    return subprocess.run([sys.executable, str(ROOT / "tools" / "eval_ijb.py"), *map(str, args)],
                          capture_output=True, text=True, cwd=ROOT)


@pytest.fixture(scope="module")
def lookup_onnx(tree, tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "lookup.onnx"
    net = LookupNet(tree["table"]).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(net, torch.zeros(2, 3, 112, 112), str(path), dynamo=False, input_names=["input"],
                          output_names=["embedding"], dynamic_axes={"input": {0: "batch"}, "embedding": {0: "batch"}})
    return path


def test_tool_writes_json_md_png_npy(tree, lookup_onnx, tmp_path):
    r = _run_tool("--model", lookup_onnx, "--data", tree["root"], "--target", "ijbc", "--output", tmp_path,
                  "--no-detector-score")
    assert r.returncode == 0, r.stderr
    rep = json.loads((tmp_path / "ijbc.json").read_text())
    ref = _reference(tree["feats"], tree["tmpl"], tree["media"], tree["det"], tree["pairs"], True, False)
    labels = np.array([l for *_, l in tree["pairs"]])
    expect = tar_at_far(ref, labels)
    assert list(rep["tar_at_far"]) == ["TAR@FAR=1e-6", "TAR@FAR=1e-5", "TAR@FAR=1e-4", "TAR@FAR=1e-3",
                                       "TAR@FAR=1e-2", "TAR@FAR=1e-1"]
    assert rep["tar_at_far"] == pytest.approx(expect)
    assert rep["protocol"]["detector_score"] is False and rep["protocol"]["norm_score"] is True
    assert len(rep["quality_bins"]) == 3 and sum(b["count"] for b in rep["quality_bins"]) == 45
    np.testing.assert_allclose(np.load(tmp_path / "ijbc_scores.npy"), ref, atol=1e-5)
    assert (tmp_path / "ijbc_roc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (tmp_path / "ijbc.md").read_text()
    assert f"{100 * expect['TAR@FAR=1e-1']:.2f}" in md and "lowest" in md
    # 40 impostor pairs resolve FAR 1e-1 only: the other columns are marked
    assert rep["min_resolvable_far"] == pytest.approx(1 / 40)
    assert f"{100 * expect['TAR@FAR=1e-2']:.2f} †" in md and f"{100 * expect['TAR@FAR=1e-1']:.2f} |" in md
    assert "† FAR below 1 / 40 impostor pairs" in md
    # the quality of every image (meta order) and template: norm = |table[i]| of the hand-placed features
    assert (rep["quality_file"], rep["template_quality_file"]) == ("ijbc_quality.csv", "ijbc_template_quality.csv")
    with open(tmp_path / "ijbc_quality.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["image", "template", "media", "det_score", "norm"]
    assert [r["image"] for r in rows] == [f"img_{i}.png" for i in range(tree["n"])]
    assert [int(r["template"]) for r in rows] == tree["tmpl"] and [int(r["media"]) for r in rows] == tree["media"]
    assert [float(r["det_score"]) for r in rows] == pytest.approx(tree["det"], rel=1e-6)
    norms = np.linalg.norm(tree["table"][:tree["n"]], axis=1)  # float32, as the extractor computes them
    assert [r["norm"] for r in rows] == [f"{v:.6g}" for v in norms]
    with open(tmp_path / "ijbc_template_quality.csv", newline="") as f:
        trows = list(csv.DictReader(f))
    assert list(trows[0]) == ["template", "images", "quality"]
    assert [int(r["template"]) for r in trows] == sorted(set(tree["tmpl"]))
    assert all(r["images"] == "4" for r in trows)
    tq = [np.mean([norms[i] for i in range(tree["n"]) if tree["tmpl"][i] == int(r["template"])]) for r in trows]
    np.testing.assert_allclose([float(r["quality"]) for r in trows], tq, rtol=1e-5)
    assert "per_image" not in rep and "per_template" not in rep
    # error-versus-reject: FNMR at the global threshold of FAR 1e-1 (40 impostors do not resolve 1e-4)
    e = rep["erc"]
    assert e["metric"] == "fnmr" and (e["fmr_requested"], e["fmr"]) == (1e-4, 0.1) and e["items"] == 45
    assert e["norm"]["error"][0] == pytest.approx(1 - rep["tar_at_far"]["TAR@FAR=1e-1"])
    assert e["threshold"] == rep["far_points"]["TAR@FAR=1e-1"]["threshold"]
    assert (tmp_path / "ijbc_erc.png").is_file() and "| pairs norm |" in md
    with np.load(tmp_path / rep["items_file"]) as items:
        np.testing.assert_allclose(items["template_quality"], tq, rtol=1e-6)


def test_tool_bad_inputs_name_file_and_line(tree, lookup_onnx, tmp_path):
    import shutil
    data = tmp_path / "IJBC"
    shutil.copytree(tree["root"], data)
    (data / "loose_crop" / "img_5.png").write_bytes(b"not an image")
    r = _run_tool("--model", lookup_onnx, "--data", data, "--output", tmp_path / "o")
    assert r.returncode == 2
    assert "img_5.png" in r.stderr and "ijbc_name_5pts_score.txt:6" in r.stderr
    (data / "loose_crop" / "img_5.png").unlink()
    r = _run_tool("--model", lookup_onnx, "--data", data, "--output", tmp_path / "o")
    assert r.returncode == 2 and "img_5.png" in r.stderr
    lines = (data / "meta" / "ijbc_name_5pts_score.txt").read_text().splitlines()
    (data / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lines[:-1]) + "\n")
    r = _run_tool("--model", lookup_onnx, "--data", data, "--output", tmp_path / "o")
    assert r.returncode == 2 and "ijbc_face_tid_mid.txt has 40 rows" in r.stderr and "39 rows" in r.stderr
    (data / "meta" / "ijbc_name_5pts_score.txt").write_text("\n".join(lines) + "\n")
    shutil.rmtree(data / "loose_crop")
    r = _run_tool("--model", lookup_onnx, "--data", data, "--output", tmp_path / "o")
    assert r.returncode == 2 and "loose_crop" in r.stderr
    r = _run_tool("--model", lookup_onnx, "--data", tmp_path / "nowhere", "--output", tmp_path / "o")
    assert r.returncode == 2 and "ijbc_face_tid_mid.txt" in r.stderr
    assert not (tmp_path / "o" / "ijbc.json").exists()


def test_onnx_path_equals_torch_path(tree, tmp_path):
    path = export_tiny_onnx(tmp_path / "tiny.onnx")
    a = evaluate_ijb(FeatureExtractor(TinyCNN()), tree["root"], load_batch=16, workers=0)
    b = evaluate_ijb(FeatureExtractor(str(path)), tree["root"], load_batch=16, workers=2)
    np.testing.assert_allclose(a["scores"], b["scores"], atol=1e-5)
    assert a["tar_at_far"] == b["tar_at_far"]
    assert [x["TAR@FAR=1e-1"] for x in a["quality_bins"]] == [x["TAR@FAR=1e-1"] for x in b["quality_bins"]]
