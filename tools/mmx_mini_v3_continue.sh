#!/usr/bin/env bash
# mmx-mini, third recipe, step 2: continue variant A of step 1 (weights carried in .device_carry/A) on longer rows
# with more multi-value / multi-query / distractor-needle practice, while the same GPU evaluates A in full (all 13
# RULER tasks 4k-128k, Kamradt NIAH 4k-1M) as the baseline; then the same quick check of the result as in step 1.
set -uo pipefail
source tools/device_env.sh
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /tmp/log /tmp/ev /tmp/A && cp "$A_DIR"/* /tmp/A/
mmx train --out /tmp/A2 --init /tmp/A --stages 8k:520,32k:200 --data \
  drill=4,ruler=2,niah=1,niah_multikey_2=0.5,niah_multikey_3=0.5,niah_multivalue=0.5,niah_multiquery=0.5 \
  --batch-tokens 128k --micro-tokens 64k --min-doc-len 1k --lr 2e-3 --warmup 30 --context-weight 0.1 --seed 3 \
  --workers 10 --export-dtype bf16 --log-every 50 --checkpoint-every 100000 --time-limit "${TRAIN_S:-300}" \
  >/tmp/log/train-A2.txt 2>&1 &
train=$!
( timeout "${BASE_S:-330}" mmx eval ruler --model mmx:/tmp/A --lengths 4k,8k,16k,32k,64k,128k --samples 3 \
    --out /tmp/ev/A-ruler-4k-128k >/tmp/log/eval-A.txt 2>&1
  timeout 120 mmx eval niah --model mmx:/tmp/A --max-len 1m --depths 4 --samples 4 --out /tmp/ev/A-niah \
    >>/tmp/log/eval-A.txt 2>&1 ) &
wait $train
tail -3 /tmp/log/train-A2.txt
split -b 15M /tmp/A2/model/model.safetensors "$OUT/A2.weights.part."
cp /tmp/A2/model/config.json /tmp/log/A2-config.json; cp /tmp/A2/train.json /tmp/log/A2-train.json
cp /tmp/A2/metrics.jsonl /tmp/log/A2-metrics.jsonl
niah_tasks=niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multivalue,niah_multiquery
timeout "${EVAL_S:-120}" mmx eval ruler --model mmx:/tmp/A2/model --tasks $niah_tasks,niah_multikey_3 --lengths 4k,16k,64k \
  --samples 5 --out /tmp/ev/A2-ruler >/tmp/log/eval-A2.txt 2>&1
timeout 60 mmx eval niah --model mmx:/tmp/A2/model --lengths 4k,32k,128k,512k --depths 4 --samples 4 --out /tmp/ev/A2-niah \
  >>/tmp/log/eval-A2.txt 2>&1
wait
cat /tmp/log/eval-A.txt /tmp/log/eval-A2.txt | grep -v Warning
tar czf "$OUT/continue.tgz" -C /tmp log ev
