"""Hyperparameter sweep of a recbole_mm or RecBole model (Ray Tune or hyperopt); see the README,
"Hyperparameter sweeps".

python run_hyper.py --model=SASRec --dataset=ml-100k_mm --params_file=hyper/SASRec.hyper --num_samples=8
"""

import sys

from recbole_mm.tuning.cli import main

if __name__ == "__main__":
    sys.exit(main())
