#!/usr/bin/env bash
# How the shipped mmx-mini weights and the mmx-mini-* reference results here were made: one NVIDIA H200,
# 2026-11-26, tree at commit 9c85432 (run from a copy without .git, so the run files record no commit).
# On a machine without mmx installed, `source tools/device_env.sh` first. Outputs: /tmp/mmx-mini-train (the run,
# whose model/ became model/weights/mmx-mini/) and /tmp/ev/* (the evaluation runs copied here).
set -euo pipefail
export TORCH_CUDNN_SDPA_AVOID_RECOMPILE=1  # evaluation: fewer cuDNN plan rebuilds as prompt lengths change

mmx train --out /tmp/mmx-mini-train --stages 4k:480,16k:170 --warmup 35 --data ruler,niah --batch-tokens 128k \
  --micro-tokens 64k --min-doc-len 1k --lr 2e-3 --context-weight 0.1 --seed 0 --workers 4 --export-dtype bf16 \
  --log-every 25 --checkpoint-every 100000 --time-limit 245
mkdir -p model/weights/mmx-mini && cp /tmp/mmx-mini-train/model/* model/weights/mmx-mini/

# Each evaluation ran under a shared time budget (`timeout`); the 256k-1m run was cut before its last two samples
# (synth_qa_1 and synth_qa_2 at 1m) and the 2m-4m run (niah_single_1/2) got no time at all.
mmx eval ruler --lengths 4k,8k,16k,32k,64k,128k --samples 3 --out /tmp/ev/mmx-mini-ruler-4k-128k --quiet
mmx eval niah --max-len 1m --depths 4 --samples 4 --out /tmp/ev/mmx-mini-niah --quiet
mmx eval ruler --lengths 256k,512k,1m --samples 1 --out /tmp/ev/mmx-mini-ruler-256k-1m --quiet
