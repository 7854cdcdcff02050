"""qgface_plugin.eval.tinyface (TinyFace CMC protocol) and tools/eval_tinyface.py."""
import csv
import json
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import eval_tinyface as tool
from _models import TinyCNN, export_tiny_onnx
from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval import erc
from qgface_plugin.eval.tinyface import list_tinyface, resolve_root


# ------------------------------------------------------------------------------------------ listing
def _img(seed, size=112):
    """A smooth random image (8x8 blocks upsampled), so that different seeds embed differently."""
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)


def _tree(base: Path, sub="aligned_pad_0.1_pad_high"):
    root = base / sub if sub else base
    for f in ("Probe", "Gallery_Match", "Gallery_Distractor"):
        (root / f).mkdir(parents=True)
    for ident in (1, 2, 3):  # probe = a copy of a gallery image of the same identity
        cv2.imwrite(str(root / "Probe" / f"{ident}_1.jpg"), _img(ident))
        cv2.imwrite(str(root / "Gallery_Match" / f"{ident}_2.jpg"), _img(ident))
        cv2.imwrite(str(root / "Gallery_Match" / f"{ident}_3.jpg"), _img(100 + ident, size=32))  # resized on load
    for k in range(4):
        cv2.imwrite(str(root / "Gallery_Distractor" / f"{k:05d}.jpg"), _img(200 + k))
    (root / "Gallery_Distractor" / "notes.txt").write_text("not an image")
    return root


def test_list_tinyface(tmp_path):
    root = _tree(tmp_path)
    assert resolve_root(tmp_path) == root
    lst = list_tinyface(tmp_path)
    assert lst["root"] == root
    np.testing.assert_array_equal(lst["probe_ids"], [1, 2, 3])
    np.testing.assert_array_equal(lst["gallery_ids"], [1, 1, 2, 2, 3, 3, -1, -1, -1, -1])
    assert (lst["n_match"], lst["n_distractor"]) == (6, 4)
    assert [p.name for p in lst["gallery_paths"][-4:]] == [f"{k:05d}.jpg" for k in range(4)]


def test_list_tinyface_errors(tmp_path):
    root = _tree(tmp_path / "a", sub=None)
    for p in (root / "Gallery_Distractor").iterdir():
        p.unlink()
    (root / "Gallery_Distractor").rmdir()
    with pytest.raises(QGFaceInputError, match="Gallery_Distractor"):
        list_tinyface(root)
    root = _tree(tmp_path / "b", sub="tinyface/Testing_Set")
    cv2.imwrite(str(root / "Probe" / "noident.jpg"), _img(0))
    with pytest.raises(QGFaceInputError, match="noident.jpg"):
        list_tinyface(tmp_path / "b")
    with pytest.raises(QGFaceInputError, match="no Probe"):
        list_tinyface(tmp_path / "b" / "tinyface" / "Testing_Set" / "Probe")
    (tmp_path / "c" / "Probe").mkdir(parents=True)
    with pytest.raises(QGFaceInputError, match="Probe: TinyFace folder holds no images"):
        list_tinyface(tmp_path / "c")
    cv2.imwrite(str(tmp_path / "c" / "Probe" / "1_1.jpg"), _img(0))
    with pytest.raises(QGFaceInputError, match="Gallery_Match: TinyFace folder not found"):
        list_tinyface(tmp_path / "c")


