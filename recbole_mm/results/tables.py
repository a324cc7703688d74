"""The result tables: each a list of rows (model + config overrides + stage), run per seed by
``python -m recbole_mm.results``.

How to add a row: append a :class:`Row` to a table's ``rows`` below, e.g.::

    Row("MyModel", "MyModel", {"some_key": 1}),                          # trained on the table's dataset
    Row("MyModel, pre-trained", "MyModel", {...}, stage="finetune", pretrained_from="MyModel pre-training"),

and run ``python -m recbole_mm.results --tables <table>``: only the new row's runs are run (recorded runs are
skipped). A ``stage="pretrain"`` row trains on its own ``dataset`` without validation; its checkpoint (one per
seed) is passed as ``pretrained_path`` to every ``stage="finetune"`` row naming it in ``pretrained_from``.
A new table is a :class:`Table` added to ``TABLES``. The overrides are RecBole settings: they win over the
protocol's (``results/protocols/<protocol>.yaml``) and the table's settings; keep them to what defines the row.
"""

import os
import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional

import yaml

from recbole_mm.errors import ConfigError

STAGES = ("train", "pretrain", "finetune")
_MODEL_PROPERTIES = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties", "model")
PRESETS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "properties", "props")


def slug(label: str) -> str:
    """A row label as a file-name stem (records, searches): lower case, runs of other characters as one ``-``."""
    return re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")


@dataclass(frozen=True)
class Row:
    """One row of a table: ``model`` trained with ``overrides`` on the table's dataset (or on ``dataset``).

    Attributes:
        label: the row's name in the table (unique in its table; records are named after it).
        model: recbole_mm or RecBole model name.
        overrides: RecBole settings of this row, over the protocol's and the table's.
        stage: ``train`` (train, validate, test), ``pretrain`` (train only, keep the checkpoint) or ``finetune``
            (as ``train``, starting from the checkpoint of the row ``pretrained_from``, same seed).
        pretrained_from: label of the ``pretrain`` row of the same table whose checkpoint this row starts from.
        dataset: the dataset of this row when it is not the table's (pre-training on another domain).
        config_files: preset files of the row (before the protocol's and the table's settings), relative to the
            repository root.
        note: one line shown under the table.
        tuned_from: label of a row of the same table whose searched values this row runs at instead of a search
            of its own (an ablation: the row with one part changed); that row is brought along.
    """

    label: str
    model: str
    overrides: Dict = field(default_factory=dict)
    stage: str = "train"
    pretrained_from: Optional[str] = None
    dataset: Optional[str] = None
    config_files: tuple = ()
    note: str = ""
    tuned_from: Optional[str] = None


@dataclass(frozen=True)
class Table:
    """A results table: rows run on ``dataset`` under the table's ``settings`` (evaluation protocol).

    Attributes:
        name: file name stem (``results/<name>.md``) and ``--tables`` key.
        title: heading of the markdown file.
        dataset: dataset of the rows (a row may name its own for pre-training).
        settings: RecBole settings every row of the table shares (evaluation protocol, data fields).
        rows: the rows, in table order.
        cut: the protocol's cut of training prefixes and history length applies (sequential data); the general
            table keeps every interaction.
        description: lines printed above the protocol block.
        plot_metric: test metric drawn as a bar chart (``results/<name>.png``), or None for no plot.
        metrics: test metric columns (lower-case RecBole names such as ``"ndcg@10"``), all at cut-offs of the
            table's ``topk``.
        reference_metrics: the same metrics at the cut-offs the reference evaluator reports under @10 / @50
            (``k + 1``), in a second block; empty for none.
    """

    name: str
    title: str
    dataset: str
    settings: Dict
    rows: List[Row]
    cut: bool = True
    description: List[str] = field(default_factory=list)
    plot_metric: Optional[str] = "ndcg@10"
    metrics: List[str] = field(default_factory=lambda: ["hit@10", "ndcg@10", "hit@50", "ndcg@50"])
    reference_metrics: List[str] = field(default_factory=lambda: ["hit@11", "ndcg@11", "hit@51", "ndcg@51"])

    def row(self, label: str) -> Row:
        for row in self.rows:
            if row.label == label:
                return row
        raise ConfigError(f"table {self.name!r}: no row {label!r}; rows: {[r.label for r in self.rows]}")

    def check(self) -> None:
        """Labels unique, stages known, every ``pretrained_from`` a pre-training row of this table."""
        labels = [r.label for r in self.rows]
        if len(set(labels)) != len(labels):
            raise ConfigError(f"table {self.name!r}: duplicate row labels in {labels}")
        for r in self.rows:
            if r.stage not in STAGES:
                raise ConfigError(f"table {self.name!r}, row {r.label!r}: stage must be one of {STAGES}, got {r.stage!r}")
            if (r.stage == "finetune") != (r.pretrained_from is not None):
                raise ConfigError(
                    f"table {self.name!r}, row {r.label!r}: a 'finetune' row needs pretrained_from, and only it "
                    f"(stage {r.stage!r}, pretrained_from {r.pretrained_from!r})"
                )
            if r.tuned_from is not None and (self.row(r.tuned_from).tuned_from or r.stage == "pretrain"):
                raise ConfigError(
                    f"table {self.name!r}, row {r.label!r}: tuned_from {r.tuned_from!r} must name a row that is "
                    f"tuned itself, from a row that trains"
                )
            if r.pretrained_from is not None and self.row(r.pretrained_from).stage != "pretrain":
                raise ConfigError(
                    f"table {self.name!r}, row {r.label!r}: pretrained_from {r.pretrained_from!r} is not a "
                    f"'pretrain' row"
                )


