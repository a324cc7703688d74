"""Search spaces for sweeps: RecBole's ``.hyper`` line format and a YAML form, parsed into one neutral
description (:class:`Param`) that both tools (Ray Tune and hyperopt) translate into their own.

``.hyper`` (RecBole's format, one parameter per line, ``#`` comment lines and blank lines skipped)::

    learning_rate loguniform -8,0          # exp(U(-8, 0)): the bounds are natural-log EXPONENTS
    embedding_size choice [64,96,128]
    mlp_hidden_size choice ['[64,64,64]','[128,128]']   # quoted lists, converted when a trial starts
    dropout_prob uniform 0.1,0.5
    hidden_size quniform 32,256,32         # round(U(32, 256) / 32) * 32
    n_layers randint 1,4                   # an integer in [1, 4): high excluded

Everything after the type is joined without spaces, as RecBole does (``choice [64, 96]`` is fine).

YAML (``.yaml``/``.yml``; loguniform bounds are the VALUES, not exponents)::

    learning_rate: {type: loguniform, low: 1e-4, high: 1e-2}
    embedding_size: {type: choice, values: [64, 128]}
    dropout_prob: {type: uniform, low: 0.1, high: 0.5}
    hidden_size: {type: quniform, low: 32, high: 256, q: 32}
    n_layers: {type: randint, low: 1, high: 4}

Every malformed entry raises :class:`SearchSpaceError` with ``file:line``.
"""

import ast
import math
import os
from dataclasses import dataclass
from typing import Any, Dict, List, Tuple

import yaml

from recbole_mm.errors import SearchSpaceError

PARAM_TYPES = ("choice", "uniform", "loguniform", "quniform", "randint")


@dataclass(frozen=True)
class Param:
    """One searched hyperparameter.

    ``kind`` is one of :data:`PARAM_TYPES`. ``values`` holds a choice's options as written (strings such
    as ``'[64,64]'`` are converted by :meth:`cast`); ``low``/``high`` are natural bounds (for
    loguniform too), ``q`` the quniform step; ``where`` is ``file:line`` for messages.
    """

    name: str
    kind: str
    values: Tuple = ()
    low: float = 0.0
    high: float = 0.0
    q: float = 0.0
    where: str = ""

    @property
    def integral(self) -> bool:
        """Whether sampled values are integers (randint, or quniform with integer bounds and step)."""
        if self.kind == "randint":
            return True
        return self.kind == "quniform" and all(float(v).is_integer() for v in (self.low, self.high, self.q))

    def cast(self, value: Any) -> Any:
        """The configuration value for a sampled ``value``: choice strings that are Python literals are
        evaluated (as RecBole's command line does), integral quniform/randint samples become ``int``."""
        if self.kind == "choice":
            if isinstance(value, str):
                try:
                    return ast.literal_eval(value)
                except (ValueError, SyntaxError):
                    return value
            return value
        if self.integral:
            return int(round(float(value)))
        return float(value)

    def describe(self) -> str:
        """A short human-readable range, e.g. ``loguniform[0.0001, 0.01]``."""
        if self.kind == "choice":
            return f"choice{list(self.values)}"
        step = f", q={self.q:g}" if self.kind == "quniform" else ""
        return f"{self.kind}[{self.low:g}, {self.high:g}{step}]"


def load_search_space(path: str) -> List[Param]:
    """Parse a search-space file: YAML for ``.yaml``/``.yml``, RecBole's ``.hyper`` line format otherwise.

    Raises:
        SearchSpaceError: the file is missing, empty, or has a malformed entry (``file:line`` in the message).
    """
    if not os.path.isfile(path):
        raise SearchSpaceError(f"search-space file not found: {os.path.abspath(path)}")
    with open(path, encoding="utf-8") as f:
        text = f.read()
    parse = parse_yaml_space if path.endswith((".yaml", ".yml")) else parse_hyper_lines
    space = parse(text, path)
    if not space:
        raise SearchSpaceError(f"{path}: no parameters found (expected lines like 'learning_rate loguniform -8,0')")
    return space


def _numbers(text: str, count: int, where: str, kind: str, example: str) -> List[float]:
    parts = text.split(",")
    try:
        numbers = [float(p) for p in parts]
    except ValueError:
        numbers = []
    if len(numbers) != count:
        raise SearchSpaceError(
            f"{where}: {kind} needs {count} comma-separated numbers like '{example}', found '{text}'"
        )
    return numbers


def _checked(param: Param) -> Param:
    """Validate the bounds of a numeric parameter; return it unchanged."""
    where, kind = param.where, param.kind
    if not math.isfinite(param.low) or not math.isfinite(param.high) or param.low >= param.high:
        raise SearchSpaceError(
            f"{where}: {kind} range of '{param.name}' needs low < high, found {param.low:g}, {param.high:g}"
        )
    if kind == "loguniform" and param.low <= 0:
        raise SearchSpaceError(f"{where}: loguniform bounds of '{param.name}' must be > 0, found low={param.low:g}")
    if kind == "quniform" and not param.q > 0:
        raise SearchSpaceError(f"{where}: quniform step q of '{param.name}' must be > 0, found {param.q:g}")
    if kind == "randint" and not (float(param.low).is_integer() and float(param.high).is_integer()):
        raise SearchSpaceError(
            f"{where}: randint bounds of '{param.name}' must be integers, found {param.low:g}, {param.high:g}"
        )
    return param


