// Loopback reverse proxy that adds `Authorization: Bearer <token>` to every request.
//
// The MCP conformance suite cannot send a bearer token, and `fabric mcp --http` has no
// unauthenticated mode, so the suite talks to this proxy instead. Everything else
// (method, path, Host, Origin, body, SSE streams, status codes, headers) is passed
// through unchanged, so Host/Origin validation is still exercised end to end.
//
// usage: node bearer-proxy.mjs <upstream base URL, e.g. http://127.0.0.1:8765> <token file>
// Prints "listening <port>" on stdout once it accepts connections (port from $PROXY_PORT, else ephemeral).
import http from "node:http";
import fs from "node:fs";

const [upstreamArg, tokenFile] = process.argv.slice(2);
if (!upstreamArg || !tokenFile) {
  console.error("usage: node bearer-proxy.mjs <upstream base URL> <token file>");
  process.exit(2);
}
const upstream = new URL(upstreamArg);
if (!["127.0.0.1", "localhost", "[::1]"].includes(upstream.hostname)) {
  console.error(`refusing non-loopback upstream ${upstream.hostname}`);
  process.exit(2);
}
const token = fs.readFileSync(tokenFile, "utf8").trim();

const server = http.createServer((req, res) => {
  const headers = { ...req.headers };
  if (!headers.authorization) headers.authorization = `Bearer ${token}`;
  const up = http.request(
    {
      host: upstream.hostname.replace(/^\[|\]$/g, ""),
      port: upstream.port,
      method: req.method,
      path: req.url,
      headers, // Host and Origin kept as the client sent them
    },
    (upRes) => {
      res.writeHead(upRes.statusCode, upRes.statusMessage, upRes.rawHeaders);
      res.flushHeaders();
      upRes.pipe(res);
    },
  );
  up.on("error", (e) => {
    if (!res.headersSent) {
      res.writeHead(502, { "content-type": "text/plain" });
    }
    res.end(`bearer-proxy: upstream error: ${e.message}`);
  });
  res.on("close", () => up.destroy());
  req.pipe(up);
});
server.listen(Number(process.env.PROXY_PORT || 0), "127.0.0.1", () => {
  console.log(`listening ${server.address().port}`);
});
for (const sig of ["SIGTERM", "SIGINT"]) process.on(sig, () => process.exit(0));
