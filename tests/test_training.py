"""tools/train.py end to end with the demo config on a tiny synthetic record set (needs ARCFACE_TORCH_ROOT).

1-process QGFace run with falling loss, verification and summary.json; the ArcFace baseline through
the same loop; a 2-process torchrun (gloo) run; resume giving the same next-step losses as an
uninterrupted run; clear errors for a world-size change and for bad data; hq_mode="subset" with no HQ
row on any rank (1 and 2 processes); two nodes (two torchrun launchers) with node-local output folders;
no warning of our own on the console.
"""
import json
import math
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import qgface_plugin
from _proc import ROOT, free_port, run_guarded

pytestmark = pytest.mark.upstream


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    from qgface_plugin.synthetic import make_dataset
    root = tmp_path_factory.mktemp("data")
    make_dataset(root, num_identities=8, images_per_identity=6, num_val_identities=4, val_pairs=40, seed=3)
    return root


def _config(tmp_path, data, **extra):
    """The demo config (recognition_configs/qgface_demo_cpu.py) scaled down to the tiny data set."""
    body = {"embedding_size": 64, "rec": str(data), "num_classes": 8, "num_image": 48, "batch_size": 4,
            "num_epoch": 2, "num_workers": 0, "frequent": 1, "val_targets": [], "qgface_queue_size": 64,
            "output": str(tmp_path / "out"), **extra}
    path = tmp_path / "cfg.py"
    path.write_text("from qgface_plugin.arcface.config import derive\n"
                    f"config = derive('qgface_demo_cpu', **{body!r})\n")
    return path


def _run(args, timeout=300, torchrun=0):
    env = {**os.environ, "OMP_NUM_THREADS": "1" if torchrun else os.environ.get("OMP_NUM_THREADS", "2")}
    launcher = ([sys.executable, "-m", "torch.distributed.run", f"--nproc_per_node={torchrun}",
                 f"--master_port={free_port()}"] if torchrun else [sys.executable])
    return run_guarded([*launcher, ROOT / "tools" / "train.py", *args], timeout, env=env)


def _summary(out):
    return json.loads((Path(out) / "summary.json").read_text())


def _losses(summary):
    return [h["loss"] for h in summary["history"]]


def test_qgface_one_process_learns_and_writes_everything(tmp_path, data):
    cfg = _config(tmp_path, data, num_epoch=3, val_targets=["synthetic_val_hq"])
    r = _run([cfg])
    assert r.returncode == 0, r.stdout[-3000:]
    s = _summary(tmp_path / "out")
    losses = _losses(s)
    assert s["steps"] == 36 and len(losses) == 36
    assert sum(losses[-6:]) / 6 < sum(losses[:6]) / 6, losses
    assert set(s["final"]) >= {"loss_cls", "loss_con", "hq_fraction", "queue_fill", "norm_mean", "norm_std"}
    assert 0 <= s["verification"]["synthetic_val_hq"]["accuracy"] <= 1
    assert s["samples_per_s"] > 0
    out = tmp_path / "out"
    state = torch.load(out / "model.pt", weights_only=True)
    assert not any(k.startswith("module.") for k in state)
    ckpt = torch.load(out / "checkpoint_gpu_0.pt", weights_only=True)
    assert {"state_qgface", "state_dict_softmax_fc", "state_optimizer", "rng"} <= set(ckpt)
    assert ckpt["state_qgface"]["queue.num_filled"].item() == 64
    assert any((out / "tensorboard").iterdir())
    assert "ETA" in r.stdout and "con" in r.stdout


def test_arcface_baseline_runs_through_the_same_loop(tmp_path, data):
    r = _run([_config(tmp_path, data, loss="arcface", num_epoch=1)])
    assert r.returncode == 0, r.stdout[-3000:]
    s = _summary(tmp_path / "out")
    assert s["steps"] == 12 and "loss_con" not in s["final"]


def test_two_processes_with_torchrun(tmp_path, data):
    r = _run([_config(tmp_path, data, num_epoch=3)], torchrun=2, timeout=400)
    assert r.returncode == 0, r.stdout[-3000:]
    s = _summary(tmp_path / "out")
    assert s["world_size"] == 2 and s["steps"] == 18
    losses = _losses(s)
    assert sum(losses[-4:]) / 4 < sum(losses[:4]) / 4, losses
    for rank in (0, 1):
        assert (tmp_path / "out" / f"checkpoint_gpu_{rank}.pt").is_file()
    # the replicated queue is identical on both ranks
    q0 = torch.load(tmp_path / "out" / "checkpoint_gpu_0.pt", weights_only=True)["state_qgface"]
    q1 = torch.load(tmp_path / "out" / "checkpoint_gpu_1.pt", weights_only=True)["state_qgface"]
    for key in ("queue.features", "queue.labels", "partition.mean", "partition.std"):
        assert torch.equal(q0[key], q1[key]), key
    # a changed world size is a clear error, not a crash
    r = _run([_config(tmp_path, data, num_epoch=4), "--resume"])
    assert r.returncode == 2 and "world_size=2 but this run has 1" in r.stdout


