"""The settings tree (``recbole_mm/properties/``): run presets, search spaces and result protocols are found by their
short paths from any folder, and ship in the wheel, so the result protocols and tables load without the checkout."""

import os
import shutil
import subprocess
import sys
import zipfile

import pytest

from recbole_mm.config import PROPERTIES_DIR, Config, settings_file
from recbole_mm.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_short_paths_resolve_in_the_tree_and_a_local_file_wins(tmp_path, monkeypatch, ml100k_slice):
    monkeypatch.chdir(tmp_path)
    assert settings_file("props/MISSRec/cpu.yaml") == os.path.join(PROPERTIES_DIR, "props", "MISSRec", "cpu.yaml")
    assert settings_file("hyper/SASRec.hyper") == os.path.join(PROPERTIES_DIR, "hyper", "SASRec.hyper")
    assert settings_file("nothing/here.yaml") == "nothing/here.yaml"  # left for the caller's error
    config = Config(
        model="MISSRec", dataset="ml-100k_mm", config_file_list=["props/MISSRec/cpu.yaml"],
        config_dict={"data_path": str(ml100k_slice)},
    )
    assert config["hidden_size"] == 64 and config["inner_size"] == 64  # the CPU preset (the default is 300)
    (tmp_path / "props" / "MISSRec").mkdir(parents=True)
    (tmp_path / "props" / "MISSRec" / "cpu.yaml").write_text("hidden_size: 32\n")
    config = Config(
        model="MISSRec", dataset="ml-100k_mm", config_file_list=["props/MISSRec/cpu.yaml"],
        config_dict={"data_path": str(ml100k_slice)},
    )
    assert config["hidden_size"] == 32 and config["inner_size"] == 256  # the user's own file


def test_dataset_presets_are_a_layer_of_config_for_any_model(tmp_path, ml100k_slice):
    presets = {"ml-100k_mm": {"hidden_size": 48}, "other": {"hidden_size": 24, "n_heads": 4}}
    base = {"data_path": str(ml100k_slice), "dataset_presets": presets}
    assert Config(model="SASRec", dataset="ml-100k_mm", config_dict=base)["hidden_size"] == 48  # auto: by name
    chosen = Config(model="SASRec", dataset="ml-100k_mm", config_dict={**base, "dataset_preset": "other"})
    assert chosen["hidden_size"] == 24 and chosen["n_heads"] == 4
    mine = Config(model="SASRec", dataset="ml-100k_mm", config_dict={**base, "hidden_size": 16})
    assert mine["hidden_size"] == 16  # the user's setting wins
    none = Config(model="SASRec", dataset="ml-100k_mm", config_dict={**base, "dataset_preset": None})
    assert none["hidden_size"] == 64  # SASRec's default
    bad = {**base, "dataset_presets": {"other": {"n_hedas": 4}}, "dataset_preset": "other"}
    with pytest.raises(ConfigError, match=r"dataset_presets.other: unknown key\(s\) \['n_hedas'\]"):
        Config(model="SASRec", dataset="ml-100k_mm", config_dict=bad)


@pytest.mark.slow
def test_protocols_tables_and_presets_load_from_the_wheel_alone(tmp_path):
    source = tmp_path / "src"
    source.mkdir()
    for name in ("setup.cfg", "pyproject.toml", "README.md"):
        shutil.copy(os.path.join(ROOT, name), source / name)
    shutil.copytree(os.path.join(ROOT, "recbole_mm"), source / "recbole_mm", ignore=shutil.ignore_patterns("*.pyc"))
    build = [sys.executable, "-m", "pip", "wheel", str(source), "--no-deps", "--no-build-isolation", "-q"]
    subprocess.run(build + ["-w", str(tmp_path / "wheel")], check=True, capture_output=True, timeout=300)
    (wheel,) = os.listdir(tmp_path / "wheel")
    with zipfile.ZipFile(tmp_path / "wheel" / wheel) as archive:
        archive.extractall(tmp_path / "site")
    code = (
        "import os, recbole_mm\n"
        "from recbole_mm.config import settings_file\n"
        "from recbole_mm.results.protocols import load_protocol\n"
        "from recbole_mm.results.tables import TABLES\n"
        "protocols = [load_protocol(name).seeds for name in ('cpu', 'reference', 'smoke')]\n"
        "files = [f for t in TABLES.values() for r in t.rows for f in r.config_files]\n"
        "assert files and all(os.path.isfile(settings_file(f)) for f in files), files\n"
        "assert os.path.isfile(settings_file('hyper/SASRec.hyper'))\n"
        "print(os.path.dirname(recbole_mm.__file__), len(files), protocols[0])\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "site")}
    done = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    where, count, seeds = done.stdout.split(maxsplit=2)
    assert where == str(tmp_path / "site" / "recbole_mm") and int(count) >= 3 and seeds.strip() == "[2020, 2021, 2022]"
