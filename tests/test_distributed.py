"""Two gloo ranks on CPU against one process: the package's distributed contract.

Every worker function below runs in 2 spawned processes (see ``_ddp.py``); the single-process
reference runs the *same* function in the parent with ``world_size = 1`` (no process group), fed
the whole global batch. Checked:

* ``QualityPartition``: identical EMA statistics and masks on both ranks, equal to one process fed
  the concatenated batch; ``Quality.local()`` picks the rank's rows;
* ``fetch_centres``: a Partial-FC-sharded weight (C = 11 over 2 ranks) gives ``W[labels]`` on both;
* ``ProxyQueue``: gathered rows give identical buffers on both ranks, equal to one process;
* ``QGFaceLoss`` + ``MarginClassifier`` (AdaFace): loss, DDP-averaged gradients, queue and
  statistics over several SGD steps equal one process on the whole batch, for both ``hq_mode``s
  and both masks (K = 37 > 16 rows per step, so old entries survive and carry a proxy correction;
  one extra K = 13 run covers the oversized-batch path); the queue's centre snapshots are W[y]
  whatever the world size, so a queue checkpointed by 2 ranks resumes on 1 process;
* an out-of-range label on one rank raises ``QGFaceInputError`` on every rank (no hang);
* the centre all-reduce in bf16 (``centre_dtype="bfloat16"``): corrected keys and the contrastive loss
  within the bound derived from bf16's 8 significant bits, fresh entries exact.
"""
from __future__ import annotations

from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

import _ddp
from qgface_plugin import (MarginClassifier, ProxyQueue, QGFaceConfigError, QGFaceInputError, QGFaceLoss,
                           QualityPartition, build_margin, fetch_centres)
from qgface_plugin.dist import gather_nograd

WORLD = 2


def components_run(rank: int, world: int) -> dict:
    """Scenarios 1-3 in one spawn (process start-up dominates their cost)."""
    return {"quality": quality_run(rank, world), "fetch": fetch_run(rank, world),
            "queue": queue_run(rank, world)}


@pytest.fixture(scope="module")
def components(tmp_path_factory):
    """Per-rank results of scenarios 1-3: ``[rank0, rank1]``, each ``{scenario: result}``."""
    return _ddp.spawn_workers(components_run, tmp_path_factory.mktemp("components"))


def _dist_on() -> bool:
    return dist.is_available() and dist.is_initialized()


