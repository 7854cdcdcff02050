#!/usr/bin/env python
"""The prepared GPU check: one command, a few minutes on one GPU, one JSON object at the end.

Stages (each a subprocess with its own timeout, all within --budget seconds; a stage that fails or
times out is reported in the JSON and the next one still runs):

  environment      torch / CUDA / cuDNN / NCCL versions, the visible GPUs (name, memory, capability),
                   nvidia-smi's read-only query when it is there
  cuda_unit_tests  pytest tests/test_cuda.py: the QGFace head on CUDA with fp16 autocast embeddings vs
                   the CPU, DeviceBatches' side-stream prefetch vs the CPU, no host sync in a QGFace
                   step (sync debug mode "error"), the fp16 GradScaler step with an injected inf; each
                   test's outcome (skipped ones with the reason)
  train_one        tools/bench_train.py on 1 GPU: QGFace (qgface_hq_mode gate and subset) and its ArcFace
                   twin at equal forwarded rows, fp16, sample_rate 0.2, rec="synthetic" (r50 by default)
  train_all        the same on every visible GPU (torchrun); skipped with the reason when there is one

From each training run (its summary.json, through bench_train): images/s, seconds per step, the
QGFace/ArcFace ratio per forwarded row, peak memory (and its ratio), the GradScaler's scale, the
skipped (non-finite) steps and host syncs per step (sync debug mode warnings on CUDA).

It only reads the GPUs' state: it never resets, reconfigures or changes clocks, modes or MIG of a
device, and it leaves CUDA_VISIBLE_DEVICES as it finds it.

    python tools/gpu_check.py                    # on a GPU machine (needs arcface_torch)
    python tools/gpu_check.py --cpu-dry-run      # the same orchestration on CPU/gloo, tiny sizes (mbf,
                                                 # a few steps, 1 and 2 processes): exercises this script
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

from qgface_plugin import cli

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "tools" / "bench_train.py"
CUDA_TESTS = ROOT / "tests" / "test_cuda.py"
STAGES = ("environment", "cuda_unit_tests", "train_one", "train_all")
RUN_FIELDS = ("samples_per_s", "step_s", "s_per_row", "data_wait_s", "peak_memory_bytes", "memory_kind",
              "grad_scale", "skipped_steps", "syncs_per_step", "plugin_sync_ops_per_step", "images_per_step",
              "rows_per_step", "world_size", "device_name")

ENV_SCRIPT = r"""
import json, os, torch
out = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(),
       "cuda_version": torch.version.cuda, "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
       "device_count": torch.cuda.device_count() if torch.cuda.is_available() else 0, "devices": [],
       "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"), "cpu_count": os.cpu_count()}
try:
    out["nccl"] = ".".join(map(str, torch.cuda.nccl.version())) if torch.cuda.is_available() else None
except Exception as exc:
    out["nccl"] = f"unknown ({exc})"
for i in range(out["device_count"]):
    p = torch.cuda.get_device_properties(i)
    out["devices"].append({"index": i, "name": p.name, "total_memory_bytes": p.total_memory,
                           "capability": f"{p.major}.{p.minor}", "multiprocessors": p.multi_processor_count})
