"""QGFaceLoss: one step against an independent float64 re-computation, edge cases, resume, errors."""
import math

import pytest
import torch
import torch.nn.functional as F

from qgface_plugin import (MarginClassifier, QGFaceConfigError, QGFaceInputError, QGFaceLoss,
                           build_margin)
from test_contrastive import slow_reference
from test_margins import adaface_reference

D, C, B, K, S = 6, 5, 4, 9, 64.0


def make(threshold=0.45, hq_mode="gate", queue_size=K, **kw):
    torch.manual_seed(0)
    clf = MarginClassifier(build_margin("adaface"), D, C, hq_mode=hq_mode).double()
    return QGFaceLoss(clf, D, queue_size=queue_size, threshold=threshold, stats_init="first_batch", **kw).double()


class Reference:
    """The method re-derived step by step in float64 from its description (no package code)."""

    def __init__(self, threshold, momentum=0.01, h=0.333):
        self.b, self.alpha, self.h = threshold, momentum, h
        self.mean = self.std = None
        self.history = []  # (feature, label, centre snapshot), oldest first

    def step(self, z, y, weight):
        norms = z.detach().norm(dim=1).clamp(1e-3, 100)
        if self.mean is None:
            self.mean, self.std = norms.mean(), norms.std()
        else:
            self.mean = (1 - self.alpha) * self.mean + self.alpha * norms.mean()
            self.std = (1 - self.alpha) * self.std + self.alpha * norms.std()
        ms = (self.h * (norms - self.mean) / (self.std + 1e-3)).clamp(-1, 1)
        q = (ms + 1) / 2
        y2 = torch.cat([y, y])
        cos = F.normalize(z, dim=1) @ F.normalize(weight, dim=1).t()
        logits = adaface_reference(cos.clamp(-1, 1), y2, ms, s=S)
        logits = logits * torch.sigmoid(2 * S * (q - self.b)).unsqueeze(1)
        loss_cls = F.cross_entropy(logits, y2)
        feats = F.normalize(z, dim=1)
        for f, lab in zip(feats.detach(), y2):
            self.history.append((f, int(lab), weight.detach()[lab].clone()))
        newest = self.history[-K:]
        keys = torch.stack([f + (weight.detach()[lab] - c) / c.norm() for f, lab, c in newest])
        key_labels = torch.tensor([lab for _, lab, _ in newest])
        w = (torch.minimum(q[:B], q[B:]) < self.b).double()
        anchors = torch.cat([feats[B:], feats[:B]])
        positives = torch.cat([feats[:B], feats[B:]])
        loss_con = slow_reference(anchors, positives, y2, keys, key_labels, torch.cat([w, w]), S)
        return loss_cls + loss_con, loss_cls, loss_con, q


def _batch(step):
    g = torch.Generator().manual_seed(10 + step)
    z = torch.randn(2 * B, D, generator=g, dtype=torch.float64) * (1 + torch.rand(2 * B, 1, generator=g, dtype=torch.float64))
    return z, torch.randint(0, C, (B,), generator=g)


def test_three_steps_match_independent_reference_values_and_gradients():
    crit = make()
    ref = Reference(0.45)
    ref_weight = crit.classifier.weight.detach().clone().requires_grad_()
    saw_mixed = False
    for step in range(3):  # 24 rows into K = 9: wraps, and the centres move between steps
        z, y = _batch(step)
        z1, z2 = z.clone().requires_grad_(), z.clone().requires_grad_()
        loss, stats = crit(z1, y)
        ref_loss, ref_cls, ref_con, q = ref.step(z2, y, ref_weight)
        assert loss.item() == pytest.approx(ref_loss.item(), abs=1e-8)
        assert stats["loss_cls"].item() == pytest.approx(ref_cls.item(), abs=1e-8)
        assert stats["loss_con"].item() == pytest.approx(ref_con.item(), abs=1e-8)
        assert stats["hq_fraction"].item() == pytest.approx((q >= 0.45).double().mean().item())
        saw_mixed |= 0 < stats["hq_fraction"].item() < 1 and stats["contrast_fraction"].item() > 0
        crit.classifier.weight.grad = None
        loss.backward()
        ref_loss.backward()
        assert torch.allclose(z1.grad, z2.grad, atol=1e-8)
        assert torch.allclose(crit.classifier.weight.grad, ref_weight.grad, atol=1e-8)
        with torch.no_grad():  # SGD step on both classifiers: the proxies drift
            crit.classifier.weight -= 0.5 * crit.classifier.weight.grad
            ref_weight -= 0.5 * ref_weight.grad
            ref_weight.grad = None
    assert saw_mixed, "the test data must exercise both branches"
    assert crit.queue.filled == K


