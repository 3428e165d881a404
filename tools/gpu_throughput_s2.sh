#!/usr/bin/env bash
# Issue #9, session 2: one GPU call (~250 s on an H200) measuring the split prefill attention and the decode fix.
#
#   0. tests      the CUDA tests of the prefill attention paths (when pytest is installed)
#   1. attention  results/reference/throughput-attention-bench.py: every chunked-prefill attention path at the 4-layer
#                 slice's shape (256k tokens in 4096-token chunks, 64 query / 8 key-value heads of 128), TFLOP/s and
#                 error, one causal SDPA call over 256k (transformers' way), single kernels at the last chunk, and
#                 the whole (small) model prefilled through each path against one forward
#   2. slice      4 layers of minimax-text-01 (25B parameters, random bf16 weights): ours with the split and the masked
#                 prefill attention, then transformers', prefill 64k and 256k, decode ×1 and ×64 (needs an H200:
#                 transformers' 256k prefill takes ~106 GB)
#   3. arch       `small` cut to 8 layers, hybrid / lightning / softmax, prefill and decode ×1 and ×64 at 16k and
#                 256k: the decode fix (decode attention kept off cuDNN) re-measured
#
# Each step has a time budget (no new measurement starts after it) and a hard timeout (SIGINT: records so far are
# kept). Writes three files under $OUT: log.txt, attention.json and runs.tar.gz (the run directories of 2 and 3).
# Usage, from the repository root on the GPU machine:
#   source tools/device_env.sh; MMX_COMMIT=<commit> bash tools/gpu_throughput_s2.sh
set -uo pipefail
: "${OUT:?set OUT to the folder that comes back}"
export PYTHONUNBUFFERED=1
runs=$(mktemp -d)

step() {  # step NAME TIMEOUT_S COMMAND...: markers on stderr, so they survive a caller's stdout redirection
  local name=$1 limit=$2
  shift 2
  echo "=== $name: $* ($(date -u +%FT%TZ))" >&2
  timeout --signal=INT --kill-after=20 "$limit" "$@"
  echo "=== $name: exit $? ($(date -u +%FT%TZ))" >&2
}

bench() {  # bench NAME TIMEOUT_S BUDGET_S ARGS...: `mmx bench throughput` into $runs/NAME, one log line a record
  local name=$1 limit=$2 budget=$3
  shift 3
  step "$name" "$limit" mmx bench throughput "$@" --budget "$budget" --out "$runs/$name" --json >/dev/null
}

main() {
  echo "gpu_throughput_s2 at $(date -u +%FT%TZ), source commit ${MMX_COMMIT:-unknown}"
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  python3 -c 'import torch, triton, transformers as t; print("torch", torch.__version__, "cuDNN",
    torch.backends.cudnn.version(), "triton", triton.__version__, "transformers", t.__version__)'
  if python3 -m pytest --version >/dev/null 2>&1; then
    step tests 30 python3 -m pytest -q -p no:cacheprovider -m gpu tests/model/test_chunk_attention.py
  fi
  step attention 60 python3 results/reference/throughput-attention-bench.py --out "$OUT/attention.json"
  bench slice 95 70 --model random:minimax-text-01 --layers 4 --compare-transformers \
    --prefill-attention split,masked --lengths 64k,256k --batch-sizes 1,64
  bench arch 45 28 --model random:small --layers 8 --arch hybrid,lightning,softmax --lengths 16k,256k \
    --batch-sizes 1,64
  tar -czf "$OUT/runs.tar.gz" -C "$runs" .
  echo "=== done ($(date -u +%FT%TZ)): $(ls "$OUT")"
}

main 2>&1 | tee "$OUT/log.txt"