def model_default(model: str, key: str):
    """A model's default for ``key`` from ``recbole_mm/properties/model/<model>.yaml``."""
    with open(os.path.join(_MODEL_PROPERTIES, f"{model}.yaml"), encoding="utf-8") as f:
        return yaml.safe_load(f)[key]


# The search stage (recbole_mm.results.search): every searched row draws its learning rate from LEARNING_RATE and its
# model's knobs below (keys of the model's yaml) from their values; a model not listed here is not searched (Pop)
LEARNING_RATE = {"type": "loguniform", "low": 1e-4, "high": 1e-2}
KNOBS = {
    "BPR": {},
    "LightGCN": {"reg_weight": [1e-5, 1e-4, 1e-3]},
    "MMSSL": {"cl_rate": [0.01, 0.03, 0.1]},
    "GRU4Rec": {"dropout_prob": [0.1, 0.3, 0.5]},
    "SASRec": {"hidden_dropout_prob": [0.2, 0.5], "attn_dropout_prob": [0.2, 0.5]},
    "BERT4Rec": {"mask_ratio": [0.2, 0.4], "hidden_dropout_prob": [0.2, 0.5]},
    "MISSRec": {"hidden_dropout_prob": [0.2, 0.5]},
    "MMSRec": {"fusion_dropout": [0.2, 0.5], "contrastive_temperature": [0.05, 0.1]},
    "PMMRec": {"drop_rate": [0.1, 0.3]},
    "SEMINAR": {},
    "SIM": {},
    "ETA": {},
    "QIN": {},
    "TWIN": {},
}

# Every table: full ranking over all items, one group per user, HIT and NDCG at 10 and 50 and at 11 and 51 (the
# cut-offs the reference's evaluator reports under the names @10 and @50), model selection on valid NDCG@10.
EVALUATION = {
    "eval_args": {"order": "TO", "mode": "full", "group_by": "user"},
    "metrics": ["HIT", "NDCG"],
    "topk": [10, 11, 50, 51],
    "valid_metric": "NDCG@10",
}
SEQUENTIAL = dict(EVALUATION, train_neg_sample_args=None)  # CE over all items for every sequential model

# MISSRec rows pin the k-means variant, so a change of the model's default re-runs exactly the rows it concerns
KMEANS_FAITHFUL = bool(model_default("MISSRec", "kmeans_faithful"))
MISSREC_ID = {"train_stage": "transductive_ft", "kmeans_faithful": KMEANS_FAITHFUL}
MISSREC_NO_ID = {"train_stage": "inductive_ft", "kmeans_faithful": KMEANS_FAITHFUL}
OTHER_KMEANS = "faithful (one-pass minibatch) k-means" if not KMEANS_FAITHFUL else "Lloyd k-means"

# MMSRec and PMMRec at the protocol's widths (64, 2 heads, feed-forward 64); both rank history items too, as
# RecBole's sequential full sort does for every other row (PMMRec's reference masks them: mask_history)
MMSREC = {"fusion_embed_dim": 64, "fusion_heads": 2, "fusion_feedforward_dim": 64, "mask_history": False}
PMMREC = {"embedding_dim": 64, "fusion_heads": 2, "mask_history": False}

ABLATED = "MISSRec, ID"