def test_subset_mode_classifies_only_hq_rows():
    crit = make(hq_mode="subset", contrastive_weight=0.0)
    z, y = _batch(0)
    loss, stats = crit(z, y)
    norms = z.norm(dim=1)
    ms = (0.333 * (norms - norms.mean()) / (norms.std() + 1e-3)).clamp(-1, 1)
    hq = (ms + 1) / 2 >= 0.45
    assert 0 < hq.sum() < 2 * B
    y2 = torch.cat([y, y])
    w = crit.classifier.weight
    cos = F.normalize(z[hq], dim=1) @ F.normalize(w, dim=1).t()
    expected = F.cross_entropy(adaface_reference(cos, y2[hq], ms[hq]), y2[hq])
    assert loss.item() == pytest.approx(expected.item(), abs=1e-8)


@pytest.mark.parametrize("hq_mode", ["gate", "subset"])
def test_no_hq_rows_still_valid_and_touches_everything(hq_mode):
    # a backbone so that "every parameter" is concrete
    torch.manual_seed(3)
    backbone = torch.nn.Linear(3, D).double()
    crit = make(threshold=1.0, hq_mode=hq_mode)  # q̂ >= 1 needs ms = +1: make every norm equal
    x = torch.randn(2 * B, 3, dtype=torch.float64)
    z = backbone(x)
    z = z / z.norm(dim=1, keepdim=True)  # all norms 1 -> ms = 0 -> q̂ = 0.5 < 1: all LQ
    loss, stats = crit(z, torch.arange(B) % C)
    assert stats["hq_fraction"].item() == 0.0 and stats["contrast_fraction"].item() == 1.0
    assert torch.isfinite(loss)
    loss.backward()
    for name, p in list(backbone.named_parameters()) + [("classifier.weight", crit.classifier.weight)]:
        assert p.grad is not None, name


def test_no_lq_pairs_gives_constant_contrastive_term():
    crit = make(threshold=0.01)
    z, y = _batch(1)
    z.requires_grad_()
    loss, stats = crit(z, y)
    assert stats["contrast_fraction"].item() == 0.0
    assert stats["loss_con"].item() == pytest.approx(math.log(129), abs=1e-12)
    loss.backward()
    assert z.grad is not None


def test_threshold_zero_classifies_and_contrasts_everything():
    crit = make(threshold=0.0)
    z, y = _batch(2)
    _, stats = crit(z, y)
    assert stats["hq_fraction"].item() == 1.0 and stats["contrast_fraction"].item() == 1.0


def test_eval_mode_does_not_enqueue_and_lambda_zero_skips_contrast():
    crit = make()
    z, y = _batch(0)
    crit(z, y)
    snapshot = {k: v.clone() for k, v in crit.queue.state_dict().items()}
    crit.eval()
    crit(z, y)
    for k, v in crit.queue.state_dict().items():
        assert torch.equal(v, snapshot[k]), k
    crit.train()
    loss, stats = crit(z, y, contrastive_weight=0.0)
    assert loss.item() == pytest.approx(stats["loss_cls"].item())
    assert crit.queue._ptr == (4 * B) % K  # still enqueued: the queue is warm when lambda turns on


def test_resume_gives_the_same_next_step_loss():
    a = make()
    for step in range(3):
        a(*_batch(step))
    state = a.state_dict()
    assert {"partition.mean", "partition.num_updates", "queue.features", "queue.ptr",
            "queue.num_filled", "classifier.weight"} <= set(state)
    b = make(threshold=0.45)
    b.load_state_dict(state)
    z, y = _batch(7)
    la, _ = a(z, y)
    lb, _ = b(z, y)
    assert la.item() == lb.item()


def test_float32_and_bfloat16_embeddings():
    torch.manual_seed(0)
    clf = MarginClassifier(build_margin("arcface"), D, C)
    crit = QGFaceLoss(clf, D, queue_size=K, threshold=0.3)
    z = torch.randn(2 * B, D)
    l32, _ = crit(z, torch.arange(B))
    zb = z.bfloat16().requires_grad_()
    lb, _ = crit(zb, torch.arange(B))
    assert torch.isfinite(lb) and lb.dtype == torch.float32
    lb.backward()
    assert zb.grad.dtype == torch.bfloat16


