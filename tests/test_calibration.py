"""Score calibration: the costs (Cllr, PAV minCllr, actDCF), the linear logistic fit on scores with known
Gaussian distributions (where the true LLR is known in closed form), quality measures, the JSON form, and the
calibrate stage on a tiny run."""

from __future__ import annotations

import itertools
import json
import logging
import math

import numpy as np
import pytest
import torch
import yaml

from vvframe import BadValue
from vvframe.scoring import calibration as cal
from vvframe.scoring.metrics import actual_dcf, cllr, min_dcf


def gaussian_trials(n_t: int, n_n: int, separation: float, seed: int = 0):
    """Targets ~ N(separation, 1), non-targets ~ N(0, 1): the true LLR is ``separation * (s - separation / 2)``."""
    rng = np.random.default_rng(seed)
    scores = np.concatenate([rng.normal(separation, 1.0, n_t), rng.normal(0.0, 1.0, n_n)])
    labels = np.concatenate([np.ones(n_t, dtype=int), np.zeros(n_n, dtype=int)])
    return scores, labels, separation * (scores - separation / 2)


# ---- the costs --------------------------------------------------------------------------------------------------
def test_cllr_at_half_is_the_metrics_cllr_and_zero_llrs_cost_one_at_any_prior():
    scores, labels, true = gaussian_trials(300, 900, 2.0)
    assert cal.cllr_at(true, labels, 0.5) == pytest.approx(cllr(true, labels), rel=1e-12)
    for prior in (0.001, 0.01, 0.3, 0.5, 0.9):
        assert cal.cllr_at(np.zeros(len(labels)), labels, prior) == pytest.approx(1.0, rel=1e-12)


def brute_min_cllr(scores: np.ndarray, labels: np.ndarray, prior: float) -> float:
    """The minimum over every split of the sorted distinct scores into runs, each run given its (prior-weighted)
    fraction of targets as posterior, of the runs' costs, among splits whose posteriors do not decrease."""
    values = np.unique(scores)
    w_t, w_n = prior / labels.sum(), (1 - prior) / (len(labels) - labels.sum())
    t = np.array([labels[scores == v].sum() for v in values], dtype=float) * w_t
    n = np.array([(1 - labels[scores == v]).sum() for v in values], dtype=float) * w_n
    best = math.inf
    for cuts in itertools.product((False, True), repeat=len(values) - 1):
        edges = [0, *[i + 1 for i, c in enumerate(cuts) if c], len(values)]
        posts, cost = [], 0.0
        for a, b in zip(edges[:-1], edges[1:]):
            p = t[a:b].sum() / (t[a:b].sum() + n[a:b].sum())
            posts.append(p)
            cost += -(t[a:b].sum() * math.log2(p) if p > 0 else 0.0) - (
                n[a:b].sum() * math.log2(1 - p) if p < 1 else 0.0
            )
        if all(x <= y + 1e-15 for x, y in zip(posts, posts[1:])):
            best = min(best, cost)
    entropy = -(prior * math.log2(prior) + (1 - prior) * math.log2(1 - prior))
    return best / entropy


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("prior", [0.5, 0.1, 0.01])
def test_pav_min_cllr_is_the_brute_force_optimum(seed, prior):
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 9, size=14).astype(float)  # ties: equal scores must share one LLR
    labels = (rng.random(14) < 0.4 + 0.05 * scores).astype(int)
    labels[:2] = (0, 1)
    assert cal.min_cllr(scores, labels, prior) == pytest.approx(
        brute_min_cllr(scores, labels, prior), rel=1e-9, abs=1e-12
    )


def test_min_cllr_known_cases():
    labels = np.array([0, 0, 0, 1, 1])
    assert cal.min_cllr([1, 2, 3, 4, 5], labels) == 0.0  # separated: infinitely sure and right
    assert cal.min_cllr([5, 4, 3, 2, 1], labels) == pytest.approx(1.0)  # reversed: a monotone map can only say 0
    assert cal.min_cllr([7, 7, 7, 7, 7], labels) == pytest.approx(1.0)  # one tie: nothing to go on
    llrs = cal.optimal_llrs([1, 2, 3, 4, 5], labels)
    assert np.isneginf(llrs[:3]).all() and np.isposinf(llrs[3:]).all()


