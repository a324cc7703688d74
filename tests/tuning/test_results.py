"""Winner selection and output files, on hand-made trial records (no training)."""

import csv
import json

import pytest
import yaml

from recbole_mm.tuning.results import markdown_table, select_best, write_outputs
from recbole_mm.tuning.space import parse_hyper_lines
from recbole_mm.tuning.trial import COMPLETED, ERROR, STOPPED, SweepSetup, TrialRecord


def _records():
    return [
        TrialRecord(
            "t0", {"lr": 0.01, "mlp": "[8,8]"}, COMPLETED, [(1, 0.30), (2, 0.42)], 0.42, test_result={"ndcg@10": 0.40}
        ),
        TrialRecord(
            "t1", {"lr": 0.1, "mlp": "[16]"}, COMPLETED, [(1, 0.50), (2, 0.45)], 0.50, test_result={"ndcg@10": 0.38}
        ),
        TrialRecord("t2", {"lr": 1e-7, "mlp": "[8,8]"}, STOPPED, [(1, 0.90)], 0.90),
        TrialRecord(
            "t3", {"lr": -1.0, "mlp": "[16]"}, ERROR, [], None, error="ValueError: Invalid learning rate: -1.0\nmore"
        ),
    ]


def _setup(tmp_path, bigger=True):
    return SweepSetup(
        model="SASRec",
        dataset="toy",
        config_files=[],
        fixed={"epochs": 2, "data_path": "/abs/data", "learning_rate": 0.5},
        file_config={"hidden_size": 16, "learning_rate": 0.9},
        space=parse_hyper_lines("lr choice [0.01,0.1]\nmlp choice ['[8,8]','[16]']\n"),
        valid_metric="NDCG@10",
        bigger=bigger,
        epochs=2,
        seed=2020,
        output_dir=str(tmp_path),
    )


def test_select_best_among_completed_only():
    records = _records()
    assert select_best(records, bigger=True).trial_id == "t1"  # t2 scores higher but was stopped
    assert select_best(records, bigger=False).trial_id == "t0"  # e.g. a loss-like metric
    tie = [TrialRecord("a", {}, COMPLETED, best_valid_score=0.5), TrialRecord("b", {}, COMPLETED, best_valid_score=0.5)]
    assert select_best(tie, bigger=True).trial_id == "a"
    assert select_best(records[2:], bigger=True) is None


def test_outputs(tmp_path):
    setup, records = _setup(tmp_path), _records()
    best = select_best(records, setup.bigger)
    files = write_outputs(setup, records, best, {"tool": "ray"})
    with open(files["csv"]) as f:
        rows = list(csv.DictReader(f))
    assert [r["trial"] for r in rows] == ["t0", "t1", "t2", "t3"]
    assert rows[1] == {
        "trial": "t1",
        "lr": "0.1",
        "mlp": "[16]",
        "best valid NDCG@10": "0.5",
        "epochs run": "2",
        "status": "completed",
        "peak RSS MiB": "",
        "error": "",
    }
    assert rows[2]["epochs run"] == "1" and rows[2]["status"] == "stopped"
    assert rows[3]["error"] == "ValueError: Invalid learning rate: -1.0"
    with open(files["best_config"]) as f:
        config = yaml.safe_load(f)
    # config files < fixed overrides < the winner's values; lists from quoted choices are real lists
    assert config == {
        "hidden_size": 16,
        "learning_rate": 0.5,
        "epochs": 2,
        "data_path": "/abs/data",
        "lr": 0.1,
        "mlp": [16],
        "model": "SASRec",
        "dataset": "toy",
    }
    with open(files["summary"]) as f:
        summary = json.load(f)
    assert summary["best"]["trial"] == "t1" and summary["best"]["test_result"] == {"ndcg@10": 0.38}
    assert summary["trials"] == {"completed": 2, "stopped": 1, "error": 1}
    with open(files["markdown"]) as f:
        text = f.read()
    assert "| **t1** | 0.1 | [16] | 0.5 | 2 | completed |  |" in text
    assert "test result: ndcg@10=0.3800" in text
    with open(files["plot"], "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"


def test_outputs_without_a_completed_trial(tmp_path):
    setup = _setup(tmp_path)
    files = write_outputs(setup, _records()[2:], None, {})
    assert "best_config" not in files and not (tmp_path / "best_config.yaml").exists()
    with open(files["markdown"]) as f:
        assert "No trial completed" in f.read()


def test_markdown_escapes_pipes():
    table = markdown_table([{"trial": "x", "error": "a|b"}], best_id=None)
    assert table.splitlines()[2] == "| x | a\\|b |"


@pytest.mark.parametrize("bigger, expected", [(True, 0.5), (False, 0.3)])
def test_best_of(tmp_path, bigger, expected):
    assert _setup(tmp_path, bigger).best_of([0.3, 0.5, 0.4]) == expected
    assert _setup(tmp_path, bigger).best_of([]) is None