SEQUENTIAL_TABLE = Table(
    name="sequential",
    title="Sequential recommendation on ml-100k_mm",
    dataset="ml-100k_mm",
    settings=SEQUENTIAL,
    rows=[
        Row("Pop", "Pop"),
        Row("GRU4Rec", "GRU4Rec"),
        Row("SASRec", "SASRec"),
        Row("BERT4Rec", "BERT4Rec"),
        Row("MISSRec, ID", "MISSRec", MISSREC_ID, note="with item ID embeddings (transductive_ft)"),
        Row("MISSRec, no ID", "MISSRec", MISSREC_NO_ID, note="features only (inductive_ft)"),
        Row("MMSRec", "MMSRec", MMSREC, note="features only; Cloze with a full softmax over the item tower"),
        Row("PMMRec", "PMMRec", PMMREC, note="features only; in-batch softmax with logQ correction"),
        # ablations: "MISSRec, ID" with one part changed, at its searched values
        Row(
            "MISSRec, ID, text only",
            "MISSRec",
            dict(MISSREC_ID, modal_type="text"),
            note="no genre features",
            tuned_from=ABLATED,
        ),
        Row(
            "MISSRec, ID, genres only",
            "MISSRec",
            dict(MISSREC_ID, modal_type="img"),
            note="no title features",
            tuned_from=ABLATED,
        ),
        # K = ceil(1e-4 x T) = 1 for ml-100k_mm's T = 2 modalities x 1,682 items
        Row(
            "MISSRec, ID, one interest",
            "MISSRec",
            dict(MISSREC_ID, interest_ratio=1e-4),
            note="K = 1",
            tuned_from=ABLATED,
        ),
        Row("MISSRec, ID, no regulariser", "MISSRec", dict(MISSREC_ID, gamma=0.0), note="gamma = 0",
            tuned_from=ABLATED),
        Row(
            f"MISSRec, ID, {OTHER_KMEANS}",
            "MISSRec",
            dict(MISSREC_ID, kmeans_faithful=not KMEANS_FAITHFUL),
            note="the other interest discovery (kmeans_faithful: %s)" % (not KMEANS_FAITHFUL),
            tuned_from=ABLATED,
        ),
    ],
    description=[
        "Next-item prediction from a user's history; RecBole's sequential baselines beside MISSRec (titles and "
        "genre descriptions as MiniLM features). The last five rows are MISSRec, ID with one part changed.",
    ],
)

GENERAL_TABLE = Table(
    name="general",
    title="General (collaborative filtering) recommendation on ml-100k_mm's interactions",
    dataset="ml-100k_mm",
    # the pre-split files read as (user, item) pairs: every training row's target is one training interaction
    settings=dict(EVALUATION, load_col={"inter": ["user_id", "item_id"]}, alias_of_item_id=None),
    rows=[
        Row("Pop", "Pop"),
        Row("BPR", "BPR"),
        Row("LightGCN", "LightGCN"),
        Row(
            "MMSSL",
            "MMSSL",
            {"train_batch_size": 8192},
            note="text and genre features; 12 batches of 8,192 interactions per epoch (each batch trains the "
            "item-wide critic on about 940 users' preference rows)",
        ),
    ],
    cut=False,
    description=[
        "The same users, items and leave-one-out split as the sequential table, without order: each training "
        "row's target is one (user, item) interaction (a user's first rating, which is only ever a history, is "
        "not among them). Items the user rated before are excluded from the ranking (RecBole's full sort).",
    ],
)

