"""No subnormal floats reach the head's matrix products, and the cut-offs change nothing fp32 keeps.

The step tests do not depend on the CPU: they count subnormal values in the inputs of every matrix
product (forward and autograd's backward) with a dispatch mode, rather than timing anything.
"""
import math

import pytest
import torch
import torch.nn.functional as F

from qgface_plugin import MarginClassifier, QGFaceLoss, build_margin, contrastive, margins, numerics
from qgface_plugin.numerics import count_matmul_subnormals, exp_cutoff, negligible_gate, subnormal_mask
from qgface_plugin.quality import Quality

TINY = torch.finfo(torch.float32).tiny


def test_subnormal_mask_hand_worked():
    t = torch.tensor([0.0, TINY, TINY / 2, -TINY / 4, 1e-45, 1.0, -3.0])
    assert subnormal_mask(t).tolist() == [False, False, True, True, True, False, False]


@pytest.mark.parametrize("num_classes", [2, 7, 1000, 65536])
def test_negligible_gate_leaves_the_row_loss_bitwise_unchanged(num_classes):
    """A row gated just below the cut-off has exactly the fp32 loss of a row gated to 0 (ln C)."""
    s = 64.0
    g = negligible_gate(torch.float32, s) * (1 - 1e-6)
    cos = torch.rand(4, num_classes, generator=torch.Generator().manual_seed(0)) * 2 - 1
    labels = torch.tensor([0, 1, num_classes - 1, 0])
    gated = F.cross_entropy(s * g * cos, labels, reduction="none")
    zero = F.cross_entropy(torch.zeros_like(cos), labels, reduction="none")
    assert torch.equal(gated, zero)
    assert zero[0].item() == pytest.approx(math.log(num_classes), rel=1e-6)
    # and the cut-off is not needlessly coarse: 1000x above it the loss does move
    moved = F.cross_entropy(s * 1e3 * negligible_gate(torch.float32, s) * cos, labels, reduction="none")
    assert not torch.equal(moved, zero)


@pytest.mark.parametrize("k", [1, 8, 4096, 65536])
def test_exp_cutoff_terms_cannot_change_the_sum(k):
    """K terms just below the cut-off, added to the row's maximum exp(0) = 1, leave the fp32 sum at 1."""
    below = math.exp(exp_cutoff(torch.float32, k)) * (1 - 1e-6)
    row = torch.cat([torch.ones(1), torch.full((k,), below)])
    assert row.sum().item() == 1.0
    assert torch.logsumexp(torch.log(row), 0).item() == 0.0
    assert exp_cutoff(torch.float32, 65536) == pytest.approx(math.log(2.0 ** -24 / 65536))


def _step_inputs(b, num_classes=2048, batch=64, dim=512, seed=0):
    """A QGFace step whose LQ gates and InfoNCE exponents reach the subnormal range without cut-offs.

    Norms spread over ±3.5σ of the running statistics, so q̂ covers [0, 1] (a few rows clip at 1 and
    stay HQ even at b = 1). Queue entries lie at cosines spread uniformly over [−1, 1] from the
    images' directions, so an anchor's queue cosines span most of [−1, 1] (a span > 87/64 makes
    exp(s·(c − max)) subnormal). The classifier is at initialisation (cosines near 0), where no margin head's softmax underflows."""
    g = torch.Generator().manual_seed(seed)
    rows = 2 * batch
    direction = F.normalize(torch.randn(rows, dim, generator=g), dim=1)
    direction[batch:] = F.normalize(direction[:batch] + 0.3 * torch.randn(batch, dim, generator=g), dim=1)
    norms = 20 + 5 * torch.linspace(-3.5, 3.5, rows)[torch.randperm(rows, generator=g)]
    z = direction * norms.unsqueeze(1)
    labels = torch.randint(0, num_classes, (batch,), generator=g)
    torch.manual_seed(seed)
    clf = MarginClassifier(build_margin("adaface"), dim, num_classes)
    head = QGFaceLoss(clf, dim, queue_size=num_classes, threshold=b)
    with torch.no_grad():
        head.partition.mean.fill_(20.0)   # a running mean/std the batch barely moves (rate 0.01)
        head.partition.std.fill_(6.0)
        near = direction[torch.randint(0, rows, (num_classes,), generator=g)]
        cos = torch.rand(num_classes, 1, generator=g) * 2 - 1                 # cosine to that image
        other = torch.randn(num_classes, dim, generator=g)
        other = F.normalize(other - (other * near).sum(1, keepdim=True) * near, dim=1)
        keys = cos * near + (1 - cos ** 2).sqrt() * other
        ql = torch.randint(0, num_classes, (num_classes,), generator=g)
        head.queue.enqueue(keys, ql, clf.weight[ql] + 0.001 * torch.randn(num_classes, dim, generator=g))
    return head, z, labels


