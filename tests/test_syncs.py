"""Host-device syncs of one QGFace training step, counted by op name on the CPU (qgface_plugin.syncs).

* the harness records what would sync on CUDA (``.item()``, ``int()``, ``nonzero``, bool-mask
  indexing, ``unique``, ``repeat_interleave`` without ``output_size``, ``equal``, blocking
  cross-device copies, tensors built from host data) and attributes backward ops to the line that
  built their autograd node;
* one step (``QGFaceLoss.forward`` + ``loss.backward()``) with ``MarginClassifier`` asks for none, in
  gate and subset mode, b = 0 / 0.2 / 1, λ = 0 / 1, mask "label" / "own", every margin, on the paths
  CUDA takes (on the CPU the contrastive loss picks its rows with ``nonzero``, which costs nothing
  there: tested separately; AdaFace's clip mask is packed into bits), also on 2 gloo ranks;
* with the QGFace Partial FC subclass (``ARCFACE_TORCH_ROOT``; 1 and 2 gloo ranks, sample rate 1
  and 0.5) the plugin's part asks for none either; upstream's own syncs are listed, not counted;
* ``check_labels=True`` (the default) costs exactly the label check's reads.
"""
from __future__ import annotations

import sys

import pytest
import torch

import _ddp
from _proc import upstream_root
from qgface_plugin import MarginClassifier, QGFaceInputError, QGFaceLoss, build_margin, contrastive, margins
from qgface_plugin.arcface import cpu_shim, upstream
from qgface_plugin.classifier import check_labels
from qgface_plugin.syncs import count_host_syncs

D, C, B, K = 16, 24, 8, 40
THRESHOLDS, LAMBDAS, MODES, MASKS = (0.0, 0.2, 1.0), (0.0, 1.0), ("gate", "subset"), ("label", "own")
CONFIGS = [(mode, b, lam, mask) for mode in MODES for b in THRESHOLDS for lam in LAMBDAS for mask in MASKS]


def _batch(step, rank=0, world=1):
    """This rank's ``[2B, D]`` raw embeddings (a few rows of small norm: a mixed HQ/LQ split) and labels."""
    g = torch.Generator().manual_seed(100 + step)
    scale = 1 + torch.rand(world, 2 * B, 1, generator=g)
    scale[:, 3::5] *= 0.1
    z = torch.randn(world, 2 * B, D, generator=g) * scale
    y = torch.randint(0, C, (world, B), generator=g)
    return z[rank].clone().requires_grad_(), y[rank].clone()


def _criterion(classifier, b, lam, mask, **kw):
    return QGFaceLoss(classifier, D, queue_size=K, threshold=b, contrastive_weight=lam, mask=mask,
                      stats_init="first_batch", check_labels=False, **kw)


def _margin_classifier_loss(hq_mode, b, lam, mask, margin="adaface", **kw):
    torch.manual_seed(0)
    return _criterion(MarginClassifier(build_margin(margin), D, C, hq_mode=hq_mode), b, lam, mask, **kw)


def _counted_step(criterion, step, rank=0, world=1):
    z, y = _batch(step, rank, world)
    with count_host_syncs() as syncs:
        loss, stats = criterion(z, y)
        loss.backward()
    assert torch.isfinite(loss) and z.grad is not None
    return syncs, stats


@pytest.fixture
def device_path(monkeypatch):
    """The paths every device but the CPU takes: the contrastive loss on all rows, AdaFace's clip
    mask packed into bits."""
    monkeypatch.setattr(contrastive, "SELECT_ROWS_ON", frozenset())
    monkeypatch.setattr(margins, "BOOL_CLIP_MASK_ON", frozenset())


# ------------------------------------------------------------------------------------------------
# the harness
# ------------------------------------------------------------------------------------------------
def test_harness_records_what_would_sync():
    x = torch.randn(6, requires_grad=True)
    idx = torch.tensor([0, 2])
    with count_host_syncs() as syncs:
        x.sum().item()                                   # _local_scalar_dense
        int(x.detach().argmax())
        mask = x > 0
        x[mask].sum().backward()                         # bool index; its backward: bool index_put
        torch.nonzero(mask)
        torch.masked_select(x, mask)
        torch.unique(idx)
        torch.repeat_interleave(idx)                     # output_size unknown
        torch.equal(x, x)
        x.new_tensor([1.0])                              # host data -> (on CUDA) blocking copy
        x.detach().to("meta")                            # another device, blocking
        # not syncs:
        torch.nonzero_static(mask, size=6)
        torch.repeat_interleave(idx, torch.tensor([1, 1]), output_size=2)
        x.detach().to("meta", non_blocking=True)
        x[idx]
        torch.full((), 0.5)
    ops = [r.op.split(".")[1] for r in syncs]
    assert ops.count("_local_scalar_dense") == 2
    for op in ("index", "index_put", "nonzero", "masked_select", "equal", "lift_fresh", "_to_copy"):
        assert op in ops, (op, syncs.summary())
    assert any(op.startswith("_unique") or op == "unique" for op in ops)
    assert ops.count("repeat_interleave") == 1
    assert ops.count("nonzero") == 1 and ops.count("index") == 1 and ops.count("_to_copy") == 1
    back = [r for r in syncs if r.phase == "backward"]
    assert [r.op for r in back] == ["aten.index_put.default"]
    assert back[0].node == "IndexBackward0" and "test_syncs.py" in back[0].where  # the forward's line
    assert not syncs.plugin() and not syncs.unattributed()


