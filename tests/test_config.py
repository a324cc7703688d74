"""recbole_mm's Config: property layering, model lookup with RecBole fallback."""

import subprocess
import sys

import pytest
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_mm.config import Config
from recbole_mm.errors import ModelNotFoundError
from recbole_mm.utils import get_model


def test_dataset_preset_and_overall_defaults_are_loaded():
    config = Config(model="SASRec", dataset="ml-100k_mm")
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["mm_features"]["text"] == {"suffix": "feat1CLS", "dim": 384}
    assert config["valid_metric"] == "NDCG@10" and config["topk"] == [10, 50]
    assert config["modalities"] is None  # recbole_mm overall.yaml
    assert config["hidden_size"] == 64  # RecBole's own SASRec.yaml still applies underneath


def test_user_settings_override_presets(tmp_path):
    user_file = tmp_path / "u.yaml"
    user_file.write_text("topk: [5]\nlearning_rate: 0.01\n")
    config = Config(
        model="SASRec", dataset="ml-100k_mm", config_file_list=[str(user_file)], config_dict={"learning_rate": 0.02}
    )
    assert config["topk"] == [5] and config["learning_rate"] == 0.02


def test_ce_sequential_model_gets_no_negative_sampling_unless_asked():
    assert Config(model="SASRec", dataset="ml-100k_mm")["train_neg_sample_args"]["distribution"] == "none"
    config = Config(
        model="SASRec",
        dataset="ml-100k_mm",
        config_dict={"loss_type": "BPR", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
    )
    assert config["train_neg_sample_args"]["distribution"] == "uniform"
    with pytest.raises(ValueError, match="should be None"):  # RecBole's own check, for an explicit contradiction
        Config(
            model="SASRec",
            dataset="ml-100k_mm",
            config_dict={"train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}},
        )


def test_model_lookup_falls_back_to_recbole():
    assert get_model("SASRec") is SASRec
    with pytest.raises(ModelNotFoundError, match=r"model \[NoSuchRec\] is neither a recbole_mm model"):
        get_model("NoSuchRec")
    with pytest.raises(ModelNotFoundError):
        Config(model="NoSuchRec", dataset="ml-100k_mm")


def _anomaly_mode_after(code: str) -> str:
    """``torch.is_anomaly_enabled()`` after running ``code`` in a fresh interpreter (RecBole not yet imported)."""
    script = f"import torch, recbole_mm\n{code}\nprint(torch.is_anomaly_enabled())"
    return subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, check=True).stdout.strip()


def test_model_lookup_keeps_autograd_anomaly_mode_as_it_was():
    # RecBole's sine.py switches anomaly detection on when its package is imported ...
    assert _anomaly_mode_after("import recbole.model.sequential_recommender") == "True"
    # ... get_model imports that package but leaves the mode as the caller had it
    lookup = "from recbole_mm.utils import get_model\nget_model('SASRec'); get_model('SINE'); get_model('MISSRec')"
    assert _anomaly_mode_after(lookup) == "False"
    assert _anomaly_mode_after("torch.autograd.set_detect_anomaly(True)\n" + lookup) == "True"


def test_compile_mode_is_checked():
    import torch

    from recbole_mm.errors import ConfigError
    from recbole_mm.utils import compile_training_loss

    model = torch.nn.Linear(2, 1)
    model.calculate_loss = lambda interaction: model(interaction).sum()
    eager = model.calculate_loss
    compile_training_loss(model, None)
    assert model.calculate_loss is eager
    with pytest.raises(ConfigError, match=r"'compile_mode': expected None or one of default, .* found 'fast'"):
        compile_training_loss(model, "fast")
    assert Config(model="SASRec", dataset="ml-100k_mm")["compile_mode"] is None


def test_gpu_id_for_a_device_name():
    from recbole_mm.errors import ConfigError
    from recbole_mm.utils import gpu_id_for

    assert [gpu_id_for(d) for d in ("cpu", "cuda", "cuda:3")] == ["", "0", "3"]
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match=f"device: expected 'cpu', 'cuda' or 'cuda:N', found '{bad}'"):
            gpu_id_for(bad)


def test_dataset_keys_of_the_preset_count_as_dataset_arguments():
    config = Config(model="SASRec", dataset="ml-100k_mm")
    assert "mm_features" in config.parameters["Dataset"] and "benchmark_filename" in config.parameters["Dataset"]


def test_a_dataset_folder_config_is_loaded_under_user_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.yaml").write_text("plm_size: 384\ntopk: [20]\nhidden_size: 32\n")
    config = Config(model="SASRec", dataset="mine", config_dict={"data_path": str(tmp_path), "hidden_size": 16})
    assert config["plm_size"] == 384 and config["topk"] == [20]  # over the model's and recbole_mm's defaults
    assert config["hidden_size"] == 16  # the user's setting wins
    assert "plm_size" in config.parameters["Dataset"]
