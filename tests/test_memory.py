"""Peak resident memory of the models' defaults on ml-100k_mm, each in a fresh process (``bench/peak_memory.py``):
the first training batch and a validation must stay under 4 GiB on a CPU. The models are the two whose default batch
sets the peak (MISSRec's and MMSRec's Transformers over every history position); every model's bounded-batch figure
(build, two batches and a validation) is in bench/README.md."""

import json
import os

import pytest
from cli_helpers import ROOT, finish, start_fresh


@pytest.mark.slow
def test_defaults_train_within_4_gib(ml100k_root, tmp_path):
    # one process per model, both at once (each reports its own peak, getrusage of its own process)
    models = ["MISSRec", "MMSRec"]
    started = {
        model: start_fresh(
            [os.path.join(ROOT, "bench", "peak_memory.py"), model, "--batches", "1", "--json"]
            + ["--data_path", str(ml100k_root)],
            (tmp_path / model).mkdir() or tmp_path / model,  # a working folder each
        )
        for model in models
    }
    for model in models:
        figures = json.loads(finish(started[model], timeout=900).stdout.strip().splitlines()[-1])
        assert figures["batches"] == 1 and figures["model"] == model
        assert figures["peak_rss_gib"] < 4.0, figures