@pytest.mark.parametrize("prior", [0.5, 0.05, 0.01])
def test_pav_llrs_reach_the_min_dcf_and_act_dcf_is_the_dcf_at_the_bayes_threshold(prior):
    scores, labels, true = gaussian_trials(400, 4000, 2.5, seed=3)
    assert cal.act_dcf(cal.optimal_llrs(scores, labels, 0.5), labels, prior) == pytest.approx(
        min_dcf(scores, labels, prior)[0], abs=1e-12
    )
    theta = -math.log(prior / (1 - prior))
    assert cal.bayes_threshold(prior) == pytest.approx(theta)
    assert cal.act_dcf(true, labels, prior) == actual_dcf(true, labels, theta, prior)
    assert cal.act_dcf(true, labels, prior) >= min_dcf(true, labels, prior)[0]
    assert cal.bayes_threshold(prior, c_miss=10) == pytest.approx(theta - math.log(10))


# ---- fitting ----------------------------------------------------------------------------------------------------
def test_the_fit_on_gaussian_scores_reaches_min_cllr_and_min_dcf_at_its_prior():
    scores, labels, true = gaussian_trials(4000, 40000, 3.0)
    model = cal.fit(scores, labels, prior=0.01)
    llrs = model.llr(scores)
    # the true LLR is 3 * s - 4.5: the fit recovers it
    assert model.scale == pytest.approx(3.0, rel=0.05) and model.offset == pytest.approx(-4.5, abs=0.25)
    after, floor = cal.cllr_at(llrs, labels, 0.01), cal.min_cllr(scores, labels, 0.01)
    assert floor <= after <= 1.03 * floor
    assert cal.cllr_at(llrs, labels) <= 1.03 * cal.min_cllr(scores, labels)
    assert cal.cllr_at(llrs, labels) == pytest.approx(cal.cllr_at(true, labels), rel=0.01)
    minimum = min_dcf(scores, labels, 0.01)[0]
    assert minimum <= cal.act_dcf(llrs, labels, 0.01) <= minimum + 0.03
    fitted = model.fitted_on
    assert fitted["trials"] == 44000 and fitted["targets"] == 4000
    assert fitted["after"]["act_dcf"] == pytest.approx(cal.act_dcf(llrs, labels, 0.01))


def test_an_uncalibrated_scale_is_repaired():
    scores, labels, _ = gaussian_trials(3000, 30000, 3.0, seed=1)
    bad = 10.0 * scores + 3.0  # cosine-like scores are far from LLRs in scale and shift
    before = cal.cllr_at(bad, labels)
    model = cal.fit(bad, labels, prior=0.01)
    after = cal.cllr_at(model.llr(bad), labels)
    assert before > 3.0 and after < 0.2 * before
    assert after <= 1.03 * cal.min_cllr(bad, labels)
    assert (
        cal.act_dcf(bad, labels, 0.01) > 5
        and cal.act_dcf(model.llr(bad), labels, 0.01) <= min_dcf(bad, labels, 0.01)[0] + 0.03
    )
    assert model.scale == pytest.approx(0.3, rel=0.05)  # 3 * (bad - 3) / 10 - 4.5
    assert model.fitted_on["before"]["cllr"] == pytest.approx(before)


def test_the_prior_weighting_makes_the_fit_indifferent_to_class_proportions():
    scores, labels, _ = gaussian_trials(3000, 30000, 2.0, seed=2)
    few = np.concatenate([np.arange(3000), 3000 + np.arange(3000)])  # the same targets, a tenth of the non-targets
    many = cal.fit(scores, labels, prior=0.05)
    balanced = cal.fit(scores[few], labels[few], prior=0.05)
    assert balanced.scale == pytest.approx(many.scale, rel=0.1)
    assert balanced.offset == pytest.approx(many.offset, abs=0.15)


def test_separable_scores_give_a_finite_deterministic_fit():
    scores = np.concatenate([np.linspace(1, 2, 50), np.linspace(-2, -1, 500)])
    labels = np.concatenate([np.ones(50, dtype=int), np.zeros(500, dtype=int)])
    first, second = cal.fit(scores, labels), cal.fit(scores, labels)
    assert first == second
    assert all(math.isfinite(w) for w in (*first.weights, first.offset)) and first.scale > 0
    assert cal.cllr_at(first.llr(scores), labels) < 0.01 and cal.act_dcf(first.llr(scores), labels) == 0.0


