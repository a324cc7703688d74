"""Steps shared by every ``prepare`` subcommand: k-core filtering, chronological sequences, the
skip report, and writing a pre-split dataset without overwriting a different one.

Policy for bad input (documented in ``dataset/README.md``): rows that cannot be parsed, duplicates
and rows whose item has no metadata are skipped and counted; every count (with the first few
examples) appears in one summary line per step. Anything that would overwrite a different dataset, or
a file a user made, is an error instead.
"""

import contextlib
import json
import os
import shutil
import tempfile
from collections import OrderedDict
from typing import Dict, List, Optional, Sequence, Tuple

import pandas as pd

from recbole_mm.data.atomic_files import (
    atomic_write,
    leave_one_out,
    publish_dir,
    write_index_file,
    write_inter_files,
)
from recbole_mm.errors import RecBoleMMError

MAX_HISTORY = 50
TEXT_HEADER = "item_id:token\ttext:token_seq\n"


class PrepareError(RecBoleMMError):
    """Raw input that cannot be turned into a dataset, or an output that would overwrite another one."""


class SkipReport:
    """Counts of skipped rows / items / images per reason, with the first few examples of each.

    Example:
        >>> report = SkipReport("amazon Scientific")
        >>> report.skip("corrupt JSON lines", "line 7")
        >>> report.line()
        'amazon Scientific: skipped 1 corrupt JSON lines (line 7)'
    """

    def __init__(self, what: str, examples: int = 3):
        self.what = what
        self.examples = examples
        self.counts: "OrderedDict[str, int]" = OrderedDict()
        self.samples: Dict[str, List[str]] = {}
        self.facts: List[str] = []

    def skip(self, reason: str, example: Optional[str] = None, count: int = 1) -> None:
        """Record ``count`` skipped things for ``reason``."""
        if count <= 0:
            return
        self.counts[reason] = self.counts.get(reason, 0) + count
        if example is not None and len(self.samples.setdefault(reason, [])) < self.examples:
            self.samples[reason].append(str(example))

    def merge(self, saved: Dict[str, Tuple[int, List[str]]]) -> None:
        """Add counts saved by :meth:`as_dict` (e.g. from a chunk finished in an earlier run)."""
        for reason, (count, samples) in saved.items():
            self.skip(reason, None, count)
            room = self.examples - len(self.samples.setdefault(reason, []))
            self.samples[reason].extend(samples[:room])

    def as_dict(self) -> Dict[str, Tuple[int, List[str]]]:
        """``{reason: (count, examples)}``, JSON-serialisable."""
        return {reason: (count, self.samples.get(reason, [])) for reason, count in self.counts.items()}

    def note(self, fact: str) -> None:
        """Record a fact (kept counts, filter rounds) for the summary line."""
        self.facts.append(fact)

    def line(self) -> str:
        """One line: facts, then every skip count with its examples."""
        parts = list(self.facts)
        for reason, count in self.counts.items():
            sample = self.samples.get(reason)
            parts.append(
                f"skipped {count:,} {reason}"
                + (f" ({', '.join(sample)}{', ...' if count > len(sample) else ''})" if sample else "")
            )
        return f"{self.what}: " + ("; ".join(parts) if parts else "nothing skipped")


def k_core(
    inter: pd.DataFrame, k: int, report: SkipReport, user: str = "user_id", item: str = "item_id"
) -> pd.DataFrame:
    """Keep the largest sub-table in which every user and every item has at least ``k`` rows.

    Removing a user can push an item below ``k`` and the reverse, so users and items are filtered in
    turn until neither changes (a fixed point).
    """
    if k <= 1:
        return inter
    rounds = 0
    n_users, n_items = inter[user].nunique(), inter[item].nunique()
    while True:
        user_counts = inter[user].map(inter[user].value_counts())
        item_counts = inter[item].map(inter[item].value_counts())
        keep = (user_counts >= k) & (item_counts >= k)
        if keep.all():
            break
        inter = inter[keep]
        rounds += 1
    report.note(
        f"{k}-core in {rounds} round(s) removed {n_users - inter[user].nunique():,} users and "
        f"{n_items - inter[item].nunique():,} items"
    )
    return inter


def drop_short_users(inter: pd.DataFrame, report: SkipReport, minimum: int = 3) -> pd.DataFrame:
    """Leave-one-out needs ``minimum`` interactions per user; fewer (possible only when k < 3) are dropped."""
    counts = inter["user_id"].map(inter["user_id"].value_counts())
    short = counts < minimum
    report.skip(
        f"users with fewer than {minimum} interactions (leave-one-out needs {minimum})",
        None,
        int(inter.loc[short, "user_id"].nunique()),
    )
    return inter[~short]


