"""The runner on the real ml-100k_mm (tiny slice, smoke protocol): a recorded run is not run again, a record of
other settings is, and the test metrics are read once, from the checkpoint of the best validation epoch."""

import json
import os

import pytest
import torch
from recbole.trainer import Trainer

from recbole_mm.results.protocols import load_protocol
from recbole_mm.results.runner import Plan, read_record, run_plan
from recbole_mm.results.tables import TABLES, Row, Table

pytestmark = pytest.mark.filterwarnings("ignore")


def plan_of(root, tmp_path, table="sequential", rows=("Pop",), protocol="smoke"):
    return Plan(
        TABLES[table], load_protocol(protocol), str(root), str(tmp_path / "work"), str(tmp_path / "runs"), list(rows)
    )


def test_a_recorded_run_is_not_run_again_and_a_changed_one_is(ml100k_root, tmp_path, monkeypatch):
    plan = plan_of(ml100k_root, tmp_path)
    first = run_plan(plan, in_process=True, log=lambda *_: None)
    path = plan.record_path(plan.rows[0], 2020)
    record = read_record(path)
    assert first["Pop", 2020] == record and record["spec"] == plan.spec(plan.rows[0], 2020)
    assert set(record["test"]) == {f"{m}@{k}" for m in ("hit", "ndcg") for k in (10, 11, 50, 51)}

    calls = []
    monkeypatch.setattr("recbole_mm.results.runner.execute", lambda *a, **k: calls.append(a) or {})
    again = run_plan(plan, in_process=True, log=lambda *_: None)
    assert calls == [] and again["Pop", 2020] == record  # read back, not run

    # a record made under other settings (here: another epoch budget) is run again
    record["spec"]["settings"]["epochs"] = 7
    with open(path, "w", encoding="utf-8") as f:
        json.dump(record, f)
    monkeypatch.undo()
    rerun = run_plan(plan, in_process=True, log=lambda *_: None)
    assert rerun["Pop", 2020]["spec"] == plan.spec(plan.rows[0], 2020) and rerun["Pop", 2020]["date"]


def test_a_pretraining_runs_only_for_a_missing_finetuning(domains_root, tmp_path, monkeypatch):
    plan = plan_of(domains_root, tmp_path, "transfer", ["MISSRec, ID, pre-trained"])
    assert [r.label for r in plan.rows] == ["MISSRec pre-training on A", "MISSRec, ID, pre-trained"]
    records = run_plan(plan, in_process=True, log=lambda *_: None)
    pre, fine = records["MISSRec pre-training on A", 2020], records["MISSRec, ID, pre-trained", 2020]
    assert os.path.isfile(pre["checkpoint"]) and fine["pretrained_path"] == pre["checkpoint"]
    assert fine["spec"]["pretrained_from"] == pre["spec"]
    os.remove(pre["checkpoint"])  # e.g. another machine: the fine-tuning is recorded, so nothing runs
    calls = []
    monkeypatch.setattr("recbole_mm.results.runner.execute", lambda *a, **k: calls.append(a) or {})
    run_plan(plan, in_process=True, log=lambda *_: None)
    assert calls == []


def test_test_metrics_are_read_once_from_the_best_validation_checkpoint(ml100k_root, tmp_path, monkeypatch):
    """SASRec for 4 epochs without early stopping: the test is evaluated once, with the best checkpoint loaded,
    and re-evaluating that checkpoint on test gives the recorded test metrics."""
    row = Row("SASRec", "SASRec", {"learning_rate": 0.01, "epochs": 4, "stopping_step": 10})
    table = Table("check", "check", "ml-100k_mm", TABLES["sequential"].settings, [row])
    protocol = load_protocol("smoke")
    protocol.search = None  # this run's settings as written (the search stage has its own test)
    plan = Plan(table, protocol, str(ml100k_root), str(tmp_path / "work"), str(tmp_path / "runs"))
    calls = []
    evaluate = Trainer.evaluate

    def spy(self, eval_data, load_best_model=True, model_file=None, show_progress=False):
        calls.append((eval_data.dataset if hasattr(eval_data, "dataset") else eval_data._dataset, load_best_model))
        return evaluate(self, eval_data, load_best_model, model_file, show_progress)

    monkeypatch.setattr(Trainer, "evaluate", spy)
    record = run_plan(plan, in_process=True, log=lambda *_: None)["SASRec", 2020]
    monkeypatch.undo()
    assert [best for _, best in calls] == [False] * 4 + [True]  # 4 validations, then the test, once
    assert calls[-1][0] is not calls[0][0]  # the test split, not the validation one
    assert record["epochs_run"] == 4 and [e for e, _ in record["valid_curve"]] == [0, 1, 2, 3]
    scores = [s for _, s in record["valid_curve"]]
    assert record["best_epoch"] == len(scores) - 1 - scores[::-1].index(max(scores))  # RecBole: last of equal ones
    assert record["best_valid"]["ndcg@10"] == pytest.approx(max(scores))
    checkpoint = torch.load(record["checkpoint"], map_location="cpu", weights_only=False)
    assert checkpoint["epoch"] == record["best_epoch"]

    from recbole_mm.quick_start import load_data_and_model
    from recbole_mm.registry import get_trainer

    config, model, _, _, _, test_data = load_data_and_model(record["checkpoint"])
    trainer = get_trainer(config["MODEL_TYPE"], config["model"])(config, model)
    again = trainer.evaluate(test_data, load_best_model=False)
    assert {k: float(v) for k, v in again.items()} == pytest.approx(record["test"], abs=1e-4)


