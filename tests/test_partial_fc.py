"""QGFace's Partial FC subclass (qgface_plugin.arcface.partial_fc) on upstream's real ``PartialFC_V2``.

``hq_mode="subset"`` on 2 gloo ranks (class centres sharded 3 + 3) and on 1 process, against a
plain cross-entropy computed here on the whole batch and the whole weight:

* no HQ row on any rank: a zero loss whose (zero) gradient still reaches the embeddings and every
  class centre (DDP's static graph), without crashing in upstream's ``AllGather`` backward;
* HQ rows on one rank only (either one) and on both: the loss, the embeddings' gradient after
  DDP's average and each rank's centre-shard gradient equal the whole-batch reference.

Needs ``ARCFACE_TORCH_ROOT`` (skips without it).
"""
from __future__ import annotations

import sys

import pytest
import torch
import torch.nn.functional as F

import _ddp
from _proc import upstream_root
from qgface_plugin.arcface import cpu_shim, upstream

pytestmark = pytest.mark.upstream

WORLD, B, D, C = 2, 4, 8, 6          # 8 global rows, 6 classes (3 per rank on 2 ranks)
S, M, THRESHOLD = 8.0, 0.4, 0.5      # CosFace with s = 8: no target probability under upstream's 1e-30 clamp
SCENARIOS = {                        # name: which of the 8 global rows are HQ (rank 0 holds rows 0-3)
    "no_hq_anywhere": [],
    "hq_on_rank0_only": [0, 2, 3],
    "hq_on_rank1_only": [5, 6],
    "hq_on_both": [1, 4, 6, 7],
    "all_hq": list(range(WORLD * B)),
}


def _inputs():
    g = torch.Generator().manual_seed(7)
    emb = torch.randn(WORLD * B, D, generator=g) * 5
    labels = torch.tensor([0, 4, 4, 2, 5, 1, 3, 0])  # classes of both shards on both ranks
    weight = torch.randn(C, D, generator=g)
    return emb, labels, weight