def index_text(raw_ids: Sequence[str]) -> str:
    """Contents of an ``.item2index`` / ``.user2index`` file (the format of ``write_index_file``)."""
    return "".join(f"{raw}\t{i}\n" for i, raw in enumerate(raw_ids))


def check_same_dataset(directory: str, files: Dict[str, str]) -> bool:
    """True when ``directory`` already holds exactly these index files; False when it holds none of them.

    Raises:
        PrepareError: the directory holds a different dataset under the same names.
    """
    present = [name for name in files if os.path.isfile(os.path.join(directory, name))]
    if not present:
        return False
    for name in files:
        path = os.path.join(directory, name)
        found = open(path, encoding="utf-8").read() if os.path.isfile(path) else None
        if found != files[name]:
            raise PrepareError(
                f"{directory} already holds a different dataset: {path} "
                f"{'is missing' if found is None else 'differs from the one this run produces'} "
                f"(other inputs or options). Choose another --name or --data-path, or remove the directory."
            )
    return True


def write_text_file(path: str, item_ids: Sequence[str], texts: Sequence[Optional[str]]) -> None:
    """``<name>.text``: ``item_id:token  text:token_seq``, an empty text where an item has none."""
    with atomic_write(path) as f:
        f.write(TEXT_HEADER)
        f.writelines(f"{raw}\t{text or ''}\n" for raw, text in zip(item_ids, texts))


def read_text_file(path: str) -> Dict[str, str]:
    """``raw item id -> text`` from a ``.text`` file (empty texts kept as ``""``)."""
    texts = {}
    with open(path, encoding="utf-8") as f:
        header = f.readline()
        if header != TEXT_HEADER:
            raise PrepareError(f"{path}: expected the header {TEXT_HEADER!r}, found {header!r}")
        for number, line in enumerate(f, start=2):
            raw, sep, text = line.rstrip("\n").partition("\t")
            if not sep:
                raise PrepareError(f"{path} line {number}: expected 'item_id<TAB>text', found {line[:80]!r}")
            texts[raw] = text
    return texts


def read_index_file(path: str) -> List[str]:
    """Raw ids in index order from an ``.item2index`` / ``.user2index`` file."""
    if not os.path.isfile(path):
        raise PrepareError(f"index file {path} does not exist (prepare the dataset first)")
    raw_ids = []
    with open(path, encoding="utf-8") as f:
        for number, line in enumerate(f, start=1):
            raw, sep, index = line.rstrip("\n").partition("\t")
            if not sep or index != str(number - 1):
                raise PrepareError(f"{path} line {number}: expected '<raw id><TAB>{number - 1}', found {line[:80]!r}")
            raw_ids.append(raw)
    return raw_ids


def domain_files(name: str, user_ids, item_ids) -> Dict[str, str]:
    """Index files of one domain, as ``{file name: contents}``."""
    return {f"{name}.user2index": index_text(user_ids), f"{name}.item2index": index_text(item_ids)}


def write_domain(directory: str, name: str, user_ids, item_ids, texts) -> None:
    """Index and text files of one domain (``<name>.user2index``, ``.item2index``, ``.text``)."""
    write_index_file(os.path.join(directory, f"{name}.user2index"), user_ids)
    write_index_file(os.path.join(directory, f"{name}.item2index"), item_ids)
    write_text_file(os.path.join(directory, f"{name}.text"), item_ids, texts)


def prefix_rows(rows, k: int):
    """Multi-domain tokens: every user and item index ``i`` of domain ``k`` becomes ``"k-i"``."""
    return [(f"{k}-{u}", [f"{k}-{i}" for i in hist], f"{k}-{t}") for u, hist, t in rows]


def start_dataset_dir(data_path: str, name: str, expected: Dict[str, str]) -> Optional[str]:
    """A temporary work folder beside ``<data_path>/<name>`` for writing dataset ``name`` (published later with
    ``publish_dir``), or None when that folder already holds this dataset (``expected`` files, as
    :func:`check_same_dataset` compares them).

    Raises:
        PrepareError: the folder exists, is not empty and holds another dataset.
    """
    target = os.path.join(data_path, name)
    if os.path.isdir(target) and check_same_dataset(target, expected):
        return None
    if os.path.exists(target) and os.listdir(target):
        raise PrepareError(
            f"{target} exists and is not empty, but holds no dataset '{name}'; choose another --name or remove it"
        )
    os.makedirs(data_path, exist_ok=True)
    return tempfile.mkdtemp(prefix=f".{name}.", dir=data_path)


