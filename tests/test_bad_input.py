"""Bad input that once gave a wrong answer without a word, or a late failure: each case ends in one clear message
before any time is spent. Every case registers what the user sees (:data:`CASES`, ``<...>`` standing for paths and
values); the tests match the real messages against it, and ``docs/bad_input.md`` is generated from it:

    python tests/test_bad_input.py > docs/bad_input.md
"""

import os
import re
import shutil
import sys

import cli_helpers
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
NAME = "ml-100k_mm"

# case -> (what was given, what the user sees); the table of docs/bad_input.md, in this order.
CASES = {
    "feature dim vs sidecar": (
        "`dim: 192` for a 384-wide feature file that has a `.json` sidecar",
        "feature file <file>: config says dim 192, its sidecar <file>.json records dim 384; set dim: 384 in "
        "mm_features (or the plm_size/img_size key)",
    ),
    "feature dim vs item index": (
        "`dim: 192` for a 384-wide feature file without a sidecar, beside `<name>.item2index`",
        "feature file <file>: expected 1682 rows (one per item of <index>), found 3364 at the configured dim; "
        "check the dim in config (the file's width is its size / 4 / 1682)",
    ),
    "feature dim vs token range": (
        "`dim: 192` for a 384-wide feature file with neither sidecar nor `.item2index`",
        "feature file <file>: expected about <rows> rows (the highest item token is <token>), found 3364 at the "
        "configured dim: a dim too small reads several rows per item; check the dim in config, or write a sidecar "
        "<file>.json with the file's dim",
    ),
    "feature file changed": (
        "a feature file whose content no longer matches its sidecar's sha256",
        "feature file <file>: expected sha256 <sha> (its sidecar <file>.json), found <sha>: the file was changed "
        "after it was written; rebuild it or its sidecar",
    ),
    "unknown key on the command line": (
        "`--learning_rat=0.5`",
        "error: config key 'learning_rat' (on the command line) is not a known setting; the closest known key is "
        "'learning_rate'. A deliberately new key (read by your own code) is declared in 'extra_keys', e.g. "
        "--extra_keys=\"['learning_rat']\"",
    ),
    "unknown key in a config file": (
        "`hiden_size: 32` in a file of `--config_files`",
        "error: config key 'hiden_size' (in the config files) is not a known setting; the closest known key is "
        "'hidden_size'. A deliberately new key (read by your own code) is declared in 'extra_keys', e.g. "
        "--extra_keys=\"['hiden_size']\"",
    ),
    "unknown key in a sweep": (
        "`learning_rat choice [0.5,0.9]` in a `.hyper` file",
        "<file>:1: config key 'learning_rat' (searched) is not a known setting; the closest known key is "
        "'learning_rate'. A deliberately new key (read by your own code) is declared in 'extra_keys', e.g. "
        "--extra_keys=\"['learning_rat']\"",
    ),
    "gpu_id without that GPU": (
        "`--gpu_id=7` on a machine without GPU 7",
        "gpu_id='7' was asked, but torch sees no such CUDA GPU (0 visible): training runs on the CPU",
    ),
    "use_gpu without a GPU": (
        "`--use_gpu=True` on a machine without a GPU",
        "error: config key 'use_gpu': True was asked (on the command line), but torch sees no CUDA GPU "
        "(gpu_id='0', 0 visible): use --use_gpu=False to train on the CPU",
    ),
    "valid_metric not computed": (
        "`--valid_metric=foo@10`",
        "error: config key 'valid_metric': expected one of the metrics x topk computed (<metrics>), found 'foo@10' "
        "(on the command line)",
    ),
    "topk not positive": (
        "`--topk=[0]`",
        "error: config key 'topk': expected positive integers (e.g. [10] or [5, 10]), found [0] (on the command line)",
    ),
    "header-only interaction file": (
        "a `.test.inter` with its header and no rows",
        "error: <file> holds no interactions: the file has a header and no rows",
    ),
    "empty interaction file": (
        "a 0-byte `.test.inter`",
        "error: <file> holds no interactions: the file is empty (0 bytes)",
    ),
    "missing checkpoint": (
        "`load_data_and_model('saved/none.pth')`",
        "checkpoint <file> does not exist",
    ),
    "truncated checkpoint": (
        "`load_data_and_model(f)` for a checkpoint cut short",
        "checkpoint <file> is incomplete or corrupt (<n> bytes; torch.load: <reason>): it was probably cut short "
        "while being written or copied",
    ),
    "encode without texts": (
        "`python -m recbole_mm.prepare encode --dir D` where `D` has no `.text` file",
        "error: <file> does not exist; it holds the item texts to encode",
    ),
    "defaults beyond the machine's memory": (
        "a `train_batch_size` whose estimated memory exceeds what the machine has",
        "<model> with train_batch_size=<n> needs an estimated <x> GiB of memory, more than the <y> GiB available: "
        "the run may be killed by the operating system; a smaller train_batch_size lowers it in proportion",
    ),
}


