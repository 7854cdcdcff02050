"""tools/bench_train.py: the arms' overrides and the ratio arithmetic (no upstream needed), and a
``--quick`` run of the real loop end to end (needs ARCFACE_TORCH_ROOT; no timing is asserted)."""
import json
import os
import sys
from pathlib import Path

import pytest

from _proc import ROOT, run_guarded, tool

BENCH = ROOT / "tools" / "bench_train.py"


def _as_dict(overrides):
    return dict(item.split("=", 1) for item in overrides)


def test_arms_differ_only_in_loss_batch_and_images(tmp_path):
    bt = tool("bench_train")
    s = {**bt.QUICK, "batch": 8, "steps": 5, "overrides": ["lr=0.05"]}
    q = _as_dict(bt.arm_overrides("qgface_subset", s, 2, tmp_path / "o"))
    rows = _as_dict(bt.arm_overrides("arcface_rows", s, 2, tmp_path / "o"))
    images = _as_dict(bt.arm_overrides("arcface_images", s, 2, tmp_path / "o"))
    assert (q["loss"], q["qgface_hq_mode"], q["batch_size"], q["num_image"]) == ("qgface", "subset", "8", "80")
    assert (rows["loss"], rows["batch_size"], rows["num_image"]) == ("arcface", "16", "160")  # 2B single-view images
    assert (images["loss"], images["batch_size"], images["num_image"]) == ("arcface", "8", "80")
    shared = set(q) - {"loss", "qgface_hq_mode", "batch_size", "num_image"}
    assert shared == set(rows) - {"loss", "batch_size", "num_image"}
    assert all(q[k] == rows[k] == images[k] for k in shared)
    assert q["rec"] == "synthetic" and q["val_targets"] == "[]" and q["lr"] == "0.05"


def _arm(step_s, rows, wait=None, peak=1000):
    return {"step_s": step_s, "rows_per_step": rows, "s_per_row": step_s / rows, "peak_memory_bytes": peak,
            "compute_s": None if wait is None else step_s - wait}


def test_ratios_per_row_per_step_compute_and_memory():
    bt = tool("bench_train")
    arms = {"qgface_gate": _arm(1.1, 8, 0.1, 1100), "arcface_rows": _arm(1.0, 8, 0.0, 1000),
            "arcface_images": _arm(0.5, 4, 0.0, 800)}
    r = bt.ratios(arms, "qgface_gate")
    assert r["per_row_vs_equal_rows"] == pytest.approx(1.1)
    assert r["per_step_vs_equal_rows"] == pytest.approx(1.1)
    assert r["per_row_vs_equal_images"] == pytest.approx((1.1 / 8) / (0.5 / 4))
    assert r["per_step_vs_equal_images"] == pytest.approx(2.2)
    assert r["compute_per_row_vs_equal_rows"] == pytest.approx(1.0)
    assert r["peak_memory_vs_equal_rows"] == pytest.approx(1.1)
    assert r["per_row_vs_equal_rows_paired"] is None and r["per_row_vs_equal_rows_fastest"] is None
    arms["qgface_gate"]["s_per_row_by_round"] = {0: 6.0, 1: 1.0, 2: 2.2}
    arms["arcface_rows"]["s_per_row_by_round"] = {0: 3.0, 1: 1.0, 2: 2.0}   # round 0 under load
    r2 = bt.ratios(arms, "qgface_gate")
    assert r2["per_row_vs_equal_rows_paired"] == pytest.approx(1.1)   # median of 2.0, 1.0, 1.1
    assert r2["per_row_vs_equal_rows_fastest"] == pytest.approx(1.0)
    t = bt.check_targets("cpu", False, r)
    assert t["per_row"] == {"value": pytest.approx(1.1), "limit": 1.10, "met": True} and t["met"] is True
    t = bt.check_targets("cuda:0", True, r)
    assert t["per_row"]["met"] is False and t["peak_memory"]["met"] is True and t["met"] is False


def test_missing_data_wait_gives_no_compute_ratio():
    """summary.json without data_wait_s (older loops) and a launcher without it: compute ratios are None."""
    bt = tool("bench_train")
    arms = {"qgface_gate": _arm(1.1, 8), "arcface_rows": _arm(1.0, 8), "arcface_images": _arm(0.5, 4)}
    r = bt.ratios(arms, "qgface_gate")
    assert r["compute_per_row_vs_equal_rows"] is None and r["compute_per_step_vs_equal_images"] is None
    assert r["per_row_vs_equal_rows"] == pytest.approx(1.1)
    agg = bt.aggregate([{"step_s": 2.0, "samples_per_s": 4.0, "data_wait_s": None, "skipped_steps": 0},
                        {"step_s": 1.0, "samples_per_s": 8.0, "data_wait_s": None, "skipped_steps": 1},
                        {"error": "exit code 1"}])
    assert agg["rounds"] == 3 and agg["rounds_ok"] == 2 and agg["errors"] == ["exit code 1"]
    assert agg["step_s"] == 1.5 and agg["data_wait_s"] is None and agg["skipped_steps"] == 1
    assert agg["round_spread"] == 2.0


