"""qgface_plugin.eval.paired: the paired bootstrap, by hand on all 27 resamples of 3 items, against the unpaired
one, and its weighted figures against the evaluators' own functions on the resampled items."""
import numpy as np
import pytest

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.ijb import quality_tar
from qgface_plugin.eval.roc import far_key, tar_at_far
from qgface_plugin.eval.paired import (SortedBins, WeightedROC, all_resamples, bootstrap, bootstrap_counts,
                                       paired_bootstrap, percentile_interval, resample_counts, unpaired_bootstrap,
                                       weighted_mean)
from qgface_plugin.eval.quality_view import quality_split


def _rate(hits):
    hits = np.asarray(hits, float)
    return lambda counts: weighted_mean(counts, hits)


def test_three_items_all_27_resamples_by_hand():
    """A is right on item 0 only, B on items 0 and 1: per item B - A = (0, 1, 0), so a resample's difference is
    (times item 1 was drawn) / 3. Of the 27 equally likely ordered draws, item 1 appears 0 times in 8, once in
    12, twice in 6, three times in 1: sorted differences = 8 x 0, 12 x 1/3, 6 x 2/3, 1 x 1. numpy's linear
    percentile puts the 2.5% point at position 0.025 x 26 = 0.65 (between two zeros: 0) and the 97.5% point at
    0.975 x 26 = 25.35, between sorted[25] = 2/3 and sorted[26] = 1: 2/3 + 0.35 x 1/3 = 0.78333."""
    counts = list(all_resamples(3))
    assert len(counts) == 27 and all(c.sum() == 3 for c in counts)
    res = paired_bootstrap(_rate([1, 0, 0]), _rate([1, 1, 0]), 3, counts=counts)["value"]
    assert (res["a"], res["b"], res["diff"]) == (pytest.approx(1 / 3), pytest.approx(2 / 3), pytest.approx(1 / 3))
    assert res["low"] == pytest.approx(0.0, abs=1e-12)
    assert res["high"] == pytest.approx(2 / 3 + 0.35 / 3, abs=1e-12)
    assert res["resamples"] == 27
    # the distribution itself, enumerated
    diffs = sorted(round(c[1] / 3, 12) for c in counts)
    assert diffs == [0.0] * 8 + [round(1 / 3, 12)] * 12 + [round(2 / 3, 12)] * 6 + [1.0]
    # a figure undefined in some resamples (no item of a class drawn) is left out of its interval
    def cond(hits, mask):
        hits, mask = np.asarray(hits, float), np.asarray(mask, float)
        return lambda c: None if np.dot(c, mask) == 0 else float(np.dot(c, hits * mask) / np.dot(c, mask))
    res = paired_bootstrap(cond([1, 0, 0], [0, 0, 1]), cond([0, 0, 1], [0, 0, 1]), 3, counts=counts)["value"]
    assert res["resamples"] == 27 - 8 and res["low"] == res["high"] == res["diff"] == 1.0  # item 2 drawn: 19 of 27


def test_model_against_itself_is_exactly_zero():
    rng = np.random.default_rng(0)
    hits = rng.random(50) < 0.6
    res = paired_bootstrap(_rate(hits), _rate(hits.copy()), 50, resamples=200, seed=3)["value"]
    assert res["diff"] == 0.0 and res["low"] == 0.0 and res["high"] == 0.0 and res["resamples"] == 200


def test_pairing_narrows_the_interval_of_correlated_models():
    """B = A with a few items flipped: the errors are strongly correlated, so resampling both models with the
    same items cancels the shared variance; independent resamples do not."""
    rng = np.random.default_rng(1)
    n = 300
    a = rng.random(n) < 0.7
    b = a.copy()
    b[rng.choice(n, 12, replace=False)] ^= True
    paired = paired_bootstrap(_rate(a), _rate(b), n, resamples=500, seed=0)["value"]
    unpaired = unpaired_bootstrap(_rate(a), _rate(b), n, resamples=500, seed=0)["value"]
    assert paired["diff"] == unpaired["diff"]
    width_p, width_u = paired["high"] - paired["low"], unpaired["high"] - unpaired["low"]
    assert width_p < 0.5 * width_u
    # uncorrelated models: pairing makes little difference
    c = rng.random(n) < 0.7
    p2 = paired_bootstrap(_rate(a), _rate(c), n, resamples=500, seed=0)["value"]
    u2 = unpaired_bootstrap(_rate(a), _rate(c), n, resamples=500, seed=0)["value"]
    assert 0.7 < (p2["high"] - p2["low"]) / (u2["high"] - u2["low"]) < 1.3