print(json.dumps(out))
"""


def _run(cmd, timeout, env=None, cwd=ROOT):
    """(returncode or None on timeout, stdout+stderr text, seconds); on timeout the process group gets
    SIGTERM, then SIGKILL after 15 s."""
    t0 = time.time()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=env, cwd=str(cwd), start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=max(1.0, timeout))
        code = proc.returncode
    except subprocess.TimeoutExpired:
        # SIGTERM first: bench_train then ends its training run (its own process group) before exiting
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            out, _ = proc.communicate(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            out, _ = proc.communicate()
        code = None
    return code, out or "", round(time.time() - t0, 1)


def _tail(text, n=30):
    return "\n".join(text.strip().splitlines()[-n:])


def _last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{") and line.endswith("}"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def stage_environment(ctx, timeout):
    code, out, secs = _run([sys.executable, "-c", ENV_SCRIPT], timeout, env=ctx["env"])
    res = {"seconds": secs}
    info = _last_json(out)
    if code is None:
        return {**res, "status": "timeout", "error": f"timed out after {timeout:.0f} s\n{_tail(out)}"}
    if code != 0 or info is None:
        return {**res, "status": "failed", "error": f"exit code {code}\n{_tail(out)}"}
    res.update(info)
    if shutil.which("nvidia-smi"):  # a read-only query
        qcode, qout, _ = _run(["nvidia-smi", "--query-gpu=index,name,driver_version,memory.used,memory.total,"
                               "utilization.gpu", "--format=csv,noheader"], min(20.0, timeout), env=ctx["env"])
        res["nvidia_smi"] = qout.strip().splitlines() if qcode == 0 else f"exit code {qcode}: {_tail(qout, 3)}"
    ctx["device_count"] = info.get("device_count", 0)
    ctx["cuda"] = bool(info.get("cuda_available"))
    return {**res, "status": "ok"}


def _junit(path: Path) -> dict:
    tests = []
    for case in ET.parse(path).getroot().iter("testcase"):
        outcome, message = "passed", None
        for tag in ("failure", "error", "skipped"):
            el = case.find(tag)
            if el is not None:
                outcome = {"failure": "failed", "error": "error", "skipped": "skipped"}[tag]
                message = (el.get("message") or "").strip() or (el.text or "").strip()[:2000]
                if outcome != "skipped" and el.text:
                    message = f"{message}\n{el.text.strip()[-2000:]}"
                break
        tests.append({"name": case.get("name"), "outcome": outcome, "seconds": float(case.get("time") or 0),
                      "message": message})
    counts = {k: sum(t["outcome"] == k for t in tests) for k in ("passed", "failed", "error", "skipped")}
    return {"tests": tests, **counts}


def stage_unit_tests(ctx, timeout):
    xml = ctx["tmp"] / "cuda_tests.xml"
    cmd = [sys.executable, "-m", "pytest", "-q", "-rA", "-p", "no:cacheprovider", f"--junitxml={xml}", str(CUDA_TESTS)]
    code, out, secs = _run(cmd, timeout, env=ctx["env"])
    res = {"seconds": secs, "command": "python -m pytest -q -rA tests/test_cuda.py"}
    if code is None:
        res.update(status="timeout", error=f"timed out after {timeout:.0f} s\n{_tail(out)}")
    if xml.is_file():
        res.update(_junit(xml))
    elif code is not None:
        return {**res, "status": "failed", "error": f"pytest exit code {code}, no report\n{_tail(out)}"}
    if code is None:
        return res
    res["status"] = "ok" if code == 0 and not res.get("failed") and not res.get("error") else "failed"
    if res["status"] == "failed":
        res.setdefault("error", f"pytest exit code {code}\n{_tail(out)}")
    res["all_skipped"] = bool(res.get("tests")) and all(t["outcome"] == "skipped" for t in res["tests"])
    return res


def _train_args(ctx, nproc, timeout):
    a = ctx["args"]
    cores = os.cpu_count() or 2
    if ctx["dry_run"]:
        args = ["--quick", f"--threads={max(1, min(2, cores // nproc))}"]
    else:
        args = ["--profile", "gpu", f"--network={a.network}", f"--batch={a.batch}", f"--steps={a.steps}",
                f"--frequent={a.frequent}", f"--num-classes={a.num_classes}", "--sample-rate=0.2", "--fp16",
                f"--workers={max(2, min(8, cores // nproc))}", f"--threads={max(1, min(4, cores // nproc))}"]
    runs = 2 + 1  # qgface gate, qgface subset, arcface at equal rows
    return [*args, f"--nproc={nproc}", "--repeats=1", "--hq-modes", "gate", "subset",
            "--arms", "qgface", "arcface_rows", f"--timeout={max(30.0, timeout / runs - 5):.0f}"]


def _collect(bench: dict) -> dict:
    """The figures gpu_check reports from bench_train's JSON."""
    arms = {}
    for name, a in (bench.get("arms") or {}).items():
        arms[name] = {k: a.get(k) for k in RUN_FIELDS}
        arms[name]["ok"] = a.get("rounds_ok") == a.get("rounds")
        if a.get("errors"):
            arms[name]["error"] = a["errors"][0][-3000:]
    ratios = {q: {"per_row_vs_arcface": r.get("per_row_vs_equal_rows"),
                  "compute_per_row_vs_arcface": r.get("compute_per_row_vs_equal_rows"),
                  "peak_memory_vs_arcface": r.get("peak_memory_vs_equal_rows")}
              for q, r in (bench.get("ratios") or {}).items()}
    return {"arms": arms, "ratios": ratios, "targets": bench.get("targets"),
            "syncs_per_step": bench.get("syncs_per_step"), "syncs_reason": bench.get("syncs_reason"),
            "syncs_method": bench.get("syncs_method"), "device": (bench.get("machine") or {}).get("device"),
            "settings": bench.get("settings")}


def stage_train(ctx, timeout, nproc):
    cmd = [sys.executable, str(BENCH), *_train_args(ctx, nproc, timeout)]
    if ctx["args"].arcface_root:
        cmd.append(f"--arcface-root={ctx['args'].arcface_root}")
    code, out, secs = _run(cmd, timeout, env=ctx["env"])
    shown = " ".join(["python", "tools/bench_train.py", *[str(c) for c in cmd[2:]]])
    res = {"seconds": secs, "nproc": nproc, "command": shown}
    bench = _last_json(out)
    if code is None:
        return {**res, "status": "timeout", "error": f"timed out after {timeout:.0f} s\n{_tail(out)}"}
    if bench is None:
        return {**res, "status": "failed", "error": f"bench_train exit code {code}, no JSON\n{_tail(out)}"}
    res.update(_collect(bench))
    res["status"] = "ok" if code == 0 and bench.get("ok") else "failed"
    if res["status"] == "failed":
        res["error"] = f"bench_train exit code {code}; see the arms' errors"
    return res


