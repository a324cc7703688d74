"""recbole_mm's Config: property layering, model lookup with RecBole fallback."""

import pytest
from cli_helpers import ROOT, finish, start_fresh
from recbole.model.sequential_recommender.sasrec import SASRec

from recbole_mm.config import Config
from recbole_mm.errors import ConfigError, ModelNotFoundError
from recbole_mm.registry import get_model


def test_dataset_preset_and_overall_defaults_are_loaded():
    config = Config(model="SASRec", dataset="ml-100k_mm")
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["mm_features"]["text"] == {"suffix": "feat1CLS", "dim": 384}
    assert config["valid_metric"] == "NDCG@10" and config["topk"] == [10, 50]
    assert config["modalities"] is None  # recbole_mm overall.yaml
    assert config["hidden_size"] == 64  # RecBole's own SASRec.yaml still applies underneath


def test_user_settings_override_presets(tmp_path):
    user_file = tmp_path / "u.yaml"
    user_file.write_text("topk: [5, 10]\nlearning_rate: 0.01\n")
    config = Config(
        model="SASRec", dataset="ml-100k_mm", config_file_list=[str(user_file)], config_dict={"learning_rate": 0.02}
    )
    assert config["topk"] == [5, 10] and config["learning_rate"] == 0.02


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


def _anomaly_modes_after(*codes: str) -> list:
    """``torch.is_anomaly_enabled()`` after running each of ``codes`` in its own fresh interpreter (RecBole not yet
    imported); the interpreters run at once."""
    scripts = [f"import torch, recbole_mm\n{code}\nprint(torch.is_anomaly_enabled())" for code in codes]
    runs = [start_fresh(["-c", script], ROOT) for script in scripts]
    return [finish(run).stdout.strip() for run in runs]


def test_model_lookup_keeps_autograd_anomaly_mode_as_it_was():
    lookup = "from recbole_mm.registry import get_model\nget_model('SASRec'); get_model('SINE'); get_model('MISSRec')"
    # RecBole's sine.py switches anomaly detection on when its package is imported; get_model imports that package
    # but leaves the mode as the caller had it (off, then on)
    modes = _anomaly_modes_after(
        "import recbole.model.sequential_recommender", lookup, "torch.autograd.set_detect_anomaly(True)\n" + lookup
    )
    assert modes == ["True", "False", "True"]


def test_compile_mode_is_checked():
    import torch

    from recbole_mm.errors import ConfigError
    from recbole_mm.runtime import compile_training_loss

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
    from recbole_mm.runtime import gpu_id_for

    assert [gpu_id_for(d) for d in ("cpu", "cuda", "cuda:3")] == ["", "0", "3"]
    for bad in ("gpu", "cuda:", "cuda:x", "CPU"):
        with pytest.raises(ConfigError, match=f"device: expected 'cpu', 'cuda' or 'cuda:N', found '{bad}'"):
            gpu_id_for(bad)


def test_dataset_keys_of_the_preset_count_as_dataset_arguments():
    config = Config(model="SASRec", dataset="ml-100k_mm")
    assert "mm_features" in config.parameters["Dataset"] and "benchmark_filename" in config.parameters["Dataset"]


