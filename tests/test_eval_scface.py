"""qgface_plugin.eval.scface (SCface rank-1 per distance) and tools/eval_scface.py."""
import json
from pathlib import Path

import cv2
import numpy as np
import pytest

import eval_scface as tool
from _models import export_tiny_onnx
from test_eval_tinyface import read_csv, tiny_norms
from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.scface import list_scface, parse_key, rank1_by_distance, read_subjects, select_subjects


# ------------------------------------------------------------------------------------------- ranking
def test_rank1_by_distance_hand_placed():
    e = np.eye(4)
    gallery = np.stack([e[0] * 2.0, e[1], e[2] * 0.5, e[3]])
    gids = np.array([1, 2, 3, 4])
    # d1: one correct (subject 1 near e0), one wrong (subject 2 placed on subject 4's axis) -> 50 %
    # d2: both correct -> 100 %; d3: subject 3 placed on subject 1's axis -> 0 %
    probes = np.stack([e[0] * 0.3 + e[1] * 0.1, e[3] + e[1] * 0.2, e[2] * 7.0, e[1] + e[0] * 0.1, e[0] * 3.0])
    pids = np.array([1, 2, 3, 2, 3])
    dist = np.array([1, 1, 2, 2, 3])
    res, ranks = rank1_by_distance(probes, pids, dist, gallery, gids)
    assert res["rank1"] == pytest.approx({"d1": 0.5, "d2": 1.0, "d3": 0.0, "overall": 0.6})
    assert res["probes"] == {"d1": 2, "d2": 2, "d3": 1, "overall": 5}
    np.testing.assert_array_equal(ranks == 1, [True, False, True, True, False])
    # a distance without probes is None, not a crash
    res, _ = rank1_by_distance(probes[:2], pids[:2], dist[:2], gallery, gids)
    assert res["rank1"]["d2"] is None and res["probes"]["d3"] == 0
    # a tie with a non-mate counts against the probe (pessimistic, as for TinyFace)
    res, _ = rank1_by_distance(e[:1], [1], [1], np.stack([e[0], e[0] * 3]), [1, 2])
    assert res["rank1"]["d1"] == 0.0


def test_parse_key():
    assert parse_key("001_frontal") == ("gallery", 1)
    assert parse_key("051_frontal_2") == ("gallery", 51)
    assert parse_key("130_cam5_3") == ("probe", 130, 5, 3)
    assert parse_key("001_cam6_1")[0] == "skip" and parse_key("001_cam8")[0] == "skip"
    assert parse_key("001_L2")[0] == "skip"
    assert parse_key("001_cam9_1") is None and parse_key("001_cam1_4") is None and parse_key("x_cam1_1") is None


# ------------------------------------------------------------------------------------------ listing
def _img(seed, size=32):
    small = np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8)
    return cv2.resize(small, (size, size), interpolation=cv2.INTER_NEAREST)


SUBJECTS = (1, 51, 52, 131)


def _tree(base: Path, with_list=True):
    """Subjects 001/051/052/131; probes cam1_1, cam2_2, cam5_3 are copies of the frontal image, except
    001_cam1_1, which is a copy of 051's frontal (so it fails rank-1). IR keys are listed without images."""
    img = base / "aligned_dir"
    img.mkdir(parents=True)
    rows = []
    for s in SUBJECTS:
        cv2.imwrite(str(img / f"{s:03d}_frontal.jpg"), _img(s))
        rows.append(f"{s:03d}_frontal\t{s}")
        for key in (f"{s:03d}_cam1_1", f"{s:03d}_cam2_2", f"{s:03d}_cam5_3"):
            cv2.imwrite(str(img / f"{key}.jpg"), _img(51 if key == "001_cam1_1" else s))
            rows.append(f"{key}\t{s}")
        rows += [f"{s:03d}_cam6_1\t{s}", f"{s:03d}_cam7_2\t{s}", f"{s:03d}_cam8_3\t{s}", f"{s:03d}_L1\t{s}"]
    if with_list:
        (base / "all.txt").write_text("\n".join(rows) + "\n\n")
    return base


