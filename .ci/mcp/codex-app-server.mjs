// Drives `codex app-server` (the JSON-RPC protocol that Codex's own front ends use, over
// stdio) to make Codex connect to the MCP servers configured in CODEX_HOME/config.toml,
// without an OpenAI login:
//   1. initialize,
//   2. mcpServerStatus/list: Codex starts/connects to every configured server and lists its tools,
//   3. thread/start (creates a local thread; no model is called until turn/start, which is
//      never sent), then one mcpServer/tool/call per entry of CALLS on that thread.
//
//   node codex-app-server.mjs CALLS_JSON -- CODEX_COMMAND [ARGS...]
// CALLS_JSON: [{"server": "...", "tool": "...", "arguments": {...}}, ...] (may be []).
// Prints one JSON object on stdout:
//   {"servers": [{name, authStatus, toolsError, serverInfo, tools: [names]}],
//    "calls": [{server, tool, result | error}]}
// and exits 0, or prints why and exits 1 (protocol error, timeout, app-server exit).
// app-server's own log goes to stderr.
import { spawn } from "node:child_process";
import readline from "node:readline";

const argv = process.argv.slice(2);
const dash = argv.indexOf("--");
if (dash !== 1 || argv.length < 3) {
  console.log("usage: node codex-app-server.mjs CALLS_JSON -- CODEX_COMMAND [ARGS...]");
  process.exit(2);
}
const calls = JSON.parse(argv[0]);
const [cmd, ...args] = argv.slice(2);
const TIMEOUT_MS = Number(process.env.CODEX_APP_SERVER_TIMEOUT_MS || 60000);

const child = spawn(cmd, args, { stdio: ["pipe", "pipe", "inherit"] });
let exited = null;
const die = (why) => {
  console.log(why);
  if (exited === null) child.kill();
  process.exit(1);
};
const timer = setTimeout(() => die(`timed out after ${TIMEOUT_MS} ms`), TIMEOUT_MS);
child.on("error", (e) => die(`cannot start ${cmd}: ${e.message}`));
child.on("exit", (code, signal) => {
  exited = code ?? signal;
  if (!done) die(`codex app-server exited early (${exited})`);
});

const pending = new Map();
let nextId = 0;
let done = false;
readline.createInterface({ input: child.stdout }).on("line", (line) => {
  let m;
  try {
    m = JSON.parse(line);
  } catch {
    process.stderr.write(`app-server stdout, not JSON: ${line}\n`);
    return;
  }
  if (m.id !== undefined && m.method === undefined && pending.has(m.id)) {
    pending.get(m.id)(m);
    pending.delete(m.id);
  } else if (m.id !== undefined && m.method !== undefined) {
    // A server-to-client request (approval, elicitation): none is expected; refuse it.
    process.stderr.write(`app-server request refused: ${line.slice(0, 500)}\n`);
    send({ id: m.id, error: { code: -32601, message: "not supported by this test client" } });
  }
  // Notifications (startup status, warnings) are ignored: the responses say it all.
});
const send = (msg) => child.stdin.write(JSON.stringify({ jsonrpc: "2.0", ...msg }) + "\n");
const request = (method, params) =>
  new Promise((resolve) => {
    const id = ++nextId;
    pending.set(id, resolve);
    send({ id, method, params });
  });
const ok = async (method, params) => {
  const r = await request(method, params);
  if (r.error) die(`${method} failed: ${JSON.stringify(r.error)}`);
  return r.result;
};

await ok("initialize", { clientInfo: { name: "fabric-mcp-hosts", title: "fabric .ci/mcp/hosts.sh", version: "0" } });
send({ method: "initialized" });

const servers = [];
let cursor = null;
do {
  const page = await ok("mcpServerStatus/list", { cursor, detail: "toolsAndAuthOnly" });
  for (const s of page.data) {
    servers.push({
      name: s.name,
      authStatus: s.authStatus,
      toolsError: s.toolsError ?? null,
      serverInfo: s.serverInfo ?? null,
      tools: Object.keys(s.tools || {}).sort(),
    });
  }
  cursor = page.nextCursor ?? null;
} while (cursor);

const results = [];
if (calls.length) {
  const thread = await ok("thread/start", { ephemeral: true });
  const threadId = thread.thread.id;
  for (const c of calls) {
    const r = await request("mcpServer/tool/call", { threadId, server: c.server, tool: c.tool, arguments: c.arguments });
    results.push({ server: c.server, tool: c.tool, ...(r.error ? { error: r.error } : { result: r.result }) });
  }
}

done = true;
clearTimeout(timer);
console.log(JSON.stringify({ servers, calls: results }, null, 1));
// Closing stdin ends app-server, which stops the stdio servers it started.
child.stdin.end();
const grace = setTimeout(() => child.kill(), 10000);
child.on("exit", () => {
  clearTimeout(grace);
  process.exit(0);
});
if (exited !== null) process.exit(0);