def assert_shown(case: str, message: str) -> None:
    """``message`` (one line) is what :data:`CASES` says the user sees, ``<...>`` matching any text."""
    assert "\n" not in message.rstrip("\n"), message
    pattern = "".join(
        ".+?" if re.fullmatch(r"<[^>]+>", part) else re.escape(part) for part in re.split(r"(<[^>]+>)", CASES[case][1])
    )
    assert re.fullmatch(pattern, message.rstrip("\n")), (
        f"{case}:\n  shown    {message!r}\n  expected {CASES[case][1]!r}"
    )


def render() -> str:
    """The text of docs/bad_input.md."""
    lines = [
        "# Bad input: what you see",
        "",
        "Each row is a test of `tests/test_bad_input.py`, which checks the message word for word (`<...>` stands",
        "for a path or value) and generates this file: `python tests/test_bad_input.py > docs/bad_input.md`.",
        "Lines starting with `error:` are printed by `run_recbole_mm.py` or `python -m recbole_mm.prepare`, which then",
        "exit with status 2; the Python API raises the message as a `recbole_mm.errors.RecBoleMMError` (a sweep's as",
        "`SweepSetupError`); the GPU and memory lines are warnings logged before training, which then goes on.",
        "Every check runs before the data is read or the first training step, except the feature-file checks, which",
        "run while the dataset is built (before the model).",
        "",
        "| case | given | what you see |",
        "|---|---|---|",
    ]
    for case, (given, shown) in CASES.items():
        shown = shown.replace("|", "\\|")
        lines.append(f"| {case} | {given} | `{shown}` |")
    return "\n".join(lines) + "\n"


def test_docs_table_is_generated_from_these_cases():
    with open(os.path.join(ROOT, "docs", "bad_input.md"), encoding="utf-8") as f:
        assert f.read() == render(), "regenerate: python tests/test_bad_input.py > docs/bad_input.md"


# ---------------------------------------------------------------------------------------------- helpers


def run_main(monkeypatch, tmp_path, capsys, *args):
    """``python run_recbole_mm.py ARGS`` in ``tmp_path``, in this process: its exit status and standard error."""
    return cli_helpers.run_main(monkeypatch, tmp_path, *args), capsys.readouterr().err


def copy_dataset(source_root, target_root, copy=(), skip=()):
    """``ml-100k_mm`` of ``source_root`` under ``target_root``: hard links, real copies for ``copy``, without
    ``skip``."""
    source, target = os.path.join(str(source_root), NAME), os.path.join(str(target_root), NAME)
    os.makedirs(target)
    for entry in os.listdir(source):
        if entry in skip:
            continue
        (shutil.copy if entry in copy else os.link)(os.path.join(source, entry), os.path.join(target, entry))
    return target