def test_quality_measures_remove_a_nuisance_shift():
    """The score of every trial is moved by 1.5 * (q_enroll + q_test) whatever its class: knowing q, the true LLR
    is 2.5 * (s - 1.5 * (q_e + q_t) - 1.25), linear in the score and the quality columns."""
    rng = np.random.default_rng(4)
    n_t, n_n = 3000, 30000
    labels = np.concatenate([np.ones(n_t, dtype=int), np.zeros(n_n, dtype=int)])
    q = rng.uniform(-1, 1, size=(n_t + n_n, 2))
    scores = rng.normal(0, 1, n_t + n_n) + 2.5 * labels + 1.5 * q.sum(axis=1)
    true = 2.5 * (scores - 1.5 * q.sum(axis=1) - 1.25)
    plain = cal.fit(scores, labels, prior=0.01)
    qmf = cal.fit(scores, labels, prior=0.01, quality=q, quality_names=["duration"])
    assert qmf.features == ("score", "duration_enroll", "duration_test") and qmf.quality == ["duration"]
    assert np.allclose(qmf.weights, [2.5, -3.75, -3.75], rtol=0.08)
    with_q, without = cal.cllr_at(qmf.llr(scores, q), labels), cal.cllr_at(plain.llr(scores), labels)
    assert with_q == pytest.approx(cal.cllr_at(true, labels), rel=0.02) and with_q < 0.8 * without
    thresholds = qmf.score_thresholds(0.01, q)
    assert np.array_equal(scores >= thresholds, qmf.llr(scores, q) >= cal.bayes_threshold(0.01) - 1e-9)
    with pytest.raises(BadValue, match="depends on each trial's quality"):
        qmf.threshold(0.01)
    with pytest.raises(BadValue, match="uses quality measures"):
        qmf.llr(scores)


def test_utterance_and_pair_quality_columns():
    rng = np.random.default_rng(5)
    centered = rng.normal(size=(4, 3))
    finished = centered / np.linalg.norm(centered, axis=1, keepdims=True)
    cohort = rng.normal(size=(6, 3))
    cohort /= np.linalg.norm(cohort, axis=1, keepdims=True)
    per = cal.utterance_quality(
        ["duration", "norm", "cohort_mean"],
        seconds=[1.0, 2.0, 4.0, 8.0],
        centered=torch.from_numpy(centered),
        finished=finished,
        cohort=cohort,
        top_k=2,
    )
    assert per.shape == (4, 3)
    assert np.allclose(per[:, 0], np.log([1, 2, 4, 8])) and np.allclose(per[:, 1], np.linalg.norm(centered, axis=1))
    assert np.allclose(per[:, 2], np.sort(finished @ cohort.T, axis=1)[:, -2:].mean(axis=1))
    pairs = cal.pair_quality(per, [0, 3], [1, 2])
    assert cal.quality_columns(["duration", "norm", "cohort_mean"])[:2] == ["duration_enroll", "duration_test"]
    assert np.allclose(pairs[1], [per[3, 0], per[2, 0], per[3, 1], per[2, 1], per[3, 2], per[2, 2]])
    with pytest.raises(BadValue, match="unknown quality measure 'lenght'"):
        cal.check_quality(["lenght"])
    with pytest.raises(BadValue, match="needs cohort embeddings"):
        cal.utterance_quality(["cohort_mean"], finished=finished)


# ---- the calibration object ---------------------------------------------------------------------------------
def test_posterior_threshold_and_json_round_trip(tmp_path):
    scores, labels, _ = gaussian_trials(500, 5000, 2.0, seed=6)
    model = cal.fit(10 * scores - 2, labels, prior=0.01, normalizer="asnorm", top_k=None)
    s = np.array([-5.0, 0.0, 5.0, 20.0])
    llr = model.llr(s)
    assert np.allclose(llr, model.scale * s + model.offset)
    for prior in (0.01, 0.5):
        assert np.allclose(model.posterior(s, prior), 1 / (1 + np.exp(-(llr + math.log(prior / (1 - prior))))))
        theta = model.threshold(prior)
        assert theta == pytest.approx((-math.log(prior / (1 - prior)) - model.offset) / model.scale)
        assert model.posterior([theta], prior)[0] == pytest.approx(0.5)  # the Bayes threshold: even odds
    assert model.normalized and model.scores == "normalized" and model.matches("asnorm") and not model.matches(None)
    assert "fitted on scores normalized by 'asnorm', and these are raw cosine scores" in model.mismatch(None)
    plain = cal.fit(scores, labels, prior=0.01)
    assert plain.scores == "cosine" and not plain.normalized and plain.matches(None) and not plain.matches("asnorm")
    model.save(tmp_path / "c.json")
    loaded = cal.Calibration.load(tmp_path / "c.json")
    assert loaded == model and json.loads((tmp_path / "c.json").read_text())["format"] == "vvframe-calibration"
    assert cal.calibration_file(tmp_path) == tmp_path / "calibration" / "calibration.json"


