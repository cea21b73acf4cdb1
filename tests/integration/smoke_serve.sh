#!/usr/bin/env bash
# smoke_serve.sh — starts flexq-serve on a free loopback port with the default model, checks
# /health, /ready (503 + Retry-After while the model loads, then 200), /v1/models, one completion,
# one streamed completion, one chat and /metrics, then SIGTERM and a clean exit 0; then SIGTERM
# right after the port opens (exit 0) and a model that fails to load (exit 1).
#
# Usage: smoke_serve.sh FLEXQ_SERVE [MODEL]   (MODEL defaults to $FLEXQ_MODEL)
# Exit: 0 pass, 1 fail, 77 skip (no model, no curl).
set -u

SERVE=${1:?usage: smoke_serve.sh FLEXQ_SERVE [MODEL]}
MODEL=${2:-${FLEXQ_MODEL:-$HOME/.cache/flexq/SmolLM2-135M-Instruct.Q4_1.gguf}}

if [ ! -e "$MODEL" ]; then
    echo "SKIP: model $MODEL not found (scripts/fetch-model.sh)"
    exit 77
fi
if ! command -v curl >/dev/null 2>&1; then
    echo "SKIP: curl not installed"
    exit 77
fi

WORK=$(mktemp -d)
LOG=$WORK/serve.log
PID=
cleanup() {
    if [ -n "$PID" ] && kill -0 "$PID" 2>/dev/null; then
        kill -KILL "$PID" 2>/dev/null
        wait "$PID" 2>/dev/null
    fi
    rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
    echo "FAIL: $*"
    echo "--- server log ---"
    cat "$LOG"
    exit 1
}

# A free port: bind port 0 and read back what the kernel chose (python3 when present, else a
# random high port; a clash shows up as a start-up failure below).
free_port() {
    if command -v python3 >/dev/null 2>&1; then
        python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
    else
        echo $((20000 + RANDOM % 20000))
    fi
}

PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
"$SERVE" --model "$MODEL" --host 127.0.0.1 --port "$PORT" --served-model-name smoke \
    --max-num-seqs 4 --drain-timeout-s 20 >"$LOG" 2>&1 &
PID=$!

# Poll /ready from the start. The port opens before the model loads: until then /ready answers 503
# with Retry-After and an error object and /health 200; once the port answered, a refused
# connection is a failure. (Loading is short, so the 503 phase may or may not be seen.)
START=$(date +%s.%N)
BOUND=
SAW_LOADING=
for _ in $(seq 1 3000); do
    kill -0 "$PID" 2>/dev/null || fail "flexq-serve exited during start-up"
    if ! code=$(curl -s -D "$WORK/rh" -o "$WORK/rb" -w '%{http_code}' --max-time 10 "$BASE/ready"); then
        [ -z "$BOUND" ] || fail "/ready: connection failed after the port had opened"
        sleep 0.02
        continue
    fi
    if [ -z "$BOUND" ]; then
        BOUND=1
        echo "ok: port answered after $(echo "$(date +%s.%N) - $START" | bc 2>/dev/null || echo '?') s"
    fi
    [ "$code" = 200 ] && break
    [ "$code" = 503 ] || fail "/ready while starting: HTTP $code: $(cat "$WORK/rb")"
    grep -qi '^Retry-After: *[0-9]' "$WORK/rh" || fail "/ready 503 without Retry-After"
    grep -q '"error":{' "$WORK/rb" || fail "/ready 503 without an error object: $(cat "$WORK/rb")"
    grep -q '"message":"model is loading"' "$WORK/rb" || fail "/ready 503: $(cat "$WORK/rb")"
    hcode=$(curl -s -o "$WORK/hb" -w '%{http_code}' --max-time 10 "$BASE/health") ||
        fail "/health: connection failed while loading"
    [ "$hcode" = 200 ] || fail "/health while loading: HTTP $hcode"
    SAW_LOADING=1
    sleep 0.02
done
[ "$code" = 200 ] || fail "/ready did not answer 200 in time"
if [ -n "$SAW_LOADING" ]; then
    echo "ok: ready (while loading: /ready 503 + Retry-After + error object, /health 200)"
else
    echo "ok: ready (the loading phase was not observed)"
fi

