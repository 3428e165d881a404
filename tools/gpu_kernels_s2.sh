#!/usr/bin/env bash
# Lightning-attention kernels on one GPU, in one device call (issue #3, session 2). Three steps, each under its own
# timeout inside a total budget, writing three files to $OUT:
#   1. the kernel test suite on the GPU (bf16/fp16, head dims 64/128, the 1M-token checks) -> kernels-gpu-tests.log
#   2. the forward tuning sweep at T = 1M and 4M (H=8, D=128, bf16; python3 -m mmx.kernels.sweep), whose winner
#      is handed to step 3 through MMX_KERNEL_CONFIG                                         -> kernels-run.log
#   3. mmx bench kernels, the full default sweep, with that config (its progress and tables also go to
#      kernels-run.log)                                                                      -> kernels-bench.json
# A step cut short keeps what it finished: pytest prints each result as it comes, the sweep prints a line per
# candidate, the bench rewrites its JSON after every record (the targets are then computed from those records).
#
# Usage, from the repository root on the GPU machine (BUDGET_S: seconds for all three steps, default 225):
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

# 1. tests: every kernel test; the interpreter cases skip themselves where CUDA is present
xdist=()
python3 -c "import xdist" 2>/dev/null && xdist=(-n 8)
limit=$(cap 75 140)
{
  header "python3 -m pytest -v -rfE -p no:cacheprovider ${xdist[*]} tests/kernels (timeout ${limit}s)"
  timeout -k 10 "$limit" python3 -m pytest -v -rfE -p no:cacheprovider "${xdist[@]}" tests/kernels
  echo "pytest exit $? after $(($(date +%s) - t0)) s"
} >"$tests_log" 2>&1
tail -n 3 "$tests_log"

# 2. sweep: the floor at the datasheet bandwidth, as mmx bench kernels quotes it
bandwidth=$(python3 -c "import torch; from mmx.throughput_peaks import datasheet_peaks as d; \
p = d(torch.cuda.get_device_name()); print(p[1] if p else '')" 2>/dev/null)
limit=$(cap 75 100)
start_by=$((limit - 20 > limit / 2 ? limit - 20 : limit / 2))  # no new candidate after this; one takes a few s
{
  header "python3 -m mmx.kernels.sweep --lengths 1048576,4194304 ${bandwidth:+--bandwidth $bandwidth} --budget $start_by"
  timeout -k 10 "$limit" python3 -m mmx.kernels.sweep --lengths 1048576,4194304 ${bandwidth:+--bandwidth "$bandwidth"} \
    --budget "$start_by" --emit "$winner"
  echo "sweep exit $? after $(($(date +%s) - t0)) s"
} 2>&1 | tee "$run_log"

# 3. bench with the winner (the built-in defaults when the sweep picked none)
config=$(cat "$winner" 2>/dev/null)
limit=$(cap 600 10)
{
  header "MMX_KERNEL_CONFIG='${config:-}' mmx bench kernels --out $bench_json (timeout ${limit}s)"
  MMX_KERNEL_CONFIG=${config:-} timeout --signal=INT -k 15 "$limit" mmx bench kernels --out "$bench_json"
  echo "bench exit $? after $(($(date +%s) - t0)) s"
  # record the config's source, and the targets if the bench was stopped before it computed them
  [ -s "$bench_json" ] && MMX_KERNEL_CONFIG=${config:-} python3 - "$bench_json" <<'EOF'
import json, os, sys
from mmx.cli_bench_kernels import evaluate_targets
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
rm -f "$winner"