@pytest.mark.parametrize(
    "change, message",
    [
        ({"format": "x"}, "not a vvframe calibration"),
        ({"version": 9}, "calibration version 9"),
        ({"features": ["score", "pitch_enroll", "pitch_test"], "weights": [1.0, 2.0, 3.0]}, "'features'"),
        ({"weights": [1.0, 2.0]}, "one number per feature"),
        ({"offset": float("nan")}, "finite numbers"),
        ({"prior": 1.0}, "'prior' must be in (0, 1)"),
        ({"scores": "normalized"}, "disagrees with 'normalizer'"),
    ],
)
def test_a_malformed_calibration_is_refused(change, message):
    good = cal.Calibration(weights=(2.0,), offset=-1.0, prior=0.01).to_dict()
    assert cal.Calibration.from_dict(good) == cal.Calibration(weights=(2.0,), offset=-1.0, prior=0.01)
    with pytest.raises(BadValue, match="card.json: ") as info:
        cal.Calibration.from_dict({**good, **change}, "card.json")
    assert message in str(info.value)


def test_a_reversed_calibration_has_no_score_threshold():
    reversed_ = cal.Calibration(weights=(-1.0,), offset=0.0, prior=0.01)
    with pytest.raises(BadValue, match="higher scores are not more likely the same speaker"):
        reversed_.threshold(0.01)


# ---- the stage, end to end on tiny runs -----------------------------------------------------------------------


class StatsPool(torch.nn.Module):
    """Features ``(B, F, frames)`` -> their mean and standard deviation over time ``(B, 2F)``: the cue-only
    baseline, a speaker model that needs no training."""

    def __init__(self, in_dim: int):
        super().__init__()
        self.embed_dim = 2 * in_dim

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1)], dim=1)


def run_stages(work, run_dir, *overrides, only=(), resumed=False):
    from vvframe.core import recipe as recipes
    from vvframe.core import run as runs

    resolved = recipes.check(work / "r.yaml", list(overrides))
    run_dir.mkdir(parents=True, exist_ok=True)
    ctx = runs.RunContext(resolved, run_dir, resumed=resumed)
    root, handler = logging.getLogger(), logging.FileHandler(run_dir / runs.LOG_FILE)  # as `vvframe run` logs
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.INFO)
    try:
        runs.execute(ctx, only)
    finally:
        ctx.close()
        root.removeHandler(handler)
        root.setLevel(level)
        handler.close()


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """6 evaluation speakers x 4 utterances, 4 cohort speakers, all trials among the evaluation utterances, a
    network without weights (StatsPool), and two runs made in this process: ``score`` ran prepare, eval and calibrate (on eval's scores),
    then eval again; ``quality`` ran prepare and calibrate with every quality measure (scoring by itself)."""
    from vvframe.tools.synth import synthesize
    from vvframe.training import checkpoint as ckpt

    work = tmp_path_factory.mktemp("calib")
    speakers = [f"s{i}" for i in range(6)]
    files = synthesize(work / "audio", speakers + ["c0", "c1", "c2", "c3"], 4, seconds=(1.0, 1.6), seed=2, jobs=1)
    utts = [(s, p) for s in speakers for p in files[s]]
    lines = [f"{int(a[0] == b[0])} {a[1]} {b[1]}\n" for a, b in itertools.combinations(utts, 2)]
    (work / "trials.txt").write_text("".join(lines))
    (work / "cohort.txt").write_text("".join(f"{s} {p}\n" for s in ("c0", "c1", "c2", "c3") for p in files[s]))
    ckpt.save(work / "weights.pt", {"model": {}})  # StatsPool has no weights
    recipe = {
        "name": "calib",
        "stages": ["prepare", "eval", "calibrate"],
        "data": {"root": str(work / "audio")},
        "frontend": {"name": "fbank", "n_mels": 24},
        "model": {"name": "test_calibration:StatsPool"},
        "embed": {"checkpoint": str(work / "weights.pt")},
        "cohort": {"list": str(work / "cohort.txt")},
        "normalizer": {"name": "asnorm", "top_k": 3},
        "eval": {"trials": [str(work / "trials.txt")]},
        "calibrate": {"trials": str(work / "trials.txt"), "prior": 0.05},
    }
    (work / "r.yaml").write_text(yaml.safe_dump(recipe))
    run_stages(work, work / "score")
    run_stages(work, work / "score", only=["eval"], resumed=True)  # eval again, now with the calibration
    quality = "calibrate.quality=[duration,norm,cohort_mean]"
    run_stages(work, work / "quality", "stages=[prepare,calibrate]", quality)
    return {"work": work, "score": work / "score", "quality": work / "quality"}


