"""MISSRec beside the reference code (gimpong/MM23-MISSRec, its RecBole-1.0.1 fork) on identical files.

Sub-commands::

    python bench/reference/missrec.py convert --dataset-dir dataset/ml-100k_mm --out ref_data --name ml100k_u200 \\
        --users 200
    python bench/reference/missrec.py reference --reference /path/to/MM23-MISSRec --data ref_data \\
        --name ml100k_u200 --seed 2020 --epochs 2 --out runs/ref.json [--stack installed] [--set key=value ...]
    python bench/reference/missrec.py ours --data ref_data --name ml100k_u200 --seed 2020 --epochs 2 \\
        --out runs/ours.json [--reference-compat] [--set key=value ...]

``convert`` copies a recbole_mm dataset folder in MISSRec's layout (``<name>.{train,valid,test}.inter`` with
``user_id item_id_list item_id``, ``.feat1CLS`` / ``.feat3CLS`` float32 features with their ``.json`` sidecars,
``.text``, ``.item2index``, ``.user2index``) to ``<out>/<name>/``, renamed, keeping the first ``--users`` users in
file order (all by default) and every item (feature rows are item tokens): the reference reads exactly this layout,
and so does recbole_mm.

``reference`` imports the checkout's own ``finetune.py`` unmodified (``runpy``, not as ``__main__``) and calls its
``finetune(dataset, pretrained_file='', props=<its props/MISSRec.yaml,props/finetune.yaml>, mode='transductive')``
with the settings below as its ``**kwargs`` (RecBole's ``config_dict``), in an output folder (its ``log/`` and
``saved/`` go there). ``--stack bundled`` (default) imports the checkout's own RecBole 1.0.1 fork, as its scripts
do; ``--stack installed`` imports the installed RecBole 1.2.1 first (the fork is then never imported) and passes
``train_neg_sample_args: None``, RecBole 1.2's name for the fork's ``neg_sampling: ~``. Stand-ins and patches
applied at run time, none of which changes a number it computes:

- ``cupy`` is a stand-in module (``memoize`` the identity decorator, ``cuda.Device().id`` 0): the bundled
  ``torchpq`` imports it at the top, but its ``MinibatchKMeans`` builds CUDA kernels only when
  ``torch.cuda.is_available()``, and otherwise runs its own torch CPU path, which is what runs here.
- ``numpy.float``, ``numpy.int``, ``numpy.bool``, ``numpy.long``, ``numpy.object``, ``numpy.str``,
  ``numpy.complex`` are set to the numpy types they aliased before numpy 1.24 (what RecBole 1.2.1's
  ``Config.compatibility_settings`` does): the fork's metrics call ``np.float``.
- ``torch.load`` defaults to ``weights_only=False``: the fork reloads its own best checkpoint (which holds its
  ``Config``) for the test, and torch >= 2.6 refuses that by default.
- The checkout's ``MISSRecTrainer._train_epoch`` and ``_valid_epoch`` are timed (wall and CPU seconds).

``ours`` runs recbole_mm's MISSRec through ``recbole_mm.quick_start.run_recbole_mm`` on the same folder, with
``recbole_mm/properties/dataset/ml-100k_mm.yaml`` (MISSRec's protocol: pre-split files, full ranking, HIT and NDCG
at 10 and 50, selection on NDCG@10) and the same settings. Settings of both sides (the reference's own
``props/finetune.yaml`` values where it has one, a CPU-sized width otherwise): ``hidden_size`` 64, ``inner_size``
64, ``n_heads`` 4, ``train_batch_size`` 512, ``eval_batch_size`` 1024, ``stopping_step`` 10, ``epochs``, ``seed``,
``plm_size`` / ``img_size`` from the feature sidecars; ``--set key=value`` (YAML value) adds or overrides.
"""

import argparse
import json
import os
import shutil
import sys
import time
import types

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from bench.reference.common import git_head, ours_record, run_record, write_json

PARTS = ("train", "valid", "test")
FILES = ("feat1CLS", "feat1CLS.json", "feat3CLS", "feat3CLS.json", "text", "item2index", "user2index")


