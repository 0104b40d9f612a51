"""vvframe.scoring.metrics: error rates, EER, minDCF, actual DCF, Cllr, threshold at a FAR against brute force, hand examples,
input checks, and the DET plot."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vvframe import BadValue
from vvframe.scoring.metrics import actual_dcf, cllr, det_plot, eer, error_rates, min_dcf, threshold_at_far


def brute_rates(scores, labels):
    """Miss and false-alarm rates at every distinct score and +inf, by counting each threshold separately."""
    scores, labels = np.asarray(scores, float), np.asarray(labels)
    thresholds = np.append(np.unique(scores), np.inf)
    tgt, non = scores[labels == 1], scores[labels == 0]
    miss = (tgt[None, :] < thresholds[:, None]).mean(axis=1)
    fa = (non[None, :] >= thresholds[:, None]).mean(axis=1)
    return miss, fa, thresholds


def brute_eer(scores, labels):
    """The crossing of the two curves, found by walking every pair of neighbouring operating points."""
    miss, fa, _ = brute_rates(scores, labels)
    for k in range(1, len(miss)):
        if miss[k - 1] - fa[k - 1] < 0 <= miss[k] - fa[k]:
            # the segment from point k-1 to point k, (m, f) = P(k-1) + u (P(k) - P(k-1)), meets m = f at u
            u = (fa[k - 1] - miss[k - 1]) / ((fa[k - 1] - miss[k - 1]) - (fa[k] - miss[k]))
            return miss[k - 1] + u * (miss[k] - miss[k - 1])
    raise AssertionError("the curves never cross")


def random_trials(seed: int, n: int, ties: bool):
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.3).astype(int)
    labels[:2] = [0, 1]
    scores = rng.normal(size=n) + 1.2 * labels
    if ties:
        scores = np.round(scores, 1)  # many equal scores, across the two classes
    return scores, labels


@pytest.mark.parametrize("seed, n, ties", [(0, 300, False), (1, 300, True), (2, 57, True), (3, 500, True)])
def test_against_brute_force(seed, n, ties):
    scores, labels = random_trials(seed, n, ties)
    miss, fa, thr = error_rates(scores, labels)
    b_miss, b_fa, b_thr = brute_rates(scores, labels)
    np.testing.assert_array_equal(thr, b_thr)
    np.testing.assert_allclose(miss, b_miss, rtol=0, atol=1e-15)
    np.testing.assert_allclose(fa, b_fa, rtol=0, atol=1e-15)
    value, threshold = eer(scores, labels)
    assert math.isclose(value, brute_eer(scores, labels), rel_tol=1e-12)
    # the EER lies between the two neighbouring operating points' errors
    assert min(np.maximum(b_miss, b_fa)) >= value - 1e-12 and value >= max(np.minimum(b_miss, b_fa)[b_miss <= b_fa])
    assert scores.min() <= threshold <= scores.max()
    for p, cm, cf in [(0.01, 1, 1), (0.05, 1, 1), (0.3, 10, 1), (0.5, 1, 3)]:
        dcf, dcf_thr = min_dcf(scores, labels, p_target=p, c_miss=cm, c_fa=cf)
        cost = (cm * p * b_miss + cf * (1 - p) * b_fa) / min(cm * p, cf * (1 - p))
        assert math.isclose(dcf, cost.min(), rel_tol=1e-12) and 0 <= dcf <= 1
        assert dcf_thr == b_thr[np.argmin(cost)]


def test_nist_interpolation_on_hand_examples():
    # targets 0.8, 0.4; non-targets 0.6, 0.3, 0.1. Operating points (miss, fa): 0.1 (0, 1), 0.3 (0, 2/3),
    # 0.4 (0, 1/3), 0.6 (1/2, 1/3), 0.8 (1/2, 0), inf (1, 0). The curves cross between 0.4 and 0.6, where fa stays
    # 1/3 and miss goes 0 -> 1/2: EER = 1/3, a third of the way back from 0.6 to 0.4
    value, threshold = eer([0.8, 0.4, 0.6, 0.3, 0.1], [1, 1, 0, 0, 0])
    assert math.isclose(value, 1 / 3) and math.isclose(threshold, 0.6 - 0.2 / 3)
    # a tie across the classes: targets 0.7, 0.5; non-targets 0.5, 0.2. Points: 0.2 (0, 1), 0.5 (0, 1/2),
    # 0.7 (1/2, 0), inf (1, 0): the diagonal from (0, 1/2) to (1/2, 0) meets miss = fa at 1/4, halfway
    value, threshold = eer(np.array([0.7, 0.5, 0.5, 0.2]), np.array([1, 1, 0, 0]))
    assert math.isclose(value, 1 / 4) and math.isclose(threshold, 0.6)
    miss, fa, thr = error_rates([0.7, 0.5, 0.5, 0.2], [1, 1, 0, 0])
    assert miss.tolist() == [0, 0, 0.5, 1] and fa.tolist() == [1, 0.5, 0, 0]
    assert thr.tolist() == [0.2, 0.5, 0.7, math.inf]


def test_perfect_and_reversed():
    scores, labels = [0.9, 0.8, 0.7, 0.3, 0.2], [1, 1, 1, 0, 0]
    assert eer(scores, labels) == (0.0, 0.7)
    assert min_dcf(scores, labels) == (0.0, 0.7)
    assert eer(scores, [0, 0, 0, 1, 1])[0] == 1.0
    assert min_dcf(scores, [0, 0, 0, 1, 1]) == (1.0, math.inf)  # rejecting everything: the trivial cost
    # all scores equal: one operating point besides +inf, no information
    assert eer([0.5] * 4, [1, 0, 1, 0])[0] == 0.5 and min_dcf([0.5] * 4, [1, 0, 1, 0])[0] == 1.0


def test_min_dcf_normalisation():
    # p_target 0.01: the normaliser is c_miss * p = 0.01 (rejecting everything costs that); with c_fa tiny the
    # cheaper trivial system accepts everything: c_fa * (1 - p)
    scores, labels = random_trials(5, 400, True)
    miss, fa, _ = brute_rates(scores, labels)
    dcf, _ = min_dcf(scores, labels, p_target=0.01)
    assert math.isclose(dcf, (0.01 * miss + 0.99 * fa).min() / 0.01) and dcf <= 1
    dcf, _ = min_dcf(scores, labels, p_target=0.5, c_miss=1, c_fa=0.01)
    assert math.isclose(dcf, (0.5 * miss + 0.005 * fa).min() / 0.005) and dcf <= 1


def test_inputs_may_be_tensors_lists_or_arrays_of_any_shape():
    scores, labels = random_trials(7, 120, True)
    expected = eer(scores, labels)
    assert eer(torch.tensor(scores, dtype=torch.float64), torch.tensor(labels)) == expected
    assert eer(scores.tolist(), labels.astype(bool).tolist()) == expected
    assert eer(scores.reshape(12, 10), labels.astype(float).reshape(12, 10)) == expected
    assert eer(torch.tensor(scores, dtype=torch.float64, requires_grad=True), torch.tensor(labels)) == expected
    assert isinstance(eer(torch.tensor(scores, dtype=torch.bfloat16), labels)[0], float)


@pytest.mark.parametrize(
    "scores, labels, words",
    [
        ([], [], "no trials"),
        ([0.1, 0.2], [1, 0, 1], "differ in length"),
        ([0.1, float("nan"), 0.3], [1, 0, 1], "NaN or infinite"),
        ([0.1, float("inf")], [1, 0], "NaN or infinite"),
        ([0.1, 0.2, 0.3], [1, 1, 1], "no non-target"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 2], "labels must be 1"),
        (["a", "b"], [1, 0], "array of numbers"),
    ],
)
def test_bad_inputs(scores, labels, words):
    for fn in (eer, min_dcf, error_rates):
        with pytest.raises(BadValue, match=words):
            fn(scores, labels)


@pytest.mark.parametrize(
    "args, words",
    [
        ({"p_target": 0.0}, "p_target"),
        ({"p_target": 1.0}, "p_target"),
        ({"c_miss": -1}, "c_miss"),
        ({"c_fa": 0}, "c_fa"),
    ],
)
def test_bad_costs(args, words):
    with pytest.raises(BadValue, match=words):
        min_dcf([0.1, 0.2], [0, 1], **args)


# ---- actual DCF, Cllr, threshold at a false-alarm rate, DET plot


@pytest.mark.parametrize("seed, n, ties", [(10, 300, False), (11, 400, True)])
def test_actual_dcf_against_brute_force_and_min_dcf(seed, n, ties):
    scores, labels = random_trials(seed, n, ties)
    tgt, non = scores[labels == 1], scores[labels == 0]
    rng = np.random.default_rng(seed)
    for p, cm, cf in [(0.01, 1, 1), (0.05, 1, 1), (0.3, 10, 1), (0.5, 1, 3)]:
        norm = min(cm * p, cf * (1 - p))
        dcf, thr = min_dcf(scores, labels, p_target=p, c_miss=cm, c_fa=cf)
        assert math.isclose(
            actual_dcf(scores, labels, thr, p_target=p, c_miss=cm, c_fa=cf), dcf, rel_tol=1e-12, abs_tol=1e-15
        )
        for t in list(rng.normal(size=20)) + list(scores[:10]) + [math.inf, -math.inf]:
            brute = (cm * p * (tgt < t).mean() + cf * (1 - p) * (non >= t).mean()) / norm
            got = actual_dcf(scores, labels, t, p_target=p, c_miss=cm, c_fa=cf)
            assert math.isclose(got, brute, rel_tol=1e-12, abs_tol=1e-15) and got >= dcf - 1e-12
    # accepting everything costs c_fa (1 - p) / norm: 99 with the defaults
    assert math.isclose(actual_dcf(scores, labels, -math.inf), 99.0)
    assert actual_dcf(torch.tensor(scores), torch.tensor(labels), 0.5) == actual_dcf(scores, labels, 0.5)


def test_cllr():
    assert math.isclose(cllr([0.0] * 6, [1, 0, 1, 0, 0, 1]), 1.0, rel_tol=1e-15)
    # calibrated Gaussian LLRs: targets N(mu, 2 mu), non-targets N(-mu, 2 mu) make the score its own LLR
    rng = np.random.default_rng(0)
    mu, n = 2.0, 20000
    labels = np.r_[np.ones(n, int), np.zeros(n, int)]
    scores = np.r_[rng.normal(mu, math.sqrt(2 * mu), n), rng.normal(-mu, math.sqrt(2 * mu), n)]
    calibrated = cllr(scores, labels)
    assert 0 < calibrated < 1
    assert calibrated < cllr(scores + 3.0, labels) and calibrated < cllr(scores - 3.0, labels)
    # against the plain formula, and stable for huge scores (no overflow, no inf)
    t, nt = scores[labels == 1], scores[labels == 0]
    plain = 0.5 * (np.log2(1 + np.exp(-t)).mean() + np.log2(1 + np.exp(nt)).mean())
    assert math.isclose(calibrated, plain, rel_tol=1e-12)
    assert cllr([1000.0, -1000.0], [1, 0]) == 0.0
    assert math.isclose(cllr([-1000.0, 1000.0], [1, 0]), 1000.0 / math.log(2), rel_tol=1e-12)


@pytest.mark.parametrize("seed, ties", [(20, False), (21, True)])
def test_threshold_at_far(seed, ties):
    scores, labels = random_trials(seed, 500, ties)
    non = scores[labels == 0]
    candidates = np.append(np.unique(scores), np.inf)
    for far in [0.0, 0.001, 0.01, 0.05, 0.1, 0.2333, 0.5, 1.0]:
        thr = threshold_at_far(scores, labels, far)
        assert (non >= thr).mean() <= far
        lower = candidates[candidates < thr]
        if lower.size:  # the next operating point down exceeds the target
            assert (non >= lower[-1]).mean() > far
    assert threshold_at_far(scores, labels, 1.0) == scores.min()
    assert threshold_at_far(scores, labels, 0.0) > non.max()
    assert threshold_at_far([0.9, 0.1], [0, 1], 0.0) == math.inf
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(BadValue, match="far"):
            threshold_at_far(scores, labels, bad)


def test_det_plot(tmp_path):
    scores, labels = random_trials(30, 5000, False)
    path = tmp_path / "det.png"
    image = det_plot(scores, labels, path=path, title="test")
    assert isinstance(image, np.ndarray) and image.dtype == np.uint8 and image.ndim == 3 and image.shape[2] == 3
    assert image.shape[0] >= 200 and image.shape[1] >= 200 and image.std() > 0
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    import matplotlib.image

    read = matplotlib.image.imread(str(path))
    assert read.shape[:2] == image.shape[:2]
    # no path: only the array; a str path works too; tensors in
    assert det_plot(torch.tensor(scores), torch.tensor(labels), p_targets=(0.01,)).shape == image.shape
    det_plot(scores, labels, path=str(tmp_path / "b.png"))
    assert (tmp_path / "b.png").stat().st_size > 5000


@pytest.mark.parametrize(
    "scores, labels, words",
    [
        ([], [], "no trials"),
        ([0.1, float("nan"), 0.3], [1, 0, 1], "NaN or infinite"),
        ([0.1, 0.2], [0, 0], "no target"),
        ([0.1, 0.2], [1, 2], "labels must be 1"),
    ],
)
def test_bad_inputs_new_functions(scores, labels, words):
    for fn in (lambda s, y: actual_dcf(s, y, 0.0), cllr, lambda s, y: threshold_at_far(s, y, 0.1), det_plot):
        with pytest.raises(BadValue, match=words):
            fn(scores, labels)
    with pytest.raises(BadValue, match="p_target"):
        actual_dcf([0.1, 0.2], [0, 1], 0.0, p_target=1.5)
    with pytest.raises(BadValue, match="p_target"):
        det_plot([0.1, 0.2], [0, 1], p_targets=(0.0,))
