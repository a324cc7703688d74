"""Peak resident memory of the models' defaults on ml-100k_mm, each in a fresh process (``bench/peak_memory.py``):
the first training batch and a validation must stay under 4 GiB on a CPU. The models are the two whose default batch
sets the peak (MISSRec's and MMSRec's Transformers over every history position); every model's whole-epoch figure
is in bench/README.md."""

import json
import os
import subprocess
import sys

import pytest

import recbole_mm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(recbole_mm.__file__)))


@pytest.mark.slow
@pytest.mark.parametrize("model", ["MISSRec", "MMSRec"])
def test_defaults_train_within_4_gib(model, ml100k_root, tmp_path):
    done = subprocess.run(
        [sys.executable, os.path.join(ROOT, "bench", "peak_memory.py"), model, "--batches", "1", "--json"]
        + ["--data_path", str(ml100k_root)],
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": PACKAGE_ROOT, "OMP_NUM_THREADS": "1"},
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    figures = json.loads(done.stdout.strip().splitlines()[-1])
    assert figures["batches"] == 1 and figures["model"] == model
    assert figures["peak_rss_gib"] < 4.0, figures