def text_table(folder, dim):
    """The text feature table of ``folder``'s ml-100k_mm read with ``dim``, as a dataset build reads it."""
    import numpy as np

    from recbole_mm.data.features import FeatureSpec, file_table

    tokens = np.array([str(i) for i in range(1682)], dtype=object)
    return file_table(FeatureSpec("text", dim=dim, suffix="feat1CLS"), folder, NAME, tokens)


SLICE_RUN = ("--model=SASRec", "--dataset=ml-100k_mm", "--epochs=1", "--show_progress=False")


# ---------------------------------------------------------------------------------------------- feature files


def test_a_width_disagreeing_with_the_sidecar_is_refused(ml100k_slice, tmp_path):
    from recbole_mm.errors import FeatureFileError

    folder = copy_dataset(ml100k_slice, tmp_path)
    assert text_table(folder, 384).shape == (1683, 384)
    with pytest.raises(FeatureFileError) as err:
        text_table(folder, 192)
    assert_shown("feature dim vs sidecar", str(err.value))


def test_without_a_sidecar_the_row_count_must_match_the_item_index(ml100k_slice, tmp_path):
    from recbole_mm.errors import FeatureFileError

    folder = copy_dataset(ml100k_slice, tmp_path, skip={f"{NAME}.feat1CLS.json"})
    assert text_table(folder, 384).shape == (1683, 384)
    with pytest.raises(FeatureFileError) as err:
        text_table(folder, 192)
    assert_shown("feature dim vs item index", str(err.value))


def test_without_sidecar_nor_index_the_token_range_decides(ml100k_slice, tmp_path):
    from recbole_mm.errors import FeatureFileError

    folder = copy_dataset(ml100k_slice, tmp_path, skip={f"{NAME}.feat1CLS.json", f"{NAME}.item2index"})
    assert text_table(folder, 384).shape == (1683, 384)
    with pytest.raises(FeatureFileError) as err:
        text_table(folder, 192)
    assert_shown("feature dim vs token range", str(err.value))
    assert "highest item token is 1681" in str(err.value)


def test_a_feature_file_changed_after_its_sidecar_is_refused(ml100k_slice, tmp_path):
    from recbole_mm.errors import FeatureFileError

    folder = copy_dataset(ml100k_slice, tmp_path, copy={f"{NAME}.feat1CLS"})
    with open(os.path.join(folder, f"{NAME}.feat1CLS"), "r+b") as f:
        f.seek(4 * 384 * 7)
        f.write(b"\x00\x00\x80\x3f")  # item 7's first value set to 1.0
    with pytest.raises(FeatureFileError) as err:
        text_table(folder, 384)
    assert_shown("feature file changed", str(err.value))


# ---------------------------------------------------------------------------------------------- setting names


def test_an_unknown_key_on_the_command_line_is_refused_before_any_data(monkeypatch, tmp_path, capsys, ml100k_slice):
    code, err = run_main(monkeypatch, tmp_path, capsys, *SLICE_RUN, f"--data_path={ml100k_slice}", "--learning_rat=0.5")
    assert code == 2
    assert_shown("unknown key on the command line", err)
    assert not (tmp_path / "log").exists()


def test_an_unknown_key_in_a_config_file_is_refused(monkeypatch, tmp_path, capsys, ml100k_slice):
    (tmp_path / "mine.yaml").write_text("hiden_size: 32\n")
    code, err = run_main(
        monkeypatch, tmp_path, capsys, *SLICE_RUN, f"--data_path={ml100k_slice}", "--config_files=mine.yaml"
    )
    assert code == 2
    assert_shown("unknown key in a config file", err)


