"""``python -m recbole_mm.results --smoke`` end to end on the real ml-100k_mm and its domains (tiny slice, one
seed, in-process): a record per run, and markdown tables that show what the records hold. A few rows of each
table (a non-learning baseline, a learned one, MISSRec and a pre-training with its fine-tuning); the models of the
other rows are checked by their own tests."""

import json
import os

import pytest

from recbole_mm.results.__main__ import main

pytestmark = pytest.mark.filterwarnings("ignore")

ROWS = {
    "general": ["Pop", "BPR"],
    "sequential": ["SASRec", "MISSRec, ID"],
    "transfer": ["MISSRec, no ID, pre-trained"],  # brings its pre-training row along
}


def test_smoke_mode_writes_a_record_per_run_and_the_markdown_of_each_table(domains_root, tmp_path, capsys):
    runs, out, work = tmp_path / "runs", tmp_path / "out", tmp_path / "work"
    common = ["--smoke", "--in-process", "--data-path", str(domains_root)]
    common += ["--runs-dir", str(runs), "--out-dir", str(out), "--work-dir", str(work)]
    for name, rows in ROWS.items():
        assert main(common + ["--tables", name, "--rows", *rows]) == 0
    for name, rows in ROWS.items():
        folder = runs / "smoke" / name
        names = sorted(path for path in os.listdir(folder) if path.endswith(".json"))  # not the search/ folder
        records = [json.loads((folder / path).read_text()) for path in names]
        labels = {r["spec"]["row"] for r in records}
        assert labels == set(rows) | ({"MISSRec pre-training on A"} if name == "transfer" else set()), labels
        markdown = (out / f"{name}.smoke.md").read_text()
        assert "## Protocol: `smoke`" in markdown and "Not yet run" in markdown  # the other rows are listed
        for record in records:
            spec = record["spec"]
            assert spec["table"] == name and spec["seed"] == 2020 and spec["protocol"] == "smoke"
            assert record["cpu_seconds"] >= 0 and record["environment"]["torch"] and record["date"]
            if spec["stage"] == "pretrain":
                assert os.path.isfile(record["checkpoint"]) and "test" not in record
                continue
            if spec["stage"] == "finetune":
                assert record["pretrained_path"] and spec["pretrained_from"]["stage"] == "pretrain"
            assert 1 <= record["epochs_run"] <= spec["settings"]["epochs"] and record["best_epoch"] < record["epochs_run"]
            assert record["stopped_by"] == "cap"  # one epoch: every smoke run is cap-bound, and marked so
            lines = [line for line in markdown.splitlines() if line.startswith(f"| {spec['row']} |")]
            main_line, reference_line = lines[:2]  # the @10/@50 table, then the @11/@51 one
            assert main_line.split(" | ")[2] == f"{record['test']['ndcg@10']:.4f} (1 seed) †"
            assert reference_line.split(" | ")[1] == f"{record['test']['hit@11']:.4f} (1 seed) †"
            assert "1/1 cap" in main_line
        assert "† not converged" in markdown
    # the search stage (smoke: SASRec only, 2 Ray Tune trials): recorded, printed under the table, and the seed runs
    # at the chosen values
    search = json.loads((runs / "smoke" / "sequential" / "search" / "sasrec.json").read_text())
    assert len(search["trials"]) == 2 and set(search["chosen"]) == set(search["spec"]["space"])
    assert set(search["spec"]["space"]) == {"learning_rate", "hidden_dropout_prob", "attn_dropout_prob"}
    completed = [t for t in search["trials"] if t["status"] == "completed"]
    assert search["best_valid_score"] == max(t["best_valid_score"] for t in completed)
    assert all(t["peak_rss_mb"] > 100 for t in completed)
    sasrec = json.loads((runs / "smoke" / "sequential" / "sasrec-seed2020.json").read_text())
    for key, value in search["chosen"].items():
        assert sasrec["spec"]["settings"][key] == value
    markdown = (out / "sequential.smoke.md").read_text()
    tuned = next(line for line in markdown.splitlines() if line.startswith("| SASRec | learning_rate"))
    assert f"{search['best_valid_score']:.4f}" in tuned, tuned
    # a second call runs nothing: every run asked for is recorded
    capsys.readouterr()
    assert main(common + ["--tables", "sequential", "--rows", *ROWS["sequential"]]) == 0
    assert "running" not in capsys.readouterr().out and "search" not in capsys.readouterr().out
