#!/usr/bin/env python
"""Benchmark the whole training step, QGFace against its ArcFace twin, measured end to end.

Every arm is a real run of ``tools/train.py`` (``python -m torch.distributed.run`` for several
processes) on the same config, backbone and ``rec="synthetic"`` data (random images through the
real transforms: two views for QGFace, a flip for ArcFace), so the figures include the loader, the
backbone, the head, the optimizer step and everything the loop does per step. The arms:

  qgface_<mode>    QGFace, B images per rank -> 2B forwarded rows (one arm per --hq-modes entry)
  arcface_rows     ArcFace at equal forwarded rows: 2B single-view images per rank
  arcface_images   ArcFace at equal images: B images per rank

Runs alternate between the arms (the order rotates each round) for --repeats rounds, and each
figure is the median over the rounds of what the loop writes to ``<output>/summary.json``:
``step_s`` (median seconds per step over the logged windows after the first), ``samples_per_s``,
``data_wait_s`` (seconds per step spent waiting for the next batch; when the loop does not write
it, the launcher below measures it), ``peak_memory_bytes`` (peak RSS on CPU,
``max_memory_allocated`` on CUDA), the GradScaler's scale and the skipped (non-finite) steps.

The headline is QGFace/ArcFace per forwarded row (seconds per step / rows per step) against the
equal-rows arm; beside it the same against the equal-images arm, per-step ratios, compute-only
ratios (step_s - data_wait_s), the peak-memory ratio and host syncs per step. Targets: on CPU
(``mbf``, 2 threads) <= 1.10x per row; on GPU at fp16 <= 1.05x per row and <= 1.10x peak memory.

Syncs per step are counted by a small launcher (this file run with ``--as-train-launcher``) that
runs ``tools/train.py`` unchanged and wraps its ``train_step`` (forward, loss, optimizer step; not
the logging steps' reads nor the loader): on CUDA under ``torch.cuda.set_sync_debug_mode("warn")``,
counting its warnings, and on CPU with ``qgface_plugin.syncs.count_host_syncs()`` (ops that would
sync on CUDA; null with the reason where that module is missing), which on CUDA also runs, to name
the ops and say which are this package's ("plugin"). Counting costs time (``count_host_syncs``
pays a Python call per op), so only the steps of the loop's first logged window are counted, the
window its medians leave out; the first step (initialisation, cuDNN autotuning) is reported apart.
The same launcher measures the time spent waiting for the next batch, used when summary.json has
no ``data_wait_s``, and reads the GradScaler's scale at the end when summary.json has no ``grad_scale``.

    python tools/bench_train.py --profile cpu      # mbf, 2 threads, a few minutes on 2 cores
    python tools/bench_train.py --profile gpu      # r50, fp16, batch 128, sample_rate 0.2
    python tools/bench_train.py --quick            # tiny sizes, for the test
    python tools/bench_train.py --profile gpu --nproc 8 --hq-modes gate subset

The last line printed is one JSON object holding every figure. Needs arcface_torch
(``--arcface-root``, ``$ARCFACE_TORCH_ROOT`` or ``third_party/arcface_torch``).
"""
from __future__ import annotations

import contextlib
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from qgface_plugin import cli
from qgface_plugin.utils import cpu_model, free_port

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "tools" / "train.py"
LAUNCHER_FLAG = "--as-train-launcher"
HOOKS_ENV = "QGFACE_BENCH_HOOKS"        # launcher: write per-rank hook results to <value>.rank<r>.json
SKIP_ENV = "QGFACE_BENCH_SKIP_STEPS"    # launcher: steps left out of its medians (the loop's first window)
SYNC_MESSAGE = "synchroniz"             # torch: "called a synchronizing CUDA operation"

PROFILES = {
    # mbf, 2 threads: the CPU comparison (target <= 1.10x per forwarded row)
    "cpu": dict(config="qgface_demo_cpu", network="mbf", batch=16, steps=20, frequent=4, repeats=3,
                num_classes=1000, sample_rate=1.0, fp16=False, workers=1, threads=2, channels_last=True,
                embedding_size=None),
    # r50 at fp16 with Partial FC sampling: the GPU comparison (<= 1.05x per row, <= 1.10x memory)
    "gpu": dict(config="qgface_ms1mv2_r50", network="r50", batch=128, steps=60, frequent=10, repeats=3,
                num_classes=100_000, sample_rate=0.2, fp16=True, workers=8, threads=4, channels_last=False,
                embedding_size=None),
}
QUICK = dict(config="qgface_demo_cpu", network="mbf", batch=2, steps=3, frequent=1, repeats=1,
             num_classes=64, sample_rate=1.0, fp16=False, workers=0, threads=2, channels_last=True,
             embedding_size=32)