def test_list_scface_and_protocols(tmp_path):
    lst = list_scface(_tree(tmp_path))
    assert lst["gallery_keys"] == [f"{s:03d}_frontal" for s in SUBJECTS]
    np.testing.assert_array_equal(lst["gallery_ids"], SUBJECTS)
    assert len(lst["probes"]) == 12 and lst["skipped"] == 16
    assert {p[3] for p in lst["probes"]} == {1, 2, 5} and not any("cam6" in p[0] for p in lst["probes"])
    assert lst["probes"][0][0] == "001_cam1_1" and lst["probes"][0][1].name == "001_cam1_1.jpg"
    assert lst["probes"][0][2:] == (1, 1, 1)
    t80, label, keep = select_subjects(lst, "test80")
    assert label == "test80" and len(keep) == 80
    np.testing.assert_array_equal(t80["gallery_ids"], [51, 52])
    assert {p[2] for p in t80["probes"]} == {51, 52} and len(t80["probes"]) == 6
    assert select_subjects(lst, "all")[1] == "all"
    cus, label, _ = select_subjects(lst, "test80", subjects=[1, 131])
    assert label == "custom" and {p[2] for p in cus["probes"]} == {1, 131}
    with pytest.raises(QGFaceInputError, match="none of the"):
        select_subjects(lst, "all", subjects=[7])
    with pytest.raises(QGFaceInputError, match="protocol"):
        select_subjects(lst, "test50")
    # no all.txt: the images in aligned_dir are listed (no IR images there)
    lst2 = list_scface(_tree(tmp_path / "noidx", with_list=False))
    assert len(lst2["probes"]) == 12 and lst2["skipped"] == 0 and len(lst2["gallery_keys"]) == 4


def test_list_scface_errors(tmp_path):
    base = _tree(tmp_path / "a")
    txt = (base / "all.txt").read_text().splitlines()
    (base / "all.txt").write_text("\n".join(txt[:3] + ["001_mugshot_x\t1"] + txt[3:]) + "\n")
    with pytest.raises(QGFaceInputError, match=r"all.txt: line 4: key '001_mugshot_x'"):
        list_scface(base)
    base = _tree(tmp_path / "b")
    (base / "aligned_dir" / "052_cam2_2.jpg").unlink()
    with pytest.raises(QGFaceInputError, match=r"052_cam2_2.jpg: image for key"):
        list_scface(base)
    base = _tree(tmp_path / "c")
    (base / "aligned_dir" / "131_frontal.jpg").unlink()
    (base / "all.txt").write_text("".join(row + "\n" for row in (base / "all.txt").read_text().splitlines()
                                          if not row.startswith("131_frontal")))
    with pytest.raises(QGFaceInputError, match="subject 131 has probes but no frontal"):
        list_scface(base)
    with pytest.raises(QGFaceInputError, match="not found"):
        list_scface(tmp_path / "nope")
    (tmp_path / "empty").mkdir()
    with pytest.raises(QGFaceInputError, match="no all.txt"):
        list_scface(tmp_path / "empty")
    (tmp_path / "subj.txt").write_text("051\n# comment\n\n52\n")
    assert read_subjects(tmp_path / "subj.txt") == [51, 52]
    (tmp_path / "bad.txt").write_text("51\nabc\n")
    with pytest.raises(QGFaceInputError, match="line 2"):
        read_subjects(tmp_path / "bad.txt")


