# Time-boxed steps for the GPU batch scripts (speed_batch.sh, scale_batch.sh), sourced after they set:
#   T0 (start, epoch seconds), DEADLINE (epoch seconds), TIMINGS (the JSONL file each step appends a line to).
# A script may define after_step (e.g. to pack what exists so far); it runs after every step.

left() { echo $((DEADLINE - $(date +%s))); }

step() { # step NAME CAP_S COMMAND...: at most CAP_S seconds, never past the deadline; SIGINT lets mmx keep its records
  local name=$1 cap=$2 t start code
  shift 2
  t=$(left)
  ((t > cap)) && t=$cap
  if ((t < 15)); then
    echo "=== $name: skipped, $t s left" >&2
    return
  fi
  echo "=== $name (≤ $t s, $(date -u +%FT%TZ)): $*" >&2
  start=$(date +%s.%N)
  timeout --signal=INT --kill-after=20 "$t" "$@"
  code=$?
  python3 - "$name" "$start" "$code" "$@" >>"$TIMINGS" <<'PY'
import json, sys, time
from datetime import datetime, timezone
name, start, code, *command = sys.argv[1:]
finished = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")
line = {"run": name, "wall_s": round(time.time() - float(start), 3), "exit": int(code), "finished": finished}
print(json.dumps({**line, "command": command}))
PY
  echo "=== $name: exit $code at t+$(($(date +%s) - T0)) s" >&2
  if declare -F after_step >/dev/null; then after_step; fi
}
