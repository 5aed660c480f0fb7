#!/usr/bin/env bash
# llama.cpp's OpenAI-compatible server (llama-cpp-python) for the deepconf-openai tests and for
# local runs against `--backend openai`.
#
#   .ci/llama-server.sh install       install llama-cpp-python[server] if it is not importable
#                                     (builds llama.cpp from source: ~12 min once, pip caches the wheel)
#   .ci/llama-server.sh check         install, start on a free loopback port, ask for one token with
#                                     20 top logprobs, stop; fails loudly when anything is wrong
#   .ci/llama-server.sh start [PORT]  install, start in the background (default port 8765), wait until
#                                     it answers, print its base URL; the pid goes to $PID_FILE
#   .ci/llama-server.sh stop          stop the server started by `start`
#
# The Rust integration tests start their own server (one per test binary) and only need `install`.
# Environment: DEEPCONF_PYTHON (interpreter, default python3), DEEPCONF_CACHE (model cache),
# LLAMA_SERVER_PID_FILE (default: $TMPDIR/deepconf-llama-server.pid).
set -euo pipefail

PYTHON="${DEEPCONF_PYTHON:-python3}"
PACKAGE='llama-cpp-python[server]==0.3.36'
MODEL_FILE='SmolLM2-135M-Instruct.Q4_1.gguf'
PID_FILE="${LLAMA_SERVER_PID_FILE:-${TMPDIR:-/tmp}/deepconf-llama-server.pid}"
STARTUP_SECONDS=180

die() { echo "llama-server.sh: $*" >&2; exit 1; }

# Same order as deepconf_core::cache_dir().
cache_dir() {
    if [[ -n "${DEEPCONF_CACHE:-}" ]]; then echo "$DEEPCONF_CACHE"
    elif [[ -n "${XDG_CACHE_HOME:-}" ]]; then echo "$XDG_CACHE_HOME/deepconf"
    elif [[ -n "${HOME:-}" ]]; then echo "$HOME/.cache/deepconf"
    else echo ".deepconf-cache"; fi
}

model_path() {
    local path
    path="$(cache_dir)/models/$MODEL_FILE"
    [[ -f "$path" ]] || die "model $path is missing: run \`cargo xtask fetch-model\` first"
    echo "$path"
}

install() {
    if "$PYTHON" -c 'import llama_cpp.server, uvicorn' 2>/dev/null; then
        echo "llama-cpp-python server: $("$PYTHON" -c 'import llama_cpp; print(llama_cpp.__version__)') already installed"
        return
    fi
    echo "installing $PACKAGE (builds llama.cpp from source, ~12 min once) ..."
    "$PYTHON" -m pip install --quiet "$PACKAGE" || die "pip install $PACKAGE failed"
    "$PYTHON" -c 'import llama_cpp.server, uvicorn' || die "$PACKAGE installed but not importable by $PYTHON"
}

free_port() {
    "$PYTHON" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

# start_server PORT LOG: starts in the background, echoes the pid.
start_server() {
    local port="$1" log="$2"
    # --interrupt_requests false: otherwise each new request cuts the stream in progress.
    nohup "$PYTHON" -m llama_cpp.server --model "$(model_path)" --model_alias smollm2 \
        --logits_all true --host 127.0.0.1 --port "$port" --n_ctx 2048 --n_threads 2 \
        --interrupt_requests false >"$log" 2>&1 &
    echo $!
}

wait_ready() {
    local port="$1" pid="$2" log="$3"
    for ((i = 0; i < STARTUP_SECONDS * 5; i++)); do
        kill -0 "$pid" 2>/dev/null || { tail -n 40 "$log" >&2; die "server exited before answering (log: $log)"; }
        if "$PYTHON" -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$port/v1/models', timeout=2)" 2>/dev/null; then
            return
        fi
        sleep 0.2
    done
    kill "$pid" 2>/dev/null || true
    tail -n 40 "$log" >&2
    die "server did not answer on port $port within ${STARTUP_SECONDS}s (log: $log)"
}

CHECK_PID=""
check() {
    install
    local port log
    port="$(free_port)"
    log="$(mktemp "${TMPDIR:-/tmp}/llama-server-check.XXXXXX")"
    CHECK_PID="$(start_server "$port" "$log")"
    trap '[[ -n "$CHECK_PID" ]] && kill "$CHECK_PID" 2>/dev/null; true' EXIT
    wait_ready "$port" "$CHECK_PID" "$log"
    "$PYTHON" - "$port" <<'PY' || { tail -n 40 "$log" >&2; die "the server answered without 20 top logprobs"; }
import json, sys, urllib.request
body = {"messages": [{"role": "user", "content": "Say hi."}], "max_tokens": 1,
        "temperature": 0, "logprobs": True, "top_logprobs": 20}
request = urllib.request.Request(f"http://127.0.0.1:{sys.argv[1]}/v1/chat/completions",
                                 data=json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
answer = json.load(urllib.request.urlopen(request, timeout=60))
top = answer["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
assert len(top) == 20, f"{len(top)} top logprobs"
print(f"llama-cpp-python server ok: first token {answer['choices'][0]['logprobs']['content'][0]['token']!r}, 20 top logprobs")
PY
}

start() {
    install
    local port="${1:-8765}" log
    if [[ -f "$PID_FILE" ]] && kill -0 "$(cat "$PID_FILE")" 2>/dev/null; then
        die "a server is already running (pid $(cat "$PID_FILE")); run \`$0 stop\` first"
    fi
    log="${PID_FILE%.pid}.log"
    local pid
    pid="$(start_server "$port" "$log")"
    echo "$pid" >"$PID_FILE"
    wait_ready "$port" "$pid" "$log"
    echo "http://127.0.0.1:$port/v1"
}

stop() {
    [[ -f "$PID_FILE" ]] || die "no pid file $PID_FILE: nothing started by \`$0 start\`"
    local pid
    pid="$(cat "$PID_FILE")"
    kill "$pid" 2>/dev/null || true
    rm -f "$PID_FILE"
    echo "stopped llama-cpp-python server (pid $pid)"
}

case "${1:-}" in
    install) install ;;
    check) check ;;
    start) shift; start "$@" ;;
    stop) stop ;;
    *) die "usage: $0 install|check|start [PORT]|stop" ;;
esac