TARGETS = {"cpu": {"per_row": 1.10}, "cuda": {"per_row": 1.05, "peak_memory": 1.10}}
ARCFACE_ARMS = ("arcface_rows", "arcface_images")
NOISY_SPREAD = 1.25   # an arm whose rounds differ more than this in s/step ran on a busy machine


# ---------------------------------------------------------------------------------------------
# the launcher: runs tools/train.py unchanged in this process, with counting hooks around train_step
def _median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class _SyncCounter:
    """Counts the host syncs of one call of ``fn``; returns ``(result, {figure: count})``.

    ``syncs``: on CUDA the synchronising calls ``torch.cuda.set_sync_debug_mode("warn")`` reports (what
    the device really did); on CPU the ops ``qgface_plugin.syncs.count_host_syncs()`` records as ones that
    would sync on CUDA. ``sync_ops`` / ``plugin_sync_ops``: those ops, all and this package's only (when
    that module exists; on CUDA both run together). ``sites`` tallies where they come from.
    """

    def __init__(self, cuda: bool, count_host_syncs=None):
        self.cuda, self.count_host_syncs = cuda, count_host_syncs
        self.sites: dict[str, int] = {}
        self.method = ("torch.cuda.set_sync_debug_mode('warn')" if cuda else "qgface_plugin.syncs.count_host_syncs()")
        if cuda and count_host_syncs is not None:
            self.method += " (+ qgface_plugin.syncs.count_host_syncs() for the ops)"

    def _tally(self, key):
        self.sites[key] = self.sites.get(key, 0) + 1

    def __call__(self, fn):
        import warnings
        import torch
        log_cm = self.count_host_syncs() if self.count_host_syncs is not None else contextlib.nullcontext(None)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            previous = torch.cuda.get_sync_debug_mode() if self.cuda else None
            if self.cuda:
                torch.cuda.set_sync_debug_mode("warn")
            try:
                with log_cm as log:
                    result = fn()
            finally:
                if self.cuda:
                    torch.cuda.set_sync_debug_mode(previous)
        counts = {}
        n_warn = 0
        for w in caught:
            if SYNC_MESSAGE in str(w.message):
                n_warn += 1
                self._tally(f"cuda sync at {Path(w.filename).name}:{w.lineno}")
            else:
                warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
        if log is not None:
            plugin = [r for r in log if getattr(r, "in_plugin", False)]
            counts["sync_ops"], counts["plugin_sync_ops"] = len(log), len(plugin)
            for r in log:
                self._tally(f"{'plugin ' if getattr(r, 'in_plugin', False) else ''}"
                            f"{getattr(r, 'op', '?')} at {getattr(r, 'where', '?')}")
        counts["syncs"] = n_warn if self.cuda else counts.get("sync_ops")
        return result, counts


def _sync_counter(device_is_cuda: bool):
    """(counter or None, reason when None)."""
    if os.environ.get("QGFACE_BENCH_NO_SYNCS"):
        return None, "not counted (--no-syncs)"
    try:
        from qgface_plugin.syncs import count_host_syncs
    except ImportError as exc:
        if device_is_cuda:
            return _SyncCounter(True), None
        return None, (f"CPU run and qgface_plugin.syncs.count_host_syncs is not available ({exc}); "
                      "on CUDA the launcher counts torch.cuda.set_sync_debug_mode warnings")
    return _SyncCounter(device_is_cuda, count_host_syncs), None