def test_harness_attributes_ops_to_the_plugin():
    labels = torch.tensor([0, 3, 1])
    with count_host_syncs() as syncs:
        check_labels(labels, 5)
    assert syncs and all(r.in_plugin and r.where.startswith("qgface_plugin/classifier.py:") for r in syncs)
    assert syncs.plugin() == list(syncs)


def _ddp_static_graph_step(log_hook=False):
    """One forward/backward of a 1-process gloo DDP (static graph, as tools/train.py wraps the backbone)
    inside the harness; with ``log_hook`` a Python gradient hook that reads a value (a real sync)."""
    import torch.distributed as dist
    from qgface_plugin.utils import free_port
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)
    try:
        net = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(4, 2), static_graph=True)
        net(torch.randn(8, 4)).sum().backward()                     # the first step builds the static graph
        x = torch.randn(8, 4, requires_grad=True)
        if log_hook:
            x.register_hook(lambda g: g * g.sum().item())          # a Python hook: its own frame, this file
        with count_host_syncs() as syncs:
            net(x).sum().backward()
        return syncs
    finally:
        dist.destroy_process_group()


def test_harness_puts_ddp_reducer_reads_at_the_engine_not_at_the_backward_call():
    from qgface_plugin.syncs import ENGINE_CALLBACK
    syncs = _ddp_static_graph_step()
    assert syncs, "DDP's static-graph reducer reads counters in backward (4 per step in torch 2.14)"
    assert {(r.where, r.phase, r.in_plugin) for r in syncs} == {(ENGINE_CALLBACK, "backward", False)}, \
        syncs.summary()
    hooked = _ddp_static_graph_step(log_hook=True)
    mine = [r for r in hooked if r.where != ENGINE_CALLBACK]
    assert len(mine) == 1 and mine[0].where.startswith("test_syncs.py:"), hooked.summary()  # still seen, here


def test_harness_catches_a_deliberate_item_in_a_custom_backward():
    class Sneaky(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x):
            return x * 2

        @staticmethod
        def backward(ctx, grad):
            return grad * float(grad.sum())                # a sync in backward

    x = torch.randn(3, requires_grad=True)
    with count_host_syncs() as syncs:
        Sneaky.apply(x).sum().backward()
    assert len(syncs) == 1
    rec = syncs[0]
    assert rec.op == "aten._local_scalar_dense.default" and rec.phase == "backward"
    assert "in backward" in rec.where and "test_syncs.py" in rec.where


# ------------------------------------------------------------------------------------------------
# one step with MarginClassifier
# ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("hq_mode,b,lam,mask", CONFIGS)
def test_step_needs_no_host_sync(device_path, hq_mode, b, lam, mask):
    criterion = _margin_classifier_loss(hq_mode, b, lam, mask)
    for step in range(3):  # the queue fills, then wraps (3 x 16 rows > K = 40)
        syncs, stats = _counted_step(criterion, step)
        assert not syncs, f"step {step}:\n{syncs.summary()}"
    if b == 0.2:  # the split is mixed, so the masked paths really ran
        assert 0 < float(stats["hq_fraction"]) < 1 and float(stats["contrast_fraction"]) > 0


@pytest.mark.parametrize("margin", ["arcface", "cosface"])
@pytest.mark.parametrize("hq_mode", MODES)
def test_step_needs_no_host_sync_with_other_margins(device_path, margin, hq_mode):
    criterion = _margin_classifier_loss(hq_mode, 0.2, 1.0, "label", margin=margin)
    for step in range(2):
        syncs, _ = _counted_step(criterion, step)
        assert not syncs, syncs.summary()


@pytest.mark.parametrize("lam", LAMBDAS)
def test_cpu_contrastive_picks_its_rows_with_nonzero(lam):
    """On the CPU (no device to wait for) only the contrasted rows are computed: one nonzero."""
    criterion = _margin_classifier_loss("gate", 0.2, lam, "label")
    syncs, _ = _counted_step(criterion, 0)
    if lam == 0:
        assert not syncs
    else:
        assert [r.op for r in syncs] == ["aten.nonzero.default"], syncs.summary()
        assert syncs[0].where.startswith("qgface_plugin/contrastive.py:")


@pytest.mark.parametrize("hq_mode,mask", [("gate", "label"), ("subset", "own")])
def test_both_contrastive_paths_give_the_same_step(monkeypatch, hq_mode, mask):
    runs = []
    for rows_on in (frozenset({"cpu"}), frozenset()):
        monkeypatch.setattr(contrastive, "SELECT_ROWS_ON", rows_on)
        criterion = _margin_classifier_loss(hq_mode, 0.2, 1.0, mask)
        out = []
        for step in range(3):
            z, y = _batch(step)
            loss, stats = criterion(z, y)
            loss.backward()
            out.append((loss.detach(), stats["loss_con"], z.grad, criterion.classifier.weight.grad.clone()))
            criterion.classifier.weight.grad = None
        runs.append(out)
    for a, b in zip(*runs):
        for x, y in zip(a, b):
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6)