def _local_rows(global_rows: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    n = global_rows.shape[0] // world
    return global_rows[rank * n:(rank + 1) * n]


# ------------------------------------------------------------------------------------------------
# 1. QualityPartition
# ------------------------------------------------------------------------------------------------
Q_ROWS, Q_STEPS, Q_THRESHOLD = 6, 4, 0.5


def _quality_global_norms(step: int) -> torch.Tensor:
    """Global norms of one step, [WORLD * Q_ROWS], rank 0's rows first."""
    g = torch.Generator().manual_seed(100 + step)
    norms = torch.empty(WORLD * Q_ROWS).uniform_(2.0, 45.0, generator=g)
    if step == 0:  # exercise the norm clip on both ranks' rows
        norms[1], norms[WORLD * Q_ROWS - 2] = 150.0, 1e-5
    return norms


def quality_run(rank: int, world: int) -> list:
    part = QualityPartition(threshold=Q_THRESHOLD, momentum=0.25, init="adaface")
    out = []
    for step in range(Q_STEPS):
        q = part(_local_rows(_quality_global_norms(step), rank, world))
        loc = q.local()
        out.append({"mean": part.mean.clone(), "std": part.std.clone(),
                    "num_updates": int(part.num_updates), "ms": q.ms.clone(), "qhat": q.qhat.clone(),
                    "hq": q.hq.clone(), "local_ms": loc.ms.clone(), "local_qhat": loc.qhat.clone(),
                    "local_hq": loc.hq.clone()})
    return out


def test_quality_partition_identical_on_ranks_and_equal_to_one_process(components):
    ranks = [r["quality"] for r in components]
    ref = quality_run(0, 1)
    n = Q_ROWS
    mixed = False
    for step in range(Q_STEPS):
        r0, r1, one = ranks[0][step], ranks[1][step], ref[step]
        for key in ("mean", "std", "ms", "qhat", "hq"):  # same gathered bytes: bit-identical
            assert torch.equal(r0[key], r1[key]), f"step {step}: {key} differs between ranks"
        assert r0["num_updates"] == r1["num_updates"] == one["num_updates"] == step + 1
        for key in ("mean", "std", "ms", "qhat"):
            torch.testing.assert_close(r0[key], one[key], atol=1e-6, rtol=1e-6,
                                       msg=lambda m, k=key, s=step: f"step {s} {k} vs 1 process: {m}")
        assert torch.equal(r0["hq"], one["hq"]), f"step {step}: HQ mask differs from 1 process"
        for rank, res in enumerate((r0, r1)):
            sl = slice(rank * n, (rank + 1) * n)
            for key in ("ms", "qhat"):
                torch.testing.assert_close(res["local_" + key], one[key][sl], atol=1e-6, rtol=1e-6)
            assert torch.equal(res["local_hq"], one["hq"][sl]), f"rank {rank} local() rows"
        mixed |= bool(one["hq"].any()) and not bool(one["hq"].all())
    assert mixed, "inputs never produced a mixed HQ/LQ split; the test would not see a wrong mask"


# ------------------------------------------------------------------------------------------------
# 2. fetch_centres with a Partial-FC shard
# ------------------------------------------------------------------------------------------------
FC_C, FC_D = 11, 5


def _shard(rank: int, world: int, num_classes: int):
    """Partial FC's layout: (class_start, num_local)."""
    num_local = num_classes // world + int(rank < num_classes % world)
    class_start = num_classes // world * rank + min(rank, num_classes % world)
    return class_start, num_local


def _fc_full_weight() -> torch.Tensor:
    return torch.randn(FC_C, FC_D, generator=torch.Generator().manual_seed(7))


def _fc_labels() -> torch.Tensor:
    perm = torch.randperm(FC_C, generator=torch.Generator().manual_seed(8))
    return torch.cat([perm, torch.tensor([10, 0, 6, 5, 5, 10, 3])])  # every class, with repeats


def fetch_run(rank: int, world: int) -> dict:
    start, num_local = _shard(rank, world, FC_C)
    shard = _fc_full_weight()[start:start + num_local].clone()
    labels = _fc_labels()
    return {"start": start, "num_local": num_local,
            "centres": fetch_centres(labels, shard, start, num_local, num_classes=FC_C),
            "default_num_local": fetch_centres(labels, shard, class_start=start)}


def test_fetch_centres_from_sharded_weight(components):
    ranks = [r["fetch"] for r in components]
    assert [(r["start"], r["num_local"]) for r in ranks] == [(0, 6), (6, 5)]
    expected = _fc_full_weight()[_fc_labels()]
    for rank, res in enumerate(ranks):
        for key in ("centres", "default_num_local"):
            assert res[key].shape == expected.shape
            # one SUM over one owner and zeros elsewhere: exact up to float32 rounding (atol 1e-6)
            torch.testing.assert_close(res[key], expected, atol=1e-6, rtol=0,
                                       msg=lambda m, r=rank, k=key: f"rank {r} {k}: {m}")


# ------------------------------------------------------------------------------------------------
# 3. ProxyQueue fed gathered rows
# ------------------------------------------------------------------------------------------------
PQ_K, PQ_D, PQ_ROWS, PQ_STEPS, PQ_C = 37, 6, 8, 6, 9
QUEUE_BUFFERS = ("features", "labels", "centres", "centre_inv_norm", "ptr", "num_filled")


def _pq_step_data(step: int):
    """Global rows of one step: features [WORLD*PQ_ROWS, D], labels, centres, and the weight now."""
    g = torch.Generator().manual_seed(300 + step)
    feats = torch.randn(WORLD * PQ_ROWS, PQ_D, generator=g) * 3.0   # not normalised: enqueue does it
    labels = torch.randint(0, PQ_C, (WORLD * PQ_ROWS,), generator=g)
    centres = torch.randn(WORLD * PQ_ROWS, PQ_D, generator=g)
    weight = torch.randn(PQ_C, PQ_D, generator=g)                   # drifts every step
    return feats, labels, centres, weight


def queue_run(rank: int, world: int) -> list:
    plain = ProxyQueue(PQ_K, PQ_D)               # enqueue(gathered rows, gathered centres)
    fused = ProxyQueue(PQ_K, PQ_D)               # enqueue_and_correct with a sharded lookup
    start, num_local = _shard(rank, world, PQ_C)
    out = []
    for step in range(PQ_STEPS):
        feats, labels, centres, weight = _pq_step_data(step)
        mine = [_local_rows(t, rank, world) for t in (feats, labels, centres)]
        g_feats, g_labels, g_centres = (gather_nograd(t) for t in mine)
        slots_plain = plain.enqueue(g_feats, g_labels, g_centres)
        lookup = partial(fetch_centres, weight=weight[start:start + num_local].clone(),
                         class_start=start, num_local=num_local)
        corrected, slots_fused = fused.enqueue_and_correct(g_feats, g_labels, lookup)
        rec = {"slots_plain": slots_plain, "slots_fused": slots_fused, "corrected": corrected,
               "plain_corrected": plain.corrected(lookup(plain.filled_labels()))}
        for name, q in (("plain", plain), ("fused", fused)):
            rec.update({f"{name}.{b}": getattr(q, b).clone() for b in QUEUE_BUFFERS})
            rec[f"{name}.filled"] = q.filled
        out.append(rec)
    return out


def test_proxy_queue_identical_on_ranks_and_equal_to_one_process(components):
    ranks = [r["queue"] for r in components]
    ref = queue_run(0, 1)
    wrapped = False
    for step in range(PQ_STEPS):
        r0, r1, one = ranks[0][step], ranks[1][step], ref[step]
        assert set(r0) == set(one)
        for key in r0:
            if key.endswith(".filled"):
                assert r0[key] == r1[key] == one[key] == min(PQ_K, (step + 1) * WORLD * PQ_ROWS)
                continue
            assert torch.equal(r0[key], r1[key]), f"step {step}: {key} differs between ranks"
            if r0[key].is_floating_point():
                torch.testing.assert_close(r0[key], one[key], atol=1e-6, rtol=1e-6,
                                           msg=lambda m, k=key, s=step: f"step {s} {k}: {m}")
            else:
                assert torch.equal(r0[key], one[key]), f"step {step}: {key} differs from 1 process"
        wrapped |= 0 < int(one["fused.ptr"]) < WORLD * PQ_ROWS and step > 1
    assert wrapped, "the queue never wrapped off a batch boundary"
    # the correction is not trivially zero in this scenario
    assert float((ref[-1]["plain_corrected"] - ref[-1]["plain.features"]).abs().max()) > 0.1


# ------------------------------------------------------------------------------------------------
# 4. QGFaceLoss: two ranks + gradient averaging == one process on the whole batch
# ------------------------------------------------------------------------------------------------
QG_D, QG_C, QG_B, QG_IN, QG_STEPS, QG_LR, QG_THRESHOLD = 16, 20, 4, 8, 3, 0.1, 0.4
#: Parameter scales after the seeded default init: embedding norms ~8-35 (AdaFace-like) and centre
#: norms ~4, so that an SGD step of lr 0.1 moves the centres by a few per cent (queue corrections
#: ~0.1) and keeps the HQ/LQ split mixed in every step, instead of blowing the model up.
QG_BACKBONE_SCALE, QG_CENTRE_SCALE, QG_MOMENTUM = 10.0, 100.0, 0.1
QG_CONFIGS = {  # name: (hq_mode, mask, queue size K)
    "gate-label": ("gate", "label", 37),
    "gate-own": ("gate", "own", 37),
    "subset-label": ("subset", "label", 37),
    "subset-own": ("subset", "own", 37),
    "subset-own-K13": ("subset", "own", 13),   # K < 2 * global batch: only the last K rows kept
}


def _qg_step_inputs(step: int):
    """Fixed global batch of one step: inputs of views [H_1..H_8; L_1..L_8] and labels [8]."""
    g = torch.Generator().manual_seed(500 + step)
    n = WORLD * QG_B
    x_h = torch.randn(n, QG_IN, generator=g)
    scale = torch.empty(n).uniform_(0.1, 1.0, generator=g)         # L views: shrunken, noisy
    x_l = scale.unsqueeze(1) * x_h + 0.1 * torch.randn(n, QG_IN, generator=g)
    labels = torch.randint(0, QG_C, (n,), generator=g)
    labels[n - 1] = labels[0]                                        # a class on both ranks
    labels[1] = labels[2]                                            # a class twice on rank 0
    return x_h, x_l, labels


def qgface_run(rank: int, world: int, config_names: tuple = tuple(QG_CONFIGS),
               load_queue: dict | None = None) -> dict:
    """Train every config for QG_STEPS SGD steps; per step, the loss, averaged grads and state.

    ``load_queue = {name: (step, queue_state)}`` loads ``queue_state`` into the queue just before
    ``step`` (a resumed checkpoint).
    """
    out = {}
    for name in config_names:
        hq_mode, mask, k = QG_CONFIGS[name]
        torch.manual_seed(0)  # same parameters on every rank and in the reference
        backbone = nn.Linear(QG_IN, QG_D)
        classifier = MarginClassifier(build_margin("adaface"), QG_D, QG_C, hq_mode=hq_mode)
        with torch.no_grad():
            backbone.weight.mul_(QG_BACKBONE_SCALE)
            backbone.bias.mul_(QG_BACKBONE_SCALE)
            classifier.weight.mul_(QG_CENTRE_SCALE)
        loss_fn = QGFaceLoss(classifier, QG_D, queue_size=k, threshold=QG_THRESHOLD,
                             stats_init="first_batch", norm_momentum=QG_MOMENTUM, mask=mask)
        params = {"backbone.weight": backbone.weight, "backbone.bias": backbone.bias,
                  "classifier.weight": classifier.weight}
        steps = []
        for step in range(QG_STEPS):
            if load_queue and name in load_queue and load_queue[name][0] == step:
                loss_fn.queue.load_state_dict(load_queue[name][1])
            x_h, x_l, labels = _qg_step_inputs(step)
            x = torch.cat([_local_rows(x_h, rank, world), _local_rows(x_l, rank, world)])
            loss, stats = loss_fn(backbone(x), _local_rows(labels, rank, world))
            loss.backward()
            global_loss = loss.detach().clone()
            if _dist_on():  # what DDP does: average the gradients (and here, the loss for logging)
                dist.all_reduce(global_loss)
                for p in params.values():
                    dist.all_reduce(p.grad)
                    p.grad.div_(world)
                global_loss.div_(world)
            rec = {"loss": global_loss, "local_loss": loss.detach().clone(),
                   "grads": {k_: p.grad.clone() for k_, p in params.items()},
                   "stats": {k_: v.clone() for k_, v in stats.items()},
                   "queue": {b: getattr(loss_fn.queue, b).clone() for b in QUEUE_BUFFERS},
                   "mean": loss_fn.partition.mean.clone(), "std": loss_fn.partition.std.clone(),
                   "num_updates": int(loss_fn.partition.num_updates)}
            with torch.no_grad():
                for p in params.values():
                    p.sub_(QG_LR * p.grad)
                    p.grad = None
            steps.append(rec)
        out[name] = steps
    return out


@pytest.fixture(scope="module")
def qgface_results(tmp_path_factory):
    """One spawn runs every configuration on 2 ranks; the parent runs them on 1 process."""
    ranks = _ddp.spawn_workers(qgface_run, tmp_path_factory.mktemp("qgface"))
    return ranks, qgface_run(0, 1)


def _close(got, want, atol, rtol, what):
    torch.testing.assert_close(got, want, atol=atol, rtol=rtol,
                               msg=lambda m: f"{what} (atol={atol}, rtol={rtol}): {m}")


@pytest.mark.parametrize("name", list(QG_CONFIGS))
def test_qgface_loss_two_ranks_equal_one_process(qgface_results, name):
    ranks, ref = qgface_results
    partitioned_step = False
    for step in range(QG_STEPS):
        r0, r1, one = ranks[0][name][step], ranks[1][name][step], ref[name][step]
        where = f"{name} step {step}"
        hq_frac, con_frac = float(one["stats"]["hq_fraction"]), float(one["stats"]["contrast_fraction"])
        partitioned_step |= 0.0 < hq_frac < 1.0 and con_frac > 0.0
        # hq_fraction is a global statistic: the same on every rank and in the reference
        assert float(r0["stats"]["hq_fraction"]) == float(r1["stats"]["hq_fraction"]) == hq_frac
        # averaged loss (all-reduced mean over ranks) == loss of the whole batch; float32 sums of
        # terms up to ~s = 64 in different orders: atol 1e-4 plus rtol 1e-5
        torch.testing.assert_close(r0["loss"], r1["loss"], atol=0, rtol=0)
        _close(r0["loss"], one["loss"], 1e-4, 1e-5, f"{where}: global loss")
        # DDP-averaged gradients == gradients of the whole-batch loss (identical on both ranks)
        for key in one["grads"]:
            assert torch.equal(r0["grads"][key], r1["grads"][key]), f"{where}: {key} grad per rank"
            _close(r0["grads"][key], one["grads"][key], 1e-5, 1e-5, f"{where}: grad of {key}")
        # quality statistics
        assert r0["num_updates"] == r1["num_updates"] == one["num_updates"] == step + 1
        for key in ("mean", "std"):
            assert torch.equal(r0[key], r1[key]), f"{where}: partition {key} per rank"
            _close(r0[key], one[key], 1e-6, 1e-6, f"{where}: partition {key}")
        # the queue: order [H of all ranks; L of all ranks] == the 1-process order
        for key in ("features", "labels", "ptr", "num_filled"):
            assert torch.equal(r0["queue"][key], r1["queue"][key]), f"{where}: queue {key} per rank"
            if key == "features":
                _close(r0["queue"][key], one["queue"][key], 1e-6, 1e-5, f"{where}: queue features")
            else:
                assert torch.equal(r0["queue"][key], one["queue"][key]), f"{where}: queue {key}"
    assert partitioned_step, (f"{name}: no step had 0 < hq_fraction < 1 and contrast_fraction > 0; "
                              "the inputs do not exercise both branches")


@pytest.mark.parametrize("name", ["gate-label", "subset-own"])
def test_qgface_queue_centre_snapshots_equal_one_process(qgface_results, name):
    """The stored centre snapshots are the raw rows W[y], whatever the world size.

    ``MarginClassifier`` holds all C centres on every rank (class_start 0, num_local C), so the
    centre lookup must not add up the ranks' copies.
    """
    ranks, ref = qgface_results
    for step in range(QG_STEPS):
        r0, r1, one = ranks[0][name][step], ranks[1][name][step], ref[name][step]
        for key in ("centres", "centre_inv_norm"):
            assert torch.equal(r0["queue"][key], r1["queue"][key]), f"step {step}: {key} per rank"
            got, want = r0["queue"][key], one["queue"][key]
            ratio = float(got.norm() / want.norm())
            _close(got, want, 1e-6, 1e-5,
                   f"{name} step {step}: queue {key}, 2 ranks vs 1 process (norm ratio {ratio:.4f})")


def test_qgface_queue_checkpoint_from_two_ranks_resumes_on_one_process(qgface_results):
    """The queue is a persistent buffer: a checkpoint written by 2 ranks must resume on 1.

    The 1-process run loads rank 0's queue after step 1 before its step 2; its step-2 loss must be
    that of the uninterrupted 1-process run (the rest of its state already equals the 2-rank one).
    """
    ranks, ref = qgface_results
    name, step = "gate-label", QG_STEPS - 1
    resumed = qgface_run(0, 1, (name,), {name: (step, ranks[0][name][step - 1]["queue"])})
    _close(resumed[name][step]["loss"], ref[name][step]["loss"], 1e-4, 1e-5,
           f"{name} step {step}: loss after resuming a 2-rank queue on 1 process")
    _close(resumed[name][step]["grads"]["backbone.weight"], ref[name][step]["grads"]["backbone.weight"],
           1e-5, 1e-5, f"{name} step {step}: backbone grad after resuming a 2-rank queue")


# ------------------------------------------------------------------------------------------------
# 5. an out-of-range label on one rank raises on every rank
# ------------------------------------------------------------------------------------------------
BAD_LABEL = 25


def bad_label_run(rank: int, world: int) -> dict:
    torch.manual_seed(0)
    classifier = MarginClassifier(build_margin("adaface"), QG_D, QG_C)
    loss_fn = QGFaceLoss(classifier, QG_D, queue_size=13, threshold=QG_THRESHOLD)
    labels = torch.tensor([1, 2, 3, 4]) if rank == 0 else torch.tensor([5, BAD_LABEL, 6, 7])
    emb = torch.randn(2 * len(labels), QG_D, requires_grad=True)
    result = {"raised": None, "message": None}
    try:
        loss, _ = loss_fn(emb, labels)
        loss.backward()
    except QGFaceInputError as exc:
        result.update(raised="QGFaceInputError", message=str(exc))
    except Exception as exc:  # noqa: BLE001 - reported to the parent
        result.update(raised=type(exc).__name__, message=str(exc))
    # both ranks must still be in step: this collective pairs up only if neither rank is stuck
    # in (or past) a different one
    check = torch.tensor([float(rank + 1)])
    dist.all_reduce(check)
    result["sync"] = float(check)
    result["queue_filled"] = loss_fn.queue.filled
    return result


def test_label_out_of_range_on_one_rank_raises_on_every_rank(tmp_path):
    ranks = _ddp.spawn_workers(bad_label_run, tmp_path, timeout_s=45)
    for rank, res in enumerate(ranks):
        assert res["raised"] == "QGFaceInputError", f"rank {rank}: {res}"
        assert str(BAD_LABEL) in res["message"], f"rank {rank} message does not name the label: {res}"
        assert res["sync"] == 3.0, f"rank {rank}: ranks out of step after the error: {res}"
        assert res["queue_filled"] == 0, f"rank {rank}: the bad batch reached the queue"


# ------------------------------------------------------------------------------------------------
# 5. The centre all-reduce in bf16 (qgface_centre_dtype = "bfloat16") against fp32
# ------------------------------------------------------------------------------------------------
# bf16 keeps 8 significant bits: rounding to nearest moves each element by at most U = 2**-8 of
# itself, so a fetched centre c~ = bf16(c) has ||c~ - c|| <= U ||c||. A queue entry's snapshot s~ came
# from an earlier bf16 fetch too, and its inverse norm is that of s~. For the corrected key
# e + (c - s) / ||s|| the difference bf16 - fp32 is
#     [(c~ - c) - (s~ - s)] / ||s~||  +  (c - s) (1/||s~|| - 1/||s||),
# with ||s~|| >= (1 - U) ||s|| and |1/||s~|| - 1/||s||| <= U / ((1 - U) ||s||), so
#     ||key~ - key|| <= U / (1 - U) * (||c|| + ||s|| + ||c - s||) / ||s|| <= U / (1 - U) * (2 + 2 rho),
# rho = ||c - s|| / ||s|| the centre's relative drift since the entry was stored (≈ 2**-7). Entries
# stored this step have c~ = s~: their keys are exactly e in both runs. The contrastive row loss
# log-sum-exp(z) - z_0 of logits z_j = s w c_j (c_j the clamped, masked cosine a.key_j; the positive
# z_0 is unchanged) moves by at most sum_j p_j |dz_j| <= s w max_j |a.(key~_j - key_j)|, since the
# softmax weights sum to at most 1 and the clamp is 1-Lipschitz; times the rescale factor and
# averaged over rows: |L~ - L| <= factor * s * max_ij |a_i.(key~_j - key_j)| <= factor * s * max_j bound_j
# (w <= 1). Plus fp32 rounding of the two computations (terms below the softmax cut-off are 0).
BF_C, BF_D, BF_B, BF_K, BF_DRIFT, BF_S = 11, 32, 4, 64, 0.05, 64.0
BF_U = 2.0 ** -8


class _ShardedCentres(nn.Module):
    """A Partial-FC-like classifier that only holds a weight shard (its loss is 0): the queue reads it."""

    def __init__(self, shard, class_start, num_classes):
        super().__init__()
        self.weight = nn.Parameter(shard.clone())
        self.class_start, self.num_local, self.num_classes = class_start, shard.shape[0], num_classes

    def forward(self, embeddings, labels, quality=None):
        return 0.0 * (embeddings.sum() + self.weight.sum())


def _bf_weights():
    g = torch.Generator().manual_seed(21)
    old = torch.randn(BF_C, BF_D, generator=g) * 0.05        # Partial FC-like scale
    drift = torch.randn(BF_C, BF_D, generator=g) * old.norm(dim=1, keepdim=True) * BF_DRIFT / BF_D ** 0.5
    return old, old + drift


def _bf_batch(step):
    g = torch.Generator().manual_seed(40 + step)
    z = torch.randn(2 * WORLD * BF_B, BF_D, generator=g) * (1 + torch.rand(2 * WORLD * BF_B, 1, generator=g))
    return z, torch.randint(0, BF_C, (WORLD * BF_B,), generator=g)


def centre_dtype_run(rank: int, world: int) -> dict:
    """Two steps (the centres drift in between) with each centre dtype: loss_con per step, the keys
    of the last step and the queue's labels; plus one fetch of every class in bf16."""
    start, num_local = _shard(rank, world, BF_C)
    old, now = _bf_weights()
    out = {"fetch_bf16": fetch_centres(torch.arange(BF_C), old[start:start + num_local], start, num_local,
                                       BF_C, transfer_dtype=torch.bfloat16)}
    for dtype in ("float32", "bfloat16"):
        centres = _ShardedCentres(old[start:start + num_local], start, BF_C)
        loss_fn = QGFaceLoss(centres, BF_D, queue_size=BF_K, threshold=1.0, stats_init="first_batch",
                             contrastive_scale=BF_S, check_labels=False, centre_dtype=dtype)
        losses = []
        for step in range(2):
            if step == 1:
                with torch.no_grad():
                    centres.weight.copy_(now[start:start + num_local])
            z, y = _bf_batch(step)
            n = WORLD * BF_B // world
            z_local = torch.cat([z[:WORLD * BF_B][rank * n:(rank + 1) * n], z[WORLD * BF_B:][rank * n:(rank + 1) * n]])
            _, stats = loss_fn(z_local, y[rank * n:(rank + 1) * n])
            losses.append(stats["loss_con"])
        lookup = fetch_centres(loss_fn.queue.filled_labels(), centres.weight, start, num_local, BF_C,
                               check=False, transfer_dtype=loss_fn.centre_dtype)
        out[dtype] = {"loss_con": losses, "keys": loss_fn.queue.corrected(lookup),
                      "labels": loss_fn.queue.filled_labels().clone(), "factor": loss_fn.rescale_factor}
    return out


def test_centre_transfer_in_bf16_is_within_its_bound(tmp_path):
    ranks = _ddp.spawn_workers(centre_dtype_run, tmp_path)
    old, now = _bf_weights()
    z1, _ = _bf_batch(1)
    anchors = F.normalize(z1, dim=1)                       # every rank's anchors of the last step
    rows_per_step = 2 * WORLD * BF_B
    for rank, res in enumerate(ranks):
        assert torch.equal(res["fetch_bf16"], old.to(torch.bfloat16).float())  # exactly the rounded rows
        a, b = res["float32"], res["bfloat16"]
        assert torch.equal(a["labels"], b["labels"]) and a["labels"].numel() == 2 * rows_per_step
        # step 1: every key is a fresh entry (zero correction in both): the same loss, bit for bit
        assert torch.equal(a["loss_con"][0], b["loss_con"][0])
        delta = b["keys"] - a["keys"]
        assert torch.equal(delta[rows_per_step:], torch.zeros_like(delta[rows_per_step:]))  # this step's rows
        y = a["labels"][:rows_per_step]
        c, s = now[y], old[y]
        rho = (c - s).norm(dim=1) / s.norm(dim=1)
        bound = BF_U / (1 - BF_U) * (2 + 2 * rho) + 1e-6       # + fp32 rounding of the correction
        err = delta[:rows_per_step].norm(dim=1)
        assert (err <= bound).all(), (err / bound).max()
        assert err.max() > 0.1 * BF_U, "bf16 changed nothing: the test would not see a wrong bound"
        # the contrastive loss of the last step
        diff = float((b["loss_con"][1] - a["loss_con"][1]).abs())
        tight = a["factor"] * BF_S * float((anchors @ delta.t()).abs().max()) + 1e-5
        loose = a["factor"] * BF_S * float(bound.max()) + 1e-5
        assert diff <= tight <= loose, (diff, tight, loose)


def test_centre_dtype_has_no_effect_without_a_collective():
    old, _ = _bf_weights()
    z, y = _bf_batch(0)
    out = []
    for dtype in ("float32", "bfloat16"):
        loss_fn = QGFaceLoss(_ShardedCentres(old, 0, BF_C), BF_D, queue_size=BF_K, threshold=1.0,
                             stats_init="first_batch", centre_dtype=dtype)
        for step in range(2):
            z, y = _bf_batch(step)
            loss, _ = loss_fn(z, y)
        out.append(loss)
    assert torch.equal(out[0], out[1])
    with pytest.raises(QGFaceConfigError, match="qgface_centre_dtype must be one of"):
        QGFaceLoss(_ShardedCentres(old, 0, BF_C), BF_D, queue_size=BF_K, centre_dtype="float16")