def test_extra_keys_declares_a_deliberately_new_key(tmp_path):
    from recbole_mm.config import Config
    from recbole_mm.errors import ConfigError

    (tmp_path / "new.yaml").write_text("my_key: 3\n")
    (tmp_path / "declared.yaml").write_text("extra_keys: [my_key]\nmy_key: 3\n")
    with pytest.raises(ConfigError, match="'my_key'"):
        Config(model="SASRec", dataset=NAME, config_file_list=[str(tmp_path / "new.yaml")])
    config = Config(model="SASRec", dataset=NAME, config_file_list=[str(tmp_path / "declared.yaml")])
    assert config["my_key"] == 3
    (tmp_path / "model.yaml").write_text("kmeans_iters: 5\nplm_size: 384\n")
    known = Config(model="MISSRec", dataset=NAME, config_file_list=[str(tmp_path / "model.yaml")])
    assert known["kmeans_iters"] == 5  # the model's own yaml keys are known


def test_a_sweep_over_an_unknown_key_refuses_to_start(tmp_path, ml100k_slice):
    from recbole_mm.errors import SweepSetupError
    from recbole_mm.tuning.space import load_search_space
    from recbole_mm.tuning.sweep import prepare_setup

    space_file = tmp_path / "typo.hyper"
    space_file.write_text("learning_rat choice [0.5,0.9]\n")
    space = load_search_space(str(space_file))
    with pytest.raises(SweepSetupError) as err:
        prepare_setup("SASRec", NAME, None, {"data_path": str(ml100k_slice)}, space, str(tmp_path / "out"))
    assert_shown("unknown key in a sweep", str(err.value))
    assert not (tmp_path / "out").exists()
    space_file.write_text("learning_rate choice [0.5,0.9]\n")  # the same sweep over a real key starts
    prepare_setup(
        "SASRec",
        NAME,
        None,
        {"data_path": str(ml100k_slice)},
        load_search_space(str(space_file)),
        str(tmp_path / "out"),
    )


# ---------------------------------------------------------------------------------------------- device


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case is a machine without the GPU asked for")
def test_a_gpu_id_the_machine_lacks_is_said_before_training(monkeypatch, caplog):
    from recbole_mm.config import Config

    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))  # restored afterwards
    with caplog.at_level("WARNING"):
        config = Config(model="SASRec", dataset=NAME, config_dict={"gpu_id": "7"})
    lines = [r.getMessage() for r in caplog.records if "gpu_id" in r.getMessage()]
    assert len(lines) == 1
    assert_shown("gpu_id without that GPU", lines[0])
    assert config["device"].type == "cpu" and config["use_gpu"] is False  # the log says what runs


@pytest.mark.skipif(torch.cuda.is_available(), reason="the case is a machine without a GPU")
def test_use_gpu_asked_without_a_gpu_is_refused(monkeypatch, tmp_path, capsys, ml100k_slice):
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", os.environ.get("CUDA_VISIBLE_DEVICES", ""))
    code, err = run_main(monkeypatch, tmp_path, capsys, *SLICE_RUN, f"--data_path={ml100k_slice}", "--use_gpu=True")
    assert code == 2
    assert_shown("use_gpu without a GPU", err)


# ---------------------------------------------------------------------------------------------- metrics


@pytest.mark.parametrize(
    "argument, case", [("--valid_metric=foo@10", "valid_metric not computed"), ("--topk=[0]", "topk not positive")]
)
def test_metric_settings_are_checked_before_any_data(monkeypatch, tmp_path, capsys, ml100k_slice, argument, case):
    code, err = run_main(monkeypatch, tmp_path, capsys, *SLICE_RUN, f"--data_path={ml100k_slice}", argument)
    assert code == 2
    assert_shown(case, err)
    assert not (tmp_path / "log").exists()  # nothing logged: no data read, no training


def test_valid_metric_is_matched_across_case_and_value_metrics_pass():
    from recbole_mm.config import Config
    from recbole_mm.errors import ConfigError

    assert Config(model="SASRec", dataset=NAME, config_dict={"valid_metric": "hit@10"})["valid_metric"] == "hit@10"
    with pytest.raises(ConfigError, match="found 'NDCG@20'"):
        Config(model="SASRec", dataset=NAME, config_dict={"valid_metric": "NDCG@20"})  # topk has 10 and 50
    with pytest.raises(ConfigError, match="unknown metric"):
        Config(model="SASRec", dataset=NAME, config_dict={"metrics": ["NDCGG"]})


