"""tools/gpu_check.py --cpu-dry-run: the GPU check's orchestration, exercised on the CPU.

The full dry run (environment, the CUDA unit tests, 1- and 2-process training through
tools/bench_train.py on gloo) needs ARCFACE_TORCH_ROOT. Without it, a stage that fails or times out
is still reported in the JSON while the others run.
"""
import json
import os
import sys

import pytest

from _proc import ROOT, run_guarded

CHECK = ROOT / "tools" / "gpu_check.py"
STAGES = ("environment", "cuda_unit_tests", "train_one", "train_all")
ARM_FIELDS = ("samples_per_s", "step_s", "s_per_row", "peak_memory_bytes", "memory_kind", "grad_scale",
              "skipped_steps", "syncs_per_step", "plugin_sync_ops_per_step", "images_per_step", "rows_per_step",
              "world_size", "ok")


def _check(*flags, env=None, timeout=400):
    r = run_guarded([sys.executable, CHECK, "--cpu-dry-run", *flags], timeout,
                    env={**os.environ, "PYTHONPATH": str(ROOT), **(env or {})})
    return r, json.loads(r.stdout.strip().splitlines()[-1])


def _assert_cuda_tests_skipped(stage):
    assert stage["status"] == "ok" and stage["all_skipped"] is True
    assert stage["failed"] == stage["error"] == stage["passed"] == 0
    names = {t["name"].split("[")[0] for t in stage["tests"]}
    assert {"test_qgface_head_with_fp16_autocast_embeddings_matches_the_cpu", "test_device_batches_on_cuda_yield_the_cpu_batches",
            "test_qgface_step_makes_no_host_sync", "test_fp16_step_with_an_inf_skips_and_backs_off"} <= names
    for t in stage["tests"]:
        assert t["outcome"] == "skipped" and "CUDA" in t["message"], t


@pytest.mark.upstream
def test_cpu_dry_run_reports_every_stage_and_field(tmp_path):
    r, res = _check("--output", str(tmp_path / "check.json"))
    assert r.returncode == 0, r.stdout[-4000:]
    assert json.loads((tmp_path / "check.json").read_text()) == res
    assert res["tool"] == "gpu_check" and res["mode"] == "cpu-dry-run" and res["ok"] is True
    assert res["failed_stages"] == [] and res["total_s"] > 0
    assert set(res["stages"]) == set(STAGES)
    env = res["stages"]["environment"]
    assert env["status"] == "ok" and env["cuda_available"] is False and env["torch"] and env["device_count"] == 0
    _assert_cuda_tests_skipped(res["stages"]["cuda_unit_tests"])
    for name, nproc in (("train_one", 1), ("train_all", 2)):
        st = res["stages"][name]
        assert st["status"] == "ok" and st["nproc"] == nproc, st
        assert set(st["arms"]) == {"qgface_gate", "qgface_subset", "arcface_rows"}
        for arm, figures in st["arms"].items():
            assert set(ARM_FIELDS) <= set(figures), (name, arm)
            assert figures["ok"] and figures["world_size"] == nproc and figures["samples_per_s"] > 0
            assert figures["peak_memory_bytes"] > 0 and figures["skipped_steps"] == 0
        assert st["arms"]["qgface_gate"]["rows_per_step"] == st["arms"]["arcface_rows"]["rows_per_step"]
        for q in ("qgface_gate", "qgface_subset"):
            ratio = st["ratios"][q]
            assert ratio["per_row_vs_arcface"] > 0 and ratio["peak_memory_vs_arcface"] > 0
        assert st["syncs_per_step"] is not None or st["syncs_reason"]
        assert st["device"] == "cpu" and "bench_train.py" in st["command"]


def test_failed_and_timed_out_stages_are_reported_and_the_rest_runs(tmp_path):
    """No arcface_torch: the training stage fails (reported with the runs' errors); a unit-test stage
    given 1 s times out; the environment stage still reports, and the exit code says it failed."""
    r, res = _check("--stage-timeout", "60", "1", "120", "120", "--skip", "train_all",
                    "--arcface-root", str(tmp_path / "no_arcface_torch"), timeout=300)
    assert r.returncode == 1 and res["ok"] is False
    st = res["stages"]
    assert st["environment"]["status"] == "ok"
    assert st["cuda_unit_tests"]["status"] == "timeout" and "timed out" in st["cuda_unit_tests"]["error"]
    assert st["train_one"]["status"] == "failed"
    assert all(not a["ok"] and a["error"] for a in st["train_one"]["arms"].values())
    assert st["train_all"] == {"status": "skipped", "reason": "--skip"}
    assert res["failed_stages"] == ["cuda_unit_tests", "train_one"]


def test_cuda_unit_tests_alone_are_skipped_on_the_cpu():
    r, res = _check("--skip", "train_one", "train_all", timeout=200)
    assert r.returncode == 0 and res["ok"] is True
    _assert_cuda_tests_skipped(res["stages"]["cuda_unit_tests"])
