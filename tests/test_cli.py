"""run_recbole_mm.py: clear, non-zero exits for bad names (no traceback)."""

import os
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd):
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_mm.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def test_missing_dataset_exits_with_one_clear_message(tmp_path):
    (tmp_path / "dataset" / "mine").mkdir(parents=True)
    (tmp_path / "dataset" / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    proc = run_cli("--model=MISSRec", "--dataset=Scientific_mm_full", cwd=tmp_path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "dataset 'Scientific_mm_full' not found" in proc.stderr
    assert os.path.join("dataset", "Scientific_mm_full", "Scientific_mm_full.inter") in proc.stderr
    assert proc.stderr.count("\n") == 1  # one message, nothing else
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


def test_package_paths_import_neither_ray_nor_recbole_quick_start():
    """The GPU machine has no ray, and recbole.quick_start imports it at module load."""
    code = (
        "import sys, pkgutil, importlib, recbole_mm\n"
        "skip = ('recbole_mm.tuning', 'recbole_mm.clustering.fused_kernel', 'recbole_mm.clustering.span_kernel')\n"
        "for m in pkgutil.walk_packages(recbole_mm.__path__, 'recbole_mm.'):\n"
        "    if not m.name.startswith(skip): importlib.import_module(m.name)\n"
        "from recbole_mm.config import Config\n"
        "Config(model='MISSRec', dataset='ml-100k_mm')\n"
        "import recbole_mm.tuning\n"
        "print(sorted(n for n in sys.modules if n == 'ray' or n.startswith(('ray.', 'recbole.quick_start'))))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_missing_dataset_points_at_a_nested_folder(tmp_path):
    (tmp_path / "dataset" / "downstream" / "Scientific_mm_full").mkdir(parents=True)
    proc = run_cli("--model=MISSRec", "--dataset=Scientific_mm_full", cwd=tmp_path)
    assert proc.returncode == 2
    assert f"exists under {os.path.join(str(tmp_path), 'dataset', 'downstream')}: pass --data_path there" in proc.stderr
