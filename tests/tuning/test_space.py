"""Search-space parsing: RecBole's .hyper examples (checked against RecBole's own parser), the YAML form,
and malformed entries rejected with their line number."""

import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from recbole_mm.errors import SearchSpaceError
from recbole_mm.tuning.space import cast_params, grid_points, load_search_space, parse_hyper_lines, parse_yaml_space

# RecBole's hyper.test, plus the other types its docs describe.
RECBOLE_EXAMPLES = """learning_rate loguniform -8,0
embedding_size choice [64,96,128]
train_batch_size choice [512,1024,2048]
mlp_hidden_size choice ['[64,64,64]','[128,128]']
dropout_prob uniform 0.1,0.5
hidden_size quniform 32,256,32
"""


def test_recbole_examples_parse(tmp_path):
    path = tmp_path / "model.hyper"
    path.write_text(RECBOLE_EXAMPLES)
    space = {p.name: p for p in load_search_space(str(path))}
    assert list(space) == [
        "learning_rate",
        "embedding_size",
        "train_batch_size",
        "mlp_hidden_size",
        "dropout_prob",
        "hidden_size",
    ]
    lr = space["learning_rate"]
    assert lr.kind == "loguniform"
    assert lr.low == pytest.approx(math.exp(-8)) and lr.high == pytest.approx(1.0)  # exponents of e
    assert space["embedding_size"].values == (64, 96, 128)
    assert space["mlp_hidden_size"].values == ("[64,64,64]", "[128,128]")
    assert (space["dropout_prob"].low, space["dropout_prob"].high) == (0.1, 0.5)
    assert (space["hidden_size"].low, space["hidden_size"].high, space["hidden_size"].q) == (32, 256, 32)
    assert space["hidden_size"].where == f"{path}:6"


def test_same_samples_as_recbole_parser(tmp_path):
    """Our hyperopt translation of a .hyper file draws exactly what RecBole's HyperTuning draws."""
    pytest.importorskip("hyperopt")
    from hyperopt.pyll import stochastic
    from recbole.trainer.hyper_tuning import HyperTuning

    from recbole_mm.tuning.hyperopt_tool import hyperopt_space

    path = tmp_path / "model.hyper"
    path.write_text(RECBOLE_EXAMPLES)
    theirs = HyperTuning._build_space_from_file(str(path))
    ours = hyperopt_space(load_search_space(str(path)))
    for seed in range(5):
        a = stochastic.sample(theirs, rng=np.random.RandomState(seed))
        b = stochastic.sample(ours, rng=np.random.RandomState(seed))
        assert a == b


def test_choice_with_spaces_comments_and_cast():
    space = parse_hyper_lines("# a comment\n\nembedding_size choice [64, 96]\nmlp choice ['[64,64]', 'relu']\n")
    assert [p.values for p in space] == [(64, 96), ("[64,64]", "relu")]
    assert cast_params(space, {"embedding_size": 96, "mlp": "[64,64]"}) == {"embedding_size": 96, "mlp": [64, 64]}
    assert cast_params(space, {"embedding_size": 64, "mlp": "relu"})["mlp"] == "relu"  # not a literal: kept


def test_quniform_and_randint_cast_to_int():
    q, r, u = parse_hyper_lines("h quniform 32,256,32\nn randint 1,4\nd quniform 0,1,0.25\n")
    assert q.cast(96.0) == 96 and isinstance(q.cast(96.0), int)
    assert r.cast(np.int64(3)) == 3 and isinstance(r.cast(np.int64(3)), int)
    assert u.cast(0.75) == 0.75 and isinstance(u.cast(0.75), float)  # non-integer step stays float


@pytest.mark.parametrize(
    "line, message",
    [
        ("lr foo 1,2", "unknown parameter type 'foo'"),
        ("lr loguniform -8", "loguniform needs 2 comma-separated numbers"),
        ("lr uniform a,b", "uniform needs 2 comma-separated numbers"),
        ("h quniform 32,256", "quniform needs 3 comma-separated numbers"),
        ("h quniform 32,256,0", "step q of 'h' must be > 0"),
        ("e choice 64", "needs a non-empty list"),
        ("e choice [64,", "needs a Python list"),
        ("e choice []", "needs a non-empty list"),
        ("lr uniform 0.5,0.1", "needs low < high"),
        ("lr loguniform 0,-8", "need low < high"),
        ("n randint 1.5,4", "must be integers"),
        ("lr choice", "expected '<name> <type> <range>'"),
    ],
)
def test_malformed_line_rejected_with_line_number(line, message):
    text = "embedding_size choice [64,96]\n# comment\n" + line + "\n"
    with pytest.raises(SearchSpaceError) as err:
        parse_hyper_lines(text, "bad.hyper")
    assert str(err.value).startswith("bad.hyper:3: ")
    assert message in str(err.value)


