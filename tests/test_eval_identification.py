"""qgface_plugin.eval.identification: closed-set ranking (tie rule, distractors), CMC and the rank-1 quality bins."""
import numpy as np
import pytest

from qgface_plugin.errors import QGFaceInputError
from qgface_plugin.eval.identification import cmc, probe_ranks, quality_bins


# ------------------------------------------------------------------------------------------------ cmc
def _ranked_case(target_ranks=(1, 2, 6, 25)):
    """Probe i = e_{2i}; its mate and the r-1 outranking non-mates lie in the (e_{2i}, e_{2i+1}) plane.

    Outrankers alternate between distractors (-1) and images of other identities (1000 + ...), so both
    kinds must take rank positions. Norms vary to check that scores are cosines.
    """
    d = 2 * len(target_ranks)
    probes, pids, gal, gids = [], [], [], []
    for i, r in enumerate(target_ranks):
        e, f = np.eye(d)[2 * i], np.eye(d)[2 * i + 1]
        probes.append(e * (i + 1.5))
        pids.append(i)
        gal.append((np.cos(0.6) * e + np.sin(0.6) * f) * 3.0)  # the mate, at 0.6 rad
        gids.append(i)
        for j in range(r - 1):  # non-mates at smaller angles: higher cosine
            a = 0.55 * (j + 1) / r
            gal.append((np.cos(a) * e + np.sin(a) * f) * (0.5 + j))
            gids.append(-1 if j % 2 == 0 else 1000 + 10 * i + j)
    for k in range(5):  # far-away distractors that never outrank
        gal.append(-np.ones(d) * (k + 1))
        gids.append(-1)
    return np.array(probes), np.array(pids), np.array(gal), np.array(gids)


def test_cmc_hand_placed_ranks_with_distractors():
    p, pid, g, gid = _ranked_case()
    np.testing.assert_array_equal(probe_ranks(p, pid, g, gid), [1, 2, 6, 25])
    np.testing.assert_array_equal(probe_ranks(p, pid, g, gid, chunk=1), [1, 2, 6, 25])
    res = cmc(p, pid, g, gid)
    assert res == pytest.approx({"rank1": 0.25, "rank5": 0.5, "rank20": 0.75})
    assert cmc(p, pid, g, gid, ranks=(1, 2, 6, 25))["rank25"] == 1.0
    # shuffling the gallery changes nothing
    perm = np.random.default_rng(0).permutation(len(g))
    assert cmc(p, pid, g[perm], gid[perm]) == res


def test_cmc_best_of_several_mates_and_pessimistic_ties():
    e, f = np.eye(2)
    probe = e[None]
    # two mates: the better one (0.1 rad) decides; one non-mate in between, one tied with the best mate
    best = np.cos(0.1) * e + np.sin(0.1) * f
    g = np.stack([np.cos(0.5) * e + np.sin(0.5) * f, best, np.cos(0.05) * e + np.sin(0.05) * f, best * 2.0])
    gid = np.array([7, 7, -1, 3])
    assert probe_ranks(probe, [7], g, gid)[0] == 3  # 1 + (strictly better distractor) + (tied non-mate)
    assert probe_ranks(probe, [7], g[:3], gid[:3])[0] == 2


def test_cmc_missing_identity_raises():
    p, pid, g, gid = _ranked_case()
    gid = gid.copy()
    gid[gid == 2] = -1  # identity 2's only gallery image becomes a distractor
    with pytest.raises(QGFaceInputError, match="identity 2"):
        cmc(p, pid, g, gid)
    with pytest.raises(QGFaceInputError, match="dim"):
        cmc(p[:, :4], pid, g, np.array(_ranked_case()[3]))


# ------------------------------------------------------------------------------------- quality bins
def test_quality_bins_hand_case():
    norms = [5.0, 1.0, 9.0, 2.0, 8.0, 6.0]
    ok = [True, False, True, False, False, True]  # sorted by norm: 1F 2F | 5T 6T | 8F 9T
    bins = quality_bins(norms, ok)
    assert [b["bin"] for b in bins] == ["lowest", "middle", "highest"]
    assert [b["count"] for b in bins] == [2, 2, 2]
    assert [b["rank1"] for b in bins] == [0.0, 1.0, 0.5]
    assert (bins[0]["quality_min"], bins[0]["quality_max"], bins[2]["quality_max"]) == (1.0, 2.0, 9.0)
    assert list(bins[0]) == ["bin", "count", "quality_min", "quality_max", "rank1"]
    assert [b["bin"] for b in quality_bins(norms, ok, bins=2)] == ["q1", "q2"]
    with pytest.raises(QGFaceInputError):
        quality_bins(norms, ok[:3])