def main(argv=None) -> int:
    p = cli.parser(__doc__)
    p.add_argument("--cpu-dry-run", action="store_true",
                   help="run the same stages on CPU/gloo with tiny sizes (mbf, a few steps, 1 and 2 processes)")
    p.add_argument("--budget", type=float, default=470.0,
                   help="seconds for all stages together; each stage gets at most what is left")
    p.add_argument("--stage-timeout", type=float, nargs=4, metavar=("ENV", "TESTS", "ONE", "ALL"),
                   default=(60.0, 150.0, 240.0, 240.0), help="seconds per stage, at most")
    p.add_argument("--skip", nargs="*", choices=STAGES, default=[], help="stages to leave out")
    p.add_argument("--network", default="r50", help="backbone of the training runs (r18 is faster)")
    p.add_argument("--batch", type=int, default=128, help="images per GPU of the QGFace runs")
    p.add_argument("--steps", type=int, default=40, help="steps per training run")
    p.add_argument("--frequent", type=int, default=10, help="steps per logged window, the first left out")
    p.add_argument("--num-classes", dest="num_classes", type=int, default=100_000,
                   help="classes of the training runs (Partial FC samples 20%%)")
    p.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT or third_party/)")
    p.add_argument("--output", help="also write the JSON object to this file (default: printed only)")
    args = p.parse_args(argv)
    if args.budget <= 0 or min(args.stage_timeout) <= 0:
        return cli.error(f"--budget and --stage-timeout must be > 0, got {args.budget:g} and "
                         f"{' '.join(f'{t:g}' for t in args.stage_timeout)}")
    if not args.cpu_dry_run and args.steps <= args.frequent:  # a dry run uses bench_train's --quick sizes
        return cli.error(f"--steps ({args.steps}) must exceed --frequent ({args.frequent}): bench_train leaves the "
                         "first window out")

    t_start = time.time()
    tmp = Path(tempfile.mkdtemp(prefix="gpu_check_"))
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    if args.cpu_dry_run:
        env["CUDA_VISIBLE_DEVICES"] = ""  # a dry run on a GPU machine still runs on the CPU (hides, changes nothing)
    ctx = {"args": args, "env": env, "tmp": tmp, "dry_run": args.cpu_dry_run, "device_count": 0, "cuda": False}
    timeouts = dict(zip(STAGES, args.stage_timeout))
    stages = {}
    mode = "cpu-dry-run" if args.cpu_dry_run else "gpu"
    print(f"gpu_check ({mode}): stages {', '.join(s for s in STAGES if s not in args.skip)}; budget {args.budget:.0f} s",
          flush=True)
    try:
        for name in STAGES:
            left = args.budget - (time.time() - t_start)
            if name in args.skip:
                stages[name] = {"status": "skipped", "reason": "--skip"}
            elif left < 15:
                stages[name] = {"status": "skipped", "reason": f"time budget spent ({args.budget:.0f} s)"}
            elif name == "environment":
                stages[name] = stage_environment(ctx, min(timeouts[name], left))
            elif name == "cuda_unit_tests":
                stages[name] = stage_unit_tests(ctx, min(timeouts[name], left))
            elif name == "train_one":
                if not args.cpu_dry_run and not ctx["cuda"]:
                    stages[name] = {"status": "skipped", "reason": "no CUDA device (use --cpu-dry-run on CPU)"}
                else:
                    stages[name] = stage_train(ctx, min(timeouts[name], left), 1)
            else:
                n = 2 if args.cpu_dry_run else ctx["device_count"]
                if n < 2:
                    stages[name] = {"status": "skipped", "nproc": n,
                                    "reason": f"{n} GPU visible: the all-GPU run would repeat train_one"}
                else:
                    stages[name] = stage_train(ctx, min(timeouts[name], left), n)
            st = stages[name]
            extra = ((st.get("reason") or (st.get("error") or "?").splitlines()[0]) if st["status"] != "ok" else "")
            print(f"[{name}] {st['status']}" + (f" in {st['seconds']} s" if "seconds" in st else "")
                  + (f": {extra}" if extra else ""), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    failed = [n for n, s in stages.items() if s["status"] in ("failed", "timeout")]
    result = {"tool": "gpu_check", "mode": mode, "ok": not failed, "failed_stages": failed,
              "total_s": round(time.time() - t_start, 1), "budget_s": args.budget, "stages": stages}
    text = json.dumps(result)
    if args.output:
        Path(args.output).write_text(text + "\n")
    print(text)
    return cli.EXIT_FAILED if failed else cli.EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
