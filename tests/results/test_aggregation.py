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


def test_a_run_is_cap_bound_when_the_cap_ended_it_or_its_best_epoch_is_within_patience_of_the_cap():
    from recbole_mm.results.runner import cap_bound, stopped_by

    spec = {"stage": "train", "settings": {"epochs": 30, "stopping_step": 10}}
    assert stopped_by(spec, 30) == "cap" and stopped_by(spec, 22) == "patience"
    assert stopped_by(dict(spec, stage="pretrain"), 30) == "recipe"
    # best epoch 10 (0-based), 11 validations without improvement after it: stopped by patience at 22 epochs
    assert not cap_bound({"spec": spec, "epochs_run": 22, "best_epoch": 10, "stopped_by": "patience"})
    assert cap_bound({"spec": spec, "epochs_run": 30, "best_epoch": 5, "stopped_by": "cap"})
    # best epoch 20: only 9 epochs left before the cap, fewer than stopping_step: cap-bound
    assert cap_bound({"spec": spec, "epochs_run": 30, "best_epoch": 20})
    assert not cap_bound({"spec": dict(spec, stage="pretrain"), "epochs_run": 30, "best_epoch": None})