def eval_scores(run_dir):
    rows = [line.split() for line in (run_dir / "eval" / "trials.scores").read_text().splitlines()]
    return np.array([float(r[2]) for r in rows]), np.array([int(r[3]) for r in rows]), rows


def test_the_stage_fits_on_the_eval_scores_and_saves_the_calibration(tiny):
    from vvframe_plugins.stages.calibrate import read_calibration

    run_dir = tiny["score"]
    model = read_calibration(run_dir)
    assert model is not None and model.prior == 0.05 and model.normalizer == "asnorm" and model.features == ("score",)
    assert model.fitted_on["scores_from"] == "eval" and model.fitted_on["trials"] == 276
    scores, labels, _ = eval_scores(run_dir)
    assert model.fitted_on["before"]["cllr"] == pytest.approx(cal.cllr_at(scores, labels), rel=1e-6)
    after = cal.cllr_at(model.llr(scores), labels)
    assert after < model.fitted_on["before"]["cllr"] and after < 1.0  # informative and calibrated
    assert after <= 1.1 * cal.min_cllr(scores, labels)
    log = (run_dir / "log.txt").read_text()
    assert "calibrate: the eval stage's scores of" in log and "minCllr" in log
    assert cal.Calibration.from_dict(json.loads((run_dir / "card.json").read_text())["calibration"]) == model


def test_a_calibration_records_the_normalizer_that_loading_the_run_applies():
    from vvframe.core.registry import Component
    from vvframe_plugins.stages.calibrate import scored_by

    asnorm = Component("normalizers", "asnorm", {"top_k": 3})
    assert scored_by(asnorm, has_cohort=True) == "asnorm"
    assert scored_by(None, has_cohort=True) is None
    # the API builds the card's normalizer only with a cohort: without one its scores are the cosines
    assert scored_by(Component("normalizers", "none"), has_cohort=False) is None


def test_the_stage_scores_by_itself_with_quality_measures(tiny):
    from vvframe_plugins.stages.calibrate import read_calibration

    model = read_calibration(tiny["quality"])
    assert model.fitted_on["scores_from"] == "calibrate" and model.top_k == 3  # the normalizer's top_k
    assert model.features == ("score", *cal.quality_columns(["duration", "norm", "cohort_mean"]))
    assert model.fitted_on["after"]["cllr"] < model.fitted_on["before"]["cllr"]
    assert all(math.isfinite(w) for w in model.weights)


def test_eval_reports_the_costs_before_and_after_the_calibration(tiny):
    metrics = json.loads((tiny["score"] / "eval" / "metrics.json").read_text())["trials"]
    before, after = metrics["calibration"]["before"], metrics["calibration"]["after"]
    assert set(before["act_dcf"]) == {"0.01", "0.05"} and after["cllr"] < before["cllr"]
    assert after["min_cllr"] == pytest.approx(before["min_cllr"])  # a monotone map keeps the minimum
    assert after["act_dcf"]["0.05"] >= after["min_dcf"]["0.05"]