def launcher(argv) -> int:
    """``bench_train.py --as-train-launcher <tools/train.py args>``: run tools/train.py with hooks."""
    import runpy
    import torch
    import qgface_plugin.arcface.training as training

    out_prefix = os.environ.get(HOOKS_ENV)
    skip = int(os.environ.get(SKIP_ENV, "0"))
    rank = int(os.environ.get("RANK", "0"))
    cuda = torch.cuda.is_available()
    counter, reason = _sync_counter(cuda)
    record = {"rank": rank, "torch": torch.__version__, "cuda": cuda,
              "device_name": torch.cuda.get_device_name(int(os.environ.get("LOCAL_RANK", "0"))) if cuda else None,
              "syncs_method": counter.method if counter else None, "syncs_reason": reason,
              "hooks": []}
    syncs, waits, scaler_box, errors = [], [], [], []

    original_step = getattr(training, "train_step", None)
    if original_step is None:
        record["syncs_reason"] = record["syncs_reason"] or "qgface_plugin.arcface.training has no train_step to wrap"
        counter = None
    else:
        calls = [0]

        def train_step(*args, **kwargs):
            if not scaler_box and kwargs.get("scaler") is not None:
                scaler_box.append(kwargs["scaler"])
            i = calls[0]
            calls[0] += 1
            # only the steps of the loop's first window (left out of its medians) are counted: the
            # counting costs time (count_host_syncs pays a Python call per op)
            if counter is None or i >= max(1, skip):
                return original_step(*args, **kwargs)
            try:
                result, counts = counter(lambda: original_step(*args, **kwargs))
            except Exception as exc:  # noted, and the loop's own error goes on up
                if not errors:
                    errors.append(f"{type(exc).__name__}: {exc}")
                raise
            syncs.append(counts)
            return result
        training.train_step = train_step
        record["hooks"].append("train_step")

    batches_cls = getattr(training, "DeviceBatches", None)
    if batches_cls is not None:
        class TimedBatches(batches_cls):
            def __iter__(self):
                it = super().__iter__()
                while True:
                    t0 = time.perf_counter()
                    try:
                        batch = next(it)
                    except StopIteration:
                        return
                    waits.append(time.perf_counter() - t0)
                    yield batch
        training.DeviceBatches = TimedBatches
        record["hooks"].append("DeviceBatches")

    code = 0
    sys.argv = [str(TRAIN), *argv]
    try:
        runpy.run_path(str(TRAIN), run_name="__main__")
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    finally:
        steady = syncs[1:] or syncs  # the first step also initialises (first_batch statistics, cuDNN autotuning)
        figures = {}
        for key in ("syncs", "sync_ops", "plugin_sync_ops"):
            values = [c[key] for c in steady if c.get(key) is not None]
            figures[f"{key}_per_step"] = _median(values)
            figures[f"{key}_per_step_max"] = max(values) if values else None
            figures[f"{key}_first_step"] = syncs[0].get(key) if syncs else None
        record.update({
            "steps_counted": len(syncs), **figures,
            "sync_sites": dict(sorted(getattr(counter, "sites", {}).items(), key=lambda kv: -kv[1])[:15]),
            "data_wait_s": _median(waits[skip:] or waits),
            "grad_scale": None, "scaler_enabled": None, "errors": errors,
        })
        if counter is None and record["syncs_reason"] is None:
            record["syncs_reason"] = "no step was counted"
        if scaler_box:
            scaler = scaler_box[0]
            record["scaler_enabled"] = bool(scaler.is_enabled())
            record["grad_scale"] = float(scaler.get_scale()) if scaler.is_enabled() else None
        if out_prefix:
            Path(f"{out_prefix}.rank{rank}.json").write_text(json.dumps(record))
    return code


# ---------------------------------------------------------------------------------------------
# the benchmark
def _loadavg():
    try:
        return [round(x, 2) for x in os.getloadavg()]
    except OSError:
        return None


def settings_from(args) -> dict:
    """Profile defaults (or --quick's) with the explicitly given flags on top."""
    base = dict(QUICK if args.quick else PROFILES[args.profile])
    for key in base:
        value = getattr(args, key, None)
        if value is not None:
            base[key] = value
    base["profile"] = "quick" if args.quick else args.profile
    return base


def arm_overrides(arm: str, s: dict, world: int, output: Path) -> list[str]:
    """``key=value`` overrides of tools/train.py for one arm (all arms share everything but these)."""
    common = [
        "rec=synthetic", f"network={s['network']}", f"num_classes={s['num_classes']}", "num_epoch=1",
        "warmup_epoch=0", "val_targets=[]", f"num_workers={s['workers']}", f"frequent={s['frequent']}",
        f"fp16={s['fp16']}", f"sample_rate={s['sample_rate']}", f"channels_last={s['channels_last']}",
        "verbose=1000000000", "save_all_states=False", f"output={output}",
    ]
    if s.get("embedding_size"):
        common.append(f"embedding_size={s['embedding_size']}")
    if arm.startswith("qgface"):
        batch = s["batch"]
        extra = ["loss=qgface", f"qgface_hq_mode={arm.split('_', 1)[1]}"]
    else:
        batch = 2 * s["batch"] if arm == "arcface_rows" else s["batch"]
        extra = ["loss=arcface"]
    return [*common, *extra, f"batch_size={batch}", f"num_image={s['steps'] * batch * world}",
            *s.get("overrides", [])]


def arm_command(arm, s, world, output, port=None) -> list[str]:
    launch = [sys.executable]
    if world > 1:
        launch += ["-m", "torch.distributed.run", f"--nproc_per_node={world}",
                   f"--master_port={port or free_port()}"]
    return [*launch, str(Path(__file__).resolve()), LAUNCHER_FLAG, s["config"], *arm_overrides(arm, s, world, output)]