def test_a_dataset_folder_config_is_loaded_under_user_settings(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.yaml").write_text("plm_size: 384\ntopk: [10, 20]\nhidden_size: 32\n")
    config = Config(model="SASRec", dataset="mine", config_dict={"data_path": str(tmp_path), "hidden_size": 16})
    assert config["plm_size"] == 384 and config["topk"] == [10, 20]  # over the model's and recbole_mm's defaults
    assert config["hidden_size"] == 16  # the user's setting wins
    assert "plm_size" in config.parameters["Dataset"]


def test_mm_features_on_the_command_line_beat_missrecs_preset_keys(monkeypatch):
    """MISSRec.yaml defines text and image by plm_suffix / img_suffix; a user's mm_features must win over them."""
    from recbole_mm.data.features import feature_specs

    monkeypatch.setattr("sys.argv", ["x", "--mm_features={'text': {'suffix': 'mine.npy'}}"])
    specs = {spec.name: spec for spec in feature_specs(Config(model="MISSRec", dataset="ml-100k_mm"))}
    assert specs["text"].suffix == "mine.npy" and specs["text"].dim is None  # the user's, whole
    assert specs["image"].suffix == "feat3CLS" and specs["image"].dim == 384  # untouched: the presets'


def test_a_modality_is_defined_by_the_highest_level_that_defines_it(tmp_path, monkeypatch):
    """Presets < config files < config_dict < command line, whichever of mm_features or MISSRec's keys is used."""
    (tmp_path / "u.yaml").write_text("plm_suffix: from_file\nmm_features: {image: {suffix: img_file, dim: 8}}\n")
    files = [str(tmp_path / "u.yaml")]
    config = Config(model="MISSRec", dataset="ml-100k_mm", config_file_list=files)
    assert config["mm_features"]["text"] == {"suffix": "from_file", "dim": 384}  # the file's suffix, preset's dim
    assert config["mm_features"]["image"] == {"suffix": "img_file", "dim": 8}
    config_dict = {"mm_features": {"text": {"suffix": "from_dict", "dim": 16}}, "img_suffix": "img_dict"}
    config = Config(model="MISSRec", dataset="ml-100k_mm", config_file_list=files, config_dict=config_dict)
    assert config["mm_features"]["text"] == {"suffix": "from_dict", "dim": 16}
    assert config["mm_features"]["image"] == {"suffix": "img_dict", "dim": 384}
    monkeypatch.setattr("sys.argv", ["x", "--plm_suffix=from_cmd", "--plm_size=32"])
    config = Config(model="MISSRec", dataset="ml-100k_mm", config_file_list=files, config_dict=config_dict)
    assert config["mm_features"]["text"] == {"suffix": "from_cmd", "dim": 32}
    assert "mm_features" in config.parameters["Dataset"]  # a saved dataset is rebuilt when any of these changes


def test_a_folder_of_presplit_files_is_read_as_such(tmp_path, write_reference_layout):
    write_reference_layout(tmp_path / "Sci" / "downstream" / "Scientific", "Scientific")
    config = Config(model="SASRec", dataset="Scientific", config_dict={"data_path": str(tmp_path / "Sci")})
    assert config["data_path"] == str(tmp_path / "Sci" / "downstream" / "Scientific")  # the sub-folder searched
    assert config["benchmark_filename"] == ["train", "valid", "test"]
    assert config["load_col"]["inter"] == ["user_id", "item_id_list", "item_id"]
    assert config["alias_of_item_id"] == ["item_id_list"]
    user = {"data_path": str(tmp_path / "Sci"), "benchmark_filename": ["train"], "load_col": {"inter": ["user_id"]}}
    config = Config(model="SASRec", dataset="Scientific", config_dict=user)
    assert config["benchmark_filename"] == ["train"] and config["load_col"] == {"inter": ["user_id"]}  # the user's
    (tmp_path / "Sci" / "downstream" / "Scientific" / "Scientific.valid.inter").unlink()
    with pytest.raises(ConfigError, match=r"holds the pre-split parts \['train', 'test'\]: a run needs train, valid"):
        Config(model="SASRec", dataset="Scientific", config_dict={"data_path": str(tmp_path / "Sci")})


def test_a_plain_inter_folder_keeps_recboles_defaults(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "mine.inter").write_text("user_id:token\titem_id:token\ttimestamp:float\n")
    (tmp_path / "mine" / "mine.train.inter").write_text("user_id:token\titem_id:token\n")
    config = Config(model="BPR", dataset="mine", config_dict={"data_path": str(tmp_path)})
    assert config["benchmark_filename"] is None and config["load_col"] == {"inter": ["user_id", "item_id"]}


@pytest.mark.parametrize(
    "key, value, final",
    [
        ("learning_rate", 1, 1),  # an int where RecBole's default is a float
        ("dropout_prob", 0.25, 0.25),  # RecBole's GRU4RecCPR.yaml has an int default (0) for a float key
        ("weight_decay", 0, 0),
        ("clip_grad_norm", {"max_norm": 5}, {"max_norm": 5}),  # None default: anything
        ("gpu_id", 1, "1"),  # a str key: left to RecBole (which makes it a str)
        ("topk", [5, 10], [5, 10]),
        ("normalize_all", None, None),  # RecBole's comment says (bool), its default is None
    ],
)
def test_well_typed_values_pass(key, value, final):
    assert Config(model="GRU4Rec", dataset="ml-100k_mm", config_dict={key: value})[key] == final


def test_values_of_the_wrong_type_or_out_of_range_are_refused_naming_the_key(tmp_path):
    (tmp_path / "u.yaml").write_text("hidden_size: 0.5\n")
    cases = [
        ({"learning_rate": "abc"}, "'learning_rate': expected a number, found 'abc' (in config_dict)"),
        ({"hidden_size": "wide"}, "'hidden_size': expected a number, found 'wide'"),  # from GRU4Rec.yaml's default
        ({"reproducibility": "yes"}, "'reproducibility': expected True or False, found 'yes'"),
        ({"eval_step": -1}, "'eval_step': expected a non-negative integer, found -1"),
        ({"learning_rate": 0}, "'learning_rate': expected a positive number, found 0"),
        ({"stopping_step": None}, "'stopping_step': expected an integer, found None"),
    ]
    for config_dict, message in cases:
        with pytest.raises(ConfigError) as err:
            Config(model="GRU4Rec", dataset="ml-100k", config_dict=config_dict)
        assert str(err.value).startswith(f"config key {message}")
    with pytest.raises(
        ConfigError, match=r"'hidden_size': expected a positive integer, found 0.5 \(in the config files\)"
    ):
        Config(model="GRU4Rec", dataset="ml-100k", config_file_list=[str(tmp_path / "u.yaml")])