def test_label_check_is_the_only_sync_when_on(device_path):
    torch.manual_seed(0)
    criterion = QGFaceLoss(MarginClassifier(build_margin("adaface"), D, C), D, queue_size=K)
    assert criterion.check_labels
    syncs, _ = _counted_step(criterion, 0)
    assert syncs and all(r.where.startswith("qgface_plugin/classifier.py:") for r in syncs), syncs.summary()
    assert {r.op for r in syncs} == {"aten._local_scalar_dense.default"}
    z, y = _batch(1)
    y[3] = C
    with pytest.raises(QGFaceInputError, match=f"label {C} in the batch is outside"):
        criterion(z, y)


def test_subset_mode_step_values_do_not_depend_on_the_label_check():
    out = []
    for check in (True, False):
        torch.manual_seed(0)
        criterion = QGFaceLoss(MarginClassifier(build_margin("adaface"), D, C, hq_mode="subset"), D,
                               queue_size=K, stats_init="first_batch", check_labels=check)
        z, y = _batch(0)
        loss, _ = criterion(z, y)
        loss.backward()
        out.append((loss.detach(), z.grad))
    assert torch.equal(out[0][0], out[1][0]) and torch.equal(out[0][1], out[1][1])


# ------------------------------------------------------------------------------------------------
# 2 gloo ranks; the Partial FC subclass (1 and 2 ranks)
# ------------------------------------------------------------------------------------------------
PFC_CONFIGS = [(mode, rate, b) for mode in MODES for rate in (1.0, 0.5) for b in THRESHOLDS]


def ddp_syncs(rank: int, world: int, with_partial_fc: bool) -> dict:
    """Per configuration: the plugin's and the unattributed sync records of 2 steps (as strings),
    and the other (upstream's) records of the last step."""
    contrastive.SELECT_ROWS_ON = frozenset()  # the paths devices other than the CPU take
    margins.BOOL_CLIP_MASK_ON = frozenset()
    out = {}
    if not with_partial_fc:
        for mode, b, lam, mask in [("gate", 0.2, 1.0, "label"), ("subset", 0.2, 1.0, "own"),
                                   ("subset", 1.0, 1.0, "label"), ("gate", 0.0, 0.0, "label")]:
            criterion = _margin_classifier_loss(mode, b, lam, mask)
            recs = []
            for step in range(2):
                syncs, _ = _counted_step(criterion, step, rank, world)
                recs += [str(r) for r in syncs]
            out[(mode, b, lam, mask)] = {"plugin": recs, "other": []}
        return out
    from qgface_plugin.arcface.partial_fc import qgface_partial_fc
    ns = upstream.load(upstream_root())
    cls = qgface_partial_fc(sys.modules[ns.PartialFC_V2.__module__])
    with cpu_shim.partial_fc_cpu_shim():
        for mode, rate, b in PFC_CONFIGS:
            torch.manual_seed(0)
            pfc = cls(build_margin("adaface"), D, C, rate, False, hq_mode=mode)
            criterion = _criterion(pfc, b, 1.0, "own" if mode == "subset" else "label")
            plugin = []
            for step in range(2):
                syncs, _ = _counted_step(criterion, step, rank, world)
                plugin += [str(r) for r in syncs.plugin() + syncs.unattributed()]
            out[(mode, rate, b)] = {"plugin": plugin, "other": [str(r) for r in syncs if not r.in_plugin]}
    return out


def test_two_ranks_step_needs_no_host_sync(tmp_path):
    for rank, res in enumerate(_ddp.spawn_workers(ddp_syncs, tmp_path, args=(False,), world_size=2)):
        for config, recs in res.items():
            assert not recs["plugin"], (rank, config, recs["plugin"])


@pytest.mark.upstream
@pytest.mark.parametrize("world", [1, 2])
def test_partial_fc_step_needs_no_plugin_sync(tmp_path, world):
    results = _ddp.spawn_workers(ddp_syncs, tmp_path, args=(True,), world_size=world, timeout_s=120)
    for rank, res in enumerate(results):
        assert set(res) == set(PFC_CONFIGS)
        for config, recs in res.items():
            assert not recs["plugin"], (world, rank, config, recs["plugin"])
            # upstream's own syncs remain (its forward's bool-mask label edits and DistCrossEntropy in
            # gate mode and b = 0; its sampling when sample_rate < 1)
            mode, rate, b = config
            ours = mode == "subset" and b > 0  # subset mode's own forward, not upstream's
            assert (ours and rate == 1.0) or recs["other"], (config, "upstream synced nowhere?")
            if ours and rate == 1.0:  # only upstream's AllGather runs: no upstream sync either
                assert not recs["other"], recs["other"]