def _display(cmd) -> str:
    """The equivalent tools/train.py command line (what a user would type), relative paths."""
    parts = [str(c) for c in cmd]
    i = parts.index(LAUNCHER_FLAG)
    launch = ["python" if parts[0] == sys.executable else parts[0], *parts[1:i - 1]]
    return " ".join([*launch, "tools/train.py", *(f'"{p}"' if "[" in p else p for p in parts[i + 1:])])


_RUNNING: list = []   # the training run in progress (its own process group)


def _kill_running(signum=None, frame=None):
    """On SIGTERM/SIGINT (or exit), end the running training run's whole process group too: it runs in
    its own session (so that a timeout can kill torchrun and its workers), out of reach of a signal
    sent to this tool's group."""
    for proc in list(_RUNNING):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    if signum is not None:
        sys.exit(128 + signum)


def run_arm(arm, s, world, workdir: Path, rnd: int, timeout: float, arcface_root=None, verbose=False) -> dict:
    """One run of tools/train.py for ``arm``; returns the figures of its summary.json (or the error)."""
    output = workdir / f"{arm}_r{rnd}"
    if output.exists():
        shutil.rmtree(output)
    hooks = workdir / f"{arm}_r{rnd}_hooks"
    cmd = arm_command(arm, s, world, output)
    if arcface_root:
        cmd.append(f"--arcface-root={arcface_root}")
    env = {**os.environ, HOOKS_ENV: str(hooks), SKIP_ENV: str(s["frequent"]),
           "OMP_NUM_THREADS": str(s["threads"]), "PYTHONUNBUFFERED": "1"}
    if s.get("no_syncs"):
        env["QGFACE_BENCH_NO_SYNCS"] = "1"
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            cwd=str(ROOT), start_new_session=True)
    _RUNNING.append(proc)
    lines = []
    killed = []

    def kill():  # a silent hang must end too: the watchdog kills the whole process group
        killed.append(True)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    watchdog = threading.Timer(timeout, kill)
    watchdog.start()
    try:
        for line in proc.stdout:  # progress lines stream through
            lines.append(line.rstrip("\n"))
            if verbose:
                print(f"    | {line.rstrip()}", flush=True)
        proc.wait()
    finally:
        watchdog.cancel()
        _RUNNING.remove(proc)
    timed_out = bool(killed)
    wall = time.time() - t0
    result = {"arm": arm, "round": rnd, "returncode": proc.returncode, "wall_s": round(wall, 1),
              "command": _display(cmd)}
    summary_path = output / "summary.json"
    if timed_out or proc.returncode != 0 or not summary_path.is_file():
        why = f"timed out after {timeout:.0f} s" if timed_out else f"exit code {proc.returncode}"
        result["error"] = f"{why}; last lines:\n" + "\n".join(lines[-25:])
        return result
    summary = json.loads(summary_path.read_text())
    hook = {}
    hook_file = Path(f"{hooks}.rank0.json")
    if hook_file.is_file():
        hook = json.loads(hook_file.read_text())
    ranks = sorted(hooks.parent.glob(hooks.name + ".rank*.json"))
    per_rank_syncs = [json.loads(p.read_text()).get("syncs_per_step") for p in ranks]
    qg = arm.startswith("qgface")
    images = summary.get("images_per_step")
    rows = summary.get("rows_per_step") or (images * (2 if qg else 1) if images else None)
    data_wait, wait_source = summary.get("data_wait_s"), "summary.json"
    if data_wait is None and hook.get("data_wait_s") is not None:
        data_wait, wait_source = hook["data_wait_s"], "launcher (time in next(batches); summary.json has none)"
    elif data_wait is None:
        wait_source = None
    grad_scale, scale_source = summary.get("grad_scale"), "summary.json"
    if grad_scale is None and hook.get("grad_scale") is not None:
        grad_scale, scale_source = hook["grad_scale"], "launcher (scaler.get_scale() after training)"
    elif grad_scale is None:
        scale_source = "fp16 off (no GradScaler)" if hook.get("scaler_enabled") is False else None
    nonfinite = summary.get("nonfinite_steps") or {}
    step_s = summary.get("step_s")
    result.update({
        "device": summary.get("device"), "device_name": hook.get("device_name"),
        "world_size": summary.get("world_size"), "steps": summary.get("steps"),
        "images_per_step": images, "rows_per_step": rows,
        "samples_per_s": summary.get("samples_per_s"), "step_s": step_s,
        "s_per_row": step_s / rows if step_s and rows else None,
        "data_wait_s": data_wait, "data_wait_source": wait_source,
        "compute_s": step_s - data_wait if step_s is not None and data_wait is not None else None,
        "peak_memory_bytes": summary.get("peak_memory_bytes"), "memory_kind": summary.get("memory_kind"),
        "grad_scale": grad_scale, "grad_scale_source": scale_source,
        "skipped_steps": nonfinite.get("skipped", 0) if isinstance(nonfinite, dict) else len(nonfinite),
        **{k: hook.get(k) for k in SYNC_KEYS}, "syncs_steps_counted": hook.get("steps_counted"),
        "syncs_per_step_by_rank": per_rank_syncs,
        "syncs_method": hook.get("syncs_method"), "syncs_reason": hook.get("syncs_reason") if hook else
        "launcher wrote no hook file", "sync_sites": hook.get("sync_sites", {}),
        "final_loss": (summary.get("final") or {}).get("loss"),
    })
    if step_s is None:
        result["error"] = (f"summary.json has no step_s: {summary.get('steps')} steps give no logged window "
                           f"after the first (frequent={s['frequent']}); raise --steps")
    return result


