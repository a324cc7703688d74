"""Bad input to the sweep command line: each a clear error (exit status 2) before any trial starts."""

import os
import socket

import pytest

from recbole_mm.errors import DatasetNotFoundError, ModelNotFoundError, SweepSetupError
from recbole_mm.tuning import SweepOptions, run_sweep
from recbole_mm.tuning.cli import main
from recbole_mm.tuning.sweep import parse_overrides


@pytest.fixture
def sweep_args(cycle_data, tmp_path):
    """Arguments of a valid sweep, and its output folder (which no failing check may create)."""
    root, config_file, dataset = cycle_data
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate loguniform -8,0\n")
    out = tmp_path / "out"
    args = [
        "-m",
        "SASRec",
        "-d",
        dataset,
        f"--config_files={config_file}",
        f"--params_file={space}",
        f"--output_dir={out}",
        f"--data_path={root}",
    ]
    return args, out


def _fails_before_trials(args, out, capsys, message):
    ray = pytest.importorskip("ray")
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and message in err
    assert not ray.is_initialized()
    assert not (out / "trials.csv").exists()
    return err


@pytest.mark.parametrize(
    "text, message",
    [
        (
            "embedding_size choice [64,96]\nlearning_rate loguniform -8\n",
            ":2: loguniform needs 2 comma-separated numbers",
        ),
        ("learning_rate normal 0,1\n", ":1: unknown parameter type 'normal'"),
    ],
)
def test_bad_params_file_names_the_line(sweep_args, tmp_path, capsys, text, message):
    args, out = sweep_args
    bad = tmp_path / "bad.hyper"
    bad.write_text(text)
    _fails_before_trials(args + [f"--params_file={bad}"], out, capsys, f"{bad}{message}")


@pytest.mark.parametrize(
    "extra, message",
    [
        ("--model=NoSuchRec", "model [NoSuchRec] is neither a recbole_mm model"),
        ("--dataset=no_such_data", "dataset 'no_such_data' not found"),
        ("--learning_rate=0.1", "['learning_rate'] are both searched"),
        ("--search=bayes", "--search bayes is not available with --tool ray"),
        ("--search=grid", "grid search needs only 'choice' parameters"),
        ("--num_samples=0", "--num_samples must be >= 1"),
        ("--config_files=missing.yaml", f"not found: {os.path.abspath('missing.yaml')}"),
        ("--eval_step=5", "eval_step=5 with epochs=3: trials would never validate"),
        ("--tool=hyperopt --gpus_per_trial=1", "--address and --gpus_per_trial place trials on Ray"),
    ],
)
def test_bad_argument(sweep_args, capsys, extra, message):
    args, out = sweep_args
    _fails_before_trials(args + extra.split(), out, capsys, message)


@pytest.mark.skipif(__import__("torch").cuda.is_available(), reason="checks the no-GPU error")
def test_gpus_per_trial_without_gpu(sweep_args, capsys):
    args, out = sweep_args
    _fails_before_trials(
        args + ["--gpus_per_trial=1"], out, capsys, "--gpus_per_trial 1 but this machine has no CUDA GPU"
    )


def test_unreachable_address(sweep_args, capsys):
    args, out = sweep_args
    with socket.socket() as s:  # a port nobody listens on: bind it, then close it
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _fails_before_trials(
        args + [f"--address=127.0.0.1:{port}"], out, capsys, f"--address 127.0.0.1:{port}: no Ray cluster answers there"
    )
    _fails_before_trials(args + ["--address=nohostport"], out, capsys, "--address must be 'auto', 'host:port'")


def test_parse_overrides_converts_like_recbole():
    assert parse_overrides(["--epochs=5", "--learning_rate=1e-3", "--topk=[10,20]", "--neg=none", "--flag=True"]) == {
        "epochs": 5,
        "learning_rate": 1e-3,
        "topk": [10, 20],
        "neg": "none",
        "flag": True,
    }
    with pytest.raises(SweepSetupError, match="unrecognised argument 'epochs'"):
        parse_overrides(["epochs"])


def test_run_sweep_raises_typed_errors(cycle_data, tmp_path):
    root, config_file, dataset = cycle_data
    space = tmp_path / "lr.hyper"
    space.write_text("learning_rate choice [0.01]\n")
    with pytest.raises(ModelNotFoundError):
        run_sweep(
            "NoSuchRec",
            dataset,
            str(space),
            [str(config_file)],
            {"data_path": str(root)},
            SweepOptions(),
            str(tmp_path / "o"),
        )
    with pytest.raises(DatasetNotFoundError):
        run_sweep(
            "SASRec",
            "absent",
            str(space),
            [str(config_file)],
            {"data_path": str(root)},
            SweepOptions(),
            str(tmp_path / "o"),
        )