def test_duplicate_parameter_rejected():
    with pytest.raises(SearchSpaceError, match=r"x.hyper:2: parameter 'lr' already defined at line 1"):
        parse_hyper_lines("lr uniform 0,1\nlr uniform 0,2\n", "x.hyper")


def test_yaml_form():
    text = (
        "learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}\n"
        "embedding_size: {type: choice, values: [64, 128]}\n"
        "dropout_prob: {type: uniform, low: 0.1, high: 0.5}\n"
        "hidden_size: {type: quniform, low: 32, high: 256, q: 32}\n"
        "n_layers: {type: randint, low: 1, high: 4}\n"
    )
    space = {p.name: p for p in parse_yaml_space(text, "s.yaml")}
    assert (space["learning_rate"].low, space["learning_rate"].high) == (1e-4, 1e-2)  # values, not exponents
    assert space["embedding_size"].values == (64, 128)
    assert space["hidden_size"].q == 32 and space["hidden_size"].integral
    assert (space["n_layers"].low, space["n_layers"].high) == (1, 4)
    assert space["n_layers"].where == "s.yaml:5"


@pytest.mark.parametrize(
    "entry, message",
    [
        ("{type: gaussian, low: 0, high: 1}", "unknown parameter type 'gaussian'"),
        ("{type: uniform, low: 0}", "needs the key 'high'"),
        ("{type: uniform, low: zero, high: 1}", "must be a number"),
        ("{type: loguniform, low: 0, high: 1}", "must be > 0"),
        ("{type: choice, values: 3}", "non-empty list"),
        ("{type: uniform, low: 0, high: 1, q: 2}", "unknown key(s) ['q']"),
        ("[1, 2]", "needs a mapping with a 'type' key"),
    ],
)
def test_yaml_malformed_entry_rejected_with_line_number(entry, message):
    text = "a: {type: choice, values: [1, 2]}\n\nb: " + entry + "\n"
    with pytest.raises(SearchSpaceError) as err:
        parse_yaml_space(text, "s.yaml")
    assert str(err.value).startswith("s.yaml:3: ")
    assert message in str(err.value)


def test_file_errors(tmp_path):
    with pytest.raises(SearchSpaceError, match="not found"):
        load_search_space(str(tmp_path / "missing.hyper"))
    empty = tmp_path / "empty.hyper"
    empty.write_text("# nothing\n")
    with pytest.raises(SearchSpaceError, match="no parameters"):
        load_search_space(str(empty))


def test_grid_points():
    assert grid_points(parse_hyper_lines("a choice [1,2,3]\nb choice ['x','y']\n")) == 6
    with pytest.raises(SearchSpaceError, match=r"grid search needs only 'choice'.*lr \(uniform, <string>:2\)"):
        grid_points(parse_hyper_lines("a choice [1,2]\nlr uniform 0,1\n"))


HYPER_DIR = Path(__file__).resolve().parents[2] / "hyper"


def _config_keys(model: str) -> set:
    """Keys RecBole's overall defaults and the model's defaults (RecBole's or recbole_mm's) define."""
    import recbole

    import recbole_mm

    files = [
        Path(recbole.__file__).parent / "properties" / "overall.yaml",
        Path(recbole.__file__).parent / "properties" / "model" / f"{model}.yaml",
        Path(recbole_mm.__file__).parent / "properties" / "model" / f"{model}.yaml",
    ]
    keys = set()
    for file in files:
        if file.is_file():
            keys |= set(yaml.safe_load(file.read_text()) or {})
    return keys


@pytest.mark.parametrize(
    "path", sorted(HYPER_DIR.glob("*.hyper")) + sorted(HYPER_DIR.glob("*.yaml")), ids=lambda p: p.name
)
def test_shipped_spaces_parse_and_name_real_config_keys(path):
    space = load_search_space(str(path))
    names = {p.name for p in space}
    assert names <= _config_keys(path.name.split(".")[0])
