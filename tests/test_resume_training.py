"""Long runs through tools/train.py (needs ARCFACE_TORCH_ROOT): step checkpoints, exact mid-epoch resume,
a torn or corrupt checkpoint, a refused config, and torchrun restarts after a SIGKILL.

"Equal" here is bit for bit: on the CPU the data order and each image's augmentation are functions of
(seed, epoch, index) (:class:`~qgface_plugin.arcface.loader.SampleSeeded`), every RNG and counter is in
the checkpoint, and gloo's sum of two ranks is exact to repeat, so an interrupted run and an
uninterrupted one compute the same floats — with DataLoader workers too. On a GPU, cuDNN's algorithm
choice and atomics make two uninterrupted runs differ already; there the guarantee is the same data
and state, not the same bits.

The kills come from a launcher (test code, like tests/test_training_faults.py's) that wraps
``training.train_step`` and sends SIGKILL to its own process at the start of a chosen step, only in
torchrun's first attempt (``TORCHELASTIC_RESTART_COUNT`` = 0).
"""
import json
import os
import sys
from pathlib import Path

import pytest
import torch

from _proc import free_port, run_guarded
from test_training import _config, _run, data  # noqa: F401  (the module-scoped synthetic record set)

pytestmark = pytest.mark.upstream

KILLER = '''
import os, signal, sys
from qgface_plugin.arcface import training

ranks_s, step_s = os.environ["QGFACE_TEST_SIGKILL"].split(":")
RANKS, STEP = {int(r) for r in ranks_s.split(",")}, int(step_s)
_step = training.train_step

def train_step(images, labels, *, step, **kw):
    first_attempt = int(os.environ.get("TORCHELASTIC_RESTART_COUNT") or 0) == 0
    if first_attempt and step + 1 == STEP and int(os.environ.get("RANK", 0)) in RANKS:
        print(f"test: SIGKILL to rank {os.environ.get('RANK', 0)} at step {STEP}", flush=True)
        os.kill(os.getpid(), signal.SIGKILL)
    return _step(images, labels, step=step, **kw)

training.train_step = train_step
sys.exit(training.main(sys.argv[1:]))
'''


def _history(out):
    return json.loads((Path(out) / "summary.json").read_text())["history"]


def _model(out):
    return torch.load(Path(out) / "model.pt", weights_only=True)


def _assert_same_run(out, ref):
    assert _history(out) == _history(ref)
    a, b = _model(out), _model(ref)
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def _step_files(out, rank=0):
    return sorted(int(p.name[15:23]) for p in Path(out).glob(f"checkpoint_step*_gpu_{rank}.pt"))


def _mk(path):
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(scope="module")
def reference(tmp_path_factory, data):  # noqa: F811
    """An uninterrupted 1-process run: 2 epochs of 12 steps, num_workers=0."""
    root = tmp_path_factory.mktemp("reference")
    r = _run([_config(root, data)])
    assert r.returncode == 0, r.stdout[-3000:]
    return root / "out"


@pytest.fixture(scope="module")
def reference2(tmp_path_factory, data):  # noqa: F811
    """An uninterrupted 2-process (gloo) run: 2 epochs of 6 steps."""
    root = tmp_path_factory.mktemp("reference2")
    r = _run([_config(root, data)], torchrun=2, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:]
    return root / "out"