def test_records_follow_their_settings_when_two_rows_swap_them(ml100k_root, tmp_path):
    """Rows "a" {epochs: 1} and "b" {epochs: 2} recorded; then "a" takes b's settings and "b" a's (as when a
    model's default flips between two rows): each row gets the record of the run it now names, none is lost."""
    from recbole_mm.results.runner import load_records

    def plan_with(rows):
        table = Table("swap", "swap", "ml-100k_mm", TABLES["sequential"].settings, rows)
        return Plan(table, load_protocol("smoke"), str(ml100k_root), str(tmp_path / "work"), str(tmp_path / "runs"))

    before = plan_with([Row("a", "Pop", {"epochs": 1}), Row("b", "Pop", {"epochs": 2})])
    for row, value in zip(before.rows, (0.1, 0.2)):
        path = before.record_path(row, 2020)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, "w", encoding="utf-8") as f:
            json.dump({"spec": before.spec(row, 2020), "test": {"ndcg@10": value}}, f)
    after = plan_with([Row("a", "Pop", {"epochs": 2}), Row("b", "Pop", {"epochs": 1}), Row("c", "Pop", {"epochs": 3})])
    records = load_records(after, [2020])
    assert records["a", 2020]["test"] == {"ndcg@10": 0.2} and records["b", 2020]["test"] == {"ndcg@10": 0.1}
    assert ("c", 2020) not in records  # never run
    for label in ("a", "b"):  # written back under the row's own file, with its own label
        row = after.table.row(label)
        assert read_record(after.record_path(row, 2020)) == records[label, 2020]
        assert records[label, 2020]["spec"] == after.spec(row, 2020)


def test_a_row_tuned_from_another_runs_at_that_rows_recorded_search(ml100k_root, tmp_path):
    """A recorded search of "SASRec" (smoke protocol) sets the values of its seeds and of the row tuned from it; a
    search record made for another search space is not used."""
    from recbole_mm.results.search import search_lines, search_path, search_spec

    rows = [Row("SASRec", "SASRec"), Row("SASRec, one block", "SASRec", {"n_layers": 1}, tuned_from="SASRec")]
    table = Table("tuned", "tuned", "ml-100k_mm", TABLES["sequential"].settings, rows)
    table.check()

    def plan_for(labels):
        return Plan(table, load_protocol("smoke"), str(ml100k_root), str(tmp_path / "w"), str(tmp_path / "r"), labels)

    plan = plan_for(["SASRec, one block"])
    assert [r.label for r in plan.rows] == ["SASRec", "SASRec, one block"]  # the searched row is brought along
    assert plan.needs_search(plan.rows[0]) and not plan.needs_search(plan.rows[1]) and plan.tuned == {}
    chosen = {"learning_rate": 0.003, "hidden_dropout_prob": 0.2, "attn_dropout_prob": 0.5}
    record = {"spec": search_spec(plan, rows[0]), "chosen": chosen, "best_valid_score": 0.1, "trials": []}
    os.makedirs(os.path.dirname(search_path(plan, rows[0])), exist_ok=True)
    with open(search_path(plan, rows[0]), "w", encoding="utf-8") as f:
        json.dump(record, f)
    plan = plan_for(None)
    assert plan.tuned == {"SASRec": chosen, "SASRec, one block": chosen}
    for row in plan.rows:
        spec = plan.spec(row, 2021)
        assert {k: spec["settings"][k] for k in chosen} == chosen and spec["seed"] == 2021
    assert plan.spec(rows[1], 2020)["settings"]["n_layers"] == 1
    assert "| SASRec, one block | runs at the values chosen for SASRec |" in "\n".join(search_lines(plan, plan.rows))
    record["spec"]["space"]["learning_rate"]["high"] = 0.1  # another space: a new search is due
    with open(search_path(plan, rows[0]), "w", encoding="utf-8") as f:
        json.dump(record, f)
    assert plan_for(None).tuned == {}
