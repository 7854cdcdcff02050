"""Masked, quality-weighted InfoNCE against a queue: values and gradients vs a slow reference."""
import math

import pytest
import torch
import torch.nn.functional as F

from qgface_plugin import QGFaceConfigError, masked_info_nce, pair_quality, pair_weight, rescale_factor


def slow_reference(anchors, positives, labels, keys, key_labels, weight, s, rescale=True, own=None):
    """Per-anchor Python loops in the autograd graph, written from the method description."""
    n, k = anchors.shape[0], keys.shape[0]
    factor = math.log(129) / math.log(k + 1) if rescale else 1.0
    total = 0.0
    for i in range(n):
        w = float(weight[i])
        logits = [s * w * torch.clamp(anchors[i] @ positives[i], -1, 1)]
        for j in range(k):
            masked = (int(labels[i]) == int(key_labels[j])) if own is None else (j in own[i])
            if masked:
                logits.append(anchors.new_zeros(()))
            else:
                logits.append(s * w * torch.clamp(anchors[i] @ keys[j], -1, 1))
        row = torch.stack(logits)
        total = total + (torch.logsumexp(row, 0) - row[0]) * factor
    return total / n


def _inputs(n=6, k=11, d=5, seed=0, num_classes=4):
    g = torch.Generator().manual_seed(seed)
    a = F.normalize(torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    p = F.normalize(a + 0.5 * torch.randn(n, d, generator=g, dtype=torch.float64), dim=1)
    keys = F.normalize(torch.randn(k, d, generator=g, dtype=torch.float64), dim=1)
    keys = keys + 0.3 * torch.randn(k, d, generator=g, dtype=torch.float64)  # corrected: not unit
    labels = torch.randint(0, num_classes, (n,), generator=g)
    key_labels = torch.randint(0, num_classes, (k,), generator=g)
    return a, p, labels, keys, key_labels


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_values_and_gradients_match_slow_reference(seed):
    a, p, labels, keys, key_labels = _inputs(seed=seed)
    keys = keys * 1.5  # some |a.k| > 1: exercises the clamp (and its zero gradient)
    weight = torch.tensor([1.0, 0.0, 0.5, 1.0, 0.25, 1.0], dtype=torch.float64)
    a1, p1 = a.clone().requires_grad_(), p.clone().requires_grad_()
    ours = masked_info_nce(a1, p1, labels, keys, key_labels, weight, scale=8.0)
    a2, p2 = a.clone().requires_grad_(), p.clone().requires_grad_()
    ref = slow_reference(a2, p2, labels, keys, key_labels, weight, 8.0)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-10)
    ours.backward()
    ref.backward()
    assert torch.allclose(a1.grad, a2.grad, atol=1e-10)
    assert torch.allclose(p1.grad, p2.grad, atol=1e-10)
    assert ((a.unsqueeze(1) * keys.unsqueeze(0)).sum(-1).abs() > 1).any()


def test_gradcheck_of_fused_function():
    a, p, labels, keys, key_labels = _inputs(n=3, k=7, d=4, seed=5)
    weight = torch.tensor([1.0, 0.7, 0.2], dtype=torch.float64)
    f = lambda x, y: masked_info_nce(x, y, labels, keys, key_labels, weight, scale=4.0)
    assert torch.autograd.gradcheck(f, (a.requires_grad_(), p.requires_grad_()))


def test_analytic_all_logits_equal_gives_ln129_for_any_k():
    # collinear anchors/positives/keys, no same-label entries: every logit is s*1 -> loss ln(K+1)*rescale
    e = torch.tensor([1.0, 0.0, 0.0], dtype=torch.float64)
    for k in (1, 5, 127, 500):
        a = e.repeat(4, 1)
        loss = masked_info_nce(a, a, torch.zeros(4, dtype=torch.long), e.repeat(k, 1),
                               torch.ones(k, dtype=torch.long), torch.ones(4, dtype=torch.float64), scale=64.0)
        assert loss.item() == pytest.approx(math.log(129), abs=1e-9)
        loss = masked_info_nce(a, a, torch.zeros(4, dtype=torch.long), e.repeat(k, 1),
                               torch.ones(k, dtype=torch.long), torch.ones(4, dtype=torch.float64),
                               scale=64.0, rescale=False)
        assert loss.item() == pytest.approx(math.log(k + 1), abs=1e-9)
    assert rescale_factor(128) == pytest.approx(1.0) and rescale_factor(0) == 1.0


