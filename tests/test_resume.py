"""Checkpoint choice and retention across ranks (2 gloo processes), and the data order a resume replays.

- :class:`~qgface_plugin.arcface.resume.Checkpointer`: a write that fails on one rank (a full disk) is a
  warning, the earlier checkpoints are kept on every rank, and nothing is deleted until every rank has
  written a newer one; ``keep_checkpoints`` holds.
- :func:`~qgface_plugin.arcface.resume.find_resume_state`: the newest step every rank has; a corrupt file
  on one rank sends both back to the previous common step; no common step is an error listing each rank's.
- :func:`~qgface_plugin.arcface.checkpoint.check_fits`: the config keys that differ are named.
- :class:`~qgface_plugin.arcface.loader.SampleSeeded` + :class:`~qgface_plugin.arcface.loader.ResumableSampler`:
  items are functions of (seed, epoch, index), the same with 0 or 2 workers, and the caller's RNG is untouched.
"""
import errno
import io
from contextlib import redirect_stderr

import numpy as np
import pytest
import torch
from easydict import EasyDict as edict

from _ddp import spawn_workers
from qgface_plugin.arcface import checkpoint as ckpt
from qgface_plugin.arcface.loader import ResumableSampler, SampleSeeded
from qgface_plugin.arcface.resume import Checkpointer, check_fresh_start, find_resume_state
from qgface_plugin.errors import QGFaceConfigError, QGFaceInputError
from qgface_plugin.views import TwoViewTransform


def _cfg(output, **extra):
    return edict({"output": str(output), "embedding_size": 4, "num_classes": 3, "network": "toy", "loss": "arcface",
                  "seed": 5, "lr": 0.1, "save_every_steps": 2, "keep_checkpoints": 2, "resume_check_config": True,
                  **extra})


class _Wrapped:  # the DDP wrapper's .module
    def __init__(self, module):
        self.module = module


def _parts(seed=0):
    torch.manual_seed(seed)
    net, pfc = torch.nn.Linear(4, 4), torch.nn.Linear(4, 3, bias=False)
    opt = torch.optim.SGD([*net.parameters(), *pfc.parameters()], lr=0.1, momentum=0.9)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: 1.0)
    return (_Wrapped(net), pfc, None, opt, sched, torch.amp.GradScaler("cuda", enabled=False))


def _files(output, rank):
    return sorted(p.name for p in output.glob(f"checkpoint*_gpu_{rank}.pt"))


def _disk_full_on_rank1(rank, world, output):
    """Saves at steps 2, 4 (rank 1's disk is full), 6, 8; returns each rank's files after each save."""
    parts = _parts(rank)
    saver = Checkpointer(_cfg(output), rank, world, parts)
    real_save, seen, err = torch.save, [], io.StringIO()
    for step in (2, 4, 6, 8):
        def save(obj, f, *a, **k):
            real_save(obj, f, *a, **k)
            if rank == 1 and step == 4:      # written half-way, then the disk is full
                raise OSError(errno.ENOSPC, "No space left on device")
        torch.save = save
        try:
            with redirect_stderr(err):
                ok = saver.save((0, step, step), {"step": step}, epoch_end=False)
        finally:
            torch.save = real_save
        seen.append((ok, _files(output, rank)))
    return {"seen": seen, "stderr": err.getvalue(), "failed": saver.failed,
            "tmp": sorted(p.name for p in output.glob(".*.tmp"))}


def test_a_full_disk_on_one_rank_keeps_a_common_checkpoint(tmp_path):
    r0, r1 = spawn_workers(_disk_full_on_rank1, tmp_path / "w", (tmp_path / "out",))
    name = "checkpoint_step{:08d}_gpu_{}.pt".format
    assert [ok for ok, _ in r0["seen"]] == [True, False, True, True]
    # nothing deleted after the failed save; rank 0's unconfirmed step 4 goes with the next good save
    assert r0["seen"][1][1] == [name(2, 0), name(4, 0)] and r1["seen"][1][1] == [name(2, 1)]
    assert r0["seen"][2][1] == [name(2, 0), name(6, 0)] and r1["seen"][2][1] == [name(2, 1), name(6, 1)]
    assert r0["seen"][3][1] == [name(6, 0), name(8, 0)] and r1["seen"][3][1] == [name(6, 1), name(8, 1)]
    assert "could not write" in r1["stderr"] and name(4, 1) in r1["stderr"] and "No space left" in r1["stderr"]
    assert r0["stderr"] == "" and r0["failed"] == r1["failed"] == ["step 4: ranks [1]"]
    assert r1["tmp"] == []                   # the half-written file was removed


