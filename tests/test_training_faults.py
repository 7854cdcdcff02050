"""Fault injection into tools/train.py's loop (needs ARCFACE_TORCH_ROOT): an inf in one rank's
embeddings at a chosen step of a 2-process gloo run is skipped on both ranks and leaves them
identical; a run of them stops both ranks at the same step with a clear message.

The launcher is tools/train.py's own ``main``, with ``build_training`` wrapped so that rank R's
backbone output gets an inf at training forwards listed in $QGFACE_TEST_INJECT ("R:S1,S2,...").
"""
import json
import os
import sys

import pytest
import torch

from _proc import free_port, run_guarded
from test_training import _config, data  # noqa: F401  (the module-scoped synthetic record set)

pytestmark = pytest.mark.upstream

LAUNCHER = '''
import os, sys
import torch
from qgface_plugin.arcface import training

rank_s, steps_s = os.environ["QGFACE_TEST_INJECT"].split(":")
RANK, STEPS = int(rank_s), {int(s) for s in steps_s.split(",")}
_build = training.build_training

def build_training(cfg, ns, world, device):
    backbone, pfc, criterion, opt = _build(cfg, ns, world, device)
    forward, calls = backbone.forward, [0]
    def injected(x):
        out = forward(x)
        if backbone.training:
            calls[0] += 1
            if int(os.environ.get("RANK", 0)) == RANK and calls[0] in STEPS:
                out = out.clone()
                out[1, 0] = float("inf")
        return out
    backbone.forward = injected
    return backbone, pfc, criterion, opt

training.build_training = build_training
sys.exit(training.main(sys.argv[1:]))
'''


def _run_injected(tmp_path, cfg, inject, *args):
    launcher = tmp_path / "inject_train.py"
    launcher.write_text(LAUNCHER)
    env = {**os.environ, "OMP_NUM_THREADS": "1", "QGFACE_TEST_INJECT": inject}
    return run_guarded([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2",
                        f"--master_port={free_port()}", launcher, cfg, *args], 400, env=env)


def test_inf_on_one_rank_is_skipped_on_both_and_leaves_them_identical(tmp_path, data):  # noqa: F811
    cfg = _config(tmp_path, data, num_epoch=2)             # 12 steps on 2 ranks
    r = _run_injected(tmp_path, cfg, "1:4")
    assert r.returncode == 0, r.stdout[-3000:]
    assert "step 4: NaN/inf loss or gradient on some rank; step skipped on every rank" in r.stdout
    s = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert s["steps"] == 12 and s["nonfinite_steps"]["skipped"] == 1 and s["nonfinite_steps"]["steps"] == [4]
    assert all(h["loss"] == h["loss"] for h in s["history"] if h["step"] != 4)  # finite elsewhere
    c0, c1 = (torch.load(tmp_path / "out" / f"checkpoint_gpu_{r}.pt", weights_only=True) for r in (0, 1))
    for key, value in c0["state_dict_backbone"].items():  # weights (BatchNorm statistics are per
        if key.rsplit(".", 1)[-1] in ("running_mean", "running_var", "num_batches_tracked"):  # rank,
            continue                                          # as upstream: buffers are not synced)
        assert torch.equal(value, c1["state_dict_backbone"][key]), key
    for key, value in c0["state_qgface"].items():           # queue and quality statistics
        assert torch.equal(value, c1["state_qgface"][key]), key
        if value.is_floating_point():
            assert torch.isfinite(value).all(), key
    assert int(c0["state_qgface"]["partition.num_updates"]) == 11  # the bad batch did not count


def test_consecutive_non_finite_steps_stop_both_ranks_at_the_same_step(tmp_path, data):  # noqa: F811
    cfg = _config(tmp_path, data, num_epoch=2)
    r = _run_injected(tmp_path, cfg, "0:3,4,5,6,7", "max_nonfinite_steps=3")
    assert r.returncode != 0
    assert r.stdout.count("training stopped at step 5: 3 consecutive steps had a NaN/inf loss") == 2, \
        r.stdout[-3000:]