def test_resampling_seeded_and_stratified():
    a = [c.tolist() for c in bootstrap_counts(20, 5, seed=4)]
    assert a == [c.tolist() for c in bootstrap_counts(20, 5, seed=4)] and a != [c.tolist() for c in
                                                                              bootstrap_counts(20, 5, seed=5)]
    strata = np.array([1] * 5 + [2] * 10 + [3] * 5)
    for c in bootstrap_counts(20, 20, seed=0, strata=strata):
        assert [c[strata == s].sum() for s in (1, 2, 3)] == [5, 10, 5]
    c = resample_counts(np.random.default_rng(0), 7)
    assert c.sum() == 7 and len(c) == 7
    assert percentile_interval([None, None]) == (None, None)
    with pytest.raises(QGFaceInputError, match="strata"):
        list(bootstrap_counts(5, 1, strata=[1, 2]))
    with pytest.raises(QGFaceInputError, match="reference"):
        bootstrap({"A": _rate([1])}, 1, reference="Z")


def test_several_models_share_the_resample():
    rng = np.random.default_rng(2)
    hits = {m: rng.random(40) < p for m, p in (("A", 0.5), ("B", 0.6), ("C", 0.7))}
    res = bootstrap({m: _rate(h) for m, h in hits.items()}, 40, resamples=100, seed=1)
    assert res["reference"] == "A" and set(res["diff"]) == {"B", "C"} and res["paired"]
    two = paired_bootstrap(_rate(hits["A"]), _rate(hits["C"]), 40, resamples=100, seed=1)["value"]
    assert res["diff"]["C"]["value"] == {k: two[k] for k in ("diff", "low", "high", "resamples")}
    seen = []
    bootstrap({"A": _rate(hits["A"])}, 40, resamples=20, progress=lambda d, t: seen.append((d, t)))
    assert seen[-1] == (20, 20)


# --------------------------------------------------------------------------------------- weighted figures
def test_weighted_roc_equals_tar_at_far_on_the_resampled_pairs():
    rng = np.random.default_rng(3)
    fars = (1e-2, 0.05, 0.1, 0.3)
    for trial in range(40):
        n = int(rng.integers(8, 60))
        scores = np.round(rng.normal(size=n), 1)  # many ties
        labels = (rng.random(n) < 0.4).astype(int)
        labels[:2] = (0, 1)
        roc = WeightedROC(scores, labels)
        for counts in [np.ones(n, int)] + list(bootstrap_counts(n, 4, seed=trial)):
            rep = np.repeat(np.arange(n), counts)
            got = roc.tar_at_far(counts, fars)
            if labels[rep].min() == labels[rep].max():
                assert all(v == (None, None) for v in got.values())
                continue
            ref, ref_roc = tar_at_far(scores[rep], labels[rep], fars, return_roc=True)
            for far in fars:
                assert got[far] == (ref[far_key(far)], ref_roc["far_points"][far_key(far)][2])


def test_sorted_bins_equal_quality_split_of_the_resampled_items():
    rng = np.random.default_rng(4)
    for trial in range(40):
        n = int(rng.integers(3, 40))
        q = np.round(rng.random(n), 1)  # ties
        v = rng.random(n) < 0.5
        sb = SortedBins(q, 3)
        for counts in [np.ones(n, int)] + list(bootstrap_counts(n, 4, seed=trial)):
            rep = np.repeat(np.arange(n), counts)
            sizes, (sums,) = sb.sums(counts, v)
            for j, (name, idx) in enumerate(quality_split(q[rep], 3)):
                assert sb.names[j] == name and sizes[j] == len(idx) and sums[j] == v[rep][idx].sum()


def test_weighted_thirds_reproduce_quality_tar():
    rng = np.random.default_rng(5)
    n = 90
    scores, labels, q = rng.normal(size=n), (rng.random(n) < 0.3).astype(int), np.round(rng.random(n), 2)
    _, roc = tar_at_far(scores, labels, [0.1], return_roc=True)
    thr = roc["far_points"]["TAR@FAR=1e-1"][2]
    sizes, (gen, acc) = SortedBins(q).sums(np.ones(n), labels == 1, (labels == 1) & (scores >= thr))
    ref = quality_tar(scores, labels, q, roc)
    assert [b["TAR@FAR=1e-1"] for b in ref] == [a / g for a, g in zip(acc, gen)]


def test_weighted_roc_prefix_equals_the_whole_roc():
    """With max_far the ROC of a resample is built over the highest scores first: same TARs and thresholds."""
    rng = np.random.default_rng(6)
    n = 4000
    labels = (rng.random(n) < 0.1).astype(int)
    scores = np.round(rng.normal(size=n) + 2 * labels, 2)  # ties
    fars = (1e-3, 3e-3, 1e-2)
    whole, fast = WeightedROC(scores, labels), WeightedROC(scores, labels, max_far=max(fars))
    assert fast.prefix is not None and fast.prefix[1] < n // 4
    for counts in [np.ones(n, int)] + list(bootstrap_counts(n, 20, seed=0)):
        assert fast.tar_at_far(counts, fars) == whole.tar_at_far(counts, fars)
    ref = tar_at_far(scores, labels, fars)
    assert [fast.tar_at_far(np.ones(n, int), fars)[f][0] for f in fars] == [ref[far_key(f)] for f in fars]
    # a FAR beyond the prefix falls back to the whole ROC
    assert fast.tar_at_far(np.ones(n, int), [0.5]) == whole.tar_at_far(np.ones(n, int), [0.5])