def test_same_label_entries_enter_at_cosine_zero_and_pass_no_gradient():
    a = torch.tensor([[1.0, 0.0]], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([[0.6, 0.8]], dtype=torch.float64)
    keys = torch.tensor([[1.0, 0.0], [0.0, 1.0], [0.8, 0.6]], dtype=torch.float64)  # key 0: own copy
    key_labels = torch.tensor([3, 5, 3])
    s = 10.0
    loss = masked_info_nce(a, p, torch.tensor([3]), keys, key_labels, torch.ones(1, dtype=torch.float64),
                           scale=s, rescale=False)
    pos = s * 0.6
    expected = -pos + math.log(math.exp(pos) + math.exp(0) + math.exp(0.0) + math.exp(0))
    # masked keys 0 and 2 contribute e^0 each; key 1 (other class) has cosine 0 too
    assert loss.item() == pytest.approx(expected, abs=1e-12)
    loss.backward()
    # gradient: only the positive and the unmasked key 1 contribute
    z = math.exp(pos) + 3.0
    grad = -s * (1 - math.exp(pos) / z) * torch.tensor([0.6, 0.8]) + s * (1 / z) * torch.tensor([0.0, 1.0])
    assert torch.allclose(a.grad[0], grad.double(), atol=1e-12)


def test_own_mask_masks_only_given_slots():
    a, p, labels, keys, key_labels = _inputs(n=4, k=9, seed=3)
    own = torch.tensor([[0, 5], [1, -1], [-1, -1], [8, 2]])
    weight = torch.ones(4, dtype=torch.float64)
    ours = masked_info_nce(a, p, labels, keys, key_labels, weight, scale=6.0, mask="own", own_slots=own)
    own_sets = [{int(x) for x in row if x >= 0} for row in own]
    ref = slow_reference(a, p, labels, keys, key_labels, weight, 6.0, own=own_sets)
    assert ours.item() == pytest.approx(ref.item(), abs=1e-10)


def test_gated_rows_are_constant_and_touch_the_graph():
    a, p, labels, keys, key_labels = _inputs(n=3, k=10, seed=4)
    a.requires_grad_()
    loss = masked_info_nce(a, p, labels, keys, key_labels, torch.zeros(3, dtype=torch.float64), scale=64.0)
    assert loss.item() == pytest.approx(math.log(129), abs=1e-12)
    loss.backward()
    assert a.grad is not None and torch.count_nonzero(a.grad) == 0
    rows = masked_info_nce(a, p, labels, keys, key_labels, torch.tensor([0.0, 1.0, 0.0], dtype=torch.float64),
                           scale=64.0, reduce=False)
    assert rows[0].item() == rows[2].item() == pytest.approx(math.log(129))
    assert rows[1].item() != pytest.approx(math.log(129))


def test_empty_queue_gives_zero_loss_with_graph():
    a = F.normalize(torch.randn(2, 3, dtype=torch.float64), dim=1).requires_grad_()
    loss = masked_info_nce(a, a.detach(), torch.zeros(2, dtype=torch.long), torch.zeros(0, 3, dtype=torch.float64),
                           torch.zeros(0, dtype=torch.long), torch.ones(2, dtype=torch.float64))
    assert loss.item() == 0.0
    loss.backward()
    assert torch.count_nonzero(a.grad) == 0


def test_float32_large_queue_matches_float64():
    a, p, labels, keys, key_labels = _inputs(n=16, k=3000, d=32, seed=7, num_classes=50)
    weight = torch.ones(16, dtype=torch.float64)
    ref = masked_info_nce(a, p, labels, keys, key_labels, weight, scale=64.0)
    f32 = masked_info_nce(a.float(), p.float(), labels, keys.float(), key_labels, weight.float(), scale=64.0)
    assert f32.item() == pytest.approx(ref.item(), rel=1e-5)


@pytest.mark.parametrize("method,range_,q,expected", [
    ("sgn", "half", [0.1, 0.2, 0.5], [1.0, 0.0, 0.0]),
    ("sgn", "whole", [0.1, 0.2, 0.5], [1.0, 1.0, 1.0]),
    ("cos", "half", [0.05, 0.1, 0.3], [(1 - math.cos(math.pi * 0.25)) / 2, 0.5, 0.0]),
    ("linear", "half", [0.05, 0.15, 0.6], [0.25, 0.75, 0.0]),
    ("linear", "whole", [0.1, 0.2, 0.6], [0.5, 1.0, 0.5]),
    # 1 + cos(pi (q + 1 - 2b) / (2 (1 - b))): 1 at q = b, 0 at q = 1
    ("cos", "whole", [0.2, 0.6, 1.0], [1.0, 1 + math.cos(math.pi * 1.2 / 1.6), 0.0]),
])
def test_pair_weight_formulas(method, range_, q, expected):
    # b = 0.2 throughout
    out = pair_weight(torch.tensor(q, dtype=torch.float64), 0.2, method, range_)
    assert out.tolist() == pytest.approx(expected, abs=1e-7)


def test_pair_weight_zero_threshold_contrasts_everything_and_pair_quality():
    assert pair_weight(torch.tensor([0.0, 0.5, 1.0]), 0.0).tolist() == [1.0, 1.0, 1.0]
    qa, qb = torch.tensor([0.1, 0.9]), torch.tensor([0.5, 0.3])
    assert pair_quality(qa, qb, "low").tolist() == pytest.approx([0.1, 0.3])
    assert pair_quality(qa, qb, "high").tolist() == pytest.approx([0.5, 0.9])
    assert pair_quality(qa, qb, "mean").tolist() == pytest.approx([0.3, 0.6])
    with pytest.raises(QGFaceConfigError, match="'max'"):
        pair_quality(qa, qb, "max")
    with pytest.raises(QGFaceConfigError, match="'tanh'"):
        pair_weight(qa, 0.2, "tanh")
    with pytest.raises(QGFaceConfigError, match="qgface_mask"):
        masked_info_nce(qa[:, None], qa[:, None], qa.long(), qa[:, None], qa.long(), qa, mask="none")
