// Raw Streamable HTTP probes against `fabric mcp --http`: protocol edge cases that the
// conformance suite (0.1.16) does not exercise. Each probe prints one line,
// "PASS <name>" or "FAIL <name>: <what was sent> -> <what came back>", and the process
// exits 1 if any probe failed.
//
// usage: node probes.mjs <MCP URL, e.g. http://127.0.0.1:8765/mcp> <token file>
import fs from "node:fs";

const [url, tokenFile] = process.argv.slice(2);
if (!url || !tokenFile) {
  console.error("usage: node probes.mjs <MCP URL> <token file>");
  process.exit(2);
}
const token = fs.readFileSync(tokenFile, "utf8").trim();
const PROTOCOL = "2025-11-25";
const base = {
  "content-type": "application/json",
  accept: "application/json, text/event-stream",
};
const auth = { authorization: `Bearer ${token}` };
let failures = 0;

async function send(method, { headers = {}, body } = {}) {
  const res = await fetch(url, {
    method,
    headers,
    body,
    signal: AbortSignal.timeout(10_000),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, text, json: parseBody(res, text) };
}

// The JSON-RPC message in a response: a plain JSON body, or the first `data:` line of an
// SSE body that holds JSON (the others are priming events).
function parseBody(res, text) {
  const type = res.headers.get("content-type") || "";
  const candidates = type.includes("text/event-stream")
    ? text.split("\n").filter((l) => l.startsWith("data:")).map((l) => l.slice(5).trim())
    : [text];
  for (const c of candidates) {
    if (!c) continue;
    try {
      return JSON.parse(c);
    } catch {
      /* not JSON */
    }
  }
  return null;
}

function short(r) {
  const type = r.headers.get("content-type") || "";
  const shown = r.json && type.includes("text/event-stream") ? `(SSE) ${JSON.stringify(r.json)}` : r.text;
  const body = shown.replace(/\s+/g, " ").trim();
  return `HTTP ${r.status} ${body.length > 240 ? body.slice(0, 240) + "…" : body || "(empty body)"}`;
}

async function probe(name, request, fn) {
  try {
    const why = await fn();
    if (why) {
      failures++;
      console.log(`FAIL ${name}: ${request} -> ${why}`);
    } else {
      console.log(`PASS ${name}`);
    }
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${request} -> exception ${e?.message ?? e}`);
  }
}

const initBody = JSON.stringify({
  jsonrpc: "2.0",
  id: 1,
  method: "initialize",
  params: {
    protocolVersion: PROTOCOL,
    capabilities: {},
    clientInfo: { name: "fabric-ci-probes", version: "1.0.0" },
  },
});

async function openSession() {
  const r = await send("POST", { headers: { ...base, ...auth }, body: initBody });
  const sid = r.headers.get("mcp-session-id");
  if (r.status !== 200 || !sid) throw new Error(`initialize failed: ${short(r)}`);
  const s = { ...base, ...auth, "mcp-session-id": sid, "mcp-protocol-version": PROTOCOL };
  const n = await send("POST", {
    headers: s,
    body: JSON.stringify({ jsonrpc: "2.0", method: "notifications/initialized" }),
  });
  return { sid, headers: s, initializedStatus: n.status };
}

await probe("http-unauthenticated-401", "POST initialize without Authorization", async () => {
  const r = await send("POST", { headers: base, body: initBody });
  if (r.status !== 401) return short(r);
  const www = r.headers.get("www-authenticate") || "";
  if (!/^Bearer /i.test(www) || !www.includes("resource_metadata=")) {
    return `401 but WWW-Authenticate is ${JSON.stringify(www)}`;
  }
});

let session;
try {
  session = await openSession();
  console.log("PASS http-initialize-session");
} catch (e) {
  console.log(`FAIL http-initialize-session: POST initialize + notifications/initialized -> ${e?.message ?? e}`);
  process.exit(1);
}

await probe("http-notification-202", "POST notifications/initialized", async () => {
  if (session.initializedStatus !== 202) return `HTTP ${session.initializedStatus}`;
});

await probe(
  "http-tools-list-invalid-cursor-32602",
  'POST {"method":"tools/list","params":{"cursor":"not-a-cursor"}}',
  async () => {
    const r = await send("POST", {
      headers: session.headers,
      body: JSON.stringify({ jsonrpc: "2.0", id: 2, method: "tools/list", params: { cursor: "not-a-cursor" } }),
    });
    if (r.json?.error?.code !== -32602) return short(r);
  },
);

await probe("http-parse-error-400-32700", "POST body '{\"jsonrpc\":\"2.0\",\"id\":3,\"method\":' (truncated JSON)", async () => {
  const r = await send("POST", { headers: session.headers, body: '{"jsonrpc":"2.0","id":3,"method":' });
  if (r.status !== 400 || r.json?.error?.code !== -32700) return short(r);
});

await probe("http-invalid-request-400", "POST body '{\"hello\":1}' (JSON, not JSON-RPC)", async () => {
  const r = await send("POST", { headers: session.headers, body: '{"hello":1}' });
  if (r.status !== 400) return short(r);
  if (r.json && r.json.error?.code !== -32600) return short(r);
});

await probe("http-unknown-method-32601", 'POST {"method":"resources/list"}', async () => {
  const r = await send("POST", {
    headers: session.headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 4, method: "resources/list" }),
  });
  if (r.json?.error?.code !== -32601) return short(r);
});

await probe("http-unknown-session-404", "POST ping with Mcp-Session-Id: no-such-session", async () => {
  const r = await send("POST", {
    headers: { ...session.headers, "mcp-session-id": "no-such-session" },
    body: JSON.stringify({ jsonrpc: "2.0", id: 5, method: "ping" }),
  });
  if (r.status !== 404) return short(r);
});

await probe("http-delete-unknown-session-404", "DELETE with Mcp-Session-Id: no-such-session", async () => {
  const r = await send("DELETE", { headers: { ...auth, "mcp-session-id": "no-such-session", "mcp-protocol-version": PROTOCOL } });
  if (r.status !== 404) return short(r);
});

await probe("http-delete-session-200-or-204", "DELETE with the live Mcp-Session-Id", async () => {
  const s = await openSession();
  const r = await send("DELETE", { headers: { ...auth, "mcp-session-id": s.sid, "mcp-protocol-version": PROTOCOL } });
  if (r.status !== 200 && r.status !== 204) return short(r);
});

await probe("http-deleted-session-404", "DELETE a session, then POST ping with it", async () => {
  const s = await openSession();
  await send("DELETE", { headers: { ...auth, "mcp-session-id": s.sid, "mcp-protocol-version": PROTOCOL } });
  const r = await send("POST", {
    headers: s.headers,
    body: JSON.stringify({ jsonrpc: "2.0", id: 6, method: "ping" }),
  });
  if (r.status !== 404) return short(r);
});

process.exit(failures ? 1 : 0);