@pytest.mark.parametrize("workers", [0, 2])
def test_mid_epoch_resume_is_bitwise_with_and_without_workers(tmp_path, data, reference, workers):  # noqa: F811
    cfg = _config(tmp_path, data, save_every_steps=3, num_workers=workers)
    part = _run([cfg, "stop_after_steps=7"])
    assert part.returncode == 0, part.stdout[-3000:]
    out = tmp_path / "out"
    assert _step_files(out) == [6, 7]      # every 3 steps, the stop at 7; keep_checkpoints=2 deleted step 3
    resumed = _run([cfg, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert "resuming at step 7 (epoch 1, batch 7)" in resumed.stdout
    _assert_same_run(out, reference)       # (the reference ran with num_workers=0)
    assert _step_files(out) == []          # superseded by the last epoch end


def test_torn_and_corrupt_checkpoints_fall_back_to_the_previous_one(tmp_path, data, reference):  # noqa: F811
    cfg = _config(tmp_path, data, save_every_steps=3)
    assert _run([cfg, "stop_after_steps=7"]).returncode == 0
    out = tmp_path / "out"
    newest = out / "checkpoint_step00000007_gpu_0.pt"
    newest.write_bytes(newest.read_bytes()[: newest.stat().st_size // 2])           # truncated
    (out / ".checkpoint_step00000008_gpu_0.pt.x1y2.tmp").write_bytes(b"\0" * 1000)   # a write that was killed
    resumed = _run([cfg, "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    assert f"{newest} is truncated or corrupt" in resumed.stdout
    assert "removed 1 partly written file(s)" in resumed.stdout
    assert "resuming at step 6 (epoch 1, batch 6)" in resumed.stdout
    assert not list(out.glob(".*.tmp"))
    _assert_same_run(out, reference)


def test_a_checkpoint_of_another_config_or_an_earlier_run_is_refused(tmp_path, data):  # noqa: F811
    cfg = _config(tmp_path, data, save_every_steps=3)
    assert _run([cfg, "stop_after_steps=4"]).returncode == 0
    r = _run([cfg, "--resume", "lr=0.2"])
    assert r.returncode == 2 and "was written by a run with another config (lr: 0.1 -> 0.2)" in r.stdout, r.stdout
    r = _run([cfg])                                   # a fresh start over the earlier run's step checkpoints
    assert r.returncode == 2 and "holds step checkpoints of an earlier run (newest: step 4)" in r.stdout, r.stdout
    r = _run([cfg, "--resume", "lr=0.2", "resume_check_config=False", "stop_after_steps=5"])
    assert r.returncode == 0 and "resuming with changed config keys ['lr']" in r.stdout, r.stdout[-3000:]
    empty = _config(_mk(tmp_path / "empty"), data, num_epoch=1)
    r = _run([empty, "resume='auto'"])
    assert r.returncode == 0 and "no checkpoint in" in r.stdout, r.stdout[-3000:]
    r = _run([_config(_mk(tmp_path / "none"), data), "--resume"])
    assert r.returncode == 2 and "holds no checkpoint" in r.stdout, r.stdout[-3000:]


def _torchrun(tmp_path, cfg, kill, *args, restarts=0):
    launcher = tmp_path / "kill_train.py"
    launcher.write_text(KILLER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QGFACE_TEST_SIGKILL": kill}
    return run_guarded([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--max-restarts={restarts}", f"--master_port={free_port()}", launcher, cfg, *args],
                       500, env=env)


def test_torchrun_restarts_a_killed_rank_and_the_run_ends_as_if_uninterrupted(tmp_path, data, reference2):  # noqa: F811
    cfg = _config(tmp_path, data, save_every_steps=2)
    r = _torchrun(tmp_path, cfg, "1:5", restarts=1)   # rank 1 killed at the start of step 5 of 12 (epoch 1)
    assert r.returncode == 0, r.stdout[-4000:]
    assert "SIGKILL to rank 1 at step 5" in r.stdout
    assert "torchrun restart 1: resuming" in r.stdout and "resuming at step 4 (epoch 1, batch 4)" in r.stdout
    _assert_same_run(tmp_path / "out", reference2)


def test_a_killed_job_continues_with_resume(tmp_path, data, reference2):  # noqa: F811
    cfg = _config(tmp_path, data, save_every_steps=2)
    r = _torchrun(tmp_path, cfg, "0,1:10")            # every rank killed at step 10 (epoch 2), no restarts
    assert r.returncode != 0 and not (tmp_path / "out" / "summary.json").exists()
    assert _step_files(tmp_path / "out", 1) == [8]    # epoch 1 ended at 6 (its step files deleted), then 8
    r = _run([cfg, "--resume"], torchrun=2, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:]
    assert "resuming at step 8 (epoch 2, batch 2)" in r.stdout
    _assert_same_run(tmp_path / "out", reference2)
