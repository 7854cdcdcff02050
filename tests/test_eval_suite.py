"""tools/eval_suite.py: every benchmark of a data root, one summary read from the tools' reports."""
import json
import shutil

import pytest

import _proc
from _models import export_tiny_onnx, verification_bins
from qgface_plugin.synthetic.ijb import make_ijb
from test_eval_scface import _tree as scface_tree
from test_eval_tinyface import _tree as tinyface_tree

suite = _proc.tool("eval_suite")


ALL = ["verification", "tinyface", "scface_all", "scface_test80", "ijbb", "ijbc"]
# the rows of the full run's tables, in order
LABELS = ["lfw (original)", "lfw (lr8)", "lfw (lr16)", "TinyFace", "SCface (all)", "SCface (test80)", "IJB-B", "IJB-C"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """ROOT/bins/lfw.bin, ROOT/TinyFace/, ROOT/scface/, ROOT/IJB_release/IJBC/, ROOT/IJBB/ and the tiny ONNX model."""
    base = tmp_path_factory.mktemp("suite")
    root = base / "root"
    verification_bins(base, root / "bins")
    tinyface_tree(root / "TinyFace")
    scface_tree(root / "scface")
    small = dict(num_subjects=4, templates_per_subject=2, medias_per_template=(1, 1), images_per_media=(1, 1))
    make_ijb(root / "IJB_release" / "IJBC", "IJBC", **small)
    make_ijb(root / "IJBB", "IJBB", seed=1, **small)
    return {"root": root, "model": export_tiny_onnx(base / "tiny.onnx"), "base": base}


@pytest.fixture(scope="module")
def full_run(data):
    out = data["base"] / "out"
    rc = suite.main(["--model", str(data["model"]), "--data", str(data["root"]), "--output", str(out),
                     "--batch-size", "16", "--lowres", "8", "16"])
    return rc, out, json.loads((out / "summary.json").read_text())


def _pct(x, sign=False):
    return "–" if x is None else f"{100 * x:+.2f}" if sign else f"{100 * x:.2f}"


def _report(out, summary, key):
    return json.loads((out / summary["benchmarks"][key]["report"]).read_text())


def test_discover_conventional_folders(data, tmp_path):
    found = suite.discover(data["root"])
    root = data["root"]
    assert found == {"bins": root / "bins", "tinyface": root / "TinyFace", "scface": root / "scface",
                     "ijbb": root / "IJBB", "ijbc": root / "IJB_release" / "IJBC"}
    shutil.copy(root / "bins" / "lfw.bin", tmp_path / "cplfw.bin")  # *.bin in ROOT itself, nothing else
    assert suite.discover(tmp_path) == {"bins": tmp_path, "tinyface": None, "scface": None, "ijbb": None,
                                        "ijbc": None}


def test_full_run_status_and_headline_figures(full_run, capsys):
    rc, out, s = full_run
    assert rc == 0
    assert list(s["benchmarks"]) == ALL
    assert all(s["benchmarks"][k]["status"] == "ok" and s["benchmarks"][k]["seconds"] >= 0 for k in ALL)
    assert s["flags"]["lowres"] == [8, 16] and s["flags"]["batch_size"] == 16 and s["model_info"]["kind"] == "onnx"
    v = _report(out, s, "verification")["results"]
    assert list(v["lfw"]) == ["original", "lr8", "lr16"]
    for var, row in v["lfw"].items():
        assert s["benchmarks"]["verification"]["headline"]["lfw"][var] == {"accuracy": row["accuracy"],
                                                                          "std": row["std"]}
    assert s["benchmarks"]["tinyface"]["headline"] == _report(out, s, "tinyface")["cmc"]
    for prot in ("all", "test80"):
        rep = _report(out, s, f"scface_{prot}")
        assert rep["protocol"] == prot and (out / f"scface_{prot}" / "scface.md").is_file()
        assert s["benchmarks"][f"scface_{prot}"]["headline"] == {"protocol": prot, **rep["rank1"]}
    for t in ("ijbb", "ijbc"):
        rep = _report(out, s, t)
        n_imp = rep["counts"]["impostor"]
        resolved = [k for k in rep["tar_at_far"] if float(k.split("=")[1]) * n_imp >= 1]
        assert s["benchmarks"][t]["headline"] == {**rep["tar_at_far"], "auc": rep["auc"], "resolved": resolved}
        assert (out / f"{t}_roc.png").is_file()
    md = (out / "summary.md").read_text()
    for link in ("verification.md", "tinyface.md", "scface_all/scface.md", "scface_test80/scface.md", "ijbb.md",
                 "ijbc.md", "ijbc_roc.png", "ijbb_roc.png"):
        assert f"]({link})" in md
    ijbc = s["benchmarks"]["ijbc"]["headline"]
    mark = {k: "" if k in ijbc["resolved"] else " †" for k in ijbc}
    assert (f"| IJB-C | {100 * ijbc['TAR@FAR=1e-5']:.2f}{mark['TAR@FAR=1e-5']} | "
            f"{100 * ijbc['TAR@FAR=1e-4']:.2f}{mark['TAR@FAR=1e-4']} | "
            f"{100 * ijbc['TAR@FAR=1e-3']:.2f}{mark['TAR@FAR=1e-3']} | "
            f"{100 * ijbc['TAR@FAR=1e-2']:.2f}{mark['TAR@FAR=1e-2']} |") in md
    assert ("† FAR below" in md) == any(mark.values())
    assert "| all | 75.00 | 100.00 | 100.00 |" in md  # SCface d1/d2/d3 of the tree, in percent


def test_full_run_quality_view(full_run):
    _, out, s = full_run
    rows = {r["label"]: r for r in s["quality_view"]}
    assert list(rows) == LABELS
    md = (out / "summary.md").read_text()
    expect = {"TinyFace": ("tinyface", "rank1", "rank-1 (probe quality)"),
              "SCface (all)": ("scface_all", "rank1", "rank-1 (probe quality)"),
              "IJB-B": ("ijbb", None, None), "IJB-C": ("ijbc", None, None)}
    for label, (key, field, figure) in expect.items():
        if field is None:  # IJB: FAR 1e-4, or the smallest decade the set resolves (>= 1 / impostor pairs)
            n_imp = _report(out, s, key)["counts"]["impostor"]
            field = next(f"TAR@FAR={f}" for f in ("1e-4", "1e-3", "1e-2", "1e-1") if float(f) * n_imp >= 1)
            figure = f"{field} (pair quality)"
        bins = _report(out, s, key)["quality_bins"]
        r = rows[label]
        assert r["figure"] == field and [r["lowest"], r["middle"], r["highest"]] == [b[field] for b in bins]
        assert r["gap"] == pytest.approx(bins[2][field] - bins[0][field])
        cells = [_pct(b[field]) for b in bins] + [_pct(r["gap"], sign=True)]
        assert f"| {label} | {figure} | " + " | ".join(cells) + " |" in md
    bins = _report(out, s, "verification")["results"]["lfw"]["lr8"]["quality_bins"]
    assert (rows["lfw (lr8)"]["lowest"], rows["lfw (lr8)"]["highest"]) == (bins[0]["accuracy"], bins[2]["accuracy"])


def test_explicit_folders_skip_and_error(data, tmp_path, capsys):
    broken = tmp_path / "scface"
    shutil.copytree(data["root"] / "scface", broken)
    for p in (broken / "aligned_dir").iterdir():
        p.unlink()  # all.txt lists keys without images
    out = tmp_path / "out"
    rc = suite.main(["--model", str(data["model"]), "--output", str(out), "--tinyface", str(data["root"] / "TinyFace"),
                     "--scface", str(broken), "--scface-protocols", "test80", "--lowres"])
    assert rc == 1
    err = capsys.readouterr().err
    assert "error: failed: SCface (test80)" in err
    s = json.loads((out / "summary.json").read_text())
    b = s["benchmarks"]
    assert list(b) == ["verification", "tinyface", "scface_test80", "ijbb", "ijbc"]
    assert b["tinyface"]["status"] == "ok" and b["tinyface"]["headline"] == _report(out, s, "tinyface")["cmc"]
    assert b["scface_test80"]["status"] == "error" and "image for key" in b["scface_test80"]["error"]
    assert "headline" not in b["scface_test80"]
    assert {b[k]["status"] for k in ("verification", "ijbb", "ijbc")} == {"skipped"}
    assert b["ijbc"]["reason"] == "no --ijbc (or --data)"
    assert [r["label"] for r in s["quality_view"]] == ["TinyFace"]
    md = (out / "summary.md").read_text()
    assert "| SCface (test80) | error |" in md and "| IJB-C | skipped |" in md


def test_tool_crash_is_recorded_and_the_rest_runs(data, tmp_path, monkeypatch, capsys):
    real = suite.load_tool

    class Crashing:
        @staticmethod
        def main(argv):
            raise RuntimeError("boom")

    monkeypatch.setattr(suite, "load_tool", lambda f: Crashing if f == "eval_tinyface.py" else real(f))
    out = tmp_path / "out"
    rc = suite.main(["--model", str(data["model"]), "--output", str(out), "--tinyface", str(data["root"] / "TinyFace"),
                     "--scface", str(data["root"] / "scface"), "--scface-protocols", "all"])
    assert rc == 1
    b = json.loads((out / "summary.json").read_text())["benchmarks"]
    assert b["tinyface"] == {**b["tinyface"], "status": "error", "error": "RuntimeError: boom"}
    assert b["scface_all"]["status"] == "ok"
    assert "RuntimeError: boom" in capsys.readouterr().err  # the traceback is shown


def test_nothing_to_run(data, tmp_path, capsys):
    assert suite.main(["--model", str(data["model"]), "--output", str(tmp_path / "o"), "--data", str(tmp_path)]) == 2
    io = capsys.readouterr()
    assert "no benchmark to run" in io.err and "skipped: TinyFace" in io.out
    assert not (tmp_path / "o" / "summary.json").exists()


def test_full_run_erc_table(full_run):
    _, out, s = full_run
    rows = {r["label"]: r for r in s["erc"]}
    assert list(rows) == LABELS
    md = (out / "summary.md").read_text()
    assert "## Error-versus-reject (%)" in md
    for label, r in rows.items():
        key = r["benchmark"]
        rep = _report(out, s, key)
        e = rep["results"]["lfw"][r["variant"]]["erc"] if key == "verification" else rep["erc"]
        assert r["auc_norm"] == e["norm"]["auc"] and r["auc_random"] == e["random"]["auc"]
        assert r["norm_at"] == e["norm"]["error"][4] and e["fractions"][4] == 0.2  # the error at 20% rejected
        assert r["random_at"] == e["random"]["error"][4] and r["unrejected"] == e["norm"]["error"][0]
        assert f"| {label} | {r['metric']} | {_pct(r['unrejected'])} | {_pct(r['auc_norm'])} | " in md
    assert rows["TinyFace"]["metric"] == "rank-1 error" and rows["IJB-C"]["metric"].startswith("FNMR@FAR=")
    assert rows["lfw (lr8)"]["metric"] == "FNMR@FMR=0.1"  # 20 impostor pairs do not resolve 1e-3
    assert s["flags"]["erc_fmr"] == 1e-3 and s["flags"]["erc_far"] == 1e-4