def test_contrastive_options_change_the_gradient_as_expected():
    z, y = _batch(0)
    grads = {}
    for name, kw in {"base": {}, "detach": {"detach_positive": True}, "one_sided": {"symmetric": False},
                     "own": {"mask": "own"}}.items():
        g = []
        for lam in (1.0, 0.0):  # the difference is the contrastive term's gradient
            zz = z.clone().requires_grad_()
            make(threshold=1.0, **kw)(zz, y, contrastive_weight=lam)[0].backward()  # every pair contrasted
            g.append(zz.grad)
        grads[name] = g[0] - g[1]
    for name in ("detach", "one_sided", "own"):
        assert not torch.allclose(grads["base"], grads[name]), name
    # detach_positive and one-sided anchoring both still move every row (anchors or positives)
    assert (grads["detach"].abs().sum(dim=1) > 0).all()


def test_labels_out_of_range_and_bad_shapes():
    crit = make()
    z, _ = _batch(0)
    with pytest.raises(QGFaceInputError, match=f"label {C} in the batch is outside \\[0, num_classes={C}\\)"):
        crit(z, torch.tensor([0, 1, C, 2]))
    with pytest.raises(QGFaceInputError, match="label -1"):
        crit(z, torch.tensor([0, 1, -1, 2]))
    with pytest.raises(QGFaceInputError, match="H views then L views"):
        crit(z[:7], torch.arange(4))
    with pytest.raises(QGFaceInputError, match="3 labels for 4 images"):
        crit(z, torch.arange(3))
    assert crit.queue.filled == 0  # nothing written by failed steps


@pytest.mark.parametrize("kwargs,match", [
    ({"queue_size": 0}, "qgface_queue_size must be a positive integer, got 0"),
    ({"queue_size": -5}, "got -5"),
    ({"threshold": 1.2}, "qgface_threshold must be in \\[0, 1\\], got 1.2"),
    ({"threshold": -0.1}, "got -0.1"),
    ({"mask": "none"}, "qgface_mask"),
    ({"weight_method": "tanh"}, "'tanh'"),
    ({"pair_quality": "max"}, "'max'"),
    ({"contrastive_scale": 0}, "qgface_contrastive_scale"),
    ({"contrastive_weight": -1}, "qgface_contrastive_weight"),
    ({"stats_init": "median"}, "'median'"),
])
def test_bad_configuration_names_the_value(kwargs, match):
    clf = MarginClassifier(build_margin("adaface"), D, C)
    with pytest.raises(QGFaceConfigError, match=match):
        QGFaceLoss(clf, D, **{"queue_size": K, **kwargs})


def test_default_queue_size_and_classifier_contract():
    clf = MarginClassifier(build_margin("cosface"), D, 70000)
    assert QGFaceLoss(clf, D).queue.size == 65536
    assert QGFaceLoss(MarginClassifier(build_margin("cosface"), D, 17), D).queue.size == 17
    with pytest.raises(QGFaceConfigError, match="must expose `weight`"):
        QGFaceLoss(torch.nn.Identity(), D, queue_size=4)
    with pytest.raises(QGFaceConfigError, match="qgface_hq_mode"):
        MarginClassifier(build_margin("cosface"), D, 4, hq_mode="soft")


@pytest.mark.parametrize("bad", [float("inf"), float("nan")])
@pytest.mark.parametrize("queue_full", [True, False])
def test_non_finite_batch_leaves_queue_and_statistics_as_they_were(bad, queue_full):
    """A batch with one NaN/inf embedding (an fp16 overflow, say): the loss is non-finite (so the
    loop's check skips the step), stats["finite"] says so, and neither the quality statistics nor a
    single queue entry is moved by it; the next finite step gives a finite loss."""
    loss_fn = make(queue_size=K if queue_full else 4 * K)
    for step in range(3 if queue_full else 1):                 # 3 x 8 rows >= K = 9: full, wrapped
        loss_fn(*_batch(step))[0].backward()
    assert (loss_fn.queue.filled == K) == queue_full
    before = {k: v.clone() for k, v in loss_fn.state_dict().items()}
    z, y = _batch(5)
    z[2, 1] = bad
    loss, stats = loss_fn(z.requires_grad_(), y)
    assert not torch.isfinite(loss) and not bool(stats["finite"])
    after = loss_fn.state_dict()
    moved = {k for k in before if not torch.equal(before[k], after[k])}
    assert moved <= {"queue.ptr", "queue.num_filled"}, moved   # the ring position only
    q = loss_fn.queue
    if not queue_full:  # first turn: the skipped rows' slots stay empty and act as masked entries
        assert (q.filled_labels()[-2 * B:] == -1).all()
    loss, stats = loss_fn(*_batch(6))
    assert torch.isfinite(loss) and bool(stats["finite"])
    loss.backward()
