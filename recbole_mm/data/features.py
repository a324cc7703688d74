"""Per-item multi-modal feature tables, aligned to RecBole's internal item ids.

A dataset offers modalities through the config key ``mm_features``::

    mm_features:
      text:  {suffix: feat1CLS, dim: 512}    # raw float32 row-major file <dataset>.feat1CLS
      image: {suffix: image.npy}             # .npy file <dataset>.image.npy (dim from the file)
      genre: {field: genre_emb, dim: 64}     # float_seq column of <dataset>.item

and ``modalities: [text, image]`` picks the ones a run attaches (all of them when unset). MISSRec's
key names work too: ``plm_suffix``/``plm_size`` define ``text``, ``img_suffix``/``img_size`` define
``image`` and ``plm_suffix_aug`` defines ``text_aug``.

Raw files follow the UniSRec/MISSRec layout: no header, row ``i`` belongs to the item whose token is
the integer ``i``. With a ``<dataset>.pt_datasets`` file (comma-separated domain names) the tokens are
``"<k>-<i>"`` and row ``i`` is read from the file of domain ``k``, ``<domain_k>.<suffix>``.

A raw file's width is checked against its ``<file>.json`` sidecar (dim, item count, sha256) where one exists;
without one, the row count the configured ``dim`` gives must agree with ``<name>.item2index`` (or, lacking that,
with the items' token range), so that a wrong ``dim`` cannot read parts of two rows as one item.

Every table has row 0 (``[PAD]``) zero and a presence mask: an all-zero row means the modality is
missing for that item. Files are memory-mapped and gathered once, vectorised; nothing is read per batch.
"""

import json
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np
import pandas as pd

from recbole_mm.config import LEGACY_FEATURE_KEYS
from recbole_mm.data.atomic_files import file_sha256
from recbole_mm.errors import FeatureFileError


@dataclass(frozen=True)
class FeatureSpec:
    """Where one modality's item features come from.

    Attributes:
        name: modality name (``text``, ``image``, ...).
        dim: feature width; ``None`` only for ``.npy`` files, which carry their shape.
        suffix: file suffix; ``<dataset>.<suffix>``, raw float32 unless it ends with ``.npy``.
        field: a ``float_seq`` field of the ``.item`` file (instead of a file).
    """

    name: str
    dim: Optional[int] = None
    suffix: Optional[str] = None
    field: Optional[str] = None


def feature_specs(config) -> List[FeatureSpec]:
    """The modalities a run attaches, from ``mm_features`` (plus MISSRec aliases) and ``modalities``.

    Raises:
        FeatureFileError: an entry is malformed, or ``modalities`` names one the dataset lacks.
    """
    declared = dict(config["mm_features"] or {})
    for name, (suffix_key, dim_key) in LEGACY_FEATURE_KEYS.items():
        # recbole_mm's Config has already folded these keys into mm_features, level by level (its docstring)
        if config[suffix_key] is not None and name not in declared:
            declared[name] = {"suffix": config[suffix_key], "dim": config[dim_key]}
    wanted = config["modalities"]
    if wanted is None:
        wanted = list(declared)
    specs = []
    for name in wanted:
        if name not in declared:
            raise FeatureFileError(
                f"config key 'modalities' asks for modality '{name}', but dataset '{config['dataset']}' "
                f"declares only {sorted(declared)} in 'mm_features'"
            )
        entry = declared[name]
        if not isinstance(entry, dict) or (entry.get("suffix") is None) == (entry.get("field") is None):
            raise FeatureFileError(
                f"config key 'mm_features.{name}' must be a dict with exactly one of 'suffix' or 'field' "
                f"(and 'dim'), found {entry!r}"
            )
        unknown = set(entry) - {"suffix", "field", "dim"}
        if unknown:
            raise FeatureFileError(f"config key 'mm_features.{name}' has unknown keys {sorted(unknown)}")
        dim = entry.get("dim")
        if dim is not None and (not isinstance(dim, int) or dim < 1):
            raise FeatureFileError(f"config key 'mm_features.{name}.dim' must be a positive int, found {dim!r}")
        if dim is None and not str(entry.get("suffix", "")).endswith(".npy"):
            raise FeatureFileError(
                f"config key 'mm_features.{name}.dim' is required for a raw feature file or a field "
                f"(only .npy files carry their shape), found {entry!r}"
            )
        specs.append(FeatureSpec(name=name, dim=dim, suffix=entry.get("suffix"), field=entry.get("field")))
    return specs


