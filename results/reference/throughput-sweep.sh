#!/usr/bin/env bash
# The GPU sweep behind results/reference/throughput-*: `mmx bench throughput` in three parts, each its own run
# directory under OUT, with a time budget (no new measurement starts after it) and a hard timeout.
#
#   slice  4 layers of the full minimax-text-01 (25.07B parameters, bf16, random weights): ours vs transformers'
#          MiniMaxForCausalLM on the same config, prefill 16k…1M, decode at batch 1 and 64 (needs an H200 for
#          transformers' 256k prefill, ~105 GB)
#   arch   the `small` preset cut to 8 layers: hybrid 7:1 vs all-lightning vs all-softmax, prefill 4k…1M
#   mini   the embedded default model (mmx-mini; random:mmx-mini until its weights ship), prefill 4k…4M
#
# Usage, from the repository root on a GPU machine with mmx importable:
#   bash results/reference/throughput-sweep.sh OUT [slice] [arch] [mini]
set -uo pipefail
out=${1:?usage: throughput-sweep.sh OUT [slice] [arch] [mini]}
shift
parts=("$@")
[ ${#parts[@]} -eq 0 ] && parts=(slice arch mini)
mkdir -p "$out"

mini_model=random:mmx-mini
[ -f model/weights/mmx-mini/config.json ] && mini_model=mmx-mini

# part NAME BUDGET_S TIMEOUT_S ARGS...: SIGINT at the timeout, so the run keeps every record it finished.
part() {
  local name=$1 budget=$2 limit=$3
  shift 3
  echo "=== $name: mmx bench throughput $* --budget $budget ($(date -u +%FT%TZ))"
  timeout --signal=INT --kill-after=30 "$limit" \
    mmx bench throughput "$@" --budget "$budget" --out "$out/$name" --json >/dev/null
  echo "=== $name: exit $? ($(date -u +%FT%TZ))"
}

for p in "${parts[@]}"; do
  case $p in
    slice) part slice 140 200 --model random:minimax-text-01 --layers 4 --compare-transformers \
             --lengths 16k,64k,256k,1m --batch-sizes 1,64 ;;
    arch) part arch 100 140 --model random:small --layers 8 --arch hybrid,lightning,softmax \
            --lengths 4k,16k,64k,256k,1m --batch-sizes 1,64 ;;
    mini) part mini 190 240 --model "$mini_model" --max-len 4m --batch-sizes 1,64 ;;
    *) echo "unknown part $p (slice, arch, mini)" >&2; exit 2 ;;
  esac
done
