"""Train and test a recbole_mm or RecBole model.

    python run_recbole_mm.py                                  # the demo: ml-100k_mm, built on first use
    python run_recbole_mm.py --model=SASRec --dataset=ml-100k_mm --epochs=5
    python run_recbole_mm.py -m SASRec -d ml-100k_mm --config_files="props/a.yaml props/b.yaml"

Any ``--key=value`` is passed to RecBole's configuration (it overrides the config files). A dataset folder is looked
for in ``data_path`` (default ``dataset/``) and its ``downstream/`` and ``pretrain/`` sub-folders; pre-split files
(``<dataset>.train.inter``, ``.valid.inter``, ``.test.inter``) are recognised as such. Bad settings (a missing config
file, a value of the wrong type or out of range) end with one line on stderr and exit status 2, before any data is read.
"""

import argparse
import sys

DEMO_MODEL = "MISSRec"  # the best model recbole_mm offers on the demo so far
DEMO_DATASET = "ml-100k_mm"
DEMO_CONFIG = ["props/MISSRec/demo.yaml"]  # in the settings tree (recbole_mm/properties/), found by Config


def parse_args(argv):
    """``(model, dataset, config_files)``; with none of the three given, the demo's (other ``--key=value``
    settings still apply). A model or dataset left out here may come from the config files."""
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter, allow_abbrev=False
    )  # no abbreviations: --mod=X is a RecBole key, not --model
    parser.add_argument("--model", "-m", type=str, default=None, help="model name (default: the demo model)")
    parser.add_argument("--dataset", "-d", type=str, default=None, help="dataset name (default: ml-100k_mm)")
    parser.add_argument("--config_files", type=str, default=None, help="config files, separated by spaces")
    args, _ = parser.parse_known_args(argv)  # the rest (--key=value) is read by RecBole's Config
    if args.model is None and args.dataset is None and args.config_files is None:
        return DEMO_MODEL, DEMO_DATASET, DEMO_CONFIG
    return args.model, args.dataset, args.config_files.split() if args.config_files else None


def main(argv=None) -> int:
    model, dataset, config_files = parse_args(sys.argv[1:] if argv is None else argv)
    from recbole_mm import compat
    from recbole_mm.errors import RecBoleMMError

    compat.apply()
    from recbole_mm.config import Config
    from recbole_mm.quick_start import run_recbole_mm

    Config.command_line_is_settings = True  # every --key=value here is a setting: a misspelt name is an error

    try:
        result = run_recbole_mm(model=model, dataset=dataset, config_file_list=config_files)
    except RecBoleMMError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(f"\n{result['model']} on {result['dataset']}")
    for label, metrics in [("best valid", result["best_valid_result"]), ("test", result["test_result"])]:
        print(f"  {label:<10}  " + "  ".join(f"{name} {float(value):.4f}" for name, value in metrics.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
