"""Drift statistics against published worked examples, and their edge cases."""
from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.stats import entropy

from shared.monitoring.stats import (
    PSI_EPSILON,
    STD_FLOOR,
    jensen_shannon,
    normalised_wasserstein,
    psi,
    unseen_share,
)

# -- normalised Wasserstein ---------------------------------------------------------------------------


def test_wasserstein_matches_the_scipy_documentation_example() -> None:
    # scipy.stats.wasserstein_distance docs: wasserstein_distance([0, 1, 3], [5, 6, 8]) == 5.0
    assert normalised_wasserstein(np.array([0.0, 1.0, 3.0]), np.array([5.0, 6.0, 8.0]), 1.0) == pytest.approx(5.0)


def test_wasserstein_is_measured_in_reference_standard_deviations() -> None:
    assert normalised_wasserstein(np.array([0.0, 1.0, 3.0]), np.array([5.0, 6.0, 8.0]), 2.0) == pytest.approx(2.5)


def test_a_shift_by_one_standard_deviation_is_one() -> None:
    reference = np.random.default_rng(1).normal(10.0, 3.0, 20_000)
    assert normalised_wasserstein(reference + 3.0, reference, 3.0) == pytest.approx(1.0)


def test_identical_samples_have_zero_wasserstein() -> None:
    values = np.random.default_rng(2).normal(size=500)
    assert normalised_wasserstein(values, values.copy(), float(values.std())) == 0.0


def test_an_empty_live_sample_has_zero_wasserstein() -> None:
    assert normalised_wasserstein(np.array([]), np.array([1.0, 2.0]), 1.0) == 0.0
    assert normalised_wasserstein(np.array([np.nan, np.nan]), np.array([1.0, 2.0]), 1.0) == 0.0


def test_nans_are_dropped_before_measuring() -> None:
    assert normalised_wasserstein(np.array([0.0, np.nan, 1.0, 3.0]), np.array([5.0, 6.0, 8.0]), 1.0) == 5.0


def test_a_constant_reference_divides_by_the_std_floor_not_zero() -> None:
    # a feature constant in training (std 0) that moves by 1 live: 1 / STD_FLOOR, finite and clearly drifted
    value = normalised_wasserstein(np.array([1.0, 1.0]), np.array([0.0, 0.0]), 0.0)
    assert value == pytest.approx(1.0 / STD_FLOOR)
    assert normalised_wasserstein(np.array([0.0]), np.array([0.0, 0.0]), 0.0) == 0.0
    assert normalised_wasserstein(np.array([1.0]), np.array([0.0]), None) == pytest.approx(1.0 / STD_FLOOR)


# -- PSI ----------------------------------------------------------------------------------------------


def test_psi_matches_a_worked_example_computed_by_hand() -> None:
    # The KAscore package's psi() example (after Siddiqi, Intelligent Credit Scoring, 2nd ed., p. 369):
    # four score bands, development 25% each, monitoring 10/20/30/40%.
    # PSI = sum((a - e) * ln(a / e)):
    #   (0.10 - 0.25) * ln(0.10 / 0.25) = -0.15 * -0.916291 = 0.137444
    #   (0.20 - 0.25) * ln(0.20 / 0.25) = -0.05 * -0.223144 = 0.011157
    #   (0.30 - 0.25) * ln(0.30 / 0.25) =  0.05 *  0.182322 = 0.009116
    #   (0.40 - 0.25) * ln(0.40 / 0.25) =  0.15 *  0.470004 = 0.070501
    #   total                                                = 0.228218 (over 0.2: significant shift)
    assert psi([250, 250, 250, 250], [10, 20, 30, 40]) == pytest.approx(0.228218, abs=1e-6)


def test_psi_is_the_symmetrised_kullback_leibler_divergence() -> None:
    # PSI(P, Q) = KL(P || Q) + KL(Q || P) (stats.stackexchange.com/q/219822); scipy's entropy is KL
    expected = np.array([120, 300, 80, 500], dtype=float)
    actual = np.array([90, 310, 150, 450], dtype=float)
    symmetric = entropy(actual, expected) + entropy(expected, actual)
    assert psi(expected, actual) == pytest.approx(symmetric, rel=1e-12)