# ----------------------------------------------------------------------------------------------------------- convert
def convert(args) -> None:
    src_name = args.source_name or os.path.basename(os.path.normpath(args.dataset_dir))
    target = os.path.join(args.out, args.name)
    os.makedirs(target, exist_ok=True)
    kept: dict[str, None] = {}
    rows = 0
    for part in PARTS:
        src = os.path.join(args.dataset_dir, f"{src_name}.{part}.inter")
        if not os.path.isfile(src):
            raise SystemExit(f"convert: {src} not found (expected pre-split <name>.train/valid/test.inter files)")
        with open(src, encoding="utf-8") as f, open(os.path.join(target, f"{args.name}.{part}.inter"), "w") as g:
            header = f.readline()
            fields = [h.split(":")[0] for h in header.rstrip("\n").split("\t")]
            if fields[:1] != ["user_id"] or not {"item_id_list", "item_id"} <= set(fields):
                raise SystemExit(f"convert: {src}: expected user_id, item_id_list, item_id columns, found {fields}")
            g.write(header)
            for line in f:
                user = line.split("\t", 1)[0]
                if part == "train" and user not in kept and (args.users is None or len(kept) < args.users):
                    kept[user] = None
                if user in kept:
                    g.write(line)
                    rows += part == "train"
    for suffix in FILES:
        src = os.path.join(args.dataset_dir, f"{src_name}.{suffix}")
        if not os.path.isfile(src):
            raise SystemExit(f"convert: {src} not found (MISSRec's layout needs .{suffix})")
        shutil.copyfile(src, os.path.join(target, f"{args.name}.{suffix}"))
    print(f"convert: {len(kept)} users, {rows} training rows -> {target}")


def feature_dims(folder: str, name: str) -> dict:
    out = {}
    for key, suffix in (("plm_size", "feat1CLS"), ("img_size", "feat3CLS")):
        path = os.path.join(folder, name, f"{name}.{suffix}.json")
        with open(path) as f:
            meta = json.load(f)
        if "dim" not in meta:
            raise SystemExit(f"{path}: no 'dim' key (found {sorted(meta)})")
        out[key] = int(meta["dim"])
    return out


def settings_of(args) -> dict:
    import yaml

    settings = {
        "data_path": os.path.abspath(args.data),
        "seed": args.seed,
        "epochs": args.epochs,
        "hidden_size": 64,
        "inner_size": 64,
        "n_heads": 4,
        "train_batch_size": 512,
        "eval_batch_size": 1024,
        "stopping_step": 10,
        "show_progress": False,
        **feature_dims(args.data, args.name),
    }
    for item in args.set or []:
        key, _, value = item.partition("=")
        settings[key] = yaml.safe_load(value)
    return settings


# --------------------------------------------------------------------------------------------------------- reference
def reference_stand_ins() -> None:
    """The run-time stand-ins listed in the module docstring (cupy, numpy aliases, ``torch.load``)."""
    import numpy as np
    import torch

    cupy = types.ModuleType("cupy")
    cupy.memoize = lambda *a, **k: (lambda f: f)
    cupy.cuda = types.SimpleNamespace(Device=lambda *a: types.SimpleNamespace(id=0))

    def missing(name):
        raise AttributeError(f"cupy stand-in: cupy.{name} is GPU-only and not available")

    cupy.__getattr__ = missing
    sys.modules["cupy"] = cupy
    aliases = {"float": np.float64, "int": np.int_, "bool": np.bool_, "long": np.int_, "object": np.object_,
               "str": np.str_, "complex": np.complex128}
    for key, value in aliases.items():
        if key not in np.__dict__:
            setattr(np, key, value)
    load = torch.load

    def trusted_load(*a, **k):
        k.setdefault("weights_only", False)  # the run's own checkpoint
        return load(*a, **k)

    torch.load = trusted_load


