"""Every public entry point of the README, each started in a fresh interpreter (nothing imported or patched before
it): ``run_recbole_mm.py``, ``run_recbole_mm``, ``load_data_and_model`` + a trainer's ``evaluate``,
``objective_function`` and ``run_hyper.py``; on a slice of ml-100k_mm with SASRec sized to a few seconds. The same
settings and seed give the same test figures through each of them."""

import json
import os

import pytest
from cli_helpers import ROOT, run_fresh

TINY = {"n_layers": 1, "hidden_size": 16, "inner_size": 16, "epochs": 1, "show_progress": False}


def fresh(code: str, cwd) -> str:
    """Run ``code`` in a fresh interpreter (the package on its path as this test's); its last stdout line."""
    return run_fresh(["-c", code], cwd).stdout.strip().splitlines()[-1]


@pytest.fixture(scope="module")
def cli_run(ml100k_slice, tmp_path_factory):
    """``python run_recbole_mm.py`` on the slice: ``(its test figures, the checkpoint, the working folder)``."""
    work = tmp_path_factory.mktemp("cli")
    settings = [f"--{key}={value}" for key, value in TINY.items()]
    done = run_fresh(
        [os.path.join(ROOT, "run_recbole_mm.py"), "--model=SASRec", "--dataset=ml-100k_mm"]
        + [f"--data_path={ml100k_slice}", f"--checkpoint_dir={work / 'saved'}", *settings],
        work,
    )
    test_line = next(line for line in done.stdout.splitlines() if line.strip().startswith("test "))
    words = test_line.split()[1:]
    figures = {words[i]: float(words[i + 1]) for i in range(0, len(words), 2)}
    (checkpoint,) = list((work / "saved").iterdir())
    return figures, str(checkpoint), work


def assert_same_figures(cli_figures: dict, result: dict) -> None:
    assert set(cli_figures) == set(result)
    for name, value in cli_figures.items():
        assert abs(result[name] - value) <= 5e-5, (name, result[name], value)  # the CLI prints 4 decimals


def test_the_command_line_trains_and_tests(cli_run):
    figures, checkpoint, _ = cli_run
    assert set(figures) == {"hit@10", "hit@50", "ndcg@10", "ndcg@50"} and 0 < figures["hit@50"] <= 1
    assert checkpoint.endswith(".pth")


def test_run_recbole_mm_from_python(cli_run, ml100k_slice):
    figures, _, work = cli_run
    config = {**TINY, "data_path": str(ml100k_slice), "checkpoint_dir": str(work / "api")}
    result = fresh(
        "import json\nfrom recbole_mm.quick_start import run_recbole_mm\n"
        f"r = run_recbole_mm(model='SASRec', dataset='ml-100k_mm', config_dict={config!r})\n"
        "print(json.dumps({k: float(v) for k, v in r['test_result'].items()}))",
        work,
    )
    assert_same_figures(figures, json.loads(result))


def test_a_checkpoint_reloads_and_evaluates_in_a_fresh_interpreter(cli_run):
    """``load_data_and_model`` + ``evaluate`` with no Config built before it (RecBole's NDCG needs numpy's
    removed aliases, which only building a Config used to restore)."""
    figures, checkpoint, work = cli_run
    result = fresh(
        "import json\nfrom recbole_mm.quick_start import load_data_and_model\n"
        "from recbole_mm.registry import get_trainer\n"
        f"config, model, dataset, train_data, valid_data, test_data = load_data_and_model({checkpoint!r})\n"
        "trainer = get_trainer(config['MODEL_TYPE'], config['model'])(config, model)\n"
        "r = trainer.evaluate(test_data, load_best_model=False, show_progress=False)\n"
        "print(json.dumps({k: float(v) for k, v in r.items()}))",
        work,
    )
    assert_same_figures(figures, json.loads(result))


def test_objective_function_in_a_fresh_interpreter(cli_run, ml100k_slice):
    figures, _, work = cli_run
    config = {**TINY, "model": "SASRec", "dataset": "ml-100k_mm", "data_path": str(ml100k_slice)}
    config["checkpoint_dir"] = str(work / "objective")
    result = fresh(
        "import json\nfrom recbole_mm.quick_start import objective_function\n"
        f"r = objective_function(config_dict={config!r})\n"
        "print(json.dumps({'keys': sorted(r), 'test': {k: float(v) for k, v in r['test_result'].items()}}))",
        work,
    )
    result = json.loads(result)
    assert {"best_valid_score", "valid_score_bigger", "best_valid_result", "test_result"} <= set(result["keys"])
    assert_same_figures(figures, result["test"])


def test_run_hyper_sweeps_in_a_fresh_interpreter(cli_run, ml100k_slice):
    _, _, work = cli_run
    (work / "space.hyper").write_text("learning_rate choice [0.001]\n")
    settings = [f"--{key}={value}" for key, value in TINY.items()]
    run_fresh(
        [os.path.join(ROOT, "run_hyper.py"), "--model=SASRec", "--dataset=ml-100k_mm"]
        + ["--params_file=space.hyper", "--tool=hyperopt", "--search=grid", f"--output_dir={work / 'sweep'}"]
        + [f"--data_path={ml100k_slice}", *settings],
        work,
    )
    assert (work / "sweep" / "best_config.yaml").is_file()
    assert "learning_rate: 0.001" in (work / "sweep" / "best_config.yaml").read_text()
