#!/usr/bin/env bash
# The percy/coder exchange: starts percy_worker, lets coder_worker send percy a
# code_review task and print percy's reply, then stops percy gracefully.
# Uses the Redis at REDIS_URL (default redis://127.0.0.1:6379).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build -q -p examples --bins
export RUST_LOG="${RUST_LOG:-warn}"
# One clear line, and no half-started processes, when Redis does not answer.
target/debug/coder_worker --tasks 0 >/dev/null || exit 1
target/debug/percy_worker &
percy=$!
trap 'kill -TERM "$percy" 2>/dev/null || true; wait "$percy" 2>/dev/null || true' EXIT
target/debug/coder_worker --tasks "${TASKS:-3}" --timeout-secs 30
