"""End-to-end sweeps of a tiny SASRec on a synthetic dataset (real RecBole data, trainer and evaluator):
ASHA pruning, selection on validation, test result of the winner, failing trials, the hyperopt tool."""

import json
import math

import pytest
import yaml

from recbole_mm.tuning import SweepOptions, run_sweep
from recbole_mm.tuning.trial import COMPLETED, ERROR, STOPPED

# Run in this order (grid, one at a time): two good rates, a hopeless one, an invalid one.
LR_SPACE = "learning_rate choice [0.01, 0.05, 1e-7, -1.0]\n"
# The invalid one fails in recbole_mm's Config, before any data is read.
LR_MESSAGE = "ConfigError: config key 'learning_rate': expected a positive number, found -1.0 (in config_dict)"
LR_ERROR = "recbole_mm.errors." + LR_MESSAGE  # as Ray records it (hyperopt: the class name alone)


@pytest.fixture(scope="module")
def lr_space(tmp_path_factory):
    path = tmp_path_factory.mktemp("space") / "lr.hyper"
    path.write_text(LR_SPACE)
    return path


@pytest.fixture(scope="module")
def ray_sweep(ray_session, cycle_data, lr_space, tmp_path_factory):
    root, config_file, dataset = cycle_data
    out = tmp_path_factory.mktemp("ray_sweep")
    options = SweepOptions(tool="ray", search="grid", scheduler="asha", max_concurrent=1)
    return run_sweep("SASRec", dataset, str(lr_space), [str(config_file)], {"data_path": str(root)}, options, str(out))


def _by_lr(result):
    return {r.params["learning_rate"]: r for r in result.records}


def test_asha_stops_hopeless_trial_before_epoch_limit(ray_sweep):
    trials = _by_lr(ray_sweep)
    hopeless = trials[1e-7]
    assert hopeless.status == STOPPED
    assert hopeless.epochs_run == 1 < 3
    # ASHA's rule at rung 1 (reduction factor 2): stop when below the median of the earlier trials there.
    earlier = sorted(trials[lr].curve[0][1] for lr in (0.01, 0.05))
    assert hopeless.curve[0][1] < (earlier[0] + earlier[1]) / 2
    for lr in (0.01, 0.05):
        assert trials[lr].status == COMPLETED and trials[lr].epochs_run == 3
        assert [e for e, _ in trials[lr].curve] == [1, 2, 3]  # one report per epoch


def test_failing_trial_recorded_and_others_finish(ray_sweep):
    trials = _by_lr(ray_sweep)
    failed = trials[-1.0]
    assert failed.status == ERROR
    assert failed.error == LR_ERROR
    assert sum(r.status == ERROR for r in ray_sweep.records) == 1
    with open(ray_sweep.files["csv"]) as f:
        rows = f.read().splitlines()
    assert rows[0] == "trial,learning_rate,best valid NDCG@10,epochs run,status,peak RSS MiB,error"
    assert len(rows) == 5
    assert rows[4].endswith(f',-1,,0,error,,"{LR_ERROR}"')  # quoted: the message holds a comma
    for r in ray_sweep.records:  # each trial's worker reports its peak resident memory (torch alone is > 100 MiB)
        assert (r.peak_rss_mb is None) == (r.status == ERROR) and (r.peak_rss_mb is None or r.peak_rss_mb > 100)