def test_psi_depends_on_proportions_not_sample_sizes() -> None:
    assert psi([1, 2, 3], [3, 2, 1]) == pytest.approx(psi([10, 20, 30], [300, 200, 100]))


def test_identical_distributions_have_zero_psi() -> None:
    assert psi([5, 10, 85], [50, 100, 850]) == 0.0


def test_an_empty_bin_counts_as_epsilon_instead_of_infinity() -> None:
    # live puts nothing in the second bin: its proportion is raised to PSI_EPSILON
    expected = (1.0 - 0.5) * math.log(1.0 / 0.5) + (PSI_EPSILON - 0.5) * math.log(PSI_EPSILON / 0.5)
    value = psi([50, 50], [100, 0])
    assert math.isfinite(value)
    assert value == pytest.approx(expected)  # 0.346574 + 4.257745 = 4.604319
    assert value == pytest.approx(4.604319, abs=1e-6)


def test_psi_with_no_live_or_no_reference_rows_is_zero() -> None:
    assert psi([10, 20], [0, 0]) == 0.0
    assert psi([0, 0], [10, 20]) == 0.0


def test_psi_refuses_counts_over_different_bins() -> None:
    with pytest.raises(ValueError, match="same bins"):
        psi([1, 2, 3], [1, 2])


# -- Jensen-Shannon -----------------------------------------------------------------------------------


def test_jensen_shannon_matches_the_scipy_documentation_example() -> None:
    # scipy.spatial.distance.jensenshannon docs: jensenshannon([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], 2.0) == 1.0
    assert jensen_shannon([1.0, 0.0, 0.0], [0.0, 1.0, 0.0]) == pytest.approx(1.0)


def test_jensen_shannon_is_in_base_two() -> None:
    # scipy's docs give jensenshannon([1.0, 0.0], [0.5, 0.5]) == 0.464501 in base e. In base 2, by hand:
    #   M = (0.75, 0.25); KL(P||M) = log2(1/0.75) = 0.415037
    #   KL(Q||M) = 0.5 * log2(0.5/0.75) + 0.5 * log2(0.5/0.25) = 0.5 * -0.584963 + 0.5 * 1 = 0.207519
    #   JSD = (0.415037 + 0.207519) / 2 = 0.311278; distance = sqrt(0.311278) = 0.557923
    assert jensen_shannon([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.557923, abs=1e-6)
    assert jensen_shannon([1.0, 0.0], [0.5, 0.5]) == pytest.approx(0.46450140402245893 / math.sqrt(math.log(2)))


def test_jensen_shannon_normalises_counts() -> None:
    assert jensen_shannon([10, 0], [7, 7]) == pytest.approx(jensen_shannon([1.0, 0.0], [0.5, 0.5]))


def test_identical_category_distributions_have_zero_jensen_shannon() -> None:
    assert jensen_shannon([5, 3, 2], [50, 30, 20]) == pytest.approx(0.0, abs=1e-7)


def test_jensen_shannon_with_no_live_values_is_zero() -> None:
    assert jensen_shannon([5, 3, 2], [0, 0, 0]) == 0.0


def test_jensen_shannon_refuses_counts_over_different_categories() -> None:
    with pytest.raises(ValueError, match="same categories"):
        jensen_shannon([1, 2], [1, 2, 3])


# -- unseen share -------------------------------------------------------------------------------------


def test_unseen_share_is_the_share_of_values_outside_the_known_categories() -> None:
    assert unseen_share({"L": 5, "X": 3, "Y": 2}, {"L", "M", "H"}) == 0.5


def test_unseen_share_of_nothing_is_zero() -> None:
    assert unseen_share({}, {"L"}) == 0.0
    assert unseen_share({"L": 0}, {"L"}) == 0.0
