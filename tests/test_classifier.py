"""MarginClassifier (the single-shard HQ classifier) in ``hq_mode="subset"``: the zero loss that keeps
every parameter in the graph stays zero (not NaN) for half-precision embeddings whose element sum
does not fit in fp16, with and without HQ rows."""
import pytest
import torch

from qgface_plugin import MarginClassifier, build_margin
from qgface_plugin.quality import Quality


@pytest.mark.parametrize("hq_rows", [0, 5])
def test_subset_loss_of_fp16_embeddings_is_finite(hq_rows):
    torch.manual_seed(0)
    n, d, c = 64, 512, 10
    classifier = MarginClassifier(build_margin("cosface", s=8.0), d, c, hq_mode="subset")
    emb = torch.full((n, d), 2.0, dtype=torch.float16, requires_grad=True)  # element sum 65536 > fp16 max
    labels = torch.arange(n) % c
    hq = torch.zeros(n, dtype=torch.bool)
    hq[:hq_rows] = True
    qhat = torch.where(hq, torch.tensor(0.9), torch.tensor(0.1))
    loss = classifier(emb, labels, Quality(2 * qhat - 1, qhat, hq, 0.5, 0, n))
    assert torch.isfinite(loss)
    if hq_rows == 0:
        assert loss.item() == 0.0
    else:  # the mean CosFace cross-entropy of the HQ rows, as in fp32
        ref = classifier(emb.detach().float(), labels, Quality(2 * qhat - 1, qhat, hq, 0.5, 0, n))
        assert loss.item() == pytest.approx(ref.item(), rel=1e-4)
    loss.backward()
    assert emb.grad is not None and classifier.weight.grad is not None
    assert torch.isfinite(emb.grad).all() and torch.isfinite(classifier.weight.grad).all()
