#!/usr/bin/env bash
# mmx-mini, third recipe, step 1: two variants trained side by side on one GPU (the model is too small to keep the
# card busy alone), each exported to $OUT (weights split into 15 MB parts: files come back at most 16 MB each), then a
# quick retrieval check of both. Run from the repository root on the GPU machine with .whl carried.
set -uo pipefail
source tools/device_env.sh
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
mkdir -p /tmp/log /tmp/ev
common=(--batch-tokens 128k --micro-tokens 64k --min-doc-len 512 --lr 3e-3 --warmup 50 --context-weight 0.1
  --workers 7 --export-dtype bf16 --log-every 50 --checkpoint-every 100000 --time-limit "${TRAIN_S:-360}")
mmx train --out /tmp/A --stages 2k:520,8k:180 --data drill=4,ruler=2,niah=1 --seed 1 "${common[@]}" \
  >/tmp/log/train-A.txt 2>&1 &
mmx train --out /tmp/B --stages 4k:520,16k:180 --data drill=3,recall=1,ruler=2,niah=1 --seed 2 "${common[@]}" \
  >/tmp/log/train-B.txt 2>&1 &
wait
for v in A B; do
  tail -4 /tmp/log/train-$v.txt
  split -b 15M /tmp/$v/model/model.safetensors "$OUT/$v.weights.part."
  cp /tmp/$v/model/config.json /tmp/log/$v-config.json; cp /tmp/$v/train.json /tmp/$v/metrics.jsonl /tmp/log/ 2>/dev/null
  mv /tmp/log/train.json /tmp/log/$v-train.json; mv /tmp/log/metrics.jsonl /tmp/log/$v-metrics.jsonl
done
niah_tasks=niah_single_1,niah_single_2,niah_single_3,niah_multikey_1,niah_multikey_2,niah_multivalue,niah_multiquery
for v in A B; do
  ( timeout "${EVAL_S:-150}" mmx eval ruler --model mmx:/tmp/$v/model --tasks $niah_tasks --lengths 4k,16k \
      --samples 5 --out /tmp/ev/$v-ruler >/tmp/log/eval-$v.txt 2>&1
    timeout 60 mmx eval niah --model mmx:/tmp/$v/model --lengths 4k,32k,128k --depths 4 --samples 4 \
      --out /tmp/ev/$v-niah >>/tmp/log/eval-$v.txt 2>&1 ) &
done
wait
cat /tmp/log/eval-A.txt /tmp/log/eval-B.txt | grep -v Warning
tar czf "$OUT/explore.tgz" -C /tmp log ev
