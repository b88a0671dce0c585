#!/usr/bin/env bash
# The GPU check: on a machine with CUDA, run every gpu-flagged notebook test, then every pipeline
# stage on a Qwen3-4B-shaped fixture (d_model 2560, 163,840-feature bf16 transcoders; 8 of its 36
# layers by default, so the fixture fits a 64 GB disk and the check finishes in about 8 minutes) in
# bf16 on CUDA, printing per-stage wall time, peak resident memory and peak GPU memory.
#
#   bash bench/gpu_check.sh                 # needs the package installed (make venv, CUDA torch)
#   N_LAYERS=36 bash bench/gpu_check.sh     # the full depth (about 60 GB of transcoders)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
N_LAYERS=${N_LAYERS:-8}
ROOT=${ROOT:-${TMPDIR:-/tmp}/llm_biology_gpu_check}

# The package from this checkout when it is not installed (a bare GPU machine with its own torch).
"$PY" -c "import llm_biology" 2>/dev/null || export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"

"$PY" - <<'EOF'
import sys, torch
if not torch.cuda.is_available(): sys.exit("gpu_check: no CUDA device visible to torch (install the CUDA build of torch).")
p = torch.cuda.get_device_properties(0)
print(f"GPU: {p.name}, {p.total_memory / 2**30:.0f} GiB; torch {torch.__version__}, CUDA {torch.version.cuda}")
EOF

echo "== gpu-flagged notebook tests (the notebooks that hold a gpu cell)"
t0=$(date +%s)
NBT=$(dirname "$PY")/nbdev-test; [ -x "$NBT" ] || NBT=$(command -v nbdev-test || true)
GPU_NBS=$(grep -l '#| gpu' nbs/*.ipynb || true)
if [ -z "$NBT" ]; then
  echo "   skipped: nbdev-test is not installed (pip install 'nbdev>=3.3,<4', or make venv)"
else
  for nb in $GPU_NBS; do HF_HUB_OFFLINE=1 "$NBT" --path "$nb" --flags gpu --n-workers 1; done
fi
echo "   $(( $(date +%s) - t0 )) s"

echo "== every stage on a Qwen3-4B shape (${N_LAYERS} layers, 163,840 features), bf16 on CUDA"
"$PY" bench/bench_real_scale.py --size 4B --n-layers "$N_LAYERS" --device cuda --dtype bfloat16 \
  --n-prompts 2 --max-feature-nodes 4096 --corpus-size 512 --batch-size 16 --threads 8 --root "$ROOT"