def test_winner_is_validation_argmax_and_its_test_result_is_reported(ray_sweep):
    completed = [r for r in ray_sweep.records if r.status == COMPLETED]
    for r in completed:  # RecBole's best valid score is the best of the per-epoch reports
        assert r.best_valid_score == max(s for _, s in r.curve)
    expected = max(completed, key=lambda r: r.best_valid_score)
    assert ray_sweep.best is expected
    assert set(ray_sweep.best.test_result) == {"ndcg@10", "hit@10"}
    assert all(0.0 <= v <= 1.0 for v in ray_sweep.best.test_result.values())
    with open(ray_sweep.files["summary"]) as f:
        summary = json.load(f)
    assert summary["best"]["trial"] == expected.trial_id
    assert summary["best"]["test_result"] == ray_sweep.best.test_result
    assert summary["trials"] == {"completed": 2, "stopped": 1, "error": 1}
    with open(ray_sweep.files["markdown"]) as f:
        table = f.read()
    assert f"| **{expected.trial_id}** |" in table
    with open(ray_sweep.files["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_best_config_reproduces_the_winner(ray_sweep, cycle_data, tmp_path):
    """The best-config YAML alone (run_recbole_mm --config_files) gives the winner's valid and test scores."""
    from recbole_mm.quick_start import run_recbole_mm

    dataset = cycle_data[2]
    best_file = ray_sweep.files["best_config"]
    with open(best_file) as f:
        config = yaml.safe_load(f)
    assert config["learning_rate"] == ray_sweep.best.params["learning_rate"]
    assert config["model"] == "SASRec" and config["dataset"] == dataset
    result = run_recbole_mm(
        model="SASRec", dataset=dataset, config_file_list=[best_file], config_dict={"checkpoint_dir": str(tmp_path)}
    )
    assert result["best_valid_score"] == pytest.approx(ray_sweep.best.best_valid_score, abs=1e-3)
    for metric, value in ray_sweep.best.test_result.items():
        assert result["test_result"][metric] == pytest.approx(value, abs=1e-3)


def test_hyperopt_tool_runs_the_same_space(ray_sweep, cycle_data, lr_space, tmp_path):
    """The same .hyper file through hyperopt (grid, in-process, no pruning): same points, same epoch-1 scores."""
    root, config_file, dataset = cycle_data
    options = SweepOptions(tool="hyperopt", search="grid")
    result = run_sweep(
        "SASRec",
        dataset,
        str(lr_space),
        [str(config_file)],
        {"data_path": str(root), "epochs": 1},
        options,
        str(tmp_path),
    )
    ours, theirs = _by_lr(result), _by_lr(ray_sweep)
    assert set(ours) == set(theirs) == {0.01, 0.05, 1e-7, -1.0}
    assert ours[-1.0].status == ERROR and ours[-1.0].error == LR_MESSAGE
    for lr in (0.01, 0.05, 1e-7):
        assert ours[lr].status == COMPLETED and ours[lr].epochs_run == 1
        assert ours[lr].curve[0][1] == pytest.approx(theirs[lr].curve[0][1], abs=1e-3)  # same seed, same model
    assert result.best is max((ours[lr] for lr in (0.01, 0.05, 1e-7)), key=lambda r: r.best_valid_score)


def test_nan_loss_trial_is_recorded(cycle_data, tmp_path):
    """A diverging trial (the trainer raises on a NaN loss, naming the first NaN step) becomes an error record;
    nothing is raised."""
    from recbole_mm.tuning.space import parse_hyper_lines
    from recbole_mm.tuning.sweep import prepare_setup
    from recbole_mm.tuning.trial import local_trial

    root, config_file, dataset = cycle_data
    space = parse_hyper_lines("learning_rate choice [1e30]\n")
    setup = prepare_setup("SASRec", dataset, [str(config_file)], {"data_path": str(root)}, space, str(tmp_path))
    record = local_trial(setup, {"learning_rate": 1e30}, "nan_trial")
    assert record.status == ERROR
    assert record.error == "ValueError: Training loss is nan (epoch 0, first at step 1)"  # step 0's update diverged
    assert record.test_result == {}


@pytest.mark.parametrize("tool", ["hyperopt", pytest.param("ray", marks=pytest.mark.slow)])
def test_random_search_is_reproducible(tool, request, cycle_data, tmp_path):
    """Random search is seeded by the config's seed: the same points and the same scores twice."""
    if tool == "ray":
        request.getfixturevalue("ray_session")
    root, config_file, dataset = cycle_data
    space = tmp_path / "space.yaml"
    space.write_text(
        "learning_rate: {type: loguniform, low: 1e-3, high: 1e-1}\n"
        "hidden_dropout_prob: {type: uniform, low: 0.1, high: 0.5}\n"
    )
    runs = []
    for attempt in range(2):
        result = run_sweep(
            "SASRec",
            dataset,
            str(space),
            [str(config_file)],
            {"data_path": str(root), "epochs": 1},
            SweepOptions(tool=tool, num_samples=2, scheduler="fifo"),
            str(tmp_path / f"run{attempt}"),
        )
        runs.append(
            sorted(
                (r.params["learning_rate"], r.params["hidden_dropout_prob"], r.best_valid_score) for r in result.records
            )
        )
    assert runs[0] == runs[1]
    assert runs[0][0][:2] != runs[0][1][:2]
    assert all(1e-3 <= lr <= 1e-1 and 0.1 <= d <= 0.5 and not math.isnan(s) for lr, d, s in runs[0])
