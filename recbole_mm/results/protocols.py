"""Result protocols (``results/protocols/<name>.yaml``) and the cut of the data they ask for.

A protocol holds what sizes a table's runs: seeds, the cut of the sequential data (the last
``train_prefixes_per_user`` training rows per user, histories shortened to their last ``history_length`` items),
the RecBole settings of every run (widths, epochs, patience), per-table and pre-training settings, and one line of
justification per choice (``why``), printed above each table. The evaluation itself (split, candidates, metrics,
selection) belongs to the tables, not the protocols.
"""

import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import pandas as pd
import yaml

from recbole_mm.config import PROPERTIES_DIR
from recbole_mm.data.atomic_files import atomic_write, link_files, publish_dir
from recbole_mm.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PROTOCOL_DIR = os.path.join(PROPERTIES_DIR, "protocols")
KEYS = {
    "seeds": list,
    "train_prefixes_per_user": (int, type(None)),
    "history_length": (int, type(None)),
    "users": (int, type(None)),
    "settings": dict,
    "table_settings": dict,
    "pretrain_settings": dict,
    "why": dict,
    "hardware": str,
    "threads": (int, type(None)),
    "search": (dict, type(None)),
}
# the protocol's ``search`` block (see recbole_mm.results.search) and its defaults
SEARCH_DEFAULTS = {"trials": 8, "seed": 2020, "grace_period": 1, "reduction_factor": 2, "models": None}


@dataclass
class Protocol:
    """A loaded protocol file (see ``results/protocols/cpu.yaml`` for the meaning of every key)."""

    name: str
    path: str
    seeds: List[int]
    train_prefixes_per_user: Optional[int] = None
    history_length: Optional[int] = None
    users: Optional[int] = None
    settings: Dict = field(default_factory=dict)
    table_settings: Dict = field(default_factory=dict)
    pretrain_settings: Dict = field(default_factory=dict)
    why: Dict = field(default_factory=dict)
    hardware: str = ""
    threads: Optional[int] = None
    search: Optional[Dict] = None

    def run_settings(self, table_name: str, cut: bool, stage: str) -> Dict:
        """The protocol's RecBole settings for a run of ``table_name`` at ``stage``."""
        settings = dict(self.settings)
        settings.update(self.table_settings.get(table_name) or {})
        if stage == "pretrain":
            settings.update(self.pretrain_settings)
        if cut and self.history_length:
            settings["MAX_ITEM_LIST_LENGTH"] = self.history_length
        return settings


def protocol_path(name_or_path: str) -> str:
    if os.path.isfile(name_or_path):
        return name_or_path
    return os.path.join(PROTOCOL_DIR, f"{name_or_path}.yaml")


def load_protocol(name_or_path: str) -> Protocol:
    """Read ``results/protocols/<name>.yaml`` (or a path); unknown or mistyped keys are an error."""
    path = protocol_path(name_or_path)
    if not os.path.isfile(path):
        known = sorted(f[:-5] for f in os.listdir(PROTOCOL_DIR) if f.endswith(".yaml"))
        raise ConfigError(f"protocol {name_or_path!r}: no file {path}; known protocols: {known}")
    with open(path, encoding="utf-8") as f:
        content = yaml.safe_load(f) or {}
    for key, value in content.items():
        if key not in KEYS:
            raise ConfigError(f"{path}: unknown key {key!r}; expected keys: {sorted(KEYS)}")
        if not isinstance(value, KEYS[key]):
            raise ConfigError(f"{path}: key {key!r} expected {KEYS[key]}, found {type(value).__name__} {value!r}")
    if not content.get("seeds") or not all(isinstance(s, int) for s in content["seeds"]):
        raise ConfigError(f"{path}: 'seeds' must be a non-empty list of integers, found {content.get('seeds')!r}")
    unknown = sorted(set(content.get("search") or {}) - set(SEARCH_DEFAULTS))
    if unknown:
        raise ConfigError(f"{path}: unknown key(s) {unknown} under 'search'; expected keys: {sorted(SEARCH_DEFAULTS)}")
    name = os.path.splitext(os.path.basename(path))[0]
    return Protocol(name=name, path=path, **content)


def _history_tail(history: str, length: int) -> str:
    return " ".join(history.split(" ")[-length:])


def cut_dataset(
    source_data_path: str,
    data_path: str,
    name: str,
    prefixes_per_user: Optional[int],
    history_length: Optional[int],
    users: Optional[int] = None,
) -> str:
    """A copy of the pre-split dataset ``name`` under ``data_path``: every user's last ``prefixes_per_user``
    training rows (all if None), every history (train, valid, test) cut to its last ``history_length`` items (as
    is if None), only the users with index below ``users`` (all if None). Feature, index and preset files are
    hard-linked (copied across file systems). Built once into a temporary folder and renamed; an existing copy
    made with the same cut is reused (also one another runner published while this one was building). Returns
    the dataset folder."""
    source, target = os.path.join(source_data_path, name), os.path.join(data_path, name)
    cut = {"prefixes_per_user": prefixes_per_user, "history_length": history_length, "users": users}
    stamp = os.path.join(target, "cut.json")
    if os.path.isfile(stamp):
        with open(stamp, encoding="utf-8") as f:
            if json.load(f) == cut:
                return target
        raise ConfigError(f"{target}: a copy made with another cut ({stamp}); expected {cut}; delete the folder")
    if not os.path.isdir(source):
        raise ConfigError(f"dataset {name!r}: no folder {source}")
    os.makedirs(data_path, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", dir=data_path)
    try:
        link_files(source, tmp, keep=lambda entry: not entry.endswith(".inter"))
        for part in ("train", "valid", "test"):
            path = os.path.join(source, f"{name}.{part}.inter")
            if not os.path.isfile(path):
                continue
            frame = pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False)
            user, history = frame.columns[0], frame.columns[1]
            if not history.startswith("item_id_list"):
                raise ConfigError(f"{path}: expected the history field item_id_list second, found {history!r}")
            if users is not None:
                frame = frame[frame[user].astype(int) < users]
            if part == "train" and prefixes_per_user is not None:
                frame = frame.groupby(user, sort=False).tail(prefixes_per_user)
            if history_length is not None:
                frame[history] = frame[history].map(lambda h: _history_tail(h, history_length))
            with atomic_write(os.path.join(tmp, f"{name}.{part}.inter")) as f:
                frame.to_csv(f, sep="\t", index=False)
        with atomic_write(os.path.join(tmp, "cut.json")) as f:
            json.dump(cut, f)
        try:
            publish_dir(tmp, target)
        except OSError:
            if not os.path.isfile(stamp):
                raise
            shutil.rmtree(tmp, ignore_errors=True)  # another runner published the same cut first
            return cut_dataset(source_data_path, data_path, name, prefixes_per_user, history_length, users)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def prepared_data_path(protocol: Protocol, cut: bool, source_data_path: str, work_dir: str, names: List[str]) -> str:
    """The ``data_path`` the runs of a table read: ``source_data_path`` itself when nothing is cut, else a folder
    under ``work_dir`` holding the cut copies of ``names``."""
    prefixes = protocol.train_prefixes_per_user if cut else None
    history = protocol.history_length if cut else None
    if prefixes is None and history is None and protocol.users is None:
        return source_data_path
    folder = os.path.join(work_dir, "data", f"prefixes{prefixes}-history{history}-users{protocol.users}")
    for name in names:
        cut_dataset(source_data_path, folder, name, prefixes, history, protocol.users)
    return folder