def _choice_values(values: Any, where: str, name: str) -> Tuple:
    if not isinstance(values, (list, tuple)) or not values:
        raise SearchSpaceError(f"{where}: choice of '{name}' needs a non-empty list like [64,96,128], found {values!r}")
    return tuple(values)


def parse_hyper_lines(text: str, source: str = "<string>") -> List[Param]:
    """Parse RecBole's ``.hyper`` line format (see the module docstring)."""
    space, seen = [], {}
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or stripped.startswith("#"):
            continue
        where = f"{source}:{number}"
        tokens = stripped.split()
        if len(tokens) < 3:
            raise SearchSpaceError(f"{where}: expected '<name> <type> <range>', found '{stripped}'")
        name, kind, rng = tokens[0], tokens[1], "".join(tokens[2:])
        if kind not in PARAM_TYPES:
            raise SearchSpaceError(
                f"{where}: unknown parameter type '{kind}' for '{name}' (expected one of {', '.join(PARAM_TYPES)})"
            )
        if name in seen:
            raise SearchSpaceError(f"{where}: parameter '{name}' already defined at line {seen[name]}")
        seen[name] = number
        if kind == "choice":
            try:
                values = ast.literal_eval(rng)
            except (ValueError, SyntaxError):
                raise SearchSpaceError(
                    f"{where}: choice of '{name}' needs a Python list like [64,96,128], found '{rng}'"
                ) from None
            space.append(Param(name, kind, values=_choice_values(values, where, name), where=where))
        elif kind == "quniform":
            low, high, q = _numbers(rng, 3, where, kind, "32,256,32")
            space.append(_checked(Param(name, kind, low=low, high=high, q=q, where=where)))
        else:
            low, high = _numbers(rng, 2, where, kind, "-8,0" if kind == "loguniform" else "0.1,0.5")
            if kind == "loguniform":  # RecBole's convention: the bounds are exponents of e
                if not (math.isfinite(low) and math.isfinite(high)) or low >= high:
                    raise SearchSpaceError(f"{where}: loguniform exponents of '{name}' need low < high, found '{rng}'")
                low, high = math.exp(low), math.exp(high)
            space.append(_checked(Param(name, kind, low=low, high=high, where=where)))
    return space


def _yaml_number(entry: dict, key: str, where: str, name: str) -> float:
    if key not in entry:
        raise SearchSpaceError(
            f"{where}: '{name}' ({entry.get('type')}) needs the key '{key}', found keys {sorted(entry)}"
        )
    try:
        return float(entry[key])  # PyYAML reads 1e-4 (no dot) as a string
    except (TypeError, ValueError):
        raise SearchSpaceError(f"{where}: '{name}'.{key} must be a number, found {entry[key]!r}") from None


def parse_yaml_space(text: str, source: str = "<string>") -> List[Param]:
    """Parse the YAML form (see the module docstring)."""
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as err:
        raise SearchSpaceError(f"{source}: not valid YAML: {err}") from None
    if root is None:
        return []
    if not isinstance(root, yaml.MappingNode):
        raise SearchSpaceError(f"{source}:{root.start_mark.line + 1}: expected a mapping 'name: {{type: ..., ...}}'")
    space, seen = [], set()
    for key_node, value_node in root.value:
        where = f"{source}:{key_node.start_mark.line + 1}"
        name = key_node.value
        entry = yaml.safe_load(yaml.serialize(value_node))
        if name in seen:
            raise SearchSpaceError(f"{where}: parameter '{name}' defined twice")
        seen.add(name)
        if not isinstance(entry, dict) or "type" not in entry:
            raise SearchSpaceError(f"{where}: '{name}' needs a mapping with a 'type' key, found {entry!r}")
        kind = entry["type"]
        if kind not in PARAM_TYPES:
            raise SearchSpaceError(
                f"{where}: unknown parameter type '{kind}' for '{name}' (expected one of {', '.join(PARAM_TYPES)})"
            )
        allowed = (
            {"type", "values"}
            if kind == "choice"
            else {"type", "low", "high", "q"} if kind == "quniform" else {"type", "low", "high"}
        )
        if set(entry) - allowed:
            raise SearchSpaceError(
                f"{where}: '{name}' ({kind}) has unknown key(s) {sorted(set(entry) - allowed)}; "
                f"allowed: {sorted(allowed)}"
            )
        if kind == "choice":
            space.append(Param(name, kind, values=_choice_values(entry.get("values"), where, name), where=where))
            continue
        low, high = _yaml_number(entry, "low", where, name), _yaml_number(entry, "high", where, name)
        q = _yaml_number(entry, "q", where, name) if kind == "quniform" else 0.0
        space.append(_checked(Param(name, kind, low=low, high=high, q=q, where=where)))
    return space


def cast_params(space: List[Param], sampled: Dict[str, Any]) -> Dict[str, Any]:
    """Configuration values for one sampled point (see :meth:`Param.cast`)."""
    return {p.name: p.cast(sampled[p.name]) for p in space}


def grid_points(space: List[Param]) -> int:
    """Number of points of the full grid; every parameter must be a choice.

    Raises:
        SearchSpaceError: a parameter is not a choice (a grid needs finite options).
    """
    continuous = [f"{p.name} ({p.kind}, {p.where})" for p in space if p.kind != "choice"]
    if continuous:
        raise SearchSpaceError(f"grid search needs only 'choice' parameters; continuous: {', '.join(continuous)}")
    return math.prod(len(p.values) for p in space)
