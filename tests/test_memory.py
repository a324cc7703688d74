"""Peak resident memory of the models' defaults on ml-100k_mm, each in a fresh process (``bench/peak_memory.py``):
the first training batch and a validation must stay under 4 GiB on a CPU. The models are the two whose default batch
sets the peak (MISSRec's and MMSRec's Transformers over every history position); every model's bounded-batch figure
(build, two batches and a validation) is in bench/README.md."""

import json
import os

import pytest
from cli_helpers import ROOT, run_fresh


@pytest.mark.slow
@pytest.mark.parametrize("model", ["MISSRec", "MMSRec"])
def test_defaults_train_within_4_gib(model, ml100k_root, tmp_path):
    done = run_fresh(
        [os.path.join(ROOT, "bench", "peak_memory.py"), model, "--batches", "1", "--json"]
        + ["--data_path", str(ml100k_root)],
        tmp_path,
        timeout=900,
    )
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["batches"] == 1 and figures["model"] == model
    assert figures["peak_rss_gib"] < 4.0, figures
