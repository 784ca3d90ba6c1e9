#!/usr/bin/env bash
# The local AWS stack: moto's server (through deploy/local/moto_server.py, which makes
# DynamoDB calls atomic as they are on AWS) in a project-local virtualenv, on a free
# loopback port.
#
#   deploy/local/stack.sh install        create .venv with the pinned moto when it is missing
#   deploy/local/stack.sh start [DIR]    install if needed, start moto, write DIR/stack.env
#   deploy/local/stack.sh stop  [DIR]    stop the moto started in DIR
#
# Sourced by demo.sh and test.sh for the same functions. Nothing here needs network access
# once the virtualenv exists; AWS credentials are dummies for the local endpoint only.
set -euo pipefail

FLEET_ROOT="${FLEET_ROOT:-$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)}"
FLEET_VENV="${FLEET_VENV:-$FLEET_ROOT/.venv}"
FLEET_PYTHON="$FLEET_VENV/bin/python"
MOTO_LAUNCHER="$FLEET_ROOT/deploy/local/moto_server.py"

stack_install() {
  local req="$FLEET_ROOT/deploy/local/requirements.txt"
  local stamp="$FLEET_VENV/.fleet-requirements"
  if [[ -x "$FLEET_PYTHON" && -f "$stamp" ]] && cmp -s "$req" "$stamp"; then
    return 0
  fi
  echo "stack: installing moto into $FLEET_VENV" >&2
  python3 -m venv "$FLEET_VENV"
  "$FLEET_VENV/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$stamp"
}

# A port the kernel says is free now; moto binds it a moment later (retried on a clash).
stack_free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

# stack_wait_http URL SECONDS: poll until the URL answers.
stack_wait_http() {
  local url=$1 deadline=$((SECONDS + $2))
  until python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$url" 2>/dev/null; do
    ((SECONDS < deadline)) || return 1
    sleep 0.2
  done
}

stack_start() {
  local dir=${1:-$FLEET_ROOT/.local}
  mkdir -p "$dir"
  stack_install
  local try port
  for try in 1 2 3 4 5; do
    port=$(stack_free_port)
    "$FLEET_PYTHON" "$MOTO_LAUNCHER" -H 127.0.0.1 -p "$port" >"$dir/moto.log" 2>&1 &
    echo $! >"$dir/moto.pid"
    if stack_wait_http "http://127.0.0.1:$port/moto-api/" 30; then
      cat >"$dir/stack.env" <<ENV
export AWS_ENDPOINT_URL=http://127.0.0.1:$port
export AWS_REGION=us-east-1
export AWS_DEFAULT_REGION=us-east-1
export AWS_ACCESS_KEY_ID=local
export AWS_SECRET_ACCESS_KEY=local
ENV
      echo "stack: moto listening on 127.0.0.1:$port (pid $(cat "$dir/moto.pid"), log $dir/moto.log)" >&2
      return 0
    fi
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
  done
  echo "stack: moto did not start; see $dir/moto.log" >&2
  return 1
}

stack_stop() {
  local dir=${1:-$FLEET_ROOT/.local}
  if [[ -f "$dir/moto.pid" ]]; then
    kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
    rm -f "$dir/moto.pid" "$dir/stack.env"
  fi
}

if [[ "${BASH_SOURCE[0]}" == "$0" ]]; then
  case "${1:-}" in
    install) stack_install ;;
    start) stack_start "${2:-}" ;;
    stop) stack_stop "${2:-}" ;;
    *) echo "usage: $0 install | start [DIR] | stop [DIR]" >&2; exit 2 ;;
  esac
fi
