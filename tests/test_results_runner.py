"""results/run_ml100k_mm.py: metrics read from a run's output, per-run records that make the table resumable,
and pre-trainings that end before any fine-tuning starts."""

import importlib.util
import json
import math
import os
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def runner():
    spec = importlib.util.spec_from_file_location("run_ml100k_mm", os.path.join(ROOT, "results", "run_ml100k_mm.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def fake_run(tmp_path, name, ndcg):
    """A command that prints what run_recbole_mm.py prints and counts its runs in ``<name>.count``."""
    counter = tmp_path / f"{name}.count"
    code = (
        f"import pathlib; p = pathlib.Path({str(counter)!r}); p.write_text(str(int(p.read_text() or 0) + 1) "
        f"if p.exists() else '1')\n"
        f"print('  best valid  hit@10 0.9000  ndcg@10 0.8000')\n"
        f"print('  test        hit@10 0.5000  ndcg@10 {ndcg:.4f}')\n"
    )
    return [sys.executable, "-c", code], counter


def test_metrics_are_the_test_line_of_the_output(runner, tmp_path):
    args, counter = fake_run(tmp_path, "a", 0.25)
    assert runner.run(args) == {"hit@10": 0.5, "ndcg@10": 0.25}  # not the "best valid" line
    assert counter.read_text() == "1"


def test_a_recorded_run_is_not_run_again(runner, tmp_path):
    args, counter = fake_run(tmp_path, "b", 0.3)
    record = runner.record_path(str(tmp_path / "runs"), "MISSRec, ID, pre-trained", 2021)
    assert record.endswith(os.path.join("runs", "missrec-id-pre-trained-seed2021.json"))
    os.makedirs(os.path.dirname(record))
    first = runner.run(args, record)
    saved = json.loads(open(record, encoding="utf-8").read())
    assert saved["command"] == runner.shown(args) and saved["metrics"] == first and saved["seconds"] >= 0
    assert runner.run(args, record) == first and counter.read_text() == "1"  # read back, not re-run
    other, _ = fake_run(tmp_path, "b", 0.4)  # another command under the same record: run again
    assert runner.run(other, record)["ndcg@10"] == 0.4 and counter.read_text() == "2"


def test_a_record_whose_output_file_is_gone_is_run_again(runner, tmp_path):
    args, counter = fake_run(tmp_path, "c", 0.1)
    record = str(tmp_path / "pretrain-seed1.json")
    output = os.path.relpath(tmp_path / "model.pth", ROOT)  # outputs are relative to the repository root
    (tmp_path / "model.pth").write_bytes(b"x")
    runner.run(args, record, output)
    runner.run(args, record, output)
    assert counter.read_text() == "1"
    os.remove(tmp_path / "model.pth")  # e.g. a fresh GPU machine without the checkpoint
    runner.run(args, record, output)
    assert counter.read_text() == "2"


def test_every_pretraining_ends_before_any_finetuning_starts(runner, tmp_path):
    """Two pre-trainings (one slow) and three fine-tunings, two jobs: the fine-tunings start only after both
    pre-trainings have ended, though a worker is free while the slow one runs; metrics come back by key."""
    log = tmp_path / "log.txt"

    def step(name, seconds, ndcg=None):
        code = (
            f"import time; log = open({str(log)!r}, 'a'); log.write({name!r} + ' start\\n'); log.flush(); "
            f"time.sleep({seconds}); log.write({name!r} + ' end\\n')"
        )
        if ndcg is not None:
            code += f"; print('  test        ndcg@10 {ndcg}')"
        return [sys.executable, "-c", code]

    pretrainings = [(step("pt1", 1.5), None, None), (step("pt2", 0.0), None, None)]
    finetunings = {(f"row{i}", 1): (step(f"row{i}", 0.0, i / 10), None) for i in range(3)}
    metrics = runner.run_in_two_phases(pretrainings, finetunings, jobs=2)
    assert metrics == {(f"row{i}", 1): {"ndcg@10": i / 10} for i in range(3)}
    events = log.read_text().splitlines()
    last_pretraining_end = max(events.index("pt1 end"), events.index("pt2 end"))
    first_finetuning_start = min(events.index(f"row{i} start") for i in range(3))
    assert last_pretraining_end < first_finetuning_start, events


def test_a_failed_pretraining_lets_the_finetunings_run_then_stops_the_table(runner, tmp_path):
    log = tmp_path / "log.txt"
    failing = [sys.executable, "-c", "raise SystemExit(4)"]
    finetuning = [sys.executable, "-c", f"open({str(log)!r}, 'a').write('ran\\n')"]
    with pytest.raises(SystemExit, match="command failed \\(exit 4\\)"):
        runner.run_in_two_phases([(failing, None, None)], {("row", 1): (finetuning, None)}, jobs=1)
    assert log.read_text() == "ran\n"


def test_a_failing_command_stops_the_table(runner, tmp_path, capsys):
    with pytest.raises(SystemExit, match="command failed \\(exit 3\\)"):
        runner.run([sys.executable, "-c", "print('boom'); raise SystemExit(3)"])
    assert "boom" in capsys.readouterr().err


def test_each_ablation_row_changes_one_setting_of_missrec_id_from_scratch(runner):
    base_model, base, base_pretrained = runner.ROWS["MISSRec, ID, from scratch"]
    for label in runner.ABLATIONS:
        model, settings, pretrained = runner.ROWS[label]
        assert (model, pretrained) == (base_model, base_pretrained)
        diff = {key: value for key, value in settings.items() if base.get(key) != value}
        assert len(diff) == 1, (label, diff)
    assert {"text", "img"} == {runner.ROWS[label][1].get("modal_type") for label in runner.ABLATIONS} - {None}
    # one interest: K = ceil(ratio x T) = 1 for ml-100k_mm's T = 2 modalities x 1,682 items
    ratio = runner.ROWS["ablation: MISSRec, ID, from scratch, one interest"][1]["interest_ratio"]
    assert math.ceil(ratio * 2 * 1682) == 1
