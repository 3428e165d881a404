#!/usr/bin/env bash
# Lightning-attention kernels on one GPU, in one device call (issue #3, session 2). Steps, each under its own
# timeout inside a total budget, writing three files to $OUT:
#   1. the kernel test suite on the GPU (bf16/fp16, head dims 64/128, the 1M-token checks) -> kernels-gpu-tests.log
#      meanwhile, in the background, the sweep's candidates and fla's autotuning configs are compiled in parallel
#      (python3 -m benchmarks.kernels.sweep --compile-only; python3 -m benchmarks.kernels.precompile), so neither the sweep nor
#      the bench's first fla call waits minutes on the compiler
#   2. the forward tuning sweep at T = 1M and 4M (H=8, D=128, bf16; python3 -m benchmarks.kernels.sweep), once the GPU is
#      quiet; its winner goes to step 3 through MMX_KERNEL_CONFIG                         -> kernels-run.log
#   3. mmx bench kernels, the full default sweep, with that config (progress and tables also to kernels-run.log)
#                                                                                         -> kernels-bench.json
# A step cut short keeps what it finished: pytest prints each result as it comes, the sweep prints a line per
# candidate, the bench rewrites its JSON after every record (the targets are then computed from those records).
#
# Usage, from the repository root on the GPU machine (BUDGET_S: seconds for all steps, default 225):
#   source tools/device_env.sh; bash tools/gpu_kernels_s2.sh
set -uo pipefail
: "${OUT:?set OUT to the folder the results go to}"
export PYTHONUNBUFFERED=1
budget=${BUDGET_S:-225}
t0=$(date +%s)
tests_log=$OUT/kernels-gpu-tests.log
run_log=$OUT/kernels-run.log
bench_json=$OUT/kernels-bench.json
winner=$(mktemp)
compile_log=$(mktemp)
commit=$(git rev-parse --short HEAD 2>/dev/null || echo "${MMX_GIT_COMMIT:-unknown}")

left() { echo $((budget - ($(date +%s) - t0))); }
# cap SECONDS RESERVE: at most SECONDS, and never into the RESERVE the later steps need
cap() {
  local room=$(($(left) - $2))
  echo $((room < $1 ? (room < 10 ? 10 : room) : $1))
}
header() {
  echo "$(date -u +%FT%TZ)  commit $commit  $*"
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
}
elapsed() { echo "$(($(date +%s) - t0)) s"; }

header "tools/gpu_kernels_s2.sh, budget ${budget}s" >"$run_log"

# 1. tests (the interpreter cases skip themselves where CUDA is present). Alongside, on the CPU, the sweep's
#    candidates and fla's autotuning configs compile into Triton's disk cache (their GPU use is light).
python3 -m benchmarks.kernels.precompile --parts 8 --timeout 70 >"$compile_log" 2>&1 &
compiling=($!)
timeout -k 5 80 python3 -m benchmarks.kernels.sweep --compile-only --workers 8 >>"$compile_log" 2>&1 &
compiling+=($!)
limit=$(cap 75 130)
pytest=(python3 -m pytest -v -rfE -p no:cacheprovider)
if python3 -c "import xdist" 2>/dev/null; then
  {
    header "${pytest[*]} -n 8 tests/kernels (timeout ${limit}s)"
    timeout -k 10 "$limit" "${pytest[@]}" -n 8 tests/kernels
    echo "pytest exit $? after $(elapsed)"
  } >"$tests_log" 2>&1
else  # no pytest-xdist here: four pytest processes over disjoint parts, so their compiling runs side by side
  logs=() pids=() commands=()
  part() {
    logs+=("$(mktemp)")
    commands+=("${pytest[*]} $*")
    (timeout -k 10 "$limit" "${pytest[@]}" "$@"; echo "pytest exit $? after $(elapsed)") >"${logs[-1]}" 2>&1 &
    pids+=($!)
  }
  part tests/kernels/test_triton.py -k test_forward
  part tests/kernels/test_triton.py -k test_backward
  part tests/kernels/test_triton.py -k "not test_forward and not test_backward"
  part $(ls tests/kernels/test_*.py | grep -v /test_triton.py)
  wait "${pids[@]}"
  for i in "${!logs[@]}"; do
    header "${commands[$i]} (timeout ${limit}s)"
    cat "${logs[$i]}"
  done >"$tests_log" 2>&1
  rm -f "${logs[@]}"
fi
tail -n 3 "$tests_log"
wait "${compiling[@]}"
{ echo "compiled ahead, done after $(elapsed):"; cat "$compile_log"; } | tee -a "$run_log"

# 2. sweep (the GPU is quiet now): the floor at the datasheet bandwidth, as mmx bench kernels quotes it
bandwidth=$(python3 -c "import torch; from mmx.workflows.bench.peaks import datasheet_peaks as d; \
p = d(torch.cuda.get_device_name()); print(p[1] if p else '')" 2>/dev/null)
limit=$(cap 60 95)
start_by=$((limit - 15 > limit / 2 ? limit - 15 : limit / 2))  # no new candidate after this; one takes a few s
{
  header "python3 -m benchmarks.kernels.sweep --lengths 1048576,4194304 ${bandwidth:+--bandwidth $bandwidth} --budget $start_by --workers 0"
  timeout -k 10 "$limit" python3 -m benchmarks.kernels.sweep --lengths 1048576,4194304 ${bandwidth:+--bandwidth "$bandwidth"} \
    --budget "$start_by" --workers 0 --emit "$winner"
  echo "sweep exit $? after $(elapsed)"
} 2>&1 | tee -a "$run_log"

# 3. bench with the winner (the built-in defaults when the sweep picked none)
config=$(cat "$winner" 2>/dev/null)
limit=$(cap 600 10)
{
  header "MMX_KERNEL_CONFIG='${config:-}' mmx bench kernels --out $bench_json (timeout ${limit}s)"
  MMX_KERNEL_CONFIG=${config:-} timeout --signal=INT -k 15 "$limit" mmx bench kernels --out "$bench_json"
  echo "bench exit $? after $(elapsed)"
  # record the config's source, and the targets if the bench was stopped before it computed them
  [ -s "$bench_json" ] && MMX_KERNEL_CONFIG=${config:-} python3 - "$bench_json" <<'EOF'
import json, os, sys
from mmx.commands.bench_kernels import evaluate_targets
path = sys.argv[1]
data = json.load(open(path))
data["env"] = {"MMX_KERNEL_CONFIG": os.environ.get("MMX_KERNEL_CONFIG", "")}
if not data.get("targets"):
    data["targets"] = evaluate_targets(data["records"])
    data["targets_note"] = "the bench was stopped by its timeout; targets from the records it had written"
json.dump(data, open(path, "w"), indent=1)
print("targets:", *(f"{t['target']}: {t['value']} met={t['met']}" for t in data["targets"]), sep="\n  ")
EOF
} 2>&1 | tee -a "$run_log"
rm -f "$winner" "$compile_log"
