"""run_recbole_mm.py: the documented commands run; bad names and settings end in one clear line and a non-zero exit
(no traceback), before any data is read."""

import os
import subprocess
import sys

import cli_helpers
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_cli(*args, cwd):
    """``python run_recbole_mm.py ARGS`` in a fresh interpreter, in ``cwd``."""
    return subprocess.run(
        [sys.executable, os.path.join(ROOT, "run_recbole_mm.py"), *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


def run_main(monkeypatch, tmp_path, capsys, *args):
    """``python run_recbole_mm.py ARGS`` in ``tmp_path``, in this process: its exit status and standard error."""
    return cli_helpers.run_main(monkeypatch, tmp_path, *args), capsys.readouterr().err


def test_missing_dataset_exits_with_one_clear_message(monkeypatch, tmp_path, capsys):
    (tmp_path / "dataset" / "mine").mkdir(parents=True)
    (tmp_path / "dataset" / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    code, err = run_main(monkeypatch, tmp_path, capsys, "--model=MISSRec", "--dataset=Scientific_mm_full")
    assert code == 2
    assert "dataset 'Scientific_mm_full' not found" in err
    assert os.path.join("dataset", "Scientific_mm_full", "Scientific_mm_full.inter") in err
    assert err.count("\n") == 1  # one message, nothing else
    assert "Datasets there: mine" in err and "dataset/README.md" in err


def test_unknown_model_exits_with_one_clear_message(monkeypatch, tmp_path, capsys):
    code, err = run_main(monkeypatch, tmp_path, capsys, "--model=NoSuchRec", "--dataset=ml-100k_mm")
    assert code == 2 and "model [NoSuchRec] is neither a recbole_mm model" in err


def test_model_and_dataset_may_come_from_a_config_file(monkeypatch, tmp_path, capsys):
    (tmp_path / "run.yaml").write_text("model: NoSuchRec\ndataset: ml-100k_mm\n")
    code, err = run_main(monkeypatch, tmp_path, capsys, "--config_files=run.yaml")
    assert code == 2 and "model [NoSuchRec]" in err  # the file's model, not the demo's


def test_a_missing_model_setting_is_a_clear_error(monkeypatch, tmp_path, capsys):
    code, err = run_main(monkeypatch, tmp_path, capsys, "--dataset=ml-100k_mm")
    assert code == 2 and "model must be given" in err


def test_package_paths_import_neither_ray_nor_recbole_quick_start():
    """An install without ray must still run the package, and recbole.quick_start imports ray at module load."""
    code = (
        "import sys, pkgutil, importlib, recbole_mm\n"
        "skip = ('recbole_mm.tuning', 'recbole_mm.clustering.fused_kernel')\n"
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


def test_missing_dataset_points_at_a_nested_folder(monkeypatch, tmp_path, capsys, write_reference_layout):
    write_reference_layout(tmp_path / "dataset" / "elsewhere" / "Scientific_mm_full", "Scientific_mm_full")
    code, err = run_main(monkeypatch, tmp_path, capsys, "--model=MISSRec", "--dataset=Scientific_mm_full")
    assert code == 2
    assert f"exists under {os.path.join(str(tmp_path), 'dataset', 'elsewhere')}: pass --data_path there" in err


def test_a_data_path_one_level_too_deep_points_at_the_folder(monkeypatch, tmp_path, capsys, write_reference_layout):
    write_reference_layout(tmp_path / "dataset" / "Scientific_mm_full", "Scientific_mm_full")
    (tmp_path / "finetune.yaml").write_text("data_path: dataset/downstream/\n")  # as a preset may set it
    args = ["--model=MISSRec", "--dataset=Scientific_mm_full", "--config_files=finetune.yaml"]
    code, err = run_main(monkeypatch, tmp_path, capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert f"exists under {tmp_path / 'dataset'}: pass --data_path there" in err


def test_an_empty_dataset_folder_is_not_offered_as_the_answer(monkeypatch, tmp_path, capsys):
    (tmp_path / "dataset" / "downstream" / "Scientific_mm_full").mkdir(parents=True)
    code, err = run_main(monkeypatch, tmp_path, capsys, "--model=MISSRec", "--dataset=Scientific_mm_full")
    assert code == 2 and err.count("\n") == 1
    assert "pass --data_path there" not in err and "Datasets there: none" in err


def test_a_folder_whose_files_disagree_with_benchmark_filename_says_what_it_holds(monkeypatch, tmp_path, capsys):
    (tmp_path / "dataset" / "mine").mkdir(parents=True)
    (tmp_path / "dataset" / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    args = ["--model=SASRec", "--dataset=mine", "--benchmark_filename=['train','valid','test']"]
    code, err = run_main(monkeypatch, tmp_path, capsys, *args)
    assert code == 2 and err.count("\n") == 1
    assert f"The folder {tmp_path / 'dataset' / 'mine'} holds mine.inter (one interaction file" in err
    assert "Datasets there" not in err  # the dataset is there: no list that would contradict 'not found'


TINY_MISSREC = ["--plm_size=8", "--img_size=8", "--hidden_size=16", "--inner_size=16", "--epochs=1"]


def test_the_reference_layout_runs_as_downloaded(tmp_path, write_reference_layout):
    """``--model=MISSRec --dataset=Scientific_mm_full`` on a folder as the reference's download holds it, under
    dataset/, with no config file: the pre-split files are recognised (the downstream/ sub-folder: test_config)."""
    write_reference_layout(tmp_path / "dataset" / "Scientific_mm_full", "Scientific_mm_full")
    proc = run_cli(
        "--model=MISSRec", "--dataset=Scientific_mm_full", *TINY_MISSREC, "--show_progress=False", cwd=tmp_path
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-3] == "MISSRec on Scientific_mm_full"
    test_line = lines[-1].split()
    assert test_line[0] == "test" and "ndcg@10" in test_line
    assert 0 <= float(test_line[test_line.index("ndcg@10") + 1]) <= 1


@pytest.mark.parametrize(
    "argument, message",
    [
        ("--config_files=missing.yaml", "config file missing.yaml does not exist (looked for {tmp}"),
        ("--learning_rate=abc", "config key 'learning_rate': expected a number, found 'abc' (on the command line)"),
        ("--epochs=-1", "config key 'epochs': expected a positive integer, found -1 (on the command line)"),
        ("--epochs=2.5", "config key 'epochs': expected an integer, found 2.5"),
        ("--train_batch_size=0", "config key 'train_batch_size': expected a positive integer, found 0"),
        ("--weight_decay=-0.1", "config key 'weight_decay': expected a number >= 0, found -0.1"),
        ("--show_progress=3", "config key 'show_progress': expected True or False, found 3"),
        ("--hidden_dropout_prob=1.5", "config key 'hidden_dropout_prob': expected a number in [0, 1), found 1.5"),
        ("--n_heads=two", "config key 'n_heads': expected an integer, found 'two'"),  # typed by MISSRec.yaml's comment
    ],
)
def test_bad_settings_end_in_one_line_before_any_data_is_read(monkeypatch, tmp_path, capsys, argument, message):
    code, err = run_main(monkeypatch, tmp_path, capsys, "--model=MISSRec", "--dataset=ml-100k_mm", argument)
    assert code == 2
    assert err.startswith(f"error: {message.format(tmp=tmp_path)}")
    assert err.count("\n") == 1
    assert not (tmp_path / "dataset").exists() and not (tmp_path / "log").exists()  # nothing built, nothing logged


def test_a_config_file_that_is_not_a_mapping_is_one_clear_line(monkeypatch, tmp_path, capsys):
    (tmp_path / "bad.yaml").write_text("- epochs\n- 2\n")
    (tmp_path / "broken.yaml").write_text("epochs: [1\n")
    code, err = run_main(monkeypatch, tmp_path, capsys, "-m", "SASRec", "-d", "ml-100k_mm", "--config_files=bad.yaml")
    assert (
        code == 2 and err == "error: config file bad.yaml: expected 'key: value' lines, found a list: ['epochs', 2]\n"
    )
    code, err = run_main(
        monkeypatch, tmp_path, capsys, "-m", "SASRec", "-d", "ml-100k_mm", "--config_files=broken.yaml"
    )
    assert code == 2 and err.startswith("error: config file broken.yaml is not valid YAML: ") and err.count("\n") == 1
