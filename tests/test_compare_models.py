"""tools/compare_models.py end to end: two tiny models (.pt and .onnx) on small synthetic benchmarks, the side-by-side
table and the paired bootstrap; a model against itself differs by exactly 0."""
import json
import shutil
from pathlib import Path

import pytest
import torch

import _proc
from _models import TinyCNN, export_tiny_onnx, verification_bins
from qgface_plugin.eval import cli, compare
from qgface_plugin.synthetic.ijb import make_ijb
from qgface_plugin.synthetic.scface import make_scface
from qgface_plugin.synthetic.tinyface import make_tinyface

tool = _proc.tool("compare_models")

FAST = ["--bootstrap", "40", "--lowres", "8", "--scface-protocols", "all", "--batch-size", "32", "--erc-draws", "50"]


def _other_net():
    """A second tiny model: TinyCNN with seeded noise on its weights."""
    net = TinyCNN()
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * p.abs().mean() * torch.randn(p.shape, generator=g))
    return net.eval()


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    base = tmp_path_factory.mktemp("compare")
    root = base / "root"
    verification_bins(base, root / "bins")
    make_tinyface(root / "tinyface", num_identities=6, probes_per_identity=2, gallery_per_identity=1, distractors=6)
    make_scface(root / "scface", num_subjects=3, first_subject=50)
    make_ijb(root / "IJBC", "IJBC", num_subjects=4, templates_per_subject=2, medias_per_template=(1, 1),
             images_per_media=(1, 2), impostor_ratio=10 ** 9)
    torch.save(TinyCNN().state_dict(), base / "A.pt")
    torch.save(_other_net().state_dict(), base / "B.pt")
    return {"root": root, "base": base}


def _fake_loader(monkeypatch):
    """.pt models of the tiny test network without arcface_torch: ``--network tiny`` builds a TinyCNN."""
    real = cli.load_model
    seen = []

    def load(path, network=None, root=None):
        if str(path).endswith(".pt"):
            seen.append((Path(path).name, network))
            assert network == "tiny", network
            net = TinyCNN()
            net.load_state_dict(torch.load(path))
            return net.eval(), {"kind": "torch", "network": network, "embedding_size": 16}
        return real(path, network, root)
    monkeypatch.setattr(cli, "load_model", load)
    return seen


def _report(run_dir, name):
    return json.loads((run_dir / name).read_text())


def _rows(comp):
    return {(r["label"], r["figure"]): r for r in comp["rows"]}


def test_two_pt_models(data, tmp_path, monkeypatch, capsys):
    seen = _fake_loader(monkeypatch)
    out = tmp_path / "out"
    rc = tool.main([str(data["base"] / "A.pt"), str(data["base"] / "B.pt"), "--network", "tiny", "--data",
                    str(data["root"]), "--output", str(out), *FAST])
    assert rc == 0
    assert {("A.pt", "tiny"), ("B.pt", "tiny")} <= set(seen)
    assert {p.name for p in out.iterdir()} >= {"compare.md", "compare.json", "compare.png", "A", "B"}
    assert (out / "compare.png").read_bytes()[:4] == b"\x89PNG"
    printed = capsys.readouterr().out
    assert "[compare] [1/2] model A" in printed and "[compare] TinyFace: paired bootstrap, 40 resamples of 12 probes" in printed
    comp = json.loads((out / "compare.json").read_text())
    assert set(comp) >= {"models", "reference", "bootstrap", "benchmarks", "rows", "units"}
    assert [m["label"] for m in comp["models"]] == ["A", "B"] and comp["reference"] == "A"
    assert comp["models"][0]["network"] == "tiny" and comp["models"][0]["model_info"]["kind"] == "torch"
    assert comp["bootstrap"] == {**comp["bootstrap"], "resamples": 40, "seed": 0, "level": 0.95, "paired": True}
    assert {k: b["status"] for k, b in comp["benchmarks"].items()} == {
        "verification": "ok", "tinyface": "ok", "scface_all": "ok", "ijbb": "skipped", "ijbc": "ok"}
    assert comp["benchmarks"]["scface_all"]["sets"][0]["stratified"] is True
    for r in comp["rows"]:
        assert set(r) == {"benchmark", "set", "label", "figure", "kind", "values", "diff"}
        assert set(r["values"]) == {"A", "B"} and set(r["diff"]) == {"B"}
        d = r["diff"]["B"]
        assert set(d) == {"diff", "low", "high", "resamples"}
        if d["diff"] is not None and d["low"] is not None:
            assert d["diff"] == pytest.approx(r["values"]["B"] - r["values"]["A"]) and d["low"] <= d["high"]
    # every figure on the original items is the one in the model's own report
    rows = _rows(comp)
    for m in ("A", "B"):
        run = out / m
        tf = _report(run, "tinyface.json")
        assert rows[("TinyFace", "rank-1")]["values"][m] == tf["cmc"]["rank1"]
        assert rows[("TinyFace", "rank-20")]["values"][m] == tf["cmc"]["rank20"]
        for b in tf["quality_bins"]:
            assert rows[("TinyFace", f"rank-1, {b['bin']} third")]["values"][m] == b["rank1"]
        sc = _report(run, "scface_all/scface.json")
        assert rows[("SCface (all)", "rank-1 d1 (4.2 m)")]["values"][m] == sc["rank1"]["d1"]
        assert rows[("SCface (all)", "rank-1 overall")]["values"][m] == sc["rank1"]["overall"]
        assert rows[("SCface (all)", "rank-1, lowest third")]["values"][m] == sc["quality_bins"][0]["rank1"]
        ij = _report(run, "ijbc.json")
        assert rows[("IJB-C", "TAR@FAR=1e-1")]["values"][m] == ij["tar_at_far"]["TAR@FAR=1e-1"]
        for b in ij["quality_bins"]:
            assert rows[("IJB-C", f"TAR@FAR=1e-1, {b['bin']} third")]["values"][m] == b["TAR@FAR=1e-1"]
        ver = _report(run, "verification.json")["results"]["lfw"]
        for v in ("original", "lr8"):
            assert rows[(f"lfw ({v})", "accuracy")]["values"][m] == pytest.approx(ver[v]["accuracy"], abs=1e-12)
            assert rows[(f"lfw ({v})", "accuracy, highest third")]["values"][m] == ver[v]["quality_bins"][2]["accuracy"]
    md = (out / "compare.md").read_text()
    assert "| benchmark | figure | A | B | B − A [CI] |" in md and "[A/summary.md](A/summary.md)" in md
    r = rows[("TinyFace", "rank-1")]
    assert f"| TinyFace | rank-1 | {100 * r['values']['A']:.2f} | {100 * r['values']['B']:.2f} | " in md
    # seeded: the comparison of the same runs again gives the same intervals, another seed other ones
    runs = [{"label": m, "model": str(data["base"] / f"{m}.pt"), "network": "tiny", "dir": str(out / m)}
            for m in ("A", "B")]
    assert compare.compare_runs(runs, resamples=40, seed=0, log=lambda *a, **k: None)["rows"] == comp["rows"]
    assert compare.compare_runs(runs, resamples=40, seed=1, log=lambda *a, **k: None)["rows"] != comp["rows"]


