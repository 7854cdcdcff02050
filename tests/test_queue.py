"""ProxyQueue ring buffer, proxy correction and fetch_centres (single process)."""
import pytest
import torch
import torch.nn.functional as F

from qgface_plugin import ProxyQueue, QGFaceConfigError, QGFaceInputError, fetch_centres


class ListQueue:
    """Slow reference: an unbounded history; the queue must hold its newest K rows."""

    def __init__(self):
        self.rows = []

    def add(self, feats, labels, centres):
        for f, y, c in zip(feats, labels, centres):
            self.rows.append((F.normalize(f, dim=0), int(y), c.clone()))

    def newest(self, k):
        return self.rows[-k:]


def _batch(n, d, step, num_classes=10):
    g = torch.Generator().manual_seed(100 + step)
    return (torch.randn(n, d, generator=g), torch.randint(0, num_classes, (n,), generator=g),
            torch.randn(n, d, generator=g))


def test_ring_buffer_matches_history_over_several_wraps():
    k, d, n = 37, 4, 8  # off-boundary wrap every few steps
    q, ref = ProxyQueue(k, d), ListQueue()
    for step in range(12):
        f, y, c = _batch(n, d, step)
        slots = q.enqueue(f, y, c)
        ref.add(f, y, c)
        written = len(ref.rows)
        expect_slots = [(written - n + i) % k for i in range(n)]
        assert slots.tolist() == expect_slots
        assert q.filled == min(written, k) and int(q.num_filled) == q.filled
        assert int(q.ptr) == written % k
        # slot (i % k) holds row i for the newest k rows
        for i in range(max(0, written - k), written):
            feat, lab, cen = ref.rows[i]
            assert int(q.labels[i % k]) == lab
            assert torch.allclose(q.features[i % k], feat, atol=1e-6)
            assert torch.allclose(q.centres[i % k], cen)
            assert q.centre_inv_norm[i % k].item() == pytest.approx(1 / cen.norm().item(), rel=1e-5)


def test_partial_fill_prefix_and_empty_labels():
    q = ProxyQueue(10, 3)
    assert q.filled == 0 and q.filled_labels().numel() == 0 and (q.labels == -1).all()
    f, y, c = _batch(4, 3, 0)
    q.enqueue(f, y, c)
    assert q.filled_labels().tolist() == y.tolist()
    assert (q.labels[4:] == -1).all()
    assert torch.allclose(q.features[:4].norm(dim=1), torch.ones(4))


def test_batch_larger_than_queue_keeps_newest_rows():
    q = ProxyQueue(5, 2)
    q.enqueue(*_batch(3, 2, 0))          # ptr at 3
    f, y, c = _batch(12, 2, 1)
    slots = q.enqueue(f, y, c)
    assert slots[:7].tolist() == [-1] * 7
    assert slots[7:].tolist() == [3, 4, 0, 1, 2]
    for row, slot in zip(range(7, 12), [3, 4, 0, 1, 2]):
        assert int(q.labels[slot]) == int(y[row])
    assert q.filled == 5 and int(q.ptr) == (3 + 5) % 5


def test_correction_hand_worked():
    q = ProxyQueue(3, 2)
    feats = torch.tensor([[3.0, 4.0], [0.0, 2.0]])  # normalised on entry: (0.6, 0.8), (0, 1)
    snaps = torch.tensor([[2.0, 0.0], [0.0, 0.5]])
    q.enqueue(feats, torch.tensor([7, 1]), snaps)
    now = torch.tensor([[2.0, 1.0], [1.0, 0.5]])
    out = q.corrected(now)
    # e + (W_now - W_snap) / ||W_snap||: (0.6, 0.8) + (0, 1)/2 ; (0, 1) + (1, 0)/0.5
    assert torch.allclose(out, torch.tensor([[0.6, 1.3], [2.0, 1.0]]), atol=1e-6)
    assert torch.allclose(q.features[:2], torch.tensor([[0.6, 0.8], [0.0, 1.0]]), atol=1e-6)  # untouched
    q_plain = ProxyQueue(3, 2, proxy_correction=False)
    q_plain.enqueue(feats, torch.tensor([7, 1]), snaps)
    assert torch.allclose(q_plain.corrected(None), torch.tensor([[0.6, 0.8], [0.0, 1.0]]), atol=1e-6)


