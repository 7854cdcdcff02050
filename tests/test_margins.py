"""Margins: AdaFace / ArcFace / CosFace formulas, gradients, the quality gate, errors."""
import math
import os

import pytest
import torch

from qgface_plugin import (AdaFaceMargin, ArcFaceMargin, CosFaceMargin, QGFaceConfigError,
                           QGFaceInputError, Quality, build_margin)


def adaface_reference(cos, labels, ms, m=0.4, s=64.0, eps=1e-3):
    """AdaFace's own formulation: full-matrix angular + additive margins via one-hot masks."""
    cos = cos.clamp(-1 + eps, 1 - eps)
    one_hot = torch.zeros_like(cos)
    valid = labels != -1
    one_hot[valid.nonzero().squeeze(1), labels[valid]] = 1.0
    g_ang = -m * ms.unsqueeze(1)
    g_add = m + m * ms.unsqueeze(1)
    theta = cos.acos()
    theta_m = (theta + one_hot * g_ang).clip(eps, math.pi - eps)
    return (theta_m.cos() - one_hot * g_add) * s


def quality(ms, b=0.0):
    ms = torch.as_tensor(ms, dtype=torch.float64)
    qhat = (ms + 1) / 2
    return Quality(ms, qhat, qhat >= b, b)


def test_adaface_hand_worked_target():
    margin = AdaFaceMargin(m=0.4, s=2.0)
    cos = torch.tensor([[0.5, 0.1]], dtype=torch.float64)
    margin.set_quality(quality([0.5]))
    out = margin(cos, torch.tensor([0]))
    theta = math.acos(0.5) - 0.4 * 0.5
    expected_target = math.cos(theta) - (0.4 + 0.4 * 0.5)
    assert out[0, 0].item() == pytest.approx(2 * expected_target, abs=1e-12)
    assert out[0, 1].item() == pytest.approx(0.2, abs=1e-12)


def test_adaface_matches_reference_values_and_gradients():
    torch.manual_seed(0)
    n, c = 7, 5
    cos = (torch.rand(n, c, dtype=torch.float64) * 2 - 1).requires_grad_()
    labels = torch.tensor([0, 4, -1, 2, 2, 1, 3])  # -1: class on another shard
    ms = torch.rand(n, dtype=torch.float64) * 2 - 1
    margin = AdaFaceMargin()
    margin.set_quality(quality(ms), gate=False)
    ours = margin(cos, labels)
    ref = adaface_reference(cos, labels, ms)
    assert torch.allclose(ours, ref, atol=1e-9)
    g = torch.randn(n, c, dtype=torch.float64)
    (ga,) = torch.autograd.grad((ours * g).sum(), cos)
    (gb,) = torch.autograd.grad((ref * g).sum(), cos)
    assert torch.allclose(ga, gb, atol=1e-8)


def test_adaface_gradcheck():
    torch.manual_seed(1)
    cos = (torch.rand(4, 3, dtype=torch.float64) * 1.6 - 0.8).requires_grad_()
    labels = torch.tensor([2, 0, 1, -1])
    ms = torch.tensor([0.3, -0.7, 1.0, 0.0], dtype=torch.float64)

    def f(x):
        margin = AdaFaceMargin(s=8.0)
        margin.set_quality(quality(ms, b=0.3))
        return margin(x, labels)

    assert torch.autograd.gradcheck(f, (cos,))


def test_input_is_not_modified():
    cos = torch.rand(3, 4)
    before = cos.clone()
    for margin in (AdaFaceMargin(), ArcFaceMargin(), CosFaceMargin()):
        margin.set_quality(quality([0.1, -0.2, 0.9], b=0.4))
        margin(cos, torch.tensor([0, 1, 3]))
        assert torch.equal(cos, before), type(margin).__name__


def test_arcface_values_and_straight_through_gradient():
    cos = torch.tensor([[0.6, -0.2, 0.3], [0.1, 0.9, -0.5]], dtype=torch.float64, requires_grad=True)
    labels = torch.tensor([0, -1])
    out = ArcFaceMargin(m=0.5, s=64.0)(cos, labels)
    assert out[0, 0].item() == pytest.approx(64 * math.cos(math.acos(0.6) + 0.5), abs=1e-10)
    keep = torch.ones(2, 3, dtype=torch.bool)
    keep[0, 0] = False
    assert torch.allclose(out[keep], 64 * cos.detach()[keep])
    (g,) = torch.autograd.grad(out.sum(), cos)
    assert torch.allclose(g, torch.full_like(g, 64.0))  # that of s*cos: straight through


def test_cosface_values_and_exact_gradient():
    cos = torch.tensor([[0.6, -0.2], [0.1, 0.9]], dtype=torch.float64, requires_grad=True)
    out = CosFaceMargin(m=0.35, s=10.0)(cos, torch.tensor([[1], [1]]))  # [N, 1] labels as upstream
    assert torch.allclose(out, 10 * torch.tensor([[0.6, -0.55], [0.1, 0.55]], dtype=torch.float64))
    (g,) = torch.autograd.grad(out.sum(), cos)
    assert torch.allclose(g, torch.full_like(g, 10.0))


@pytest.mark.parametrize("cls", [AdaFaceMargin, ArcFaceMargin, CosFaceMargin])
def test_quality_gate_multiplies_each_row(cls):
    cos = torch.tensor([[0.3, 0.2], [0.4, -0.1], [-0.2, 0.5]], dtype=torch.float64)
    labels = torch.tensor([0, 1, 1])
    q = quality([-0.9, 0.0, 0.8], b=0.2)   # q̂ = 0.05, 0.5, 0.9
    margin = cls(s=16.0)
    margin.set_quality(q, gate=False)
    plain = margin(cos, labels)
    margin.set_quality(q, gate=True)
    gated = margin(cos, labels)
    factor = [1 / (1 + math.exp(-2 * 16 * (qh - 0.2))) for qh in (0.05, 0.5, 0.9)]
    for i, f in enumerate(factor):
        assert torch.allclose(gated[i], plain[i] * f, atol=1e-12)
    assert factor[0] < 0.01 < 0.99 < factor[1]


