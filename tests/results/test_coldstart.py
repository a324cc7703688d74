"""The cold-start table on the real ml-100k_mm_cold (smoke protocol): every row ranks only the held-out movies
(``eval_candidates: cold_items``), and a record per run feeds ``coldstart.smoke.md``."""

import json
import os

import pytest
import torch

from recbole_mm.prepare import ml100k_mm_cold
from recbole_mm.results.__main__ import main
from recbole_mm.trainer import CandidateItemsMixin

pytestmark = pytest.mark.filterwarnings("ignore")


def test_the_coldstart_rows_rank_only_held_out_movies(ml100k_root, tmp_path, monkeypatch):
    cold = set(ml100k_mm_cold.read_cold_items(ml100k_mm_cold.ensure_built(str(ml100k_root))))
    top = {}
    evaluate = CandidateItemsMixin._full_sort_batch_eval

    def spy(self, batched_data):
        interaction, scores, positive_u, positive_i = evaluate(self, batched_data)
        dataset = self.candidate_dataset
        finite = torch.isfinite(scores)
        top.setdefault(self.config["model"], []).append(
            (
                {dataset.id2token("item_id", int(i)) for i in finite.any(dim=0).nonzero().flatten()},
                {dataset.id2token("item_id", int(i)) for i in positive_i},
            )
        )
        return interaction, scores, positive_u, positive_i

    monkeypatch.setattr(CandidateItemsMixin, "_full_sort_batch_eval", spy)
    rows = ["Pop", "MISSRec, no ID"]
    common = ["--smoke", "--in-process", "--data-path", str(ml100k_root), "--runs-dir", str(tmp_path / "runs")]
    common += ["--out-dir", str(tmp_path / "out"), "--work-dir", str(tmp_path / "work")]
    assert main(common + ["--tables", "coldstart", "--rows", *rows]) == 0
    for model in ("Pop", "MISSRec"):
        for scored, targets in top[model]:  # only held-out movies are scored, and every target is one
            assert scored and scored <= cold and targets <= scored
    folder = tmp_path / "runs" / "smoke" / "coldstart"
    records = [json.loads((folder / name).read_text()) for name in sorted(os.listdir(folder)) if name.endswith(".json")]
    assert {r["spec"]["row"] for r in records} == set(rows)
    markdown = (tmp_path / "out" / "coldstart.smoke.md").read_text()
    for record in records:
        assert record["spec"]["settings"]["eval_candidates"] == "cold_items"
        line = next(line for line in markdown.splitlines() if line.startswith(f"| {record['spec']['row']} |"))
        assert f"{record['test']['ndcg@10']:.4f} (1 seed)" in line