SYNC_KEYS = tuple(f"{k}_{w}" for k in ("syncs", "sync_ops", "plugin_sync_ops")
                  for w in ("per_step", "per_step_max", "first_step"))
MEDIAN_KEYS = ("samples_per_s", "step_s", "s_per_row", "data_wait_s", "compute_s", "peak_memory_bytes",
               "grad_scale", "syncs_per_step", "sync_ops_per_step", "plugin_sync_ops_per_step")


def aggregate(runs: list[dict]) -> dict:
    """Medians over an arm's successful rounds (and what is constant across them)."""
    ok = [r for r in runs if "error" not in r]
    out = {"rounds": len(runs), "rounds_ok": len(ok), "errors": [r["error"] for r in runs if "error" in r]}
    if not ok:
        return out
    for key in MEDIAN_KEYS:
        out[key] = _median([r.get(key) for r in ok])
    first = ok[0]
    for key in ("images_per_step", "rows_per_step", "world_size", "steps", "device", "device_name", "memory_kind",
                "data_wait_source", "grad_scale_source", "syncs_method", "syncs_reason", "command"):
        out[key] = first.get(key)
    out["step_s_all"] = [r["step_s"] for r in ok]
    out["s_per_row_by_round"] = {r["round"]: r["s_per_row"] for r in ok if r.get("round") is not None}
    out["round_spread"] = max(out["step_s_all"]) / min(out["step_s_all"]) if min(out["step_s_all"]) > 0 else None
    out["skipped_steps"] = max(r.get("skipped_steps") or 0 for r in ok)
    for key in SYNC_KEYS:
        if key not in MEDIAN_KEYS:
            values = [r[key] for r in ok if r.get(key) is not None]
            out[key] = (max(values) if values else None) if key.endswith("_max") else first.get(key)
    out["sync_sites"] = first.get("sync_sites", {})
    return out


def _ratio(a, b):
    return a / b if a is not None and b not in (None, 0) else None


def ratios(arms: dict, qgface_arm: str) -> dict:
    """QGFace/ArcFace ratios of one QGFace arm against both ArcFace arms."""
    q = arms.get(qgface_arm, {})
    out = {}
    for ref in ARCFACE_ARMS:
        a = arms.get(ref, {})
        tag = ref.split("_", 1)[1]
        rows_q, rows_a = q.get("rows_per_step"), a.get("rows_per_step")
        cq, ca = q.get("compute_s"), a.get("compute_s")
        out[f"per_row_vs_equal_{tag}"] = _ratio(q.get("s_per_row"), a.get("s_per_row"))
        out[f"per_step_vs_equal_{tag}"] = _ratio(q.get("step_s"), a.get("step_s"))
        out[f"compute_per_row_vs_equal_{tag}"] = (_ratio(cq / rows_q, ca / rows_a)
                                                  if None not in (cq, ca, rows_q, rows_a) else None)
        out[f"compute_per_step_vs_equal_{tag}"] = _ratio(cq, ca)
        out[f"peak_memory_vs_equal_{tag}"] = _ratio(q.get("peak_memory_bytes"), a.get("peak_memory_bytes"))
        # robust to load that drifts between rounds: the median of the rounds' own ratios (the arms of a
        # round run back to back), and the ratio of the fastest rounds
        qr, ar = q.get("s_per_row_by_round") or {}, a.get("s_per_row_by_round") or {}
        both = [qr[k] / ar[k] for k in qr if k in ar and qr[k] and ar[k]]
        out[f"per_row_vs_equal_{tag}_paired"] = _median(both) if both else None
        out[f"per_row_vs_equal_{tag}_fastest"] = (_ratio(min(qr.values()), min(ar.values()))
                                                  if qr and ar else None)
    return out


