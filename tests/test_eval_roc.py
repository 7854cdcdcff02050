"""qgface_plugin.eval.roc: TAR at FAR as upstream eval_ijbc.py reads it, and the FAR keys and labels."""
import numpy as np
import pytest

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.roc import far_key, far_label, far_resolved, tar_at_far


def test_far_keys_and_labels():
    assert far_key(1e-4) == "TAR@FAR=1e-4" and far_key(0.25) == "TAR@FAR=2.5e-1"
    assert far_key(1e-4, "FAR") == "FAR@FAR=1e-4" and far_label(1e-6) == "1e-6" and far_label(0.1) == "1e-1"
    assert far_resolved(1e-3, 1 / 1000) and not far_resolved(1e-4, 1 / 1000)


def test_far_points_carry_the_far():
    scores = np.r_[np.linspace(0.5, 1, 20), np.linspace(0, 0.6, 80)]
    labels = np.r_[np.ones(20, int), np.zeros(80, int)]
    res, roc = tar_at_far(scores, labels, (0.05, 0.25), return_roc=True)
    assert list(res) == [far_key(0.05), far_key(0.25)]
    assert [p[3] for p in roc["far_points"].values()] == [0.05, 0.25]


# ------------------------------------------------------------------------------------------------ TAR@FAR
def _upstream_rule(labels, scores, fars):
    """Reference: upstream eval_ijbc.py's selection, written out as it does it."""
    from sklearn.metrics import roc_curve
    fpr, tpr, _ = roc_curve(labels, scores)
    fpr, tpr = np.flipud(fpr), np.flipud(tpr)
    out = []
    for far in fars:
        _, i = min(list(zip(abs(fpr - far), range(len(fpr)))))
        out.append(tpr[i])
    return out


def test_tar_at_far_hand_placed():
    # 60 positives above every negative, then 10 negatives, then the 11th negative above the other 40 positives:
    # the ROC point (fpr=0.01, tpr=0.6) exists and has the largest TPR at that FPR.
    pos = np.r_[np.linspace(0.95, 0.99, 60), np.linspace(0.30, 0.40, 40)]
    neg = np.r_[np.linspace(0.90, 0.909, 10), np.linspace(0.0, 0.8, 990)]
    scores = np.r_[pos, neg]
    labels = np.r_[np.ones(100, int), np.zeros(1000, int)]
    res, roc = tar_at_far(scores, labels, return_roc=True)
    assert res["TAR@FAR=1e-2"] == pytest.approx(0.6)
    assert set(res) == {f"TAR@FAR=1e-{k}" for k in (6, 5, 4, 3, 2, 1)}
    assert res["TAR@FAR=1e-6"] == pytest.approx(0.6)  # nearest point to 1e-6 is fpr=0 with tpr 0.6
    assert set(roc) == {"fpr", "tpr", "thresholds", "auc", "far_points"} and len(roc["fpr"]) == len(roc["tpr"])
    assert list(res.values()) == pytest.approx(_upstream_rule(labels, scores, sorted(
        (1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1))))


def test_tar_at_far_matches_upstream_rule_random():
    rng = np.random.default_rng(2)
    for trial in range(5):
        n = 3000
        labels = (rng.random(n) < 0.2).astype(int)
        scores = rng.standard_normal(n) + 1.5 * labels
        if trial % 2:
            scores = np.round(scores, 1)  # ties
        fars = (1e-4, 1e-3, 1e-2, 0.05, 1e-1)
        res = tar_at_far(scores, labels, fars)
        assert list(res.values()) == pytest.approx(_upstream_rule(labels, scores, fars))


def test_tar_at_far_bad_labels():
    with pytest.raises(QGFaceInputError):
        tar_at_far([0.1, 0.2], [1, 1])
