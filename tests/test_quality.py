"""QualityPartition: EMA statistics, scaler, q̂, HQ mask, warm-up, state round-trip, errors."""
import math

import pytest
import torch

from qgface_plugin import QGFaceConfigError, QGFaceInputError, QualityPartition, threshold_schedule


def reference_scaler(norms, mean, std, h=0.333):
    """Hand formula: ms = clip(h (n - mu) / (sigma + 1e-3), -1, 1), per element in float64."""
    out = []
    for n in norms:
        n = min(max(n, 1e-3), 100.0)
        out.append(max(-1.0, min(1.0, h * (n - mean) / (std + 1e-3))))
    return out


def test_hand_worked_first_step_from_zero_init():
    part = QualityPartition(threshold=0.2, init="zeros")
    norms = torch.tensor([1.0, 2.0, 3.0, 6.0])
    q = part(norms)
    # mean 3, unbiased std sqrt(((4+1+0+9)/3)) = sqrt(14/3); EMA from 0 with rate 0.01
    assert part.mean.item() == pytest.approx(0.03, abs=1e-7)
    assert part.std.item() == pytest.approx(0.01 * math.sqrt(14 / 3), abs=1e-7)
    # with sigma ~ 0.0216, every norm is far above mu: the scaler saturates at +1, all HQ
    assert torch.equal(q.ms, torch.ones(4))
    assert torch.equal(q.qhat, torch.ones(4))
    assert q.hq.all()


def test_scaler_qhat_and_mask_against_hand_formula():
    part = QualityPartition(threshold=0.3, h=0.5, init="adaface")  # mu=20, sigma=100 to start
    norms = torch.tensor([5.0, 15.0, 19.0, 20.0, 30.0, 90.0, 150.0, 0.0])
    q = part(norms)
    clipped = norms.clamp(1e-3, 100.0).double()
    mean = 0.99 * 20 + 0.01 * clipped.mean().item()
    std = 0.99 * 100 + 0.01 * clipped.std().item()
    ms = reference_scaler(norms.tolist(), mean, std, h=0.5)
    assert q.ms.tolist() == pytest.approx(ms, abs=1e-6)
    assert q.qhat.tolist() == pytest.approx([(m + 1) / 2 for m in ms], abs=1e-6)
    assert q.hq.tolist() == [(m + 1) / 2 >= 0.3 for m in ms]
    assert q.threshold == 0.3 and q.partitioned


def test_ema_over_steps_matches_recurrence_and_eval_freezes():
    torch.manual_seed(0)
    part = QualityPartition(momentum=0.1, init="zeros")
    mean = std = 0.0
    for _ in range(5):
        n = torch.rand(16) * 10 + 1
        part(n)
        mean = 0.9 * mean + 0.1 * n.double().mean().item()
        std = 0.9 * std + 0.1 * n.double().std().item()
    assert part.mean.item() == pytest.approx(mean, rel=1e-5)
    assert part.std.item() == pytest.approx(std, rel=1e-5)
    assert int(part.num_updates) == 5
    part.eval()
    part(torch.rand(16) * 100)
    assert part.mean.item() == pytest.approx(mean, rel=1e-5) and int(part.num_updates) == 5


def test_first_batch_init_uses_batch_statistics():
    part = QualityPartition(init="first_batch")
    n = torch.tensor([2.0, 4.0, 6.0])
    part(n)
    assert part.mean.item() == pytest.approx(4.0) and part.std.item() == pytest.approx(2.0)
    part(torch.tensor([4.0, 4.0, 4.0]))
    assert part.mean.item() == pytest.approx(4.0) and part.std.item() == pytest.approx(0.99 * 2.0)


def test_threshold_zero_is_no_partition_and_threshold_override():
    part = QualityPartition(threshold=0.0, init="adaface")
    q = part(torch.tensor([0.5, 50.0, 99.0]))
    assert q.hq.all() and not q.partitioned
    q = part(torch.tensor([0.5, 50.0, 99.0]), threshold=1.0)
    assert q.threshold == 1.0 and q.hq.tolist() == [q_ >= 1.0 for q_ in q.qhat.tolist()]


def test_threshold_schedule_linear_warmup():
    assert threshold_schedule(0.2, 0, 4) == 0.0
    assert threshold_schedule(0.2, 1, 4) == pytest.approx(0.05)
    assert threshold_schedule(0.2, 2.5, 4) == pytest.approx(0.125)
    assert threshold_schedule(0.2, 9, 4) == pytest.approx(0.2)
    assert threshold_schedule(0.2, 3, 0) == 0.2


def test_state_dict_round_trip():
    a = QualityPartition(init="zeros")
    for s in range(3):
        a(torch.arange(1.0, 9.0) * (s + 1))
    b = QualityPartition(init="adaface")
    b.load_state_dict(a.state_dict())
    n = torch.tensor([3.0, 7.0, 11.0, 30.0])
    qa, qb = a(n), b(n)
    assert torch.equal(qa.ms, qb.ms) and torch.equal(a.mean, b.mean) and torch.equal(a.num_updates, b.num_updates)
    assert set(a.state_dict()) == {"mean", "std", "num_updates"}


def test_local_slice_without_process_group_is_everything():
    q = QualityPartition()(torch.rand(6) + 1)
    assert q.local() is q


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan"), "x"])
def test_bad_threshold_names_value(bad):
    with pytest.raises(QGFaceConfigError, match="qgface_threshold"):
        QualityPartition(threshold=bad)
    with pytest.raises(QGFaceConfigError, match="qgface_threshold"):
        QualityPartition()(torch.ones(3), threshold=bad)


def test_bad_options():
    with pytest.raises(QGFaceConfigError, match="qgface_h must be > 0, got 0"):
        QualityPartition(h=0)
    with pytest.raises(QGFaceConfigError, match="momentum must be in"):
        QualityPartition(momentum=0)
    with pytest.raises(QGFaceConfigError, match="'median'"):
        QualityPartition(init="median")


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_norms_raise_naming_value_when_checked(bad):
    part = QualityPartition(check_finite=True)
    with pytest.raises(QGFaceInputError, match=f"non-finite feature norm {bad}"):
        part(torch.tensor([1.0, bad, 2.0]))
    assert int(part.num_updates) == 0  # state untouched


@pytest.mark.parametrize("init", ["zeros", "first_batch"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_batch_is_flagged_and_leaves_the_statistics_untouched(bad, init):
    part = QualityPartition(threshold=0.2, momentum=0.5, init=init)
    part(torch.tensor([2.0, 4.0]))                       # one finite step: mean 3, std sqrt(2)
    state = {k: v.clone() for k, v in part.state_dict().items()}
    q = part(torch.tensor([1.0, bad, 5.0]))
    assert not bool(q.finite) and not bool(q.local().finite)
    assert all(torch.equal(v, state[k]) for k, v in part.state_dict().items())
    assert torch.isfinite(q.ms).all() and not bool(q.hq[1])  # the bad row counts as LQ
    assert bool(part(torch.tensor([2.0, 4.0])).finite)   # the next finite batch moves them again
    assert int(part.num_updates) == 2
