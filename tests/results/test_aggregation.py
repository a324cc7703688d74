"""Aggregation of a table's runs: mean and sample standard deviation, and the cells of the markdown."""

import math

from recbole_mm.results.runner import cell, mean_std


def test_mean_and_sample_std_against_hand_computed_values():
    # mean (0.1 + 0.2 + 0.4) / 3 = 0.233333; deviations -0.133333, -0.033333, 0.166667;
    # squares 0.0177778 + 0.0011111 + 0.0277778 = 0.0466667; / (3 - 1) = 0.0233333; sqrt = 0.1527525
    mean, std = mean_std([0.1, 0.2, 0.4])
    assert math.isclose(mean, 0.2333333333, rel_tol=1e-9)
    assert math.isclose(std, 0.1527525232, rel_tol=1e-9)
    assert cell([0.1, 0.2, 0.4]) == "0.2333 ± 0.1528"


def test_two_equal_values_have_zero_std_and_one_value_says_so():
    assert mean_std([0.05, 0.05]) == (0.05, 0.0)
    assert cell([0.05, 0.05]) == "0.0500 ± 0.0000"
    mean, std = mean_std([0.0656])
    assert mean == 0.0656 and math.isnan(std)
    assert cell([0.0656]) == "0.0656 (1 seed)"
    assert cell([]) == ""
