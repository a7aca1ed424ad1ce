"""Bootstrap intervals: hand-checked points, the width a textbook gives, pairing and clustering."""

import math

import numpy as np
import pytest

from orpo_deploy.evaluation.stats import excludes_zero, if_figures, mean_ratio_ci, paired_diff_ci, ratio_ci


def test_ratio_point_is_the_hand_count_and_inside_its_interval():
    e = ratio_ci([1, 0, 2, 1], [1, 1, 2, 2])  # (1 + 0 + 2 + 1) / (1 + 1 + 2 + 2) = 4 / 6
    assert e.value == pytest.approx(4 / 6)
    assert e.low <= e.value <= e.high and e.n == 4 and e.clusters == 4


def test_interval_width_matches_the_normal_approximation_for_a_proportion():
    x = [1] * 200 + [0] * 200  # p = 0.5, n = 400: 95 % half-width 1.96 * sqrt(0.25 / 400) = 0.049
    e = ratio_ci(x)
    assert (e.high - e.low) / 2 == pytest.approx(1.96 * math.sqrt(0.25 / 400), rel=0.15)


def test_constant_data_has_a_zero_width_interval_and_same_seed_same_interval():
    assert ratio_ci([1] * 50).low == ratio_ci([1] * 50).high == 1.0
    rng = np.random.default_rng(3)
    x = (rng.random(100) < 0.3).astype(int)
    assert ratio_ci(x).to_dict() == ratio_ci(x).to_dict()


def test_clustering_widens_the_interval_when_units_of_a_cluster_agree():
    # 20 topics of 10 prompts each, every prompt of a topic scoring alike: really 20 observations, not 200
    x = np.repeat(np.arange(20) % 2, 10)
    topics = np.repeat(np.arange(20), 10)
    plain, clustered = ratio_ci(x), ratio_ci(x, clusters=topics)
    assert clustered.clusters == 20 and plain.clusters == 200
    assert (clustered.high - clustered.low) > 2.5 * (plain.high - plain.low)


def test_paired_difference_of_identical_models_is_exactly_zero_and_small_gains_show_when_paired():
    rng = np.random.default_rng(0)
    a = (rng.random(300) < 0.4).astype(int)
    same = paired_diff_ci([(a, None)], [(a, None)])
    assert same.value == same.low == same.high == 0.0 and not excludes_zero(same)
    b = a.copy()
    b[np.flatnonzero(a == 0)[:24]] = 1  # B fixes 24 of A's failures, breaks nothing: +0.08
    diff = paired_diff_ci([(a, None)], [(b, None)])
    assert diff.value == pytest.approx(24 / 300) and excludes_zero(diff)
    # unpaired, the two intervals overlap: the pairing is what makes the gain visible
    assert ratio_ci(a).high > ratio_ci(b).low


def test_mean_of_ratios_and_if_figures_hand_counted():
    verdicts = [
        {"strict": [True, False], "loose": [True, True]},
        {"strict": [True], "loose": [True]},
        {"strict": [False], "loose": [False]},
    ]
    f = if_figures(verdicts)
    assert f["prompt_strict"]["value"] == pytest.approx(1 / 3)
    assert f["prompt_loose"]["value"] == pytest.approx(2 / 3)
    assert f["instruction_strict"]["value"] == pytest.approx(2 / 4)
    assert f["instruction_loose"]["value"] == pytest.approx(3 / 4)
    assert f["mean"]["value"] == pytest.approx((1 / 3 + 2 / 3 + 2 / 4 + 3 / 4) / 4)
    m = mean_ratio_ci([([1, 0], None), ([1, 1], None)])
    assert m.value == pytest.approx(0.75)
