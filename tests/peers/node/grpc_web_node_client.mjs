// The official grpc-web client in Node, over the xhr2 XMLHttpRequest,
// binary and text, against one target:
//
//   node grpc_web_node_client.mjs http://127.0.0.1:PORT
//
// Same cases and output as browser_clients.mjs (web/cases.mjs).
import XMLHttpRequest from "xhr2";
import { runAll } from "./web/cases.mjs";

globalThis.XMLHttpRequest = XMLHttpRequest;
const [target] = process.argv.slice(2);
for (const result of await runAll(target, { only: process.env.CLIENT_CASES })) {
  console.log(JSON.stringify({ ...result, client: `${result.client} in Node (xhr2)` }));
}