def check_targets(device: str | None, fp16: bool, r: dict) -> dict:
    kind = "cuda" if device and device.startswith("cuda") else "cpu"
    if kind == "cuda" and not fp16:
        return {"kind": kind, "note": "GPU targets are stated for fp16", "met": None}
    t = TARGETS[kind]
    checks = {"per_row": (r.get("per_row_vs_equal_rows"), t["per_row"])}
    if "peak_memory" in t:
        checks["peak_memory"] = (r.get("peak_memory_vs_equal_rows"), t["peak_memory"])
    out = {"kind": kind}
    for name, (value, limit) in checks.items():
        out[name] = {"value": value, "limit": limit, "met": None if value is None else value <= limit}
    out["met"] = (None if any(v["met"] is None for k, v in out.items() if isinstance(v, dict))
                  else all(v["met"] for v in out.values() if isinstance(v, dict)))
    return out


def _fmt(x, spec=".3f", none="-"):
    return none if x is None else format(x, spec)


def print_table(arms: dict, order: list[str], all_ratios: dict, targets: dict) -> None:
    head = (f"{'arm':<16}{'img/step':>9}{'rows':>6}{'step s':>9}{'ms/row':>8}{'wait s':>8}{'compute s':>10}"
            f"{'img/s':>8}{'peak MiB':>10}{'scale':>8}{'skip':>5}{'syncs':>7}{'plugin':>7}")
    print(head)
    print("-" * len(head))
    for name in order:
        a = arms[name]
        if not a.get("rounds_ok"):
            print(f"{name:<16} FAILED ({a['rounds'] - a['rounds_ok']} of {a['rounds']} runs): "
                  f"{(a['errors'] or ['?'])[0].splitlines()[0]}")
            continue
        peak = a.get("peak_memory_bytes")
        print(f"{name:<16}{a['images_per_step']:>9}{a['rows_per_step']:>6}{_fmt(a['step_s']):>9}"
              f"{_fmt(a['s_per_row'] and 1e3 * a['s_per_row'], '.2f'):>8}{_fmt(a['data_wait_s'], '.4f'):>8}"
              f"{_fmt(a['compute_s']):>10}{_fmt(a['samples_per_s'], '.1f'):>8}"
              f"{_fmt(peak and peak / 2 ** 20, '.0f'):>10}{_fmt(a['grad_scale'], '.0f'):>8}"
              f"{a['skipped_steps']:>5}{_fmt(a['syncs_per_step'], 'g'):>7}"
              f"{_fmt(a['plugin_sync_ops_per_step'], 'g'):>7}")
    for q, r in all_ratios.items():
        print(f"{q} / ArcFace: per forwarded row {_fmt(r['per_row_vs_equal_rows'])}x vs equal rows, "
              f"{_fmt(r['per_row_vs_equal_images'])}x vs equal images; per step {_fmt(r['per_step_vs_equal_rows'])}x "
              f"(equal rows), {_fmt(r['per_step_vs_equal_images'])}x (equal images)")
        print(f"  per row vs equal rows, robust to drifting load: median of the rounds' own ratios "
              f"{_fmt(r['per_row_vs_equal_rows_paired'])}x, fastest round of each {_fmt(r['per_row_vs_equal_rows_fastest'])}x")
        print(f"  compute only (step - data wait) per row: {_fmt(r['compute_per_row_vs_equal_rows'])}x vs equal rows, "
              f"{_fmt(r['compute_per_row_vs_equal_images'])}x vs equal images; peak memory "
              f"{_fmt(r['peak_memory_vs_equal_rows'])}x (equal rows), {_fmt(r['peak_memory_vs_equal_images'])}x "
              f"(equal images)")
        t = targets.get(q, {})
        if t.get("met") is not None or t.get("note"):
            parts = [f"{k} {_fmt(v['value'])}x <= {v['limit']}x: {'met' if v['met'] else 'NOT met'}"
                     for k, v in t.items() if isinstance(v, dict)]
            print(f"  target ({t['kind']}): " + ("; ".join(parts) if parts else t.get("note", "")))