TRANSFER_TABLE = Table(
    name="transfer",
    title="Transfer: pre-trained on ml-100k_mm_A, fine-tuned on ml-100k_mm_B",
    dataset="ml-100k_mm_B",
    settings=SEQUENTIAL,
    rows=[
        Row(
            "MISSRec pre-training on A",
            "MISSRec",
            {"kmeans_faithful": KMEANS_FAITHFUL},
            stage="pretrain",
            dataset="ml-100k_mm_A",
            config_files=("props/MISSRec/pretrain.yaml",),
            note="train file of ml-100k_mm_A only, no validation",
        ),
        Row("SASRec", "SASRec"),
        Row("MISSRec, ID, from scratch", "MISSRec", MISSREC_ID),
        Row("MISSRec, no ID, from scratch", "MISSRec", MISSREC_NO_ID),
        Row(
            "MISSRec, ID, pre-trained",
            "MISSRec",
            MISSREC_ID,
            stage="finetune",
            pretrained_from="MISSRec pre-training on A",
        ),
        Row(
            "MISSRec, no ID, pre-trained",
            "MISSRec",
            MISSREC_NO_ID,
            stage="finetune",
            pretrained_from="MISSRec pre-training on A",
        ),
        Row(
            "MMSRec pre-training on A",
            "MMSRec",
            MMSREC,
            stage="pretrain",
            dataset="ml-100k_mm_A",
            config_files=("props/MMSRec/pretrain.yaml",),
            note="combinatorial loss on the target items of ml-100k_mm_A's train file",
        ),
        Row("MMSRec, from scratch", "MMSRec", MMSREC),
        Row("MMSRec, pre-trained", "MMSRec", MMSREC, stage="finetune", pretrained_from="MMSRec pre-training on A"),
        Row(
            "PMMRec pre-training on A",
            "PMMRec",
            dict(PMMREC, train_batch_size=64),
            stage="pretrain",
            dataset="ml-100k_mm_A",
            config_files=("props/PMMRec/pretrain.yaml",),
            note="next-item + NICL + NID + RCL (UNVERIFIED reconstructions), batch 64",
        ),
        Row("PMMRec, from scratch", "PMMRec", PMMREC),
        Row(
            "PMMRec, pre-trained",
            "PMMRec",
            PMMREC,
            stage="finetune",
            pretrained_from="PMMRec pre-training on A",
            note="pretrain_part item_encoder (the reference's default: user encoder re-initialised)",
        ),
    ],
    description=[
        "ml-100k_mm_A holds the movies with Drama or Romance among their genres, ml-100k_mm_B every other movie "
        "(disjoint items, the same users). Pre-training reads only A's train file; fine-tuning (PT1 recipe: "
        "position embedding and Transformer frozen) and from-scratch training use B's split.",
    ],
)

# Long-sequence target attention (SIM, ETA, QIN, TWIN, SEMINAR) on ml-100k_mm's long-sequence twin (whole histories):
# the family's protocol, read from its model properties (one definition: leave-one-out, the positive and 99 uniform
# negatives, RecBole's uni99; HIT / NDCG at 1, 5, 10, 50 and MRR; selection on valid NDCG@10).
LONGSEQ_EVALUATION = {key: model_default("TWIN", key) for key in ("eval_args", "metrics", "topk", "valid_metric")}
LONGSEQ_LENGTHS = (50, 100, 200)  # history length L of each block of rows
LONGSEQ_OBJECTIVE = model_default("TWIN", "objective")  # the family's default, chosen on validation
LONGSEQ_NEGATIVES = model_default("TWIN", "train_neg_sample_args")
LONGSEQ_QUERY_MODE = model_default("TWIN", "query_mode")
# 256 histories per step (RecBole counts one copy of a row per sampled negative); 256 users per evaluation batch;
# learning rate 0.005 for every row: at the protocol's 0.001 TWIN (L = 100) was still improving at the 20-epoch cap
LONGSEQ_RUN = {"eval_batch_size": 25600, "train_rows_per_user": 10, "learning_rate": 0.005}
SAMPLED = {"train_neg_sample_args": LONGSEQ_NEGATIVES, "train_batch_size": 256 * LONGSEQ_NEGATIVES["sample_num"]}
BCE_ONE = {"objective": "bce", "train_neg_sample_args": {"distribution": "uniform", "sample_num": 1}}
BCE_ONE["train_batch_size"] = 256