def _resume(rank, world, output, corrupt, total_step=100, **cfg):
    """Write step checkpoints 2 and 4 (rank 1 also 6), corrupt some, then find the resume point."""
    parts = _parts(rank)
    config = _cfg(output, keep_checkpoints=5, **cfg)
    saver = Checkpointer(_cfg(output, keep_checkpoints=5), rank, world, parts)
    for step in (2, 4):
        parts[0].module.weight.data.fill_(float(step))
        saver.save((0, step, step), {}, epoch_end=False)
    if rank == 1:
        ckpt.save_checkpoint(ckpt.step_checkpoint_path(output, 1, 6), config, 1, world, (0, 6, 6), parts)
    for r, step in corrupt:
        if r == rank:
            path = ckpt.step_checkpoint_path(output, rank, step)
            path.write_bytes(path.read_bytes()[:100])
    err = io.StringIO()
    fresh = _parts(99)
    try:
        with redirect_stderr(err):
            found = find_resume_state(config, rank, "cpu", steps_per_epoch=10, total_step=total_step)
    except (QGFaceConfigError, QGFaceInputError) as exc:
        return {"error": f"{type(exc).__name__}: {exc}", "stderr": err.getvalue()}
    state, common = found
    epoch, batch, step = ckpt.restore(state, fresh)
    return {"position": (epoch, batch, step), "common": common, "stderr": err.getvalue(),
            "weight": float(fresh[0].module.weight[0, 0])}


def test_resume_takes_the_newest_step_every_rank_has(tmp_path):
    r0, r1 = spawn_workers(_resume, tmp_path / "w", (tmp_path / "out", []))
    for r in (r0, r1):   # rank 1's step 6 is not on rank 0
        assert r["position"] == (0, 4, 4) and r["common"] == [2, 4] and r["weight"] == 4.0


def test_a_corrupt_checkpoint_on_one_rank_sends_every_rank_back(tmp_path):
    r0, r1 = spawn_workers(_resume, tmp_path / "w", (tmp_path / "out", [(1, 4)]))
    assert r0["position"] == r1["position"] == (0, 2, 2) and r0["weight"] == r1["weight"] == 2.0
    assert "checkpoint_step00000004_gpu_1.pt is truncated or corrupt" in r1["stderr"]
    assert "earlier checkpoint" in r1["stderr"] and r0["stderr"] == ""


def test_no_common_readable_step_is_an_error_that_lists_the_ranks(tmp_path):
    r0, r1 = spawn_workers(_resume, tmp_path / "w", (tmp_path / "out", [(0, 2), (0, 4)]))
    for r in (r0, r1):
        assert r["error"].startswith("QGFaceInputError: config.resume is set but no checkpoint step")
        assert "rank 0: 2, 4; rank 1: 2, 4, 6" in r["error"]


def test_a_checkpoint_that_does_not_fit_stops_every_rank(tmp_path):
    r0, r1 = spawn_workers(_resume, tmp_path / "w", (tmp_path / "out", [], 3))
    for r in (r0, r1):   # step 4 > this run's 3 steps
        assert r["error"].startswith("QGFaceConfigError:") and "outside this run's 3 steps" in r["error"]


def _fresh(rank, world, output):
    if rank == 1:
        ckpt.step_checkpoint_path(output, 1, 12).parent.mkdir(parents=True, exist_ok=True)
        ckpt.step_checkpoint_path(output, 1, 12).write_bytes(b"x")
    torch.distributed.barrier()
    try:
        check_fresh_start(output, rank)
    except QGFaceConfigError as exc:
        return str(exc)


def test_a_fresh_start_over_an_earlier_runs_step_checkpoints_is_refused_on_every_rank(tmp_path):
    r0, r1 = spawn_workers(_fresh, tmp_path / "w", (tmp_path / "out",))
    assert r0 == r1 and "holds step checkpoints of an earlier run (newest: step 12)" in r0


def test_check_fits_names_the_keys_that_differ(tmp_path):
    cfg = _cfg(tmp_path)
    path = ckpt.save_checkpoint(tmp_path / "c.pt", cfg, 0, 1, (0, 3, 3), _parts())
    state = ckpt.read_checkpoint(path)
    assert ckpt.check_fits(state, path, _cfg(tmp_path / "elsewhere", num_workers=8), 1, 10, 20) == []
    with pytest.raises(QGFaceConfigError, match=r"another config \(lr: 0.1 -> 0.2; seed: 5 -> 6\)"):
        ckpt.check_fits(state, path, _cfg(tmp_path, lr=0.2, seed=6), 1, 10, 20)
    assert ckpt.check_fits(state, path, _cfg(tmp_path, lr=0.2, resume_check_config=False), 1, 10, 20) == ["lr"]
    with pytest.raises(QGFaceConfigError, match="world_size=1 but this run has 2"):
        ckpt.check_fits(state, path, cfg, 2, 10, 20)
    assert state["config_hash"] == ckpt.config_hash(ckpt.run_config(cfg))
    assert "output" not in ckpt.run_config(cfg) and "lr" in ckpt.run_config(cfg)