def test_the_api_gives_llrs_posteriors_and_the_bayes_threshold(tiny):
    import vvframe

    run_dir = tiny["score"]
    model = vvframe.load(run_dir, device="cpu", trust_recipe=True)
    fitted = cal.Calibration.load(cal.calibration_file(run_dir))
    assert model.calibration == fitted
    scores, labels, rows = eval_scores(run_dir)
    audio = tiny["work"] / "audio"
    for k in (0, 1, 100):
        v = model.verify(audio / rows[k][0], audio / rows[k][1], threshold="bayes@0.05", prior=0.2)
        assert v.score == pytest.approx(scores[k], abs=1e-5)
        assert v.llr == pytest.approx(fitted.llr([v.score])[0]) and v.prior == 0.2
        assert v.posterior == pytest.approx(1 / (1 + math.exp(-(v.llr + math.log(0.2 / 0.8)))))
        assert v.threshold_value == pytest.approx(fitted.threshold(0.05)) and v.accepted == (
            v.llr >= cal.bayes_threshold(0.05)
        )
    assert model.threshold("bayes@0.01") == ("bayes@0.01", pytest.approx(fitted.threshold(0.01)))
    assert model.verify(audio / rows[0][0], audio / rows[0][1]).prior == 0.05  # the fitted prior by default
    with pytest.raises(BadValue, match="bayes@P needs a prior P in"):
        model.threshold("bayes@2")


def test_the_api_measures_quality_as_the_stage_does(tiny):
    import vvframe

    run_dir = tiny["quality"]
    model = vvframe.load(run_dir, device="cpu", trust_recipe=True)
    assert model.calibration is not None and model.calibration.quality == ["duration", "norm", "cohort_mean"]
    trials = [line.split() for line in (tiny["work"] / "trials.txt").read_text().splitlines()]
    files = sorted({f for t in trials for f in t[1:]})
    index = {f: i for i, f in enumerate(files)}
    results = model.verify_pairs(
        [tiny["work"] / "audio" / f for f in files], [(index[t[1]], index[t[2]]) for t in trials], "bayes@0.05"
    )
    labels = [int(t[0]) for t in trials]
    # the same LLRs as the fit's: its Cllr on the development trials
    assert cal.cllr_at([r.llr for r in results], labels) == pytest.approx(
        model.calibration.fitted_on["after"]["cllr"], rel=1e-4
    )
    assert all(r.accepted == (r.llr >= cal.bayes_threshold(0.05) - 1e-9) for r in results)
    assert len({round(r.threshold_value, 9) for r in results}) > 1  # each trial its own score threshold
    with pytest.raises(BadValue, match="depends on each trial's quality"):
        model.threshold("bayes@0.05")


def test_the_service_and_the_verify_command_answer_llrs(tiny, tmp_path):
    import os

    from conftest import TESTS, vvframe_cli

    import vvframe
    from vvframe.inference.serve import RequestError, Service, _prior

    run_dir, audio = tiny["score"], tiny["work"] / "audio"
    model = vvframe.load(run_dir, device="cpu", trust_recipe=True)
    _, _, rows = eval_scores(run_dir)
    service = Service(model)
    assert service.health()["calibration"] == {"prior": 0.05, "features": ["score"]}
    name, value = service.resolve_threshold("bayes@0.01")
    assert name == "bayes@0.01" and value == pytest.approx(model.calibration.threshold(0.01))
    a, b = (model.samples(audio / f) for f in rows[0][:2])
    answer = service.verify(a, b, "bayes@0.01", 0.3)
    assert answer["prior"] == 0.3 and answer["llr"] == pytest.approx(model.calibration.llr([answer["score"]])[0])
    with pytest.raises(RequestError, match=r"prior '1\.5': expected the probability"):
        _prior("1.5")

    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")]))}
    said = vvframe_cli(
        "verify",
        str(run_dir),
        *(str(audio / f) for f in rows[0][:2]),
        "--trust-recipe",
        "--threshold",
        "bayes@0.05",
        env=env,
    )
    assert said.returncode == 0, said.stderr
    assert "threshold bayes@0.05 = " in said.stdout and "P(same speaker) = " in said.stdout
    (tmp_path / "pairs.txt").write_text("".join(f"{r[0]} {r[1]}\n" for r in rows[:5]))
    out = tmp_path / "d.csv"
    many = vvframe_cli(
        "verify",
        str(run_dir),
        "--pairs",
        str(tmp_path / "pairs.txt"),
        "--root",
        str(audio),
        "--out",
        str(out),
        "--trust-recipe",
        env=env,
    )
    assert many.returncode == 0, many.stderr
    assert out.read_text().splitlines()[0] == "enroll,test,score,decision,llr,posterior"