# --------------------------------------------------------------------------------------- end to end
def tiny_norms(paths):
    """Raw feature norms of image files under TinyCNN, computed here without the package's extractor."""
    imgs = []
    for p in paths:
        bgr = cv2.imread(str(p), cv2.IMREAD_COLOR)
        if bgr.shape[:2] != (112, 112):
            bgr = cv2.resize(bgr, (112, 112), interpolation=cv2.INTER_LINEAR)
        imgs.append(bgr[:, :, ::-1])
    x = torch.from_numpy(((np.stack(imgs) / 255.0 - 0.5) / 0.5).transpose(0, 3, 1, 2).astype(np.float32))
    with torch.no_grad():
        return np.linalg.norm(TinyCNN().eval()(x).numpy(), axis=1)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_tool_end_to_end_onnx(tmp_path, capsys):
    root = _tree(tmp_path / "data")
    model = tmp_path / "tiny.onnx"
    export_tiny_onnx(model)
    out = tmp_path / "out"
    rc = tool.main(["--model", str(model), "--data", str(tmp_path / "data"), "--output", str(out),
                    "--batch-size", "4"])
    assert rc == 0
    rep = json.loads((out / "tinyface.json").read_text())
    assert set(rep["cmc"]) == {"rank1", "rank5", "rank20"}
    assert rep["cmc"]["rank1"] == 1.0  # every probe is a copy of one of its gallery images
    assert rep["cmc"]["rank1"] <= rep["cmc"]["rank5"] <= rep["cmc"]["rank20"] == 1.0
    assert rep["counts"] == {"probes": 3, "gallery_match": 6, "distractors": 4, "identities": 3}
    assert rep["root"].endswith("aligned_pad_0.1_pad_high")
    assert len(rep["quality_bins"]) == 3 and rep["flip"] == "sum"
    md = (out / "tinyface.md").read_text()
    assert "rank-1" in md and "100.00" in md and "lowest" in md
    assert "rank-20" in capsys.readouterr().out
    # the quality of every image: probes, gallery matches, distractors, with independently computed norms
    assert rep["quality_file"] == "tinyface_quality.csv"
    rows = read_csv(out / "tinyface_quality.csv")
    assert list(rows[0]) == ["role", "file", "identity", "norm", "rank"]
    assert [r["role"] for r in rows] == ["probe"] * 3 + ["gallery_match"] * 6 + ["distractor"] * 4
    assert [r["file"] for r in rows[:4]] == ["Probe/1_1.jpg", "Probe/2_1.jpg", "Probe/3_1.jpg", "Gallery_Match/1_2.jpg"]
    assert rows[-1]["file"] == "Gallery_Distractor/00003.jpg"
    assert [int(r["identity"]) for r in rows] == [1, 2, 3, 1, 1, 2, 2, 3, 3, -1, -1, -1, -1]
    assert [r["rank"] for r in rows] == ["1"] * 3 + [""] * 10
    np.testing.assert_allclose([float(r["norm"]) for r in rows], tiny_norms([root / r["file"] for r in rows]),
                               rtol=2e-5)
    # bad inputs: exit 2 with a message
    assert tool.main(["--model", str(model), "--data", str(tmp_path / "nope"), "--output", str(out)]) == 2
    assert tool.main(["--model", str(tmp_path / "m.pt"), "--data", str(tmp_path / "data"), "--output", str(out)]) == 2
    assert "error:" in capsys.readouterr().err
    # error-versus-reject: rank-1 error of the probes kept, the random baseline, the plot and the items file
    e = rep["erc"]
    assert e["metric"] == "rank1_error" and e["fractions"] == list(erc.DEFAULT_FRACTIONS) and e["items"] == 3
    assert {"norm", "random", "rejected", "tie_rule", "quality"} <= set(e) and {"error", "auc"} <= set(e["norm"])
    assert e["norm"]["error"][0] == e["random"]["error"][0] == 1 - rep["cmc"]["rank1"]
    assert {"draws", "mean", "low", "high", "auc_low", "auc_high"} <= set(e["random"]["band"])
    assert rep["erc_plot"] == "tinyface_erc.png" and (out / "tinyface_erc.png").read_bytes()[:4] == b"\x89PNG"
    assert "| probes norm | 0.00 |" in md and "Error-versus-reject" in md
    assert rep["items_file"] == "tinyface_items.npz"
    with np.load(out / "tinyface_items.npz") as items:
        assert items["probe_rank"].tolist() == [1, 1, 1] and len(items["probe_norm"]) == 3
    with pytest.raises(SystemExit) as exit_info:
        tool.main(["--model", str(model), "--data", str(tmp_path / "data"), "--output", str(out),
                   "--erc-fractions", "0.5", "0.2"])
    assert exit_info.value.code == 2 and "strictly increasing" in capsys.readouterr().err


def test_tool_cache_reuses_features_and_keys_on_files(tmp_path, capsys):
    root = _tree(tmp_path / "data")
    model = tmp_path / "tiny.onnx"
    export_tiny_onnx(model)
    cache = tmp_path / "cache"
    args = ["--model", str(model), "--data", str(tmp_path / "data"), "--cache", str(cache), "--workers", "2"]
    assert tool.main(args + ["--output", str(tmp_path / "o1")]) == 0
    dirs = sorted(p.name.split("-")[:2] for p in cache.iterdir())
    assert dirs == [["tinyface", "gallery"], ["tinyface", "probes"]]
    stamp = {p: p.stat().st_mtime_ns for p in cache.rglob("shard_*.npz")}
    assert tool.main(args + ["--output", str(tmp_path / "o2")]) == 0
    assert {p: p.stat().st_mtime_ns for p in cache.rglob("shard_*.npz")} == stamp  # read back, not rewritten
    r1, r2 = (json.loads((tmp_path / o / "tinyface.json").read_text()) for o in ("o1", "o2"))
    assert r1["cmc"] == r2["cmc"] and r1["quality_bins"] == r2["quality_bins"]
    # a changed probe image is a new item list: the probes get a new cache folder, the gallery is reused
    cv2.imwrite(str(root / "Probe" / "1_1.jpg"), _img(2))
    assert tool.main(args + ["--output", str(tmp_path / "o3")]) == 0
    assert len(list(cache.iterdir())) == 3
    r3 = json.loads((tmp_path / "o3" / "tinyface.json").read_text())
    assert r3["cmc"]["rank1"] == pytest.approx(2 / 3)  # probe 1 now looks like identity 2