@pytest.mark.parametrize("nproc", [1, 2])
def test_subset_mode_without_any_hq_row_trains(tmp_path, data, nproc):
    """qgface_hq_mode="subset" with b = 1: no row is HQ on any rank (q̂ = 1 needs a norm 3σ above the mean),
    so the classification loss is the zero loss that keeps every parameter in DDP's static graph."""
    cfg = _config(tmp_path, data, num_epoch=1)
    r = _run([cfg, "qgface_hq_mode=subset", "qgface_threshold=1.0"], torchrun=nproc if nproc > 1 else 0)
    assert r.returncode == 0, r.stdout[-3000:]
    s = _summary(tmp_path / "out")
    assert s["world_size"] == nproc and s["steps"] == 12 // nproc
    no_hq = [h for h in s["history"] if h["hq_fraction"] == 0]
    assert no_hq, s["history"]  # the case under test happened (at the first step at least)
    assert all(h["loss_cls"] == 0 for h in no_hq), s["history"]
    assert all(math.isfinite(h["loss"]) and h["loss_con"] > 0 for h in s["history"]), s["history"]


def _launch_nodes(cfg, cwds, timeout, rendezvous="static"):
    """One torchrun launcher per "node" (``--nnodes len(cwds)``, one process each, on 127.0.0.1), started
    together, each in its own working directory with a relative ``--output out``; ``rendezvous``: "static"
    (``--node_rank`` with ``--master_addr/--master_port``) or "c10d" (``--rdzv-backend c10d --rdzv-endpoint``,
    as on clusters: node ranks are assigned as the nodes join). Returns their CompletedProcess (stdout with
    stderr). A hang kills every launcher and fails the test."""
    port = free_port()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}

    def rdzv(rank):
        if rendezvous == "static":
            return [f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}"]
        return ["--rdzv-backend=c10d", f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=qgface-test"]
    procs = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", f"--nnodes={len(cwds)}", "--nproc_per_node=1", *rdzv(rank),
         str(ROOT / "tools" / "train.py"), str(cfg), "--output", "out"],
        cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
        for rank, cwd in enumerate(cwds)]
    deadline = time.monotonic() + timeout
    results = []
    try:
        for p in procs:
            out, _ = p.communicate(timeout=max(1.0, deadline - time.monotonic()))
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, ""))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        tails = [(p.communicate()[0] or "")[-3000:] for p in procs]
        pytest.fail(f"{len(cwds)} nodes ran past {timeout} s:\n" + "\n----\n".join(tails))
    return results


@pytest.mark.parametrize("rendezvous", ["static", "c10d"])
def test_two_nodes_with_node_local_output_folders(tmp_path, data, rendezvous):
    """Multi-node with node-local disks: two torchrun launchers (--nnodes 2, one process each) in their
    own working directories with a relative output path, by a static and by a c10d rendezvous. Every rank
    creates the output folder it writes its checkpoint to; rank 0's outputs (config.json, logs, model.pt,
    summary.json) stay on rank 0's node."""
    cfg = _config(tmp_path, data, num_epoch=1)
    nodes = [tmp_path / "node0", tmp_path / "node1"]
    for node in nodes:
        node.mkdir()
    results = _launch_nodes(cfg, nodes, timeout=300, rendezvous=rendezvous)
    for r in results:
        assert r.returncode == 0, r.stdout[-3000:]
    # static: node_rank 0 is node0; c10d: whichever node joined first holds rank 0
    first = [n for n in nodes if (n / "out" / "summary.json").is_file()]
    assert len(first) == 1 and (rendezvous == "c10d" or first[0] == nodes[0]), first
    out0, out1 = first[0] / "out", next(n for n in nodes if n != first[0]) / "out"
    s = _summary(out0)
    assert s["world_size"] == 2 and s["steps"] == 6
    assert {"config.json", "model.pt", "summary.json", "checkpoint_gpu_0.pt", "tensorboard"} <= \
        {p.name for p in out0.iterdir()}
    assert sorted(p.name for p in out1.iterdir()) == ["checkpoint_gpu_1.pt"]
    ckpt = torch.load(out1 / "checkpoint_gpu_1.pt", weights_only=True)
    assert ckpt["rank"] == 1 and ckpt["world_size"] == 2 and ckpt["global_step"] == 6