# check NAME EXPECTED_STATUS OUTFILE CURL_ARGS...: runs curl, checks the status.
check() {
    local name=$1 want=$2 out=$3
    shift 3
    local code
    code=$(curl -s -o "$out" -w '%{http_code}' --max-time 120 "$@") || fail "$name: curl failed"
    [ "$code" = "$want" ] || fail "$name: HTTP $code, expected $want: $(cat "$out")"
    echo "ok: $name ($code)"
}
expect() { # expect NAME FILE PATTERN: grep -q
    grep -q -- "$3" "$2" || fail "$1: '$3' not in: $(head -c 2000 "$2")"
}

check health 200 "$WORK/h" "$BASE/health"
expect health "$WORK/h" '"status":"ok"'
check ready 200 "$WORK/r" "$BASE/ready"
check models 200 "$WORK/m" "$BASE/v1/models"
expect models "$WORK/m" '"id":"smoke"'

check completion 200 "$WORK/c" "$BASE/v1/completions" -H 'Content-Type: application/json' \
    -d '{"model":"smoke","prompt":"The capital of France is","max_tokens":8,"temperature":0}'
expect completion "$WORK/c" '"object":"text_completion"'
expect completion "$WORK/c" '"completion_tokens":8'
expect completion "$WORK/c" '"finish_reason":"length"'

check stream 200 "$WORK/s" -N "$BASE/v1/completions" -H 'Content-Type: application/json' \
    -d '{"prompt":"Once upon a time","max_tokens":6,"temperature":0,"stream":true,
         "stream_options":{"include_usage":true}}'
expect stream "$WORK/s" '^data: {'
expect stream "$WORK/s" '"finish_reason":"length"'
expect stream "$WORK/s" '"completion_tokens":6'
[ "$(tail -n 2 "$WORK/s" | head -n 1)" = "data: [DONE]" ] || fail "stream: no final [DONE]"

check chat 200 "$WORK/ch" "$BASE/v1/chat/completions" -H 'Content-Type: application/json' \
    -d '{"messages":[{"role":"user","content":"Say hello."}],"max_tokens":16,"temperature":0}'
expect chat "$WORK/ch" '"object":"chat.completion"'
expect chat "$WORK/ch" '"role":"assistant"'

check bad-json 400 "$WORK/e" "$BASE/v1/completions" -d '{"prompt":'
expect bad-json "$WORK/e" '"type":"invalid_request_error"'
check wrong-model 404 "$WORK/e" "$BASE/v1/completions" -d '{"model":"x","prompt":"hi"}'

check metrics 200 "$WORK/met" "$BASE/metrics"
grep -Eq 'vllm:generation_tokens_total\{model_name="smoke"\} [1-9]' "$WORK/met" ||
    fail "metrics: no generated tokens counted"

kill -TERM "$PID"
wait "$PID"
RC=$?
PID=
[ "$RC" -eq 0 ] || fail "exit status $RC after SIGTERM, expected 0"
grep -q 'flexq-serve stopped' "$LOG" || fail "no 'flexq-serve stopped' in the log"
echo "ok: SIGTERM → exit 0"

# SIGTERM as soon as the port opens (most likely while the model loads): a clean exit 0.
PORT=$(free_port)
BASE=http://127.0.0.1:$PORT
"$SERVE" --model "$MODEL" --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
PID=$!
for _ in $(seq 1 3000); do
    kill -0 "$PID" 2>/dev/null || fail "flexq-serve exited during start-up"
    curl -s -o /dev/null --max-time 10 "$BASE/health" && break
    sleep 0.01
done
kill -TERM "$PID"
wait "$PID"
RC=$?
PID=
[ "$RC" -eq 0 ] || fail "exit status $RC after an early SIGTERM, expected 0"
echo "ok: early SIGTERM → exit 0"

# A model that fails to load: the error is logged and the daemon exits 1.
printf 'GGUF but not really a model' >"$WORK/bad.gguf"
PORT=$(free_port)
"$SERVE" --model "$WORK/bad.gguf" --host 127.0.0.1 --port "$PORT" >"$LOG" 2>&1 &
PID=$!
wait "$PID"
RC=$?
PID=
[ "$RC" -eq 1 ] || fail "exit status $RC for a bad model, expected 1"
grep -q 'cannot start' "$LOG" || fail "no 'cannot start' in the log for a bad model"
echo "ok: bad model → exit 1"
echo "PASS"
