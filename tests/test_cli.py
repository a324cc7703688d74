"""run_recbole_mm.py: clear, non-zero exits for bad names (no traceback)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_mm.py"), *args], cwd=cwd, capture_output=True, text=True, timeout=300
    )


def test_missing_dataset_exits_with_one_clear_message(tmp_path):
    (tmp_path / "dataset" / "mine").mkdir(parents=True)
    (tmp_path / "dataset" / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    proc = run_cli("--model=SASRec", "--dataset=Scientific_mm_full", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "dataset 'Scientific_mm_full' not found" in proc.stderr
    assert os.path.join("dataset", "Scientific_mm_full", "Scientific_mm_full.inter") in proc.stderr
    assert "Datasets there: mine" in proc.stderr and "dataset/README.md" in proc.stderr


def test_unknown_model_exits_with_one_clear_message(tmp_path):
    proc = run_cli("--model=NoSuchRec", "--dataset=ml-100k_mm", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model [NoSuchRec] is neither a recbole_mm model" in proc.stderr


def test_model_and_dataset_may_come_from_a_config_file(tmp_path):
    (tmp_path / "run.yaml").write_text("model: NoSuchRec\ndataset: ml-100k_mm\n")
    proc = run_cli("--config_files=run.yaml", cwd=tmp_path)
    assert proc.returncode == 2 and "model [NoSuchRec]" in proc.stderr  # the file's model, not the demo's


def test_a_missing_model_setting_is_a_clear_error(tmp_path):
    proc = run_cli("--dataset=ml-100k_mm", cwd=tmp_path)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "model must be given" in proc.stderr