# ---------------------------------------------------------------------------------------------- interaction files


@pytest.mark.parametrize("content, case", [("header", "header-only interaction file"), ("", "empty interaction file")])
def test_an_interaction_file_without_rows_is_named(monkeypatch, tmp_path, capsys, ml100k_slice, content, case):
    data = tmp_path / "data"
    folder = copy_dataset(ml100k_slice, data, skip={f"{NAME}.test.inter"})
    with open(os.path.join(folder, f"{NAME}.test.inter"), "w", encoding="utf-8") as f:
        f.write("user_id:token\titem_id_list:token_seq\titem_id:token\n" if content else "")
    code, err = run_main(monkeypatch, tmp_path, capsys, *SLICE_RUN, f"--data_path={data}")
    assert code == 2
    assert_shown(case, err)
    assert os.path.join(folder, f"{NAME}.test.inter") in err


# ---------------------------------------------------------------------------------------------- checkpoints


def test_a_missing_checkpoint_is_one_line(tmp_path):
    from recbole_mm.errors import CheckpointError
    from recbole_mm.quick_start import load_data_and_model

    with pytest.raises(CheckpointError) as err:
        load_data_and_model(str(tmp_path / "none.pth"))
    assert_shown("missing checkpoint", str(err.value))


def test_a_truncated_checkpoint_is_called_incomplete(tmp_path):
    from recbole_mm.errors import CheckpointError
    from recbole_mm.quick_start import load_data_and_model

    whole, cut = tmp_path / "whole.pth", tmp_path / "cut.pth"
    torch.save({"config": {"model": "SASRec"}, "state_dict": {"w": torch.zeros(4096)}}, whole)
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(CheckpointError) as err:
        load_data_and_model(str(cut))
    assert_shown("truncated checkpoint", str(err.value))
    assert str(cut) in str(err.value)


# ---------------------------------------------------------------------------------------------- prepare encode


def test_encode_checks_its_inputs_before_loading_the_encoder(monkeypatch, tmp_path, capsys, ml100k_slice):
    from recbole_mm.prepare import cli, encode

    folder = copy_dataset(ml100k_slice, tmp_path, skip={f"{NAME}.text"})

    def loaded(*args, **kwargs):
        raise AssertionError("the encoder was loaded before the inputs were checked")

    monkeypatch.setattr(encode, "make_encoder", loaded)
    assert cli.main(["encode", "--dir", folder, "--name", NAME]) == 2
    assert_shown("encode without texts", capsys.readouterr().err)


# ---------------------------------------------------------------------------------------------- memory


def test_a_batch_beyond_the_machines_memory_is_said_before_training(monkeypatch, ml100k_slice, caplog):
    """The estimate grows with the batch; with the machine's available memory set below it, one line is logged."""
    from recbole_mm import memory
    from recbole_mm.config import Config
    from recbole_mm.data.utils import create_dataset, data_preparation

    config = Config(model="SASRec", dataset=NAME, config_dict={"data_path": str(ml100k_slice)})
    train_data = data_preparation(config, create_dataset(config))[0]
    small = memory.estimate_training_bytes(config, train_data)
    config["train_batch_size"] *= 16
    large = memory.estimate_training_bytes(config, train_data)
    assert large > small
    monkeypatch.setattr(memory, "available_bytes", lambda: (small + large) // 2)
    with caplog.at_level("WARNING"):
        line = memory.warn_if_too_large(config, train_data)
    assert [r.getMessage() for r in caplog.records] == [line]
    assert_shown("defaults beyond the machine's memory", line)
    config["train_batch_size"] //= 16
    assert memory.warn_if_too_large(config, train_data) is None


if __name__ == "__main__":
    sys.stdout.write(render())
