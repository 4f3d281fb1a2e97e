// gRPC-web clients in a real browser against one target:
//
//   node browser_clients.mjs http://127.0.0.1:PORT     (CLIENT_CASES=name: one case)
//
// Bundles web/page.mjs with esbuild, serves it from 127.0.0.1 on a port of
// its own (so every call is cross-origin, with a CORS preflight), opens it
// in Debian's Chromium driven headless by playwright-core, and prints one
// JSON line per (client, case), as the other client scripts do. The
// browser (with the fresh profile playwright makes for it) and the page
// server are closed whatever happens; the whole run
// is bounded by RUN_TIMEOUT_MS.
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";
import { chromium } from "playwright-core";

const RUN_TIMEOUT_MS = 120000;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const [target] = process.argv.slice(2);

const bundle = await esbuild.build({
  entryPoints: [fileURLToPath(new URL("web/page.mjs", import.meta.url))],
  bundle: true,
  format: "iife",
  platform: "browser",
  write: false,
  logLevel: "error",
});
const script = bundle.outputFiles[0].contents;
const html = "<!doctype html><meta charset=utf-8><title>grpc-web clients</title><script src=/page.js></script>";

const server = createServer((request, response) => {
  const [type, body] = request.url === "/page.js" ? ["text/javascript", script] : ["text/html", html];
  response.writeHead(200, { "content-type": type }).end(body);
});
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const pageUrl = `http://127.0.0.1:${server.address().port}/`;

let browser;
const stop = async () => {
  await browser?.close().catch(() => {});
  server.close();
};
const deadline = setTimeout(async () => {
  console.error(`browser clients did not finish in ${RUN_TIMEOUT_MS} ms`);
  await stop();
  process.exit(1);
}, RUN_TIMEOUT_MS);
for (const signal of ["SIGINT", "SIGTERM"]) process.on(signal, () => stop().then(() => process.exit(1)));

try {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    args: [
      "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
      "--disable-background-networking", "--disable-component-update", "--disable-sync",
    ],
  });
  const page = await browser.newPage();
  page.on("pageerror", (error) => console.error(`page error: ${error}`));
  await page.goto(pageUrl);
  const only = process.env.CLIENT_CASES ?? null;
  const results = await page.evaluate(([t, o]) => window.runClients(t, o), [target, only]);
  for (const result of results) console.log(JSON.stringify({ ...result, client: `${result.client} in Chromium` }));
} finally {
  clearTimeout(deadline);
  await stop();
}