def test_gate_off_when_threshold_zero_and_quality_is_consumed():
    margin = AdaFaceMargin(s=16.0)
    cos = torch.tensor([[0.3, 0.2]])
    margin.set_quality(quality([-1.0], b=0.0))
    a = margin(cos, torch.tensor([0]))
    margin.set_quality(quality([-1.0], b=0.0), gate=False)
    assert torch.equal(a, margin(cos, torch.tensor([0])))
    with pytest.raises(QGFaceInputError, match="needs set_quality"):
        margin(cos, torch.tensor([0]))


def test_row_mismatch_is_an_error():
    margin = ArcFaceMargin()
    margin.set_quality(quality([0.1, 0.2], b=0.3))
    with pytest.raises(QGFaceInputError, match="set for 2 rows but the logits have 3"):
        margin(torch.zeros(3, 4), torch.zeros(3, dtype=torch.long))


def test_build_margin_from_names_and_margin_list():
    assert isinstance(build_margin("AdaFace"), AdaFaceMargin)
    arc = build_margin("arcface", margin_list=(1.0, 0.45, 0.0))
    assert isinstance(arc, ArcFaceMargin) and arc.m == 0.45
    cosf = build_margin("cosface", margin_list=(1.0, 0.0, 0.4), s=30)
    assert isinstance(cosf, CosFaceMargin) and cosf.m == 0.4 and cosf.s == 30
    assert build_margin("arcface", m=0.3).m == 0.3
    with pytest.raises(QGFaceConfigError, match="unknown margin 'sphereface'"):
        build_margin("sphereface")
    with pytest.raises(QGFaceConfigError, match=r"\(1.0, 0.3, 0.2\) is not a cosface margin"):
        build_margin("cosface", margin_list=(1.0, 0.3, 0.2))
    with pytest.raises(QGFaceConfigError, match="s must be > 0"):
        build_margin("arcface", s=0)


@pytest.mark.upstream
@pytest.mark.parametrize("margin_list", [(1.0, 0.5, 0.0), (1.0, 0.0, 0.4)])
def test_matches_upstream_combined_margin_loss(margin_list, arcface_root):
    import importlib.util
    path = os.path.join(arcface_root, "losses.py")
    spec = importlib.util.spec_from_file_location("_upstream_losses", path)
    upstream = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(upstream)
    torch.manual_seed(0)
    base = torch.rand(6, 9) * 1.8 - 0.9
    labels = torch.tensor([[1], [-1], [8], [0], [4], [4]])
    ref_in = base.clone().requires_grad_()
    ref = upstream.CombinedMarginLoss(64, *margin_list)(ref_in.clone(), labels.clone())
    ours_in = base.clone().requires_grad_()
    name = "arcface" if margin_list[2] == 0 else "cosface"
    ours = build_margin(name, margin_list=margin_list)(ours_in, labels)
    assert torch.allclose(ours, ref, atol=1e-4)
    g = torch.randn_like(base)
    (ga,) = torch.autograd.grad((ours * g).sum(), ours_in)
    (gb,) = torch.autograd.grad((ref * g).sum(), ref_in)
    assert torch.allclose(ga, gb, atol=1e-4)


@pytest.mark.parametrize("packed", [False, True], ids=["bool-mask", "bit-mask"])
@pytest.mark.parametrize("n,c", [(7, 5), (3, 16)])  # 35 logits (not a multiple of 8) and 48
def test_adaface_clamp_zeroes_the_gradient_where_it_bites(n, c, packed, monkeypatch):
    """Cosines beyond AdaFace's [-1+eps, 1-eps] (targets and others) get AdaFace's values and no
    gradient; the entries the clamp bit are kept for backward as bools (CPU) or bits (elsewhere)."""
    from qgface_plugin import margins
    if packed:  # the bit mask devices other than the CPU keep
        monkeypatch.setattr(margins, "BOOL_CLIP_MASK_ON", frozenset())
    torch.manual_seed(3)
    base = torch.rand(n, c, dtype=torch.float64) * 1.6 - 0.8
    flat = base.view(-1)
    flat[::4] = 0.9995          # above 1 - eps
    flat[1::6] = -0.99999       # below -1 + eps
    flat[2::9] = 1.0
    labels = torch.arange(n) % c
    labels[1] = -1
    ms = torch.rand(n, dtype=torch.float64) * 2 - 1
    cos = base.clone().requires_grad_()
    margin = AdaFaceMargin(s=8.0)
    margin.set_quality(quality(ms), gate=False)
    ours = margin(cos, labels)
    ref_in = base.clone().requires_grad_()
    ref = adaface_reference(ref_in, labels, ms, s=8.0)
    torch.testing.assert_close(ours, ref, atol=1e-9, rtol=0)
    g = torch.randn(n, c, dtype=torch.float64)
    (ga,) = torch.autograd.grad((ours * g).sum(), cos)
    (gb,) = torch.autograd.grad((ref * g).sum(), ref_in)
    torch.testing.assert_close(ga, gb, atol=1e-8, rtol=0)
    bites = (base > 1 - 1e-3) | (base < -1 + 1e-3)
    assert bites.sum() > 5 and (ga[bites] == 0).all()
