"""Tests for tools/bench_eval.py --quick: pair scoring, and ONNX Runtime vs torch extraction (needs upstream)."""
import json
import os
import subprocess
import sys

import pytest

from _proc import ROOT

BENCH = ROOT / "tools" / "bench_eval.py"


def _run(*flags, env_extra=None, timeout=120):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    env.update(env_extra or {})
    r = subprocess.run([sys.executable, str(BENCH), "--quick", *flags], capture_output=True, text=True,
                       env=env, timeout=timeout)
    assert r.returncode == 0, r.stderr
    lines = r.stdout.strip().splitlines()
    return json.loads(lines[-1]), lines[:-1]


def test_bench_eval_quick_scoring():
    res, _ = _run("--skip-extract")
    assert res["pairs"] == 20_000 and res["max_abs_diff"] < 1e-5 and res["matrix_s"] > 0
    assert res["images"] == 3_000 and res["pool_s"] > 0
    assert res["extract"] is None and res["extract_skipped"] == "--skip-extract"


def test_bench_eval_without_upstream_skips_extract(tmp_path):
    res, lines = _run("--skip-pairs", env_extra={"ARCFACE_TORCH_ROOT": str(tmp_path)})
    assert res["matrix_s"] > 0 and res["extract"] is None
    assert "ARCFACE_TORCH_ROOT" in res["extract_skipped"]
    assert sum(line.startswith("extract: skipped") for line in lines) == 1


@pytest.mark.upstream
def test_bench_eval_quick_extract():
    res, _ = _run()
    assert res["extract_skipped"] is None and res["max_abs_diff"] < 1e-5
    ext = res["extract"]
    assert ext["batch"] == 4 and ext["batches"] == 1 and ext["repeats"] == 1
    assert ext["torch_img_s"] > 0 and ext["onnx_img_s"] > 0 and ext["onnx_over_torch"] > 0
    assert ext["max_abs_diff"] < 1e-3 and ext["embedding_size"] == 512
    assert ext["threads"]["torch"] >= 1