def _bench(*flags, timeout=300):
    r = run_guarded([sys.executable, BENCH, *flags], timeout, env={**os.environ, "PYTHONPATH": str(ROOT)})
    lines = r.stdout.strip().splitlines()
    return r, json.loads(lines[-1]), lines


@pytest.mark.upstream
def test_quick_run_reports_every_arm_and_ratio():
    r, res, lines = _bench("--quick")
    assert r.returncode == 0, r.stdout[-4000:]
    assert res["ok"] is True and res["tool"] == "bench_train" and res["profile"] == "quick"
    assert any("[round 1/1] qgface_gate: running" in line for line in lines)  # progress lines
    assert any(line.startswith("arm ") for line in lines)                     # the table
    arms = res["arms"]
    assert set(arms) == {"qgface_gate", "arcface_rows", "arcface_images"}
    b = res["settings"]["batch"]
    assert (arms["qgface_gate"]["images_per_step"], arms["qgface_gate"]["rows_per_step"]) == (b, 2 * b)
    assert (arms["arcface_rows"]["images_per_step"], arms["arcface_rows"]["rows_per_step"]) == (2 * b, 2 * b)
    assert (arms["arcface_images"]["images_per_step"], arms["arcface_images"]["rows_per_step"]) == (b, b)
    for a in arms.values():
        assert a["rounds_ok"] == 1 and a["step_s"] > 0 and a["samples_per_s"] > 0 and a["s_per_row"] > 0
        assert a["peak_memory_bytes"] > 0 and a["memory_kind"] == "peak_rss" and a["device"] == "cpu"
        assert a["skipped_steps"] == 0 and a["grad_scale"] is None   # fp32 on the CPU: no GradScaler
        assert a["data_wait_s"] is not None and a["data_wait_source"] and a["compute_s"] is not None
        assert "tools/train.py" in a["command"] and "rec=synthetic" in a["command"]
    ratios = res["ratios"]["qgface_gate"]
    for key in ("per_row_vs_equal_rows", "per_row_vs_equal_images", "per_step_vs_equal_rows",
                "per_step_vs_equal_images", "compute_per_row_vs_equal_rows", "compute_per_row_vs_equal_images",
                "peak_memory_vs_equal_rows", "peak_memory_vs_equal_images"):
        assert ratios[key] > 0, key
    assert ratios["per_row_vs_equal_rows_paired"] > 0 and ratios["per_row_vs_equal_rows_fastest"] > 0
    assert res["headline_per_row_ratio"] == ratios["per_row_vs_equal_rows"]
    assert res["targets"]["qgface_gate"]["kind"] == "cpu"
    assert res["targets"]["qgface_gate"]["per_row"]["limit"] == 1.10
    # syncs: counted (qgface_plugin.syncs present) or null with the reason
    if res["syncs_per_step"] is None:
        assert res["syncs_reason"]
    else:
        assert res["syncs_per_step"] >= 1 and res["syncs_method"]   # at least the step's non-finite flag
    assert res["round_spread_max"] == 1.0 and res["noisy"] is False   # one round
    m = res["machine"]
    assert m["cores"] >= 1 and m["cpu"] and len(m["loadavg_start"]) == 3


@pytest.mark.upstream
def test_a_failing_arm_is_reported_not_hidden():
    r, res, _ = _bench("--quick", "network='nope'", "--arms", "arcface_images", timeout=120)
    assert r.returncode == 1 and res["ok"] is False
    a = res["arms"]["arcface_images"]
    assert a["rounds_ok"] == 0 and a["errors"] and "exit code" in a["errors"][0]
    assert res["headline_per_row_ratio"] is None


def _processes_mentioning(text):
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if text in cmd and "--as-train-launcher" in cmd:
                found.append(cmd)
    return found


@pytest.mark.upstream
@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs /proc to look for left-over processes")
def test_sigterm_ends_the_running_training_run_too(tmp_path):
    """The runs have their own process group (so a timeout kills torchrun and its workers); a SIGTERM to
    the tool (a timeout of whatever runs it, gpu_check's included) must not leave one running."""
    import signal
    import subprocess
    import time
    proc = subprocess.Popen([sys.executable, str(BENCH), "--quick", "--workdir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            env={**os.environ, "PYTHONPATH": str(ROOT)})
    deadline = time.time() + 60
    while not _processes_mentioning(str(tmp_path)) and time.time() < deadline:
        time.sleep(0.2)
    assert _processes_mentioning(str(tmp_path)), "the first run did not start"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=30) == 128 + signal.SIGTERM
    time.sleep(0.5)
    assert not _processes_mentioning(str(tmp_path))