# --------------------------------------------------------------------------------------- end to end
def test_tool_end_to_end_onnx(tmp_path, capsys):
    data = _tree(tmp_path / "data")
    model = tmp_path / "tiny.onnx"
    export_tiny_onnx(model)
    out = tmp_path / "out"
    rc = tool.main(["--model", str(model), "--data", str(data), "--output", str(out), "--batch-size", "4"])
    assert rc == 0
    rep = json.loads((out / "scface.json").read_text())
    assert rep["protocol"] == "all" and rep["subjects"] == 4
    # 001_cam1_1 is 051's face: d1 = 3/4; every other probe is a copy of its own gallery image
    assert rep["rank1"] == pytest.approx({"d1": 0.75, "d2": 1.0, "d3": 1.0, "overall": 11 / 12})
    assert rep["probes"] == {"d1": 4, "d2": 4, "d3": 4, "overall": 12}
    assert rep["counts"] == {"gallery": 4, "probes": 12, "skipped_keys": 16}
    assert set(rep["per_camera"]) == {"cam1", "cam2", "cam5"} and len(rep["quality_bins"]) == 3
    md = (out / "scface.md").read_text()
    assert "protocol **all**" in md and "d1 (4.2 m)" in md and "| all | 75.00 | 100.00 | 100.00 |" in md
    assert "d3 (1.0 m)" in capsys.readouterr().out
    # the quality of every probe and gallery image, with independently computed norms
    assert rep["quality_file"] == "scface_quality.csv"
    rows = read_csv(out / "scface_quality.csv")
    assert list(rows[0]) == ["role", "key", "subject", "camera", "distance", "norm", "rank1_correct"]
    assert [r["role"] for r in rows] == ["probe"] * 12 + ["gallery"] * 4
    assert rows[0] == {**rows[0], "key": "001_cam1_1", "subject": "1", "camera": "1", "distance": "d1",
                       "rank1_correct": "0"}
    assert [r["rank1_correct"] for r in rows] == ["0"] + ["1"] * 11 + [""] * 4
    assert [r["distance"] for r in rows[:3]] == ["d1", "d2", "d3"] and rows[2]["camera"] == "5"
    assert rows[-1] == {**rows[-1], "key": "131_frontal", "subject": "131", "camera": "", "distance": ""}
    np.testing.assert_allclose([float(r["norm"]) for r in rows],
                               tiny_norms([data / "aligned_dir" / f"{r['key']}.jpg" for r in rows]), rtol=2e-5)
    # error-versus-reject over all 12 probes: at 0 the overall rank-1 error; the plot and the items file
    assert rep["erc"]["metric"] == "rank1_error" and rep["erc"]["items"] == 12
    assert rep["erc"]["norm"]["error"][0] == pytest.approx(1 / 12) and rep["erc"]["random"]["auc"] == pytest.approx(0.5 / 12)
    assert (out / rep["erc_plot"]).is_file() and "| probes random | 8.33 |" in md
    with np.load(out / rep["items_file"]) as items:
        assert items["probe_rank"].tolist()[0] > 1 and items["probe_distance"].tolist()[:3] == [1, 2, 3]

    rc = tool.main(["--model", str(model), "--data", str(data), "--output", str(out), "--protocol", "test80"])
    assert rc == 0
    rep = json.loads((out / "scface.json").read_text())
    assert rep["protocol"] == "test80" and rep["subjects"] == 2 and rep["subject_range"] == [51, 52]
    assert rep["rank1"] == pytest.approx({"d1": 1.0, "d2": 1.0, "d3": 1.0, "overall": 1.0})
    assert "protocol **test80**" in (out / "scface.md").read_text()
    assert {r["subject"] for r in read_csv(out / "scface_quality.csv")} == {"51", "52"}  # the protocol's images
    assert len(read_csv(out / "scface_quality.csv")) == 6 + 2

    (tmp_path / "subj.txt").write_text("001\n051\n")
    rc = tool.main(["--model", str(model), "--data", str(data), "--output", str(out), "--protocol", "test80",
                    "--subjects", str(tmp_path / "subj.txt")])
    assert rc == 0
    rep = json.loads((out / "scface.json").read_text())
    assert rep["protocol"] == "custom" and rep["subjects"] == 2 and rep["rank1"]["d1"] == 0.5
    capsys.readouterr()
    # bad inputs: exit 2 with a message
    assert tool.main(["--model", str(model), "--data", str(tmp_path / "nope"), "--output", str(out)]) == 2
    assert tool.main(["--model", str(tmp_path / "m.pt"), "--data", str(data), "--output", str(out)]) == 2
    assert tool.main(["--model", str(model), "--data", str(data), "--output", str(out),
                      "--subjects", str(tmp_path / "missing.txt")]) == 2
    assert "error:" in capsys.readouterr().err