def _quality(rows, rank, world):
    from qgface_plugin.quality import Quality
    hq = torch.zeros(WORLD * B, dtype=torch.bool)
    hq[rows] = True
    qhat = torch.where(hq, torch.tensor(0.8), torch.tensor(0.2))
    return Quality(2 * qhat - 1, qhat, hq, THRESHOLD, rank, WORLD * B // world)


def subset_run(rank: int, world: int) -> dict:
    """Every scenario through QGFacePartialFC(hq_mode="subset"): loss, gradients, this rank's shard."""
    from qgface_plugin.margins import build_margin
    from qgface_plugin.arcface.partial_fc import qgface_partial_fc
    ns = upstream.load(upstream_root())
    cls = qgface_partial_fc(sys.modules[ns.PartialFC_V2.__module__])
    emb, labels, weight = _inputs()
    n = WORLD * B // world
    out = {}
    for name, rows in SCENARIOS.items():
        pfc = cls(build_margin("cosface", s=S, m=M), D, C, 1.0, False, hq_mode="subset")
        with torch.no_grad():
            pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
        local = emb[rank * n:(rank + 1) * n].clone().requires_grad_()
        loss = pfc(local, labels[rank * n:(rank + 1) * n].clone(), _quality(rows, rank, world))
        loss.backward()
        out[name] = {"loss": loss.detach(), "class_start": pfc.class_start,
                     "emb_grad": None if local.grad is None else local.grad.clone(),
                     "weight_grad": None if pfc.weight.grad is None else pfc.weight.grad.clone()}
    return out


def _reference(rows):
    """Mean CosFace cross-entropy over the HQ rows of the whole batch; gradients of emb and weight."""
    emb, labels, weight = _inputs()
    emb.requires_grad_()
    weight.requires_grad_()
    if not rows:
        return 0.0, torch.zeros_like(emb), torch.zeros_like(weight)
    keep = torch.tensor(rows)
    cos = F.normalize(emb[keep]) @ F.normalize(weight).t()
    y = labels[keep]
    loss = F.cross_entropy(S * (cos - M * F.one_hot(y, C)), y)
    loss.backward()
    return loss.item(), emb.grad, weight.grad


@pytest.fixture(scope="module", params=[1, WORLD], ids=lambda w: f"world{w}")
def results(request, tmp_path_factory):
    """(world size, per-rank results of every scenario): one spawn per world size."""
    world = request.param
    return world, _ddp.spawn_workers(subset_run, tmp_path_factory.mktemp(f"pfc{world}"), world_size=world)


@pytest.mark.parametrize("name", list(SCENARIOS))
def test_subset_mode_equals_whole_batch_cross_entropy(results, name):
    world, ranks = results
    ref_loss, ref_emb_grad, ref_weight_grad = _reference(SCENARIOS[name])
    n = WORLD * B // world
    for rank, res in enumerate(ranks):
        r = res[name]
        # the zero loss of an all-LQ batch too: every parameter gets a (zero) gradient, none is left out
        assert r["emb_grad"] is not None and r["weight_grad"] is not None, (name, rank)
        assert r["loss"].item() == pytest.approx(ref_loss, rel=1e-5, abs=1e-6), (name, rank)
        # DDP averages the backbone's gradient over the ranks: rank r's rows, divided by the world size
        torch.testing.assert_close(r["emb_grad"] / world, ref_emb_grad[rank * n:(rank + 1) * n],
                                   rtol=1e-4, atol=1e-6)
        start = r["class_start"]
        torch.testing.assert_close(r["weight_grad"], ref_weight_grad[start:start + C // world],
                                   rtol=1e-4, atol=1e-6)


SAMPLED_HQ_ROWS = [0, 5, 7]  # classes 0 and 1: rank 1 (world 2) samples a random negative


def subset_sampled_run(rank: int, world: int) -> dict:
    """hq_mode="subset" with sample_rate 0.5: loss, gradients and the sampled classes of this rank."""
    from qgface_plugin.margins import build_margin
    from qgface_plugin.arcface.partial_fc import qgface_partial_fc
    ns = upstream.load(upstream_root())
    cls = qgface_partial_fc(sys.modules[ns.PartialFC_V2.__module__])
    emb, labels, weight = _inputs()
    n = WORLD * B // world
    torch.manual_seed(5)
    pfc = cls(build_margin("cosface", s=S, m=M), D, C, 0.5, False, hq_mode="subset")
    with torch.no_grad():
        pfc.weight.copy_(weight[pfc.class_start:pfc.class_start + pfc.num_local])
    local = emb[rank * n:(rank + 1) * n].clone().requires_grad_()
    with cpu_shim.partial_fc_cpu_shim():
        loss = pfc(local, labels[rank * n:(rank + 1) * n].clone(), _quality(SAMPLED_HQ_ROWS, rank, world))
    loss.backward()
    return {"loss": loss.detach(), "emb_grad": local.grad.clone(), "weight_grad": pfc.weight.grad.clone(),
            "sampled": pfc.class_start + pfc.weight_index.clone()}


@pytest.mark.parametrize("world", [1, WORLD])
def test_subset_mode_with_sampling_equals_cross_entropy_over_the_sampled_classes(tmp_path, world):
    """Negatives are sampled from the HQ rows' classes only; the loss is the HQ rows' mean over the
    sampled centres of every rank, LQ rows get no gradient, unsampled centres none either."""
    ranks = _ddp.spawn_workers(subset_sampled_run, tmp_path, world_size=world)
    sampled = torch.cat([r["sampled"] for r in ranks])
    emb, labels, weight = _inputs()
    keep = torch.tensor(SAMPLED_HQ_ROWS)
    assert set(labels[keep].tolist()) <= set(sampled.tolist())       # every HQ row's class is sampled
    assert len(sampled) < C                                           # and not every class
    emb.requires_grad_()
    weight.requires_grad_()
    cos = F.normalize(emb[keep]) @ F.normalize(weight[sampled]).t()
    y = (labels[keep].view(-1, 1) == sampled.view(1, -1)).float().argmax(dim=1)
    ref = F.cross_entropy(S * (cos - M * F.one_hot(y, len(sampled))), y)
    ref.backward()
    n = WORLD * B // world
    for rank, r in enumerate(ranks):
        assert r["loss"].item() == pytest.approx(ref.item(), rel=1e-5)
        torch.testing.assert_close(r["emb_grad"] / world, emb.grad[rank * n:(rank + 1) * n], rtol=1e-4, atol=1e-6)
        start = rank * (C // world)
        torch.testing.assert_close(r["weight_grad"], weight.grad[start:start + C // world], rtol=1e-4, atol=1e-6)