def longseq_rows(length: int) -> List[Row]:
    """The rows at history length ``length``: K = L / 2 as the reference's Amazon setting (K = 50 at L = 100),
    QIN's first stage K1 = 0.8 L (80 at 100)."""
    at = f"L={length}"
    family = {**LONGSEQ_RUN, **SAMPLED, "MAX_ITEM_LIST_LENGTH": length, "retrieve_topk": length // 2, "num_heads": 4}
    negatives = LONGSEQ_NEGATIVES["sample_num"]
    objective = f"objective {LONGSEQ_OBJECTIVE} ({negatives} negatives), query_mode {LONGSEQ_QUERY_MODE}"
    sasrec = dict(LONGSEQ_RUN, MAX_ITEM_LIST_LENGTH=length)
    return [
        Row(
            f"SASRec, full softmax, {at}",
            "LongSASRec",
            dict(sasrec, objective="full_softmax", loss_type="CE", train_neg_sample_args=None, train_batch_size=256),
            note="cross-entropy over all items (RecBole's SASRec); no queries",
        ),
        Row(
            f"SASRec, family objective, {at}",
            "LongSASRec",
            {**sasrec, **SAMPLED, "objective": LONGSEQ_OBJECTIVE, "loss_type": "BPR"},
            note=f"objective {LONGSEQ_OBJECTIVE} ({LONGSEQ_NEGATIVES['sample_num']} negatives); no queries",
        ),
        Row(f"SIM, {at}", "SIM", family, note=objective),
        Row(f"ETA, {at}", "ETA", family, note=objective),
        Row(f"QIN, {at}", "QIN", dict(family, qin_stage1_topk=length * 4 // 5), note=objective),
        Row(f"TWIN, {at}", "TWIN", family, note=objective),
        Row(
            f"TWIN, reference BCE, {at}",
            "TWIN",
            {**family, **BCE_ONE},
            note=f"objective bce (1 negative, the reference's), query_mode {LONGSEQ_QUERY_MODE}",
        ),
        Row(
            f"SEMINAR pre-training, {at}",
            "SEMINAR",
            {**family, "epochs": 5},
            stage="pretrain",
            config_files=("props/SEMINAR/pretrain.yaml",),
            note="PSU pre-training (next pair + 0.1 alignment + query-item) on the training rows, 5 epochs, the "
            "checkpoint of the best validation epoch kept",
        ),
        Row(
            f"SEMINAR, pre-trained, {at}",
            "SEMINAR",
            family,
            stage="finetune",
            pretrained_from=f"SEMINAR pre-training, {at}",
            config_files=("props/SEMINAR/finetune.yaml",),
            note=objective + "; fine-tuned from the PSU checkpoint, projections G frozen",
        ),
        Row(f"SEMINAR, from scratch, {at}", "SEMINAR", family, note=objective + "; no pre-training"),
    ]


LONGSEQ_TABLE = Table(
    name="longseq",
    title="Long-sequence target attention on MovieLens-100K with whole histories (1 positive + 99 sampled negatives)",
    dataset="ml-100k_mm_long",
    settings=LONGSEQ_EVALUATION,
    metrics=["hit@1", "hit@10", "ndcg@10", "hit@50", "ndcg@50", "mrr@50"],
    reference_metrics=[],
    cut=False,
    rows=[Row("Pop", "Pop", dict(LONGSEQ_RUN, train_neg_sample_args=None), note="popularity over every training rating (RecBole's Pop reads no train_rows_per_user)")]
    + [row for length in LONGSEQ_LENGTHS for row in longseq_rows(length)],
    description=[
        "`ml-100k_mm_long`: ml-100k_mm's users, items, features and leave-one-out targets, each history whole "
        "(mean 106, at most 735 earlier ratings), cut to the row's L; each user's last 10 training rows. Each "
        "rating's query is its movie's dummy query (the first five title words), as the SEMINAR reference builds "
        "Amazon's; the candidates' queries follow `query_mode` in training and evaluation alike (`recommendation`: "
        "none). Every model ranks the same 100 candidates per user, ties counted against the positive.",
    ],
)

COLDSTART_TABLE = Table(
    name="coldstart",
    title="Item cold start on ml-100k_mm_cold: ranking movies never seen in training",
    dataset="ml-100k_mm_cold",
    # validation and test targets are held-out movies; both rank only the held-out movies (eval_candidates)
    settings=dict(SEQUENTIAL, eval_candidates="cold_items", topk=[10], metrics=["HIT", "NDCG"]),
    rows=[
        Row("Pop", "Pop", note="every held-out movie has count 0: its order is the evaluator's tie order"),
        Row("SASRec", "SASRec", note="ID embeddings: a held-out movie's row is never trained"),
        Row("MISSRec, no ID", "MISSRec", MISSREC_NO_ID, note="features only (inductive_ft)"),
        Row(
            "MMSRec",
            "MMSRec",
            dict(MMSREC, train_candidates="seen"),
            note="features only; Cloze softmax over the movies seen in training",
        ),
        Row("PMMRec", "PMMRec", PMMREC, note="features only"),
    ],
    metrics=["hit@10", "ndcg@10"],
    reference_metrics=[],
    plot_metric="ndcg@10",
    description=[
        "A fifth of ml-100k_mm's movies (seed 2020) never occur in training, neither as a target nor in a history; "
        "each user's validation and test targets are their last two ratings of such a movie, with the history of "
        "their other ratings before it. Every model ranks the same candidates: the held-out movies only. A model "
        "that knows items by their features can score them; an ID model has never trained their rows.",
    ],
)

TABLES: Dict[str, Table] = {
    t.name: t for t in (SEQUENTIAL_TABLE, GENERAL_TABLE, TRANSFER_TABLE, LONGSEQ_TABLE, COLDSTART_TABLE)
}
for _table in TABLES.values():
    _table.check()