def test_onnx_model_against_itself_differs_by_exactly_zero(data, tmp_path):
    pytest.importorskip("onnxruntime", reason="onnxruntime is not installed: the ONNX comparison is skipped")
    a = export_tiny_onnx(tmp_path / "a.onnx")
    shutil.copy(a, tmp_path / "a_copy.onnx")
    b = export_tiny_onnx(tmp_path / "b.onnx", _other_net())
    out = tmp_path / "out"
    rc = tool.main([str(a), str(tmp_path / "a_copy.onnx"), str(b), "--labels", "ref", "same", "other", "--data",
                    str(data["root"]), "--output", str(out), *FAST])
    assert rc == 0
    comp = json.loads((out / "compare.json").read_text())
    assert [m["model_info"]["kind"] for m in comp["models"]] == ["onnx"] * 3
    md = (out / "compare.md").read_text()
    assert "| benchmark | figure | ref | same | other | same − ref [CI] | other − ref [CI] |" in md
    moved = 0
    for r in comp["rows"]:
        assert r["values"]["same"] == r["values"]["ref"]
        d = r["diff"]["same"]
        if d["diff"] is not None:
            assert (d["diff"], d["low"], d["high"]) == (0.0, 0.0, 0.0)
        moved += r["diff"]["other"]["diff"] not in (None, 0.0)
    assert moved > 0  # the other model does differ
    assert "+0.00 [+0.00, +0.00]" in md


def test_bad_input(data, tmp_path, capsys):
    a = str(data["base"] / "A.pt")
    out = ["--data", str(data["root"]), "--output", str(tmp_path / "o")]
    for argv, msg in (([a] + out, "at least two models"),
                      ([a, a, "--network", "x", "y", "z"] + out, "one per model"),
                      ([a, a, "--labels", "A", "A"] + out, "distinct"),
                      ([a, a, "--bootstrap", "-1"] + out, "--bootstrap"),
                      ([a, a, "--erc-fractions", "0.3", "0.1"] + out, "strictly increasing")):
        with pytest.raises(SystemExit) as e:
            tool.main(argv)
        assert e.value.code == 2 and msg in capsys.readouterr().err
    assert tool.main([a, str(tmp_path / "missing.onnx"), "--network", "tiny"] + out) == 2
    assert "missing.onnx: model file not found" in capsys.readouterr().err
    assert tool.main([a, a] + out) == 2
    assert "--network is required" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()
    with pytest.raises(SystemExit):
        tool.parse_args(["--help"])
    shown = " ".join(capsys.readouterr().out.split())  # every flag shows its default
    assert "(default: 1000)" in shown and "(default: 0.95)" in shown and "(default: 0 0.05 0.1 0.15 0.2 0.25 0.3 0.35 0.4 0.45 0.5)" in shown
    assert "(default: 8 12 16 20)" in shown and "(default: all test80)" in shown