def _run_step(b, cutoffs=True, monkeypatch=None):
    if not cutoffs:  # the head as it was before the cut-offs: no gate floor, no exp floor
        monkeypatch.setattr(margins, "drop_negligible_gates", lambda gate, scale: gate)
        monkeypatch.setattr(contrastive, "exp_cutoff", lambda dtype, n: -math.inf)
    head, z, labels = _step_inputs(b)
    z = z.clone().requires_grad_()
    with count_matmul_subnormals() as records:
        loss, stats = head(z, labels)
        loss.backward()
    if not cutoffs:
        monkeypatch.undo()
    return loss.detach(), z.grad, head.classifier.weight.grad, records, stats


@pytest.mark.parametrize("b", [1.0, 0.4])
def test_no_subnormal_reaches_a_matrix_product(b):
    loss, _, _, records, stats = _run_step(b)
    assert records, "no matrix product was recorded"
    assert 0 < float(stats["contrast_fraction"]) <= 1
    bad = [r for r in records if r["subnormal"]]
    assert not bad, f"subnormal inputs to matrix products at b={b}: {bad}"


@pytest.mark.parametrize("b", [1.0, 0.4])
def test_without_the_cutoffs_subnormals_do_reach_the_products(b, monkeypatch):
    """The step above is one that produces subnormals: the first test can fail."""
    *_, records, _ = _run_step(b, cutoffs=False, monkeypatch=monkeypatch)
    assert sum(r["subnormal"] for r in records) > 0


@pytest.mark.parametrize("b", [1.0, 0.4])
def test_cutoffs_keep_loss_and_gradients_to_fp32_tolerance(b, monkeypatch):
    loss, gz, gw, *_ = _run_step(b)
    ref_loss, ref_gz, ref_gw, *_ = _run_step(b, cutoffs=False, monkeypatch=monkeypatch)
    assert loss.item() == pytest.approx(ref_loss.item(), rel=1e-6)
    for got, ref in ((gz, ref_gz), (gw, ref_gw)):
        scale = ref.abs().max().item()
        assert scale > 0
        assert (got - ref).abs().max().item() <= 1e-6 * scale


def test_qgface_adds_no_subnormals_to_what_any_margin_head_has():
    """Wide logit spans (D = 16: random cosines near ±1) make the softmax of HQ rows underflow in
    every margin head; the gate of the QGFace head adds none on top of that ungated head's."""
    counts = {}
    for name, gated in (("gated", True), ("ungated", False)):
        head, z, labels = _step_inputs(0.4, dim=16)
        q = head.partition(z.norm(dim=1))
        if not gated:
            q = Quality(q.ms, q.qhat, q.hq, 0.0)   # b = 0: no gate
        z = z.clone().requires_grad_()
        with count_matmul_subnormals() as records:
            head.classifier(z, torch.cat([labels, labels]), q).backward()
        counts[name] = sum(r["subnormal"] for r in records)
    assert counts["ungated"] > 0
    assert counts["gated"] <= counts["ungated"]