def test_short_run_prints_no_warning_of_our_own(tmp_path, data):
    """The DDP arguments of our loop draw no warning (broadcast_buffers is deprecated in torch >= 2.13;
    find_unused_parameters=True is redundant with a static graph), and upstream's own deprecation
    warnings (its backbones' and Partial FC's torch.cuda.amp.autocast, a class decorated with
    torch.no_grad) are hidden where upstream is imported: the console holds the progress lines only."""
    r = _run([_config(tmp_path, data, num_image=16, num_epoch=1)])
    assert r.returncode == 0, r.stdout[-3000:]
    assert _summary(tmp_path / "out")["steps"] == 4
    for text in ("broadcast_buffers", "forward_sync_buffers", "find_unused_parameters", "static_graph"):
        assert text not in r.stdout, r.stdout[-3000:]
    package = Path(qgface_plugin.__file__).resolve().parent
    warned = re.findall(r"^(\S+\.py):\d+: \w*Warning", r.stdout, re.M)
    assert warned == [] or all(Path(f).exists() for f in warned), warned   # the pattern finds file names
    ours = [f for f in warned if Path(f).resolve().is_relative_to(package)]
    assert not ours, r.stdout[-3000:]
    assert "Warning" not in r.stdout, r.stdout[-3000:]
    assert all(line.startswith("epoch ") for line in r.stdout.splitlines() if line.strip()), r.stdout[-3000:]


def test_resume_continues_with_the_same_losses(tmp_path, data):
    full = _run([_config(tmp_path / "a", data)] if (tmp_path / "a").mkdir() is None else [])
    assert full.returncode == 0, full.stdout[-3000:]
    part = _run([_config(tmp_path / "b", data, stop_after_epoch=1)] if (tmp_path / "b").mkdir() is None else [])
    assert part.returncode == 0, part.stdout[-3000:]
    assert _summary(tmp_path / "b" / "out")["steps"] == 12
    resumed = _run([_config(tmp_path / "b", data), "--resume"])
    assert resumed.returncode == 0, resumed.stdout[-3000:]
    a = _losses(_summary(tmp_path / "a" / "out"))
    b = _losses(_summary(tmp_path / "b" / "out"))  # the first 12 come back from the checkpoint's history
    assert len(a) == len(b) == 24
    assert b == a  # bit for bit: CPU, num_workers=0, the data order and augmentation follow (seed, epoch, index)


def test_bad_data_stops_before_training(tmp_path, data):
    r = _run([_config(tmp_path, data, num_classes=5)])
    assert r.returncode == 2 and "property says 8 classes but config.num_classes=5" in r.stdout
    r = _run([_config(tmp_path, data, rec=str(tmp_path / "missing"))])
    assert r.returncode == 2 and "does not exist" in r.stdout
    r = _run([_config(tmp_path, data, val_targets=["lfw"])])
    assert r.returncode == 2 and "lfw.bin" in r.stdout


@pytest.mark.parametrize("loss", ["qgface", "arcface"])
def test_synthetic_option_trains_with_finite_losses(tmp_path, data, loss):
    r = _run([_config(tmp_path, data, rec="synthetic", num_image=32, num_epoch=1, loss=loss)])
    assert r.returncode == 0, r.stdout[-3000:]
    s = _summary(tmp_path / "out")
    assert s["steps"] == 8 and all(h["loss"] == h["loss"] for h in s["history"])  # no NaN


def test_python_record_reader_trains_exactly_like_mxnets(tmp_path, data):
    """record_reader="python" (no mxnet) reads the same images, labels and order as upstream's
    MXFaceDataset: the same losses, bit for bit, on one process with num_workers=0."""
    losses = {}
    for reader in ("mxnet", "python"):
        cfg = _config(tmp_path / reader, data, num_epoch=1) if (tmp_path / reader).mkdir() is None else None
        r = _run([cfg, f"record_reader={reader!r}"])
        assert r.returncode == 0, r.stdout[-3000:]
        losses[reader] = _losses(_summary(tmp_path / reader / "out"))
    assert len(losses["python"]) == 12 and losses["python"] == losses["mxnet"]
    r = _run([_config(tmp_path, data), "record_reader='tfrecord'"])
    assert r.returncode == 2 and "record_reader must be 'auto', 'mxnet' or 'python'" in r.stdout
