"""qgface_plugin.eval.erc: error-versus-reject curves against brute force, the tie rule, the empty edge, a
hand-worked 6-pair case and the random baseline."""
import itertools
import math

import numpy as np
import pytest

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval import erc
from qgface_plugin.eval.roc import tar_at_far

GRID = erc.DEFAULT_FRACTIONS


# ----------------------------------------------------------------------------------------------- brute force
def _brute_curve(n, quality, fractions, kept_error):
    """Loop over the fractions: sort by quality, drop the floor(f n) lowest, and count ``kept_error(kept)`` =
    (errors, trials) on the items kept. Ties: every order of the tied items is tried (all n! input orders, a
    stable sort), and the counts are summed over them -- the definition of the proportional tie rule."""
    out = []
    for f in fractions:
        k = int(math.floor(f * n + 1e-9))
        err = trials = 0.0
        perms = list(itertools.permutations(range(n)))
        for perm in perms:
            kept = sorted(range(n), key=lambda i: (quality[i], perm.index(i)))[k:]
            e, m = kept_error(kept)
            err, trials = err + e, trials + m
        out.append(None if trials == 0 else err / trials)
    return out


def _brute_fnmr(scores, labels, quality, threshold, fractions):
    """FNMR at the fixed threshold of the genuine pairs kept."""
    genuine = [i for i in range(len(scores)) if labels[i] == 1]
    return _brute_curve(len(scores), quality, fractions, lambda kept: (
        sum(1 for i in kept if i in genuine and scores[i] < threshold), sum(1 for i in kept if i in genuine)))


def _brute_rank1(ranks, quality, fractions):
    """The same for identification: the rank-1 error of the probes kept."""
    return _brute_curve(len(ranks), quality, fractions,
                        lambda kept: (sum(1 for i in kept if ranks[i] != 1), len(kept)))


def _close(got, want):
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert (g is None) == (w is None), (got, want)
        if w is not None:
            assert g == pytest.approx(w, abs=1e-12)


def test_fnmr_curve_equals_brute_force_with_ties():
    rng = np.random.default_rng(0)
    fractions = (0.0, 0.1, 1 / 6, 0.2, 0.3, 1 / 3, 0.4, 0.5, 2 / 3, 0.9, 1.0)
    for trial in range(12):
        n = 6
        scores = np.round(rng.random(n), 2)
        labels = (rng.random(n) < 0.6).astype(int)
        labels[0], labels[1] = 1, 0
        quality = rng.integers(0, 3, n).astype(float)  # ties on purpose: 3 values for 6 pairs
        got = erc.fnmr_erc(scores, labels, quality, threshold=0.5, fractions=fractions, draws=0)
        _close(got["norm"]["error"], _brute_fnmr(scores, labels, quality, 0.5, fractions))
        assert got["rejected"] == [int(math.floor(f * n + 1e-9)) for f in fractions]


def test_rank1_curve_equals_brute_force_with_ties():
    rng = np.random.default_rng(1)
    fractions = (0.0, 0.15, 0.3, 0.45, 0.5, 0.85, 1.0)
    for trial in range(12):
        ranks = rng.integers(1, 4, 6)
        quality = rng.integers(0, 2, 6) + 0.5
        got = erc.rank1_erc(ranks, quality, fractions=fractions, draws=0)
        _close(got["norm"]["error"], _brute_rank1(ranks, quality, fractions))


def test_without_ties_it_is_reject_the_k_lowest():
    rng = np.random.default_rng(2)
    n = 500
    scores, labels, quality = rng.normal(size=n), (rng.random(n) < 0.3).astype(int), rng.random(n)
    thr = 0.4
    got = erc.fnmr_erc(scores, labels, quality, threshold=thr, draws=0)
    for f, e in zip(got["fractions"], got["norm"]["error"]):
        kept = np.argsort(quality)[int(math.floor(f * n + 1e-9)):]
        gen = labels[kept] == 1
        assert e == pytest.approx(np.mean(scores[kept][gen] < thr), abs=1e-12)


def test_tie_rule_is_input_order_free_and_rejects_exactly_k():
    quality = np.array([1.0, 2, 2, 2, 3, 4])
    errors = np.array([1, 1, 0, 0, 0, 1], bool)
    a = erc.reject_curve(quality, errors, fractions=[0, 1 / 6, 2 / 6, 0.5])
    perm = np.array([5, 3, 0, 2, 4, 1])
    b = erc.reject_curve(quality[perm], errors[perm], fractions=[0, 1 / 6, 2 / 6, 0.5])
    assert a == b
    # 2 rejected: item 0 and 1 of the 3 tied items (quality 2), each of the three kept with share 2/3
    assert a["rejected"] == [0, 1, 2, 3]
    assert a["kept_counted"] == pytest.approx([6, 5, 4, 3])
    assert a["kept_errors"] == pytest.approx([3, 2, 1 + 2 / 3, 1 + 1 / 3])
    assert a["error"] == pytest.approx([0.5, 0.4, (5 / 3) / 4, (4 / 3) / 3])