def run_reference(args) -> None:
    import runpy

    import torch

    code = os.path.abspath(args.reference)
    script = os.path.join(code, "finetune.py")
    if not os.path.isfile(script):
        raise SystemExit(f"reference: {script} not found (--reference is the root of an MM23-MISSRec checkout)")
    torch.set_num_threads(args.threads)
    args.out = os.path.abspath(args.out)
    settings = settings_of(args)
    reference_stand_ins()
    if args.stack == "installed":
        import recbole  # noqa: F401  (the installed RecBole, imported before the checkout is on the path)

        settings["train_neg_sample_args"] = None
    sys.path.insert(0, code)
    out_dir = os.path.splitext(args.out)[0] + "_output"
    os.makedirs(out_dir, exist_ok=True)
    os.chdir(out_dir)  # the reference writes log/ and saved/ under the working folder
    import trainer as ref_trainer  # the checkout's trainer.py (finetune.py imports it)

    times = {"train_wall": [], "train_cpu": [], "valid_wall": [], "valid_cpu": []}
    cls = ref_trainer.MISSRecTrainer
    for method, key in (("_train_epoch", "train"), ("_valid_epoch", "valid")):
        original = getattr(cls, method)

        def timed(self, *a, _original=original, _key=key, **k):
            w, c = time.perf_counter(), time.process_time()
            out = _original(self, *a, **k)
            times[f"{_key}_wall"].append(time.perf_counter() - w)
            times[f"{_key}_cpu"].append(time.process_time() - c)
            return out

        setattr(cls, method, timed)
    module = runpy.run_path(script, run_name="missrec_reference")
    props = ",".join(os.path.join(code, "props", f) for f in ("MISSRec.yaml", "finetune.yaml"))
    t0 = time.perf_counter()
    _, _, result = module["finetune"](args.name, pretrained_file="", props=props, mode="transductive", **settings)
    total = time.perf_counter() - t0
    import recbole

    stack = f"{args.stack} (recbole {recbole.__version__})"
    record = run_record(
        "reference", args, settings, result, times, total, reference_commit=git_head(code), stack=stack
    )
    write_json(args.out, record)
    print(json.dumps({k: record[k] for k in ("test", "epochs_run", "stack")}, indent=1))


# -------------------------------------------------------------------------------------------------------------- ours
def run_ours(args) -> None:
    import torch

    from bench.reference.mmssl import timed_trainer_patch
    from recbole_mm.quick_start import run_recbole_mm

    torch.set_num_threads(args.threads)
    times = {"train_wall": [], "train_cpu": [], "valid_wall": []}
    timed_trainer_patch(times)
    settings = settings_of(args)
    settings.update(reference_compat=args.reference_compat, checkpoint_dir=args.checkpoint_dir)
    preset = os.path.join(
        os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
        "recbole_mm", "properties", "dataset", "ml-100k_mm.yaml",
    )
    t0 = time.perf_counter()
    result = run_recbole_mm("MISSRec", args.name, [preset], settings)
    total = time.perf_counter() - t0
    out = ours_record(args, settings, result, times, total, model="MISSRec")
    write_json(args.out, out)
    print(json.dumps({k: out[k] for k in ("test", "epochs_run", "train_epoch_wall_s")}, indent=1))


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert", help="a recbole_mm dataset folder in MISSRec's layout, renamed and sliced")
    c.add_argument("--dataset-dir", required=True)
    c.add_argument("--source-name", default=None, help="the source folder's dataset name (default: folder name)")
    c.add_argument("--out", required=True, help="data_path of both sides (the dataset goes to <out>/<name>)")
    c.add_argument("--name", required=True)
    c.add_argument("--users", type=int, default=None, help="keep the first N users (file order)")
    for name, helptext in (("reference", "run the checkout's finetune.py"), ("ours", "run recbole_mm's MISSRec")):
        p = sub.add_parser(name, help=helptext)
        if name == "reference":
            p.add_argument("--reference", required=True, help="root of a gimpong/MM23-MISSRec checkout")
            p.add_argument("--stack", choices=["bundled", "installed"], default="bundled",
                           help="the checkout's RecBole 1.0.1 fork (default) or the installed RecBole")
        else:
            p.add_argument("--reference-compat", action="store_true")
            p.add_argument("--checkpoint-dir", default="saved/reference_bench")
        p.add_argument("--data", required=True, help="the converter's --out")
        p.add_argument("--name", required=True)
        p.add_argument("--seed", type=int, default=2020)
        p.add_argument("--epochs", type=int, default=300)
        p.add_argument("--set", action="append", help="extra setting key=value (YAML value), both sides")
        p.add_argument("--threads", type=int, default=1)
        p.add_argument("--out", required=True)
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    {"convert": convert, "reference": run_reference, "ours": run_ours}[args.cmd](args)


if __name__ == "__main__":
    main()
