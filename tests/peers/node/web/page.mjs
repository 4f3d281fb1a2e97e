// The browser page's script (bundled by esbuild in browser_clients.mjs):
// every gRPC-web client in the browser, against the target it is given.
import { createGrpcWebTransport } from "@connectrpc/connect-web";
import improbable from "@improbable-eng/grpc-web";
import { runAll } from "./cases.mjs";

window.runClients = (target, only) =>
  runAll(target, {
    only,
    connectTransport: createGrpcWebTransport({ baseUrl: target }),
    improbableTransport: improbable.grpc.CrossBrowserHttpTransport({ withCredentials: false }),
  });