# ---------------------------------------------------------------------------------------- the 6-pair case
def test_hand_worked_six_pairs():
    """Six pairs, threshold 0.5 (accepted iff score >= 0.5), quality with one tie (p1, p2 at 2.0):

        pair  score  genuine  quality   at 0.5
        p0    0.9    yes      1.0       match
        p1    0.2    yes      2.0       false non-match
        p2    0.6    no       2.0       false match
        p3    0.4    yes      3.0       false non-match
        p4    0.1    no       4.0       -
        p5    0.7    yes      5.0       match

    FNMR by pairs rejected (k = floor(f 6)): k=0: 2 of 4 genuine = 0.5; k=1 (p0): 2/3; k=2: p0 and ONE of the
    tied p1/p2 -- each kept with share 1/2: genuine kept 2 + 1/2 = 2.5, false non-matches 1 + 1/2 = 1.5, 0.6
    (= the ratio of the mean counts over the two tie orders, 1.5 / 2.5; the mean of the two ratios, 1/2 and
    2/3, would be 7/12); k=3: p3, p5 genuine, p3 a miss: 0.5; k=4, 5: only p5 (or p4, p5): 0; k=6: nothing
    kept, undefined. AUC over 0, 1/6, 2/6, 3/6 (trapezoids of width 1/6): (1/6) [(0.5 + 2/3) / 2 +
    (2/3 + 0.6) / 2 + (0.6 + 0.5) / 2] = (1/6) (0.58333 + 0.63333 + 0.55) = 0.294444. Random: 2/4 at every
    k < 6, AUC over 0..0.5 = 0.25.
    """
    scores = [0.9, 0.2, 0.6, 0.4, 0.1, 0.7]
    labels = [1, 1, 0, 1, 0, 1]
    quality = [1.0, 2.0, 2.0, 3.0, 4.0, 5.0]
    fractions = [0, 1 / 6, 2 / 6, 3 / 6, 4 / 6, 5 / 6, 1]
    got = erc.fnmr_erc(scores, labels, quality, threshold=0.5, fractions=fractions, draws=0)
    _close(got["norm"]["error"], [0.5, 2 / 3, 0.6, 0.5, 0.0, 0.0, None])
    assert got["rejected"] == [0, 1, 2, 3, 4, 5, 6]
    assert got["norm"]["auc"] is None  # the empty point makes the area undefined
    assert got["random"]["error"] == [0.5] * 6 + [None]
    assert got["fmr_at_threshold"] == 0.5 and got["threshold"] == 0.5
    assert (got["items"], got["counted"], got["errors"]) == (6, 4, 2)
    half = erc.fnmr_erc(scores, labels, quality, threshold=0.5, fractions=fractions[:4], draws=0)
    expect_auc = (1 / 6) * ((0.5 + 2 / 3) / 2 + (2 / 3 + 0.6) / 2 + (0.6 + 0.5) / 2)
    assert half["norm"]["auc"] == pytest.approx(expect_auc, abs=1e-12) and expect_auc == pytest.approx(0.294444, 1e-5)
    assert half["random"]["auc"] == pytest.approx(0.5 * 0.5)
    assert erc.error_at(half, 2 / 6) == pytest.approx(0.6) and erc.error_at(half, 0.2) is None


# ------------------------------------------------------------------------------------------------- edges
def test_empty_kept_and_no_genuine_kept():
    # nothing kept at f = 1; at f = 0.5 only impostors are left
    got = erc.reject_curve([1, 2, 3, 4], [True, False, False, False], [True, True, False, False],
                           fractions=[0, 0.5, 1])
    assert got["error"] == [0.5, None, None] and got["kept_counted"] == [2, 0, 0]
    assert erc.auc(got["fractions"], got["error"]) is None
    assert erc.reject_curve([], [], fractions=[0, 0.5])["error"] == [None, None]
    rnd = erc.random_baseline([True, False, False, False], [True, True, False, False], [0, 0.5, 1], draws=50)
    assert rnd["error"] == [0.5, 0.5, None] and rnd["band"]["mean"][2] is None
    assert erc.auc([0, 0.5], [0.2, 0.4]) == pytest.approx(0.15) and erc.auc([0.3], [0.2]) is None
    assert erc.fnmr_erc([0.1, 0.2], [1, 1], [1.0, 2.0]) is None  # no impostor pair: no threshold


def test_fnmr_at_fraction_zero_is_one_minus_tar_at_the_chosen_fmr():
    rng = np.random.default_rng(3)
    n = 3000
    labels = (rng.random(n) < 0.5).astype(int)
    scores = rng.normal(size=n) + 1.5 * labels
    quality = rng.random(n)
    got = erc.fnmr_erc(scores, labels, quality, fmr=1e-3, draws=0)
    assert got["fmr"] == 1e-3 and got["fmr_resolved"]  # ~1500 impostor pairs resolve 1e-3
    assert got["norm"]["error"][0] == pytest.approx(1 - tar_at_far(scores, labels, [1e-3])["TAR@FAR=1e-3"])
    small = erc.fnmr_erc(scores[:60], labels[:60], quality[:60], fmr=1e-3, draws=0)
    assert (small["fmr_requested"], small["fmr"]) == (1e-3, 1e-1)  # ~30 impostors resolve 1e-1 only
    assert small["norm"]["error"][0] == pytest.approx(1 - tar_at_far(scores[:60], labels[:60], [0.1])["TAR@FAR=1e-1"])


