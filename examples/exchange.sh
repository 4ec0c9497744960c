#!/usr/bin/env bash
# The percy/coder exchange: starts percy_worker, lets coder_worker send percy code_review
# tasks and print percy's replies (to this run's tasks only), then stops percy gracefully.
#
# Redis: REDIS_URL (default redis://127.0.0.1:6379) when it answers; otherwise, when
# redis-server is installed, a private one on a free loopback port for this run.
# TASKS (default 3) sets how many tasks coder sends. Honours CARGO_TARGET_DIR.
set -euo pipefail
cd "$(dirname "$0")/.."
export RUST_LOG="${RUST_LOG:-warn}"

say() { printf '==> %s\n' "$*" >&2; }

say "building the examples (the first build takes a minute or two; cargo shows its progress)"
cargo build -p examples --bins
target_dir=$(cargo metadata --format-version 1 --no-deps |
  sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
bin="${target_dir:-target}/debug"
for b in percy_worker coder_worker; do
  [ -x "$bin/$b" ] || { echo "error: $bin/$b was not built" >&2; exit 1; }
done

pids=()
cleanup() {
  # Only what this script started, by pid, one after the other: percy stops gracefully
  # (it acknowledges what it finished) before a private Redis goes away.
  for pid in "${pids[@]}"; do
    kill -TERM "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
}
trap cleanup EXIT

export REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
if ! "$bin/coder_worker" --tasks 0 >/dev/null 2>"${TMPDIR:-/tmp}/exchange-check.$$"; then
  if ! command -v redis-server >/dev/null 2>&1; then
    cat "${TMPDIR:-/tmp}/exchange-check.$$" >&2
    rm -f "${TMPDIR:-/tmp}/exchange-check.$$"
    echo "error: nothing answers at $REDIS_URL and redis-server is not installed; install it (apt-get install -y redis-server, brew install redis) or set REDIS_URL to a running server" >&2
    exit 1
  fi
  port=""
  for _ in $(seq 1 50); do
    p=$((20000 + RANDOM % 40000))
    if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then port=$p; break; fi
  done
  [ -n "$port" ] || { echo "error: found no free loopback port for a private redis-server" >&2; exit 1; }
  say "nothing answers at $REDIS_URL: starting a private redis-server on 127.0.0.1:$port for this run"
  redis-server --port "$port" --bind 127.0.0.1 --save '' --appendonly no >/dev/null &
  pids+=($!)
  export REDIS_URL="redis://127.0.0.1:$port"
  for _ in $(seq 1 100); do
    "$bin/coder_worker" --tasks 0 >/dev/null 2>&1 && break
    sleep 0.05
  done
fi
rm -f "${TMPDIR:-/tmp}/exchange-check.$$"

say "starting percy_worker, then coder_worker (Redis at $(printf '%s' "$REDIS_URL" | sed -E 's#//[^@/]*@#//***@#'))"
"$bin/percy_worker" &
pids=("$!" "${pids[@]}")
"$bin/coder_worker" --tasks "${TASKS:-3}" --timeout-secs 30
