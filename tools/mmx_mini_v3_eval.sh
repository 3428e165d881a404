#!/usr/bin/env bash
# The published evaluation of the shipped mmx-mini (spec `mmx-mini`) on one GPU: all 13 RULER tasks 4k-128k (3
# samples), Kamradt NIAH 4k-1M (4 depths) and at 2M/4M (2 depths), then RULER at 256k-1M (1 sample) while time lasts.
# Each step is a resumable run directory; a step cut by the deadline keeps what it finished. Needs
# `source tools/device_env.sh` first; run directories go to $1 (default /tmp/ev). Deadline: EVAL_S seconds (default 330).
set -uo pipefail
dest=${1:-/tmp/ev}; mkdir -p "$dest"
start=$(date +%s); left() { echo $(( ${EVAL_S:-330} - ($(date +%s) - start) )); }
step() { local cap=$1; shift; local t; t=$(left); (( t > cap )) && t=$cap; (( t > 5 )) && timeout "$t" mmx eval "$@"; }
step 100 ruler --lengths 4k,8k,16k,32k,64k,128k --samples 3 --out "$dest/mmx-mini-ruler-4k-128k"
step 80 niah --max-len 1m --depths 4 --samples 4 --out "$dest/mmx-mini-niah"
step 150 niah --lengths 2m,4m --depths 2 --samples 2 --out "$dest/mmx-mini-niah-2m-4m"
step 9999 ruler --lengths 256k,512k,1m --samples 1 --out "$dest/mmx-mini-ruler-256k-1m"
echo "evaluation took $(( $(date +%s) - start )) s"