def open_feature_file(path: str, dim: Optional[int]) -> np.ndarray:
    """Memory-map a feature file: raw float32 row-major (``dim`` required) or ``.npy``.

    Returns:
        array of shape ``[rows, dim]`` (float32 for raw files; ``.npy`` keep their dtype).

    Raises:
        FeatureFileError: missing file, size not a multiple of ``dim * 4``, a raw file that disagrees with its
            ``.json`` sidecar (width, size, sha256), or a ``.npy`` whose shape is not 2-D or whose width disagrees
            with ``dim``.
    """
    if not os.path.isfile(path):
        raise FeatureFileError(f"feature file {path} does not exist")
    if path.endswith(".npy"):
        try:
            matrix = np.load(path, mmap_mode="r")
        except ValueError as err:
            raise FeatureFileError(f"feature file {path} is not a readable .npy array: {err}") from None
        if matrix.ndim != 2:
            raise FeatureFileError(
                f"feature file {path}: expected a 2-D array [items, dim], found shape {matrix.shape}"
            )
        if not np.issubdtype(matrix.dtype, np.floating):
            raise FeatureFileError(f"feature file {path}: expected a float array, found dtype {matrix.dtype}")
        if dim is not None and matrix.shape[1] != dim:
            raise FeatureFileError(f"feature file {path}: config says dim {dim}, the file has dim {matrix.shape[1]}")
        return matrix
    size = os.path.getsize(path)
    if size == 0 or size % (4 * dim) != 0:
        raise FeatureFileError(
            f"feature file {path}: size {size} bytes is not a positive multiple of dim * 4 = {4 * dim} "
            f"(raw float32 rows of dim {dim}); check the dim in config"
        )
    check_sidecar(path, dim, size)
    return np.memmap(path, dtype=np.float32, mode="r", shape=(size // (4 * dim), dim))


def read_sidecar(path: str) -> Optional[dict]:
    """The ``<file>.json`` sidecar ``python -m recbole_mm.prepare`` writes beside a feature file, or ``None``."""
    sidecar = path + ".json"
    if not os.path.isfile(sidecar):
        return None
    try:
        with open(sidecar, encoding="utf-8") as f:
            meta = json.load(f)
    except (OSError, ValueError) as err:
        raise FeatureFileError(f"feature sidecar {sidecar} is not readable JSON: {err}") from None
    if not isinstance(meta, dict):
        raise FeatureFileError(f"feature sidecar {sidecar}: expected a JSON object, found {type(meta).__name__}")
    return meta


def check_sidecar(path: str, dim: int, size: int) -> None:
    """A raw feature file against its sidecar: the config's ``dim`` must be the recorded width, the size the
    recorded ``items x dim`` float32 values, the content the recorded sha256.

    Raises:
        FeatureFileError: naming the file, what the sidecar records and what was found.
    """
    meta = read_sidecar(path)
    if meta is None:
        return
    recorded_dim, items = meta.get("dim"), meta.get("items")
    if recorded_dim is not None and recorded_dim != dim:
        raise FeatureFileError(
            f"feature file {path}: config says dim {dim}, its sidecar {path}.json records dim {recorded_dim}; "
            f"set dim: {recorded_dim} in mm_features (or the plm_size/img_size key)"
        )
    if items is not None and recorded_dim is not None and items * recorded_dim * 4 != size:
        raise FeatureFileError(
            f"feature file {path}: expected {items} items x {recorded_dim} float32 = {items * recorded_dim * 4} "
            f"bytes (its sidecar {path}.json), found {size} bytes: the file is incomplete or was changed"
        )
    recorded_sha = meta.get("sha256")
    if recorded_sha is not None:
        found = file_sha256(path)
        if found != recorded_sha:
            raise FeatureFileError(
                f"feature file {path}: expected sha256 {recorded_sha} (its sidecar {path}.json), found {found}: "
                f"the file was changed after it was written; rebuild it or its sidecar"
            )


def check_row_count(path: str, rows: int, dataset_dir: str, stem: str, max_row: int) -> None:
    """A raw feature file without a sidecar: its row count (from the configured ``dim``) must agree with the item
    index. With ``<stem>.item2index`` the file holds one row per indexed item (a leading ``[PAD]`` row allowed);
    without, the items' highest row ``max_row`` must lie in the file's first half, since a ``dim`` k times too
    small reads k times as many rows.

    Raises:
        FeatureFileError: naming the file, the rows expected and found, and the likely cause (``dim``).
    """
    if read_sidecar(path) is not None:
        return
    index = os.path.join(dataset_dir, f"{stem}.item2index")
    if os.path.isfile(index):
        with open(index, encoding="utf-8") as f:
            indexed = sum(1 for line in f if line.strip())
        if rows not in (indexed, indexed + 1):
            raise FeatureFileError(
                f"feature file {path}: expected {indexed} rows (one per item of {index}), found {rows} at the "
                f"configured dim; check the dim in config (the file's width is its size / 4 / {indexed})"
            )
    elif rows >= 2 * (max_row + 1):
        raise FeatureFileError(
            f"feature file {path}: expected about {max_row + 1} rows (the highest item token is {max_row}), found "
            f"{rows} at the configured dim: a dim too small reads several rows per item; check the dim in config, "
            f"or write a sidecar {path}.json with the file's dim"
        )


def _parse_int_tokens(tokens: np.ndarray, what: str) -> np.ndarray:
    """Vectorised str -> int64 conversion; the error names the first offending tokens."""
    try:
        numbers = np.asarray(tokens, dtype=object).astype(np.int64)
        if numbers.size == 0 or numbers.min() >= 0:
            return numbers
    except (ValueError, OverflowError):
        pass
    numbers = pd.to_numeric(pd.Series(tokens, dtype=object), errors="coerce").to_numpy(dtype=np.float64)
    bad = ~np.isfinite(numbers) | (numbers != np.floor(numbers)) | (numbers < 0)
    raise FeatureFileError(
        f"{what}: item tokens must be non-negative integers (the row of the item in the feature file), "
        f"found {np.asarray(tokens, dtype=object)[bad][:5].tolist()}"
    )


def parse_item_rows(tokens: np.ndarray, n_domains: int = 0, what: str = "item tokens") -> Tuple[np.ndarray, np.ndarray]:
    """Map item tokens (without ``[PAD]``) to ``(domain, row)`` arrays.

    Args:
        tokens: string tokens, shape ``[n]``.
        n_domains: 0 for the single-domain layout (token = row); else tokens are ``"<k>-<row>"``
            with ``0 <= k < n_domains``.
    """
    tokens = np.asarray(tokens, dtype=object)
    if n_domains == 0:
        return np.zeros(len(tokens), dtype=np.int64), _parse_int_tokens(tokens, what)
    split = pd.Series(tokens, dtype=object).str.split("-", n=1, expand=True)
    if split.shape[1] != 2 or split[1].isna().any():
        bad = tokens[split[1].isna().to_numpy()] if split.shape[1] == 2 else tokens
        raise FeatureFileError(f"{what}: multi-domain item tokens must look like '<k>-<row>', found {bad[:5].tolist()}")
    domains = _parse_int_tokens(split[0].to_numpy(dtype=object), what)
    if (domains >= n_domains).any():
        raise FeatureFileError(
            f"{what}: domain index out of range: the .pt_datasets file lists {n_domains} domains, "
            f"found tokens {tokens[domains >= n_domains][:5].tolist()}"
        )
    return domains, _parse_int_tokens(split[1].to_numpy(dtype=object), what)


def read_domains(dataset_dir: str, dataset_name: str) -> List[str]:
    """Domain names of the multi-domain pre-training layout, or ``[]`` when there is no ``.pt_datasets``."""
    path = os.path.join(dataset_dir, f"{dataset_name}.pt_datasets")
    if not os.path.isfile(path):
        return []
    with open(path, encoding="utf-8") as f:
        domains = [d.strip() for d in f.read().strip().split(",") if d.strip()]
    if not domains:
        raise FeatureFileError(f"{path}: expected comma-separated domain names, found an empty file")
    return domains


def file_table(spec: FeatureSpec, dataset_dir: str, dataset_name: str, item_tokens: np.ndarray) -> np.ndarray:
    """The ``[len(item_tokens) + 1, dim]`` float32 table for ``item_tokens`` (``[PAD]`` excluded): row 0 zero,
    row ``j`` the feature-file row of token ``j - 1``, gathered straight from the memory-mapped file(s)."""
    domains = read_domains(dataset_dir, dataset_name)
    files = [f"{name}.{spec.suffix}" for name in (domains or [dataset_name])]
    domain_of, rows = parse_item_rows(item_tokens, len(domains), what=f"{dataset_name} item_id ({spec.name})")
    tokens = np.asarray(item_tokens, dtype=object)
    table = None
    for k, file_name in enumerate(files):
        selected = np.flatnonzero(domain_of == k)
        if len(selected) == 0:
            continue
        path = os.path.join(dataset_dir, file_name)
        matrix = open_feature_file(path, spec.dim)
        if not path.endswith(".npy"):
            stem = (domains or [dataset_name])[k]
            check_row_count(path, matrix.shape[0], dataset_dir, stem, int(rows[selected].max()))
        if table is None:
            table = np.zeros((len(tokens) + 1, matrix.shape[1]), dtype=np.float32)
        elif matrix.shape[1] != table.shape[1]:
            raise FeatureFileError(f"feature file {path}: dim {matrix.shape[1]}, other domains have {table.shape[1]}")
        too_far = rows[selected] >= matrix.shape[0]
        if too_far.any():
            raise FeatureFileError(
                f"feature file {path} has {matrix.shape[0]} rows, but item tokens "
                f"{tokens[selected[too_far]][:5].tolist()} point past its end"
            )
        if len(selected) == len(tokens):  # every item in this file: gather into place, no temporary
            gathered = table[1:]
            if matrix.dtype == np.float32:
                np.take(matrix, rows, axis=0, out=gathered)
            else:
                gathered[:] = matrix[rows]
        else:
            table[selected + 1] = matrix[rows[selected]]
            gathered = table[selected + 1]
        _check_finite(gathered, tokens[selected], path)
    if table is None:  # no items at all
        table = np.zeros((1, spec.dim or 0), dtype=np.float32)
    return table


def _check_finite(values: np.ndarray, tokens: np.ndarray, where: str) -> None:
    # one float64 row sum per item: NaN or inf anywhere in a row makes it non-finite (no n x dim temporary)
    if np.isfinite(values.sum(axis=1, dtype=np.float64)).all():
        return
    bad = ~np.isfinite(values).all(axis=1)
    raise FeatureFileError(
        f"{where}: NaN or inf in the feature rows of items {tokens[bad][:5].tolist()} "
        f"({int(bad.sum())} item(s) in all); expected finite values (use a zero row for a missing modality)"
    )


def presence(table: np.ndarray) -> np.ndarray:
    """``[n_items]`` bool: False for all-zero rows (PAD, or the modality is missing)."""
    return np.any(table, axis=1)


def field_table(spec: FeatureSpec, item_ids: np.ndarray, values: np.ndarray, n_items: int, where: str) -> np.ndarray:
    """Scatter ``float_seq`` rows ``values [m, dim]`` of internal ids ``item_ids [m]`` into ``[n_items, dim]``."""
    table = np.zeros((n_items, spec.dim), dtype=np.float32)
    table[item_ids] = values
    _check_finite(table, np.arange(n_items), f"{where} field '{spec.field}' (internal item ids)")
    table[0] = 0
    return table
