"""tools/study.py --quick end to end: the real training loop, evaluation, report and resume (needs arcface_torch:
the arms are trained by qgface_plugin.arcface.training.train, which builds upstream's backbone and Partial FC;
the test skips without ARCFACE_TORCH_ROOT, with the reason conftest.py gives)."""
import json
import math
import sys

import pytest

from _proc import ROOT, clean_env, run_guarded

pytestmark = pytest.mark.upstream


def test_quick_study_trains_reports_and_resumes(tmp_path, arcface_root):
    cmd = [sys.executable, ROOT / "tools" / "study.py", "--quick", "--arms", "qgface,arcface", "--seeds", "1",
           "--bootstrap", "50", "--output", tmp_path]
    env = clean_env(ARCFACE_TORCH_ROOT=str(arcface_root))
    out = run_guarded(cmd, 900, env=env, cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-4000:]
    study = json.loads((tmp_path / "study.json").read_text())
    assert set(study["arms"]) == {"qgface", "arcface"} and study["reference"] == "qgface"
    q, a = study["arms"]["qgface"], study["arms"]["arcface"]
    # the same steps and forwarded rows per step: B images x 2 views, 2B images x 1 view
    assert q["steps"] == a["steps"] == 6 and q["rows_per_step"] == a["rows_per_step"] == 16
    assert a["images_per_step"] == 2 * q["images_per_step"]
    for arm in (q, a):
        assert set(arm["pairs"]) == {"HQ–HQ", "HQ–LQ", "LQ–LQ"}
        assert all(0.0 <= p["mean"] <= 1.0 for p in arm["pairs"].values())
        assert 0.0 <= arm["auroc"]["mean"] <= 1.0
        assert [p["step"] for p in arm["auroc_curve"]] == [3, 6]  # on_log: every --auroc-every steps and the last
    assert set(study["differences"]["arcface"]["pairs"]) == {"HQ–HQ", "HQ–LQ", "LQ–LQ"}
    for name in ("study.md", "study.png", "data/study_val_lqlq.bin", "runs/qgface/seed0/result.json"):
        assert (tmp_path / name).is_file(), name
    assert "ETA" in out.stdout and "qgface − baseline" in (tmp_path / "study.md").read_text()
    again = run_guarded(cmd, 300, env=env, cwd=tmp_path)
    assert again.returncode == 0, again.stdout[-4000:]
    assert again.stdout.count("done before, skipped") == 2 and "): training " not in again.stdout
    assert "data: reusing" in again.stdout


def test_quick_study_with_data_runs_the_suite_on_every_model(tmp_path, arcface_root):
    from qgface_plugin.synthetic import make_benchmarks
    bench = make_benchmarks(tmp_path / "bench", seed=0)
    out = tmp_path / "study"
    cmd = [sys.executable, ROOT / "tools" / "study.py", "--quick", "--arms", "qgface,arcface", "--seeds", "1",
           "--bootstrap", "20", "--data", tmp_path / "bench", "--output", out]
    r = run_guarded(cmd, 900, env=clean_env(ARCFACE_TORCH_ROOT=str(arcface_root)), cwd=tmp_path)
    assert r.returncode == 0, r.stdout[-4000:]
    study = json.loads((out / "study.json").read_text())
    for arm in ("qgface", "arcface"):
        summary = json.loads((out / "runs" / arm / "seed0" / "suite" / "summary.json").read_text())
        assert set(summary["benchmarks"]) >= {"verification", "tinyface", "scface_all", "ijbc"}, summary["benchmarks"]
        figures = study["arms"][arm]["suite"]
        assert figures and all(math.isfinite(v["mean"]) for v in figures.values() if v["mean"] is not None)
        assert any(key.startswith("ijbc / ") for key in figures), list(figures)
    diff = study["differences"]["arcface"]["suite"]
    assert diff and set(diff) <= set(study["arms"]["qgface"]["suite"])
    assert bench["counts"]["tinyface"]["probes"] > 0
    assert "## Evaluation suite on --data" in (out / "study.md").read_text()
