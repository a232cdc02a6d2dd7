#!/usr/bin/env bash
# Start the action server and the Rasa server together; Ctrl-C (or either one dying) stops both.
# Called by `make run` / `make shell`; ports: RASA_PORT (5005), ACTIONS_PORT (5055).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
MODEL=${MODEL:-models/posbot.tar.gz}
ENDPOINTS=${ENDPOINTS:-bot/endpoints.yml}
CREDENTIALS=${CREDENTIALS:-bot/credentials.yml}
RASA_PORT=${RASA_PORT:-5005}
ACTIONS_PORT=${ACTIONS_PORT:-5055}
mkdir -p var
# Rasa server: one TensorFlow thread per op. DIET's ops are tiny, and with 2 cores more threads
# only hand work back and forth (make bench: 28 → 32 msg/s). Not exported: Rasa's CLI imports
# TensorFlow to apply them, which would cost the action server 350 MB. bot/launcher.py: the same.
TF_THREADS=(TF_INTER_OP_PARALLELISM_THREADS="${TF_INTER_OP_PARALLELISM_THREADS:-1}"
            TF_INTRA_OP_PARALLELISM_THREADS="${TF_INTRA_OP_PARALLELISM_THREADS:-1}")

pids=()
stop() {
  trap - INT TERM EXIT
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop INT TERM EXIT

"$BIN/rasa" run actions --actions actions --port "$ACTIONS_PORT" &
pids+=($!)

if [ "${1:-}" = "shell" ]; then
  env "${TF_THREADS[@]}" "$BIN/rasa" shell --model "$MODEL" --endpoints "$ENDPOINTS"
  exit 0
fi

env "${TF_THREADS[@]}" "$BIN/rasa" run --model "$MODEL" --endpoints "$ENDPOINTS" \
  --credentials "$CREDENTIALS" \
  --enable-api --cors "${POSBOT_CORS_ORIGINS:-*}" --port "$RASA_PORT" &
pids+=($!)

# Warm the NLU pipeline and the policies once, so the first merchant does not pay for loading.
"$BIN/python" scripts/warmup.py "http://127.0.0.1:$RASA_PORT" || true
echo "posbot is ready: REST http://localhost:$RASA_PORT/webhooks/rest/webhook ·" \
  "widget http://localhost:$RASA_PORT/webhooks/web/ · WeChat /webhooks/wechat/webhook"
wait -n