def test_read_checkpoint_names_a_bad_file(tmp_path):
    with pytest.raises(QGFaceInputError, match="does not exist"):
        ckpt.read_checkpoint(tmp_path / "none.pt")
    (tmp_path / "zeros.pt").write_bytes(b"\0" * 4096)
    with pytest.raises(ckpt.CheckpointUnreadable, match="zeros.pt is truncated or corrupt"):
        ckpt.read_checkpoint(tmp_path / "zeros.pt")
    torch.save({"format": "other"}, tmp_path / "other.pt")
    with pytest.raises(ckpt.CheckpointUnreadable, match="not a qgface_plugin/checkpoint-v2 checkpoint"):
        ckpt.read_checkpoint(tmp_path / "other.pt")


# ------------------------------------------------------------------------------- the data a resume replays
class _Images(torch.utils.data.Dataset):
    """Fixed images through QGFace's two-view transform, plus a draw from torch's global RNG."""

    def __init__(self):
        self.images = np.random.default_rng(0).integers(0, 256, (12, 112, 112, 3), dtype=np.uint8)
        self.transform = TwoViewTransform(seed=1, output="uint8")

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.transform(self.images[i]), torch.rand(1)


def _epoch(dataset, sampler, epoch, workers, start=0):
    sampler.set_epoch(epoch)
    dataset.set_epoch(epoch)
    sampler.start_at(start)
    loader = torch.utils.data.DataLoader(dataset, batch_size=2, sampler=sampler, num_workers=workers)
    return [(views.clone(), noise.clone()) for views, noise in loader]


def test_items_are_functions_of_seed_epoch_and_index():
    dataset = SampleSeeded(_Images(), seed=7)
    sampler = ResumableSampler(dataset, num_replicas=2, rank=1, shuffle=True, seed=7)
    plain = _epoch(dataset, sampler, 3, workers=0)
    workers = _epoch(dataset, sampler, 3, workers=2)
    tail = _epoch(dataset, sampler, 3, workers=0, start=2)    # a resumed epoch: this rank's batches from the 2nd
    other = _epoch(dataset, sampler, 4, workers=0)
    assert len(plain) == 3 and len(tail) == 2
    for (a, na), (b, nb) in zip(plain, workers):
        assert torch.equal(a, b) and torch.equal(na, nb)
    for (a, na), (b, nb) in zip(plain[1:], tail):
        assert torch.equal(a, b) and torch.equal(na, nb)
    assert not torch.equal(plain[0][0], other[0][0])           # another epoch: other order and views
    # the same index in another epoch gets other views (not only another order)
    first = dataset.dataset.transform
    first.seed_sample((3, 0))
    x = first(dataset.dataset.images[0])
    first.seed_sample((4, 0))
    y = first(dataset.dataset.images[0])
    assert not torch.equal(x, y)


def test_sample_seeding_leaves_the_callers_rng_alone():
    dataset = SampleSeeded(_Images(), seed=7)
    torch.manual_seed(0)
    expected = torch.rand(3)
    torch.manual_seed(0)
    dataset[0], dataset[5]
    assert torch.equal(torch.rand(3), expected)
    assert dataset.transform is dataset.dataset.transform      # the wrapped set's attributes show through


def test_resumable_sampler_rejects_a_position_outside_the_epoch():
    sampler = ResumableSampler(list(range(10)), num_replicas=2, rank=0, shuffle=True, seed=1)
    with pytest.raises(ValueError, match="outside this rank's 5 indices"):
        sampler.start_at(6)
    sampler.start_at(4)
    assert len(sampler) == 1 and list(sampler) == list(ResumableSampler(list(range(10)), 2, 0, True, 1))[4:]
    sampler.set_epoch(1)
    assert len(sampler) == 5


@pytest.mark.parametrize("override, message", [
    ({"resume": "yes"}, "config.resume must be False, True or 'auto'"),
    ({"save_every_steps": -1}, "config.save_every_steps must be an integer >= 0"),
    ({"keep_checkpoints": 0}, "config.keep_checkpoints must be an integer >= 1"),
    ({"stop_after_steps": 0}, "config.stop_after_steps must be an integer >= 1 or None"),
    ({"save_every_steps": True}, "config.save_every_steps must be an integer"),
])
def test_run_control_keys_are_validated(override, message):
    from qgface_plugin.arcface.config import load_config
    with pytest.raises(QGFaceConfigError, match=message):
        load_config("qgface_demo_cpu", override)
    assert load_config("qgface_demo_cpu", {"resume": "auto", "save_every_steps": 5}).resume == "auto"


@pytest.mark.parametrize("key, value", [("embedding_size", 8), ("network", "r50"), ("num_classes", 7),
                                        ("loss", "qgface")])
def test_a_checkpoint_of_another_model_is_refused(tmp_path, key, value):
    path = ckpt.save_checkpoint(tmp_path / "c.pt", _cfg(tmp_path), 0, 1, (0, 3, 3), _parts())
    state = ckpt.read_checkpoint(path)
    old = _cfg(tmp_path)[key]
    with pytest.raises(QGFaceConfigError, match=f"written with {key}={old!r} but this run has {value!r}"):
        ckpt.check_fits(state, path, _cfg(tmp_path, **{key: value}), 1, 10, 20)