def test_enqueue_and_correct_single_lookup_and_zero_correction_for_new_rows():
    torch.manual_seed(0)
    weight = torch.randn(10, 4)
    q = ProxyQueue(6, 4)
    calls = []

    def lookup(labels):
        calls.append(labels.clone())
        return weight[labels]

    f1, y1 = torch.randn(4, 4), torch.tensor([1, 2, 3, 4])
    q.enqueue_and_correct(f1, y1, lookup)
    weight += 0.5 * torch.randn(10, 4)   # the classifier moves
    f2, y2 = torch.randn(4, 4), torch.tensor([5, 1, 6, 7])
    out, slots = q.enqueue_and_correct(f2, y2, lookup)
    assert len(calls) == 2 and calls[1].tolist() == [6, 7, 3, 4, 5, 1]  # one lookup of all valid entries
    assert slots.tolist() == [4, 5, 0, 1]
    expect = []
    for slot in range(6):
        e = q.features[slot]
        snap = q.centres[slot]
        expect.append(e + (weight[q.labels[slot]] - snap) / snap.norm())
    assert torch.allclose(out, torch.stack(expect), atol=1e-6)
    # rows written this step carry their current centre: zero correction
    assert torch.allclose(out[slots], F.normalize(f2, dim=1), atol=1e-6)
    # the surviving old rows (slots 2, 3) moved by their centres' drift
    assert not torch.allclose(out[2:4], q.features[2:4])


def test_state_dict_round_trip_restores_pointer_and_fill():
    a = ProxyQueue(7, 3)
    for step in range(3):
        a.enqueue(*_batch(3, 3, step))
    b = ProxyQueue(7, 3)
    b.load_state_dict(a.state_dict())
    assert (b.filled, b._ptr) == (a.filled, a._ptr) == (7, 2)
    f, y, c = _batch(3, 3, 9)
    assert torch.equal(a.enqueue(f, y, c), b.enqueue(f, y, c))
    for name, buf in a.state_dict().items():
        assert torch.equal(buf, b.state_dict()[name]), name
    # nested in a parent module too (load hooks run for submodules)
    parent_a, parent_b = torch.nn.ModuleDict({"q": a}), torch.nn.ModuleDict({"q": ProxyQueue(7, 3)})
    parent_b.load_state_dict(parent_a.state_dict())
    assert parent_b["q"].filled == 7 and parent_b["q"]._ptr == a._ptr


def test_loading_a_different_size_names_both():
    a = ProxyQueue(8, 3)
    with pytest.raises(QGFaceConfigError, match="K=8, D=3 .* qgface_queue_size=9"):
        ProxyQueue(9, 3).load_state_dict(a.state_dict())


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, None])
def test_bad_queue_size(bad):
    with pytest.raises(QGFaceConfigError, match="qgface_queue_size must be a positive integer"):
        ProxyQueue(bad, 4)


def test_bad_shapes():
    q = ProxyQueue(4, 3)
    with pytest.raises(QGFaceInputError, match=r"\[n, 3\]"):
        q.enqueue(torch.randn(2, 5), torch.zeros(2), torch.randn(2, 5))
    with pytest.raises(QGFaceInputError, match="2 features, 3 labels"):
        q.enqueue(torch.randn(2, 3), torch.zeros(3), None)
    q.enqueue(torch.randn(2, 3), torch.zeros(2), torch.randn(2, 3))
    with pytest.raises(QGFaceInputError, match="current centres of the 2 filled"):
        q.corrected(torch.randn(4, 3))


def test_reset():
    q = ProxyQueue(4, 2)
    q.enqueue(*_batch(3, 2, 0))
    q.reset()
    assert q.filled == 0 and int(q.ptr) == 0 and (q.labels == -1).all()


def test_fetch_centres_single_process_and_label_errors():
    w = torch.randn(6, 3)
    labels = torch.tensor([5, 0, 5, 2])
    assert torch.equal(fetch_centres(labels, w), w[labels])
    # a shard holding classes [4, 10): labels outside it cannot be served without a process group
    with pytest.raises(QGFaceInputError, match=r"\[4, 10\)"):
        fetch_centres(torch.tensor([3, 4]), w, class_start=4)
    assert torch.equal(fetch_centres(torch.tensor([9, 4]), w, class_start=4), w[[5, 0]])
    with pytest.raises(QGFaceInputError, match="label 6 is outside"):
        fetch_centres(torch.tensor([1, 6]), w, num_classes=6)