def build_parser():
    p = cli.parser(__doc__)
    g = p.add_argument_group("what to run")
    g.add_argument("--profile", choices=sorted(PROFILES), default="cpu",
                   help="size profile: cpu = mbf, batch 16, 20 steps, 2 threads, 3 rounds; gpu = r50, fp16, "
                        "batch 128, sample_rate 0.2, 100k classes, 60 steps, 3 rounds")
    g.add_argument("--quick", action="store_true", help="tiny sizes (mbf, batch 2, 3 steps, 1 round), for the test")
    g.add_argument("--nproc", type=int, default=1,
                   help="processes per run (torch.distributed.run when > 1; GPUs or gloo CPU ranks)")
    g.add_argument("--hq-modes", nargs="+", choices=["gate", "subset"], default=["gate"],
                   help="one QGFace arm per qgface_hq_mode; the first gives the headline")
    g.add_argument("--arms", nargs="+", choices=["qgface", *ARCFACE_ARMS], default=["qgface", *ARCFACE_ARMS],
                   help="arms to run (default: all)")
    g = p.add_argument_group("sizes (default: the profile's)")
    g.add_argument("--config", help="base config (name in recognition_configs/ or path); the ArcFace arms run it "
                                    "with loss=arcface (default: cpu qgface_demo_cpu, gpu qgface_ms1mv2_r50)")
    g.add_argument("--network", help="backbone (default: cpu mbf, gpu r50)")
    g.add_argument("--batch", type=int, help="B, images per rank of the QGFace arm (default: cpu 16, gpu 128)")
    g.add_argument("--steps", type=int, help="steps per run (default: cpu 20, gpu 60)")
    g.add_argument("--frequent", type=int, help="steps per logged window; the first window is left out "
                                                "(default: cpu 4, gpu 10)")
    g.add_argument("--repeats", type=int, help="rounds of all arms, medians reported (default: cpu 3, gpu 3)")
    g.add_argument("--num-classes", dest="num_classes", type=int, help="classes (default: cpu 1000, gpu 100000)")
    g.add_argument("--embedding-size", dest="embedding_size", type=int, help="embedding size (default: the config's)")
    g.add_argument("--sample-rate", dest="sample_rate", type=float,
                   help="Partial FC sample rate (default: cpu 1, gpu 0.2)")
    g.add_argument("--fp16", dest="fp16", action="store_true", default=None,
                   help="fp16 (default: cpu profile off, gpu profile on)")
    g.add_argument("--no-fp16", dest="fp16", action="store_false", help="fp32 (default: the profile's)")
    g.add_argument("--workers", type=int,
                   help="loader workers per rank, 0 = load in the training process (default: cpu 1, gpu 8)")
    g.add_argument("--threads", type=int, help="OMP_NUM_THREADS per process (default: cpu 2, gpu 4)")
    g.add_argument("--channels-last", dest="channels_last", action="store_true", default=None,
                   help="NHWC backbone (default: cpu profile on, gpu profile off)")
    g.add_argument("--no-channels-last", dest="channels_last", action="store_false",
                   help="NCHW backbone (default: the profile's)")
    g.add_argument("overrides", nargs="*", help="more key=value config overrides for every arm (default: none)")
    g = p.add_argument_group("run control")
    g.add_argument("--timeout", type=float, default=None,
                   help="seconds per run before it is killed (default: 600, quick: 120)")
    g.add_argument("--workdir", help="folder for the runs' outputs (default: a temporary folder, removed)")
    g.add_argument("--keep", action="store_true", help="keep the runs' outputs (kept anyway with --workdir)")
    g.add_argument("--no-syncs", action="store_true", help="do not count host syncs")
    g.add_argument("--arcface-root", help="arcface_torch folder (default: $ARCFACE_TORCH_ROOT or third_party/)")
    g.add_argument("--verbose", action="store_true", help="stream every line of the training runs")
    return p


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    s = settings_from(args)
    s["overrides"] = list(args.overrides)
    s["no_syncs"] = args.no_syncs
    world = args.nproc
    timeout = args.timeout or (120.0 if args.quick else 600.0)
    arms = []
    if "qgface" in args.arms:
        arms += [f"qgface_{m}" for m in dict.fromkeys(args.hq_modes)]
    arms += [a for a in ARCFACE_ARMS if a in args.arms]
    if s["steps"] <= s["frequent"]:
        return cli.error(f"--steps ({s['steps']}) must exceed --frequent ({s['frequent']}): the first window is "
                         "left out of the loop's medians")
    if world < 1 or s["repeats"] < 1:
        return cli.error(f"--nproc and --repeats must be >= 1, got {world} and {s['repeats']}")
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="bench_train_"))
    workdir.mkdir(parents=True, exist_ok=True)
    load_before = _loadavg()
    cores = os.cpu_count()
    print(f"bench_train: profile {s['profile']}, {s['network']}, B={s['batch']} images/rank (QGFace: {2 * s['batch']} rows),"
          f" {s['steps']} steps, {world} process(es), {s['repeats']} round(s) of {', '.join(arms)}; "
          f"{s['threads']} threads, {s['workers']} loader worker(s), fp16={s['fp16']}, sample_rate={s['sample_rate']}, "
          f"C={s['num_classes']}", flush=True)
    print(f"machine: {cpu_model()}, {cores} cores, load average {load_before} at start"
          + (" (shared: timings are noisy)" if load_before and cores and load_before[0] > 0.5 * cores else ""),
          flush=True)
    runs = {a: [] for a in arms}
    t_start = time.time()
    signal.signal(signal.SIGTERM, _kill_running)
    try:
        for rnd in range(s["repeats"]):
            order = arms[rnd % len(arms):] + arms[:rnd % len(arms)]  # rotate: no arm always runs first
            for arm in order:
                print(f"[round {rnd + 1}/{s['repeats']}] {arm}: running ...", flush=True)
                r = run_arm(arm, s, world, workdir, rnd, timeout, args.arcface_root, args.verbose)
                runs[arm].append(r)
                if "error" in r:
                    print(f"[round {rnd + 1}/{s['repeats']}] {arm}: FAILED ({r['error'].splitlines()[0]})", flush=True)
                    print("\n".join("    " + x for x in r["error"].splitlines()[1:]), flush=True)
                else:
                    print(f"[round {rnd + 1}/{s['repeats']}] {arm}: {r['step_s']:.4f} s/step, "
                          f"{r['samples_per_s']:.1f} img/s, {r['rows_per_step']} rows/step, wall {r['wall_s']} s", flush=True)
    finally:
        _kill_running()
        if not args.keep and not args.workdir:
            shutil.rmtree(workdir, ignore_errors=True)
    agg = {a: aggregate(runs[a]) for a in arms}
    qg_arms = [a for a in arms if a.startswith("qgface")]
    all_ratios = {q: ratios(agg, q) for q in qg_arms}
    device = next((a.get("device") for a in agg.values() if a.get("device")), None)
    targets = {q: check_targets(device, bool(s["fp16"]), all_ratios[q]) for q in qg_arms}
    headline = all_ratios[qg_arms[0]] if qg_arms else {}
    load_after = _loadavg()
    spreads = [a["round_spread"] for a in agg.values() if a.get("round_spread")]
    spread = max(spreads) if spreads else None
    noisy = spread is not None and spread > NOISY_SPREAD
    print()
    print_table(agg, arms, all_ratios, targets)
    if noisy:
        print(f"WARNING: one arm's rounds differ up to {spread:.2f}x in s/step (> {NOISY_SPREAD}x): the machine was "
              "not quiet, so these ratios are not a speed result; the paired/fastest ones are the least affected")
    print(f"machine: load average {load_before} at start, {load_after} at end ({cores} cores); "
          f"total {time.time() - t_start:.0f} s")
    counted = next((agg[q] for q in qg_arms if agg[q].get("syncs_per_step") is not None), {})
    syncs = counted.get("syncs_per_step")
    if counted:
        print(f"syncs: per step of train_step, counted on the steps of the loop's first window after the first step "
              f"(left out of its timings) with {counted.get('syncs_method')}; 'plugin' = ops of qgface_plugin's own code")
    result = {
        "tool": "bench_train", "profile": s["profile"],
        "settings": {k: v for k, v in s.items() if k != "no_syncs"}, "world_size": world,
        "machine": {"cpu": cpu_model(), "cores": cores, "loadavg_start": load_before, "loadavg_end": load_after,
                    "python": platform.python_version(), "device": device,
                    "device_name": next((a.get("device_name") for a in agg.values() if a.get("device_name")), None)},
        "headline_per_row_ratio": headline.get("per_row_vs_equal_rows"),
        "headline_arm": qg_arms[0] if qg_arms else None,
        "ratios": all_ratios, "targets": targets, "round_spread_max": spread, "noisy": noisy,
        "syncs_per_step": syncs, "plugin_sync_ops_per_step": counted.get("plugin_sync_ops_per_step"),
        "syncs_method": counted.get("syncs_method"),
        "syncs_reason": None if syncs is not None else next(
            (agg[q].get("syncs_reason") for q in qg_arms if agg[q].get("syncs_reason")), None),
        "arms": agg, "runs": {a: [{k: v for k, v in r.items() if k not in ("command", "sync_sites")} for r in rs]
                 for a, rs in runs.items()},
        "ok": all(a.get("rounds_ok") == a.get("rounds") for a in agg.values()),
        "total_s": round(time.time() - t_start, 1),
    }
    print(json.dumps(result))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == LAUNCHER_FLAG:
        sys.exit(launcher(sys.argv[2:]))
    sys.exit(main())
