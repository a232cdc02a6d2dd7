#!/usr/bin/env bash
# `make run`: the launcher that the tests and `make bench` use too (bot/launcher.py). It builds the
# KB, starts the action server and the Rasa server, warms them, prints "posbot is ready" and stops
# both on Ctrl-C (or when either dies). `make shell`: the action server + `rasa shell`.
# Ports: RASA_PORT (5005), ACTIONS_PORT (5055).
#
# The HTTP API (trackers, events, model) needs the token from bot/api_token.py (POSBOT_RASA_TOKEN,
# or var/rasa-token, generated on first start); bot/serve.py adds it inside the Rasa process, so
# it is not in `ps`. No --cors: the API answers no browser on another site; the widget's
# socket.io checks POSBOT_CORS_ORIGINS itself (bot/channels/web.py).
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
# only hand work back and forth (make bench: 28 → 32 msg/s). bot/launcher.py sets them for the
# Rasa server only: Rasa's CLI imports TensorFlow to apply them, which would cost the action
# server 350 MB.

if [ "${1:-}" != "shell" ]; then
  exec "$BIN/python" -m bot.launcher --model "$MODEL" --credentials "$CREDENTIALS" \
    --rasa-port "$RASA_PORT" --actions-port "$ACTIONS_PORT"
fi

"$BIN/rasa" run actions --actions actions --port "$ACTIONS_PORT" &
actions_pid=$!
trap 'kill "$actions_pid" 2>/dev/null || true' INT TERM EXIT
TF_INTER_OP_PARALLELISM_THREADS="${TF_INTER_OP_PARALLELISM_THREADS:-1}" \
TF_INTRA_OP_PARALLELISM_THREADS="${TF_INTRA_OP_PARALLELISM_THREADS:-1}" \
  "$BIN/rasa" shell --model "$MODEL" --endpoints "$ENDPOINTS"
