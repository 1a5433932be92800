#!/usr/bin/env bash
# `tern serve` against the official `openai` Python package: the model list, a streamed and
# a non-streamed chat, a completion, a continued conversation (scripts/serve/openai_client.py),
# the README's curl examples, and a tool call and its answer with Qwen2.5-Coder-0.5B
# (scripts/serve/openai_tools.py). The package goes into the virtual environment under
# target/ that scripts/test-python.sh also uses. Needs python3-venv and curl
# (scripts/setup.sh test).
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS=0
root=$PWD

venv="$root/target/python-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q "openai>=1.40,<3"

cargo build --release -p tern-cli --bin tern
log=$(mktemp /tmp/tern-serve-log-XXXXXX)
target/release/tern serve --port 0 --api-key test-key 2>"$log" &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null; rm -f "$log"' EXIT
for _ in $(seq 600); do
    grep -q "listening on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
addr=$(grep -o "listening on http://[^ ]*" "$log" | sed 's/listening on //')
echo "== tern serve at $addr (${SECONDS}s)"

echo "== the openai package"
BASE_URL="$addr/v1" API_KEY=test-key "$venv/bin/python" scripts/serve/openai_client.py

echo "== curl"
curl -sf "$addr/health"
echo
curl -sf "$addr/v1/models" -H "Authorization: Bearer test-key"
echo
curl -sf "$addr/v1/chat/completions" -H "Authorization: Bearer test-key" \
    -H "Content-Type: application/json" \
    -d '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 16}'
echo
curl -sfN "$addr/v1/chat/completions" -H "Authorization: Bearer test-key" \
    -H "Content-Type: application/json" \
    -d '{"model": "smollm2-135m", "messages": [{"role": "user", "content": "Hello!"}], "max_tokens": 8, "stream": true}' \
    | tail -n 3
code=$(curl -s -o /dev/null -w '%{http_code}' "$addr/v1/models" -H "Authorization: Bearer wrong")
[ "$code" = 401 ] || { echo "a wrong key got $code"; exit 1; }
echo "== request log"
cat "$log"

echo "== tool calls through the openai package (Qwen2.5-Coder-0.5B)"
kill $server 2>/dev/null; wait $server 2>/dev/null || true
target/release/tern serve -m qwen2.5-coder-0.5b --port 0 --api-key test-key 2>"$log" &
server=$!
for _ in $(seq 1800); do
    grep -q "listening on" "$log" && break
    kill -0 $server 2>/dev/null || { cat "$log"; exit 1; }
    sleep 0.2
done
addr=$(grep -o "listening on http://[^ ]*" "$log" | sed 's/listening on //')
BASE_URL="$addr/v1" API_KEY=test-key "$venv/bin/python" scripts/serve/openai_tools.py
echo "== tern serve passed (${SECONDS}s)"
