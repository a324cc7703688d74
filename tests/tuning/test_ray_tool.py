"""Translation of search spaces into Ray Tune domains, and the error line kept from a Ray traceback."""

import math

import pytest

pytest.importorskip("ray")

from ray import tune  # noqa: E402

from recbole_mm.tuning.ray_tool import _error_line, ray_space  # noqa: E402
from recbole_mm.tuning.space import parse_hyper_lines  # noqa: E402

SPACE = "lr loguniform -8,0\nemb choice [64,96]\nd uniform 0.1,0.5\nh quniform 32,256,32\nn randint 1,4\n"


def test_ray_space_bounds():
    domains = ray_space(parse_hyper_lines(SPACE), grid=False)
    assert isinstance(domains["lr"], tune.search.sample.Float)
    assert domains["lr"].lower == pytest.approx(math.exp(-8)) and domains["lr"].upper == pytest.approx(1.0)
    assert isinstance(domains["lr"].get_sampler(), tune.search.sample.Float._LogUniform)
    assert domains["emb"].categories == [64, 96]
    assert (domains["d"].lower, domains["d"].upper) == (0.1, 0.5)
    assert domains["h"].get_sampler().q == 32
    assert (domains["n"].lower, domains["n"].upper) == (1, 4)


def test_grid_turns_choices_into_grid_axes():
    domains = ray_space(parse_hyper_lines("emb choice [64,96]\n"), grid=True)
    assert domains["emb"] == {"grid_search": [64, 96]}


def test_error_line_picks_the_exception_line():
    text = (
        'ray::ImplicitFunc.train() (pid=1, ip=1.2.3.4)\n  File "x.py", line 3, in f\n'
        "    raise ValueError(msg)\nValueError: Training loss is nan\n"
    )
    assert _error_line(RuntimeError(text)) == "ValueError: Training loss is nan"
    assert _error_line(RuntimeError("")) == "RuntimeError"


def test_a_trial_that_never_reported_is_recorded_as_its_error():
    """A trial stopped or failed before its first report: Ray's Result has no metrics, no frame, no config and no
    folder (a stand-in object with the attributes ``_record`` reads)."""
    from types import SimpleNamespace

    from recbole_mm.tuning.ray_tool import _record
    from recbole_mm.tuning.trial import ERROR, STOPPED, SweepSetup

    setup = SweepSetup("SASRec", "ml-100k_mm", [], {}, {}, parse_hyper_lines("lr choice [0.1]\n"), "ndcg@10", True,
                       1, 2020, "/tmp")
    empty = dict(metrics=None, metrics_dataframe=None, config=None, path=None, log_dir=None)
    failed = _record(SimpleNamespace(**empty, error=RuntimeError("ValueError: bad")), setup)
    assert (failed.status, failed.params, failed.curve, failed.best_valid_score) == (ERROR, {"lr": None}, [], None)
    assert failed.error == "ValueError: bad" and failed.trial_id == "unknown trial"
    stopped = _record(SimpleNamespace(**empty, error=None), setup)
    assert stopped.status == STOPPED and stopped.curve == []
