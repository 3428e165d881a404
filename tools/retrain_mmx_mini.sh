#!/usr/bin/env bash
# The second mmx-mini recipe (dense recall + NIAH-weighted mix, shorter first stage), then its evaluation, in one
# device call, run from the repository root on the GPU machine with .whl carried. The weights go to
# $OUT first, so a call cut short by its time limit still returns them. Its first run (2026-11-26, H200) is logged in
# results/reference/mmx-mini-train-v2-log.txt.
set -uo pipefail
source tools/device_env.sh
export PYTHONUNBUFFERED=1 TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1
start=$(date +%s); left() { echo $(( ${BUDGET_S:-540} - ($(date +%s) - start) )); }  # stop before the call limit
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mmx train --out /tmp/t2 --stages 2k:900,8k:330 --warmup 60 --data recall=4,ruler=2,niah=1 --batch-tokens 128k \
  --micro-tokens 64k --min-doc-len 512 --lr 3e-3 --context-weight 0.1 --seed 1 --workers 8 --export-dtype bf16 \
  --log-every 50 --checkpoint-every 100000 --time-limit 285 2>&1 | tail -40
split -b 15M /tmp/t2/model/model.safetensors $OUT/weights.part.  # files come back at most 16 MB each
cp /tmp/t2/model/config.json /tmp/t2/train.json /tmp/t2/metrics.jsonl $OUT/
cp /tmp/t2/model/* model/weights/mmx-mini/
mkdir -p /tmp/ev
timeout $(left) mmx eval ruler --lengths 4k,8k,16k,32k,64k,128k --samples 3 --out /tmp/ev/mmx-mini-ruler-4k-128k --quiet
timeout $(left) mmx eval niah --max-len 1m --depths 4 --samples 4 --out /tmp/ev/mmx-mini-niah --quiet
timeout $(left) mmx eval ruler --lengths 256k,512k,1m --samples 1 --out /tmp/ev/mmx-mini-ruler-256k-1m --quiet
tar czf $OUT/ev.tgz -C /tmp ev
echo "total $(( $(date +%s) - start )) s"
