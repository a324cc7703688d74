"""``python -m recbole_mm.results --smoke`` end to end on the real ml-100k_mm and its domains (tiny slice, one
epoch, one seed, in-process): a record per run, and markdown tables that show what the records hold."""

import json
import os

import pytest

from recbole_mm.results.__main__ import main
from recbole_mm.results.tables import TABLES

pytestmark = pytest.mark.filterwarnings("ignore")


def test_smoke_mode_writes_a_record_per_run_and_the_markdown_of_every_table(domains_root, tmp_path, capsys):
    runs, out, work = tmp_path / "runs", tmp_path / "out", tmp_path / "work"
    argv = ["--smoke", "--all", "--in-process", "--data-path", str(domains_root)]
    argv += ["--runs-dir", str(runs), "--out-dir", str(out), "--work-dir", str(work)]
    assert main(argv) == 0
    for name, table in TABLES.items():
        folder = runs / "smoke" / name
        records = {path: json.loads((folder / path).read_text()) for path in sorted(os.listdir(folder))}
        assert len(records) == len(table.rows), (name, sorted(records))  # one seed (2020) per row
        markdown = (out / f"{name}.smoke.md").read_text()
        assert "## Protocol: `smoke`" in markdown and "Not yet run" not in markdown
        for record in records.values():
            spec = record["spec"]
            assert spec["table"] == name and spec["seed"] == 2020 and record["cpu_seconds"] >= 0
            assert record["environment"]["torch"] and record["date"]
            if spec["stage"] == "pretrain":
                assert os.path.isfile(record["checkpoint"]) and "test" not in record
                continue
            assert record["epochs_run"] == 1 and record["best_epoch"] == 0
            line = next(l for l in markdown.splitlines() if l.startswith(f"| {spec['row']} |"))
            assert f"{record['test']['ndcg@10']:.4f} (1 seed)" in line  # the first table: HIT@10, NDCG@10, ...
            assert line.split(" | ")[2] == f"{record['test']['ndcg@10']:.4f} (1 seed)"
            reference = [l for l in markdown.splitlines() if l.startswith(f"| {spec['row']} |")][1]
            assert reference.split(" | ")[1] == f"{record['test']['hit@11']:.4f} (1 seed)"
    # a second call runs nothing: every run is recorded
    capsys.readouterr()
    assert main(argv) == 0
    assert "running" not in capsys.readouterr().out