def test_choose_fmr():
    assert erc.choose_fmr(1e-3, 1000) == (1e-3, True)
    assert erc.choose_fmr(1e-3, 999) == (1e-2, True)
    assert erc.choose_fmr(1e-4, 45) == (1e-1, True)
    assert erc.choose_fmr(1e-4, 5) == (1e-1, False)
    assert erc.choose_fmr(3e-3, 200) == (1e-2, True)


# ------------------------------------------------------------------------------------------ random baseline
def test_random_baseline_is_exact_and_the_band_covers_it():
    rng = np.random.default_rng(4)
    n = 60
    errors = rng.random(n) < 0.3
    counted = errors | (rng.random(n) < 0.5)
    expect = errors.sum() / counted.sum()
    rnd = erc.random_baseline(errors, counted, GRID, draws=4000, seed=7)
    assert rnd["error"] == pytest.approx([expect] * len(GRID))
    assert rnd["auc"] == pytest.approx(expect * 0.5)
    band = rnd["band"]
    assert band["draws"] == 4000 and band["seed"] == 7 and band["low"][0] == band["high"][0] == expect
    for m, lo, hi in zip(band["mean"], band["low"], band["high"]):
        assert lo <= expect <= hi and lo < hi or lo == hi == expect
        assert m == pytest.approx(expect, abs=0.01)  # the Monte-Carlo mean agrees with the exact expectation
    assert band["auc_low"] < rnd["auc"] < band["auc_high"]
    assert erc.random_baseline(errors, counted, GRID, draws=4000, seed=7) == rnd  # seeded
    assert erc.random_baseline(errors, counted, GRID, draws=0)["band"] is None


def test_random_band_matches_brute_force_random_orders():
    """The band's percentiles of nested hypergeometric draws agree with shuffling the items themselves."""
    rng = np.random.default_rng(5)
    n = 40
    errors = np.zeros(n, bool)
    errors[:12] = True
    counted = np.ones(n, bool)
    counted[30:] = False  # 30 counted, 12 errors
    fractions = (0.0, 0.25, 0.5)
    brute = {f: [] for f in fractions}
    for _ in range(4000):
        order = rng.permutation(n)
        for f in fractions:
            kept = order[int(f * n):]
            brute[f].append(errors[kept].sum() / counted[kept].sum())
    band = erc.random_baseline(errors, counted, fractions, draws=4000, seed=0)["band"]
    for j, f in enumerate(fractions):
        assert band["mean"][j] == pytest.approx(np.mean(brute[f]), abs=0.01)
        assert band["high"][j] - band["low"][j] == pytest.approx(np.ptp(np.percentile(brute[f], [2.5, 97.5])),
                                                                   abs=0.04)


# -------------------------------------------------------------------------------------------------- checks
def test_bad_inputs():
    for bad in ([], [0.5, 0.2], [0, 1.5], [-0.1, 0.2], [0.1, 0.1], ["x"]):
        with pytest.raises(QGFaceInputError, match="ERC fractions"):
            erc.check_fractions(bad)
    with pytest.raises(QGFaceInputError, match="NaN"):
        erc.reject_curve([1.0, np.nan], [0, 1])
    with pytest.raises(QGFaceInputError, match="counted"):
        erc.reject_curve([1.0, 2.0], [1, 0], [0, 1])
    with pytest.raises(QGFaceInputError, match="unknown"):
        erc.options({"fraction": [0, 0.1]})
    with pytest.raises(QGFaceInputError, match="fmr"):
        erc.options({"fmr": 2.0}, 1e-3)
    assert erc.options(False) is None
    assert erc.options(None, 1e-3) == {"fractions": GRID, "draws": erc.DEFAULT_DRAWS, "seed": 0, "fmr": 1e-3}


def test_markdown_and_plot(tmp_path):
    rep = erc.rank1_erc([1, 2, 1, 1, 3, 1, 1, 2], [0.5, 0.1, 0.9, 0.7, 0.2, 0.8, 0.6, 0.3], draws=100)
    lines = erc.markdown_table([("probes", rep)])
    assert lines[0].startswith("| curve | 0% | 5% |") and lines[0].endswith("| 50% | AUC ×100 |")
    assert lines[2].startswith("| probes norm | 37.50 |") and lines[3].startswith("| probes random | 37.50 |")
    assert "seeded random rejection orders" in erc.markdown_note(rep)
    erc.plot_erc(tmp_path / "erc.png", [("probes", rep), ("none", None)], "t")
    assert (tmp_path / "erc.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