@contextlib.contextmanager
def publishing(work: str, target: str):
    """Write a dataset into the work folder of :func:`start_dataset_dir` inside the block; on leaving it, the work
    folder replaces ``target`` (an empty folder, checked there) in one rename, or is removed if the block failed."""
    try:
        yield work
        if os.path.isdir(target):
            os.rmdir(target)
        publish_dir(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise


def write_dataset(data_path: str, name: str, domains: List[dict], max_history: int = MAX_HISTORY) -> Tuple[str, bool]:
    """Write a pre-split dataset ``<data_path>/<name>/``, or confirm an identical one is there.

    Args:
        domains: one dict per domain with ``name``, ``sequences``, ``user_ids``, ``item_ids``, ``texts``.
            One domain: the single-domain layout (``<name>.*`` files, plain index tokens). Several: the
            multi-domain pre-training layout (``<name>.pt_datasets`` listing the domains, ``"k-i"``
            tokens in ``<name>.{train,valid,test}.inter``, per-domain ``<domain>.*`` index/text files).

    Returns:
        ``(directory, reused)``; ``reused`` is True when the directory already held this dataset.

    Raises:
        PrepareError: the directory holds a different dataset.
    """
    target = os.path.join(data_path, name)
    single = len(domains) == 1
    file_names = {d["name"]: (name if single else d["name"]) for d in domains}
    expected = {}
    for d in domains:
        expected.update(domain_files(file_names[d["name"]], d["user_ids"], d["item_ids"]))
    if not single:
        expected[f"{name}.pt_datasets"] = ",".join(d["name"] for d in domains) + "\n"
    work = start_dataset_dir(data_path, name, expected)
    if work is None:
        return target, True
    with publishing(work, target):
        merged = {"train": [], "valid": [], "test": []}
        for k, d in enumerate(domains):
            splits = leave_one_out(d["sequences"], max_history)
            for part, rows in splits.items():
                merged[part].extend(rows if single else prefix_rows(rows, k))
            write_domain(work, file_names[d["name"]], d["user_ids"], d["item_ids"], d["texts"])
        write_inter_files(work, name, merged)
        if not single:
            with atomic_write(os.path.join(work, f"{name}.pt_datasets")) as f:
                f.write(expected[f"{name}.pt_datasets"])
    return target, False


MODALITY_OF_SUFFIX = {
    "feat1CLS": "text",
    "feat2CLS": "text_aug",
    "feat3CLS": "image",
    "t_feat": "text",
    "v_feat": "image",
}
SEQUENTIAL_PRESET = """\
# Written by python -m recbole_mm.prepare: how to load this dataset (pass it with --config_files).
data_path: {data_path}
benchmark_filename: [train, valid, test]   # (list) Pre-split files <dataset>.<part>.inter.
{sequential}load_col:                                  # (dict) Fields read from each atomic file.
  inter: [{fields}]
{features}"""


def write_config(directory: str, name: str, sequential: bool = True) -> str:
    """Write ``<directory>/<name>.yaml``: the config keys that load this dataset, with the feature dims
    read from the sidecars of the feature files present (the first domain's in a multi-domain set)."""
    domains = []
    pt = os.path.join(directory, f"{name}.pt_datasets")
    if os.path.isfile(pt):
        with open(pt, encoding="utf-8") as f:
            domains = f.read().strip().split(",")
    prefix = domains[0] if domains else name
    lines, dims = [], {}
    for suffix, modality in MODALITY_OF_SUFFIX.items():
        sidecar = os.path.join(directory, f"{prefix}.{suffix}.json")
        if os.path.isfile(sidecar):
            with open(sidecar, encoding="utf-8") as f:
                dims[modality] = json.load(f)["dim"]
            lines.append(f"  {modality}: {{suffix: {suffix}, dim: {dims[modality]}}}\n")
    features = (
        ("mm_features:                               # (dict) Modality name -> {suffix, dim}.\n" + "".join(lines))
        if lines
        else ""
    )
    # MISSRec/UniSRec key names: their model defaults (512) must not override the real widths
    for key, modality in (("plm_size", "text"), ("img_size", "image")):
        if modality in dims:
            features += (
                f"{key}: {dims[modality]}".ljust(43) + f"# (int) Width of the {modality} features (MISSRec's key).\n"
            )
    text = SEQUENTIAL_PRESET.format(
        data_path=os.path.dirname(os.path.abspath(directory)),
        sequential=(
            "alias_of_item_id: [item_id_list]           # (list) Histories share the item id space.\n"
            if sequential
            else ""
        ),
        fields="user_id, item_id_list, item_id" if sequential else "user_id, item_id",
        features=features,
    )
    path = os.path.join(directory, f"{name}.yaml")
    with atomic_write(path) as f:
        f.write(text)
    return path
