"""optimizer_step: a NaN/inf on one rank skips the step on every rank; N in a row stop every rank.

Two gloo processes: a DDP-averaged "backbone" and a per-rank "Partial FC shard" that DDP does not
average, as in training. The fault is injected into rank 1's shard gradient only (a finite loss),
the case a per-rank GradScaler check cannot see from the other rank.
"""
import pytest
import torch
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from _ddp import spawn_workers
from qgface_plugin.errors import QGFaceConfigError, QGFaceNonFiniteError
from qgface_plugin.arcface.optim_step import NonFiniteSteps, optimizer_step

STEPS = 6


def _batch(step, rank):
    g = torch.Generator().manual_seed(100 * step + rank)
    return torch.randn(8, 5, generator=g), torch.randint(0, 3, (8,), generator=g)


def _train(rank, world, inject, limit, scaler_enabled, plain_scaler, drop_steps=()):
    torch.manual_seed(0)
    backbone = DistributedDataParallel(nn.Linear(5, 4))
    shard = nn.Parameter(torch.randn(3, 4, generator=torch.Generator().manual_seed(rank)))
    opt = torch.optim.SGD([{"params": backbone.parameters()}, {"params": [shard]}], lr=0.1, momentum=0.9)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10, growth_interval=2, enabled=scaler_enabled)
    guard = NonFiniteSteps(limit)
    skipped, error = [], None
    for step in range(1, STEPS + 1):
        x, y = _batch(step, rank)
        if step in drop_steps:  # the reference: this batch never trained on
            continue
        loss = nn.functional.cross_entropy(backbone(x) @ shard.t(), y)
        hook = shard.register_hook(lambda g: g + float("inf")) if rank == 1 and step in inject else None
        if plain_scaler:  # the GradScaler's own per-rank rule, for comparison
            scaler.scale(loss).backward()
            scaler.unscale_(opt)
            scaler.step(opt)
            scaler.update()
            opt.zero_grad(set_to_none=True)
            hook and hook.remove()
            continue
        s = optimizer_step(loss, opt, scaler, backbone.parameters(), 5.0, [shard])
        hook and hook.remove()
        if s:
            skipped.append(step)
        try:
            guard.record(s, step)
        except QGFaceNonFiniteError as exc:
            error = (step, str(exc))
            break
    return {"weight": backbone.module.weight.detach().clone(), "bias": backbone.module.bias.detach().clone(),
            "shard": shard.detach().clone(), "skipped": skipped, "error": error,
            "scale": scaler.get_scale() if scaler_enabled else None}


@pytest.mark.parametrize("scaler_enabled", [False, True])
def test_inf_on_one_rank_skips_the_same_step_on_every_rank(tmp_path, scaler_enabled):
    r0, r1 = spawn_workers(_train, tmp_path / "run", ((3,), 20, scaler_enabled, False))
    assert r0["skipped"] == r1["skipped"] == [3]
    assert torch.equal(r0["weight"], r1["weight"]) and torch.equal(r0["bias"], r1["bias"])
    assert r0["scale"] == r1["scale"]
    if scaler_enabled:  # steps 1-2 grow it once (2**11), step 3 backs off (2**10), 4-5 grow (2**11)
        assert r0["scale"] == 2.0 ** 11
    # a skipped step is a step that never happened: the same weights as a run without that batch
    ref0, ref1 = spawn_workers(_train, tmp_path / "ref", ((), 20, scaler_enabled, False, (3,)))
    for got, ref in ((r0, ref0), (r1, ref1)):
        for key in ("weight", "bias", "shard"):
            assert torch.allclose(got[key], ref[key], rtol=0, atol=1e-7), key


def test_the_per_rank_gradscaler_rule_alone_lets_the_replicas_drift(tmp_path):
    """Why the flag is all-reduced: with GradScaler.step's own check, rank 1 skips and rank 0 steps."""
    r0, r1 = spawn_workers(_train, tmp_path, ((3,), 20, True, True))
    assert not torch.equal(r0["weight"], r1["weight"])


def test_consecutive_nonfinite_steps_stop_every_rank_at_the_same_step(tmp_path):
    r0, r1 = spawn_workers(_train, tmp_path, ((2, 3, 4, 5), 3, False, False))
    assert r0["error"] is not None and r1["error"] is not None
    assert r0["error"][0] == r1["error"][0] == 4
    assert "3 consecutive steps" in r0["error"][1] and "max_nonfinite_steps" in r0["error"][1]
    assert r0["skipped"] == r1["skipped"] == [2, 3, 4]


def test_non_finite_steps_counter_hand_worked():
    guard = NonFiniteSteps(limit=2)
    for step, skipped in enumerate([False, True, False, True], start=1):
        guard.record(skipped, step)
    assert guard.summary() == {"skipped": 2, "steps": [2, 4], "limit": 2}
    with pytest.raises(QGFaceNonFiniteError, match="training stopped at step 5: 2 consecutive"):
        guard.record(True, 5)
    for bad in (0, -1, 1.5, True, "3"):
        with pytest.raises(QGFaceConfigError, match="max_nonfinite_steps"):
            NonFiniteSteps(bad)
