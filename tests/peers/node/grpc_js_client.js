// @grpc/grpc-js, the Node gRPC client, against one target (native gRPC):
//
//   node grpc_js_client.js HOST:PORT
//
// Runs each case and prints one JSON line per case with what the library
// reported: status, message, trailing metadata, message sizes, and ms from
// the call's start to the response headers and to each message. The Rust
// test that runs it (tests/peers/tests/clients.rs) decides what is right.
// Messages are described at run time from tests/peers/proto.
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const definition = protoLoader.loadSync("grpc/testing/test.proto", {
  includeDirs: [path.join(__dirname, "..", "proto")],
  keepCase: true,
  longs: Number,
  defaults: true,
});
const TestService = grpc.loadPackageDefinition(definition).grpc.testing.TestService;
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

function payload(size) {
  return { body: Buffer.alloc(size) };
}

function recorder() {
  const started = Date.now();
  const out = { status: "OK", message: "", trailing: [], messages: [], ms_to_headers: null, ms_to_messages: [] };
  return {
    out,
    headers() {
      out.ms_to_headers = Date.now() - started;
    },
    message(size) {
      out.messages.push(size);
      out.ms_to_messages.push(Date.now() - started);
    },
    status(status) {
      out.status = grpc.status[status.code];
      out.message = status.details || "";
      const trailing = status.metadata ? status.metadata.getMap() : {};
      out.trailing = Object.entries(trailing)
        .filter(([key]) => key.startsWith("x-grpc-test"))
        .map(([key, value]) => [key, Buffer.isBuffer(value) ? value.toString("hex") : value])
        .sort();
    },
  };
}

function wire(call, rec, resolve) {
  call.on("metadata", () => rec.headers());
  call.on("data", (m) => rec.message(m.payload ? m.payload.body.length : 0));
  call.on("status", (s) => {
    rec.status(s);
    resolve(rec.out);
  });
  call.on("error", () => {});
}

const cases = {
  unary: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const call = client.UnaryCall({ response_size: 10, payload: payload(10) }, (err, reply) => {
        if (reply) rec.message(reply.payload.body.length);
      });
      wire(call, rec, resolve);
    }),
  client_streaming: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const call = client.StreamingInputCall((err, reply) => {
        if (reply) rec.message(reply.aggregated_payload_size);
      });
      wire(call, rec, resolve);
      for (const size of [27182, 8, 1828, 45904]) call.write({ payload: payload(size) });
      call.end();
    }),
  server_stream_spaced: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const params = [1, 2, 3].map(() => ({ size: 8, interval_us: 100000 }));
      wire(client.StreamingOutputCall({ response_parameters: params }), rec, resolve);
    }),
  empty_stream: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const call = client.FullDuplexCall();
      wire(call, rec, resolve);
      call.end();
    }),
  ping_pong: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const call = client.FullDuplexCall();
      const sizes = [31415, 9, 2653, 58979];
      let next = 0;
      const send = () => call.write({ response_parameters: [{ size: sizes[next] }], payload: payload(8) });
      call.on("data", () => {
        next += 1;
        if (next < sizes.length) send();
        else call.end();
      });
      wire(call, rec, resolve);
      send();
    }),
  error_with_metadata: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const metadata = new grpc.Metadata();
      metadata.set(ECHO_TRAILING, Buffer.from([0, 1, 0xfe, 0xff]));
      const request = { response_status: { code: 7, message: "denied: \u263a" } };
      wire(client.UnaryCall(request, metadata, () => {}), rec, resolve);
    }),
  large_message_1mib: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const call = client.UnaryCall({ response_size: 1 << 20 }, (err, reply) => {
        if (reply) rec.message(reply.payload.body.length);
      });
      wire(call, rec, resolve);
    }),
  deadline_while_server_sleeps: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const params = [{ size: 8, interval_us: 3000000 }];
      const call = client.StreamingOutputCall(
        { response_parameters: params },
        { deadline: Date.now() + 500 },
      );
      wire(call, rec, resolve);
    }),
  cancel_mid_stream: (client) =>
    new Promise((resolve) => {
      const rec = recorder();
      const params = [{ size: 8 }, { size: 8, interval_us: 2000000 }];
      const call = client.StreamingOutputCall({ response_parameters: params });
      call.on("data", () => call.cancel());
      wire(call, rec, resolve);
    }),
};

async function main() {
  const client = new TestService(process.argv[2], grpc.credentials.createInsecure(), {
    "grpc.max_receive_message_length": 8 << 20,
  });
  for (const [name, run] of Object.entries(cases)) {
    const out = await run(client);
    console.log(JSON.stringify({ client: "grpc-js", case: name, ...out }));
  }
  client.close();
}

main().catch((error) => {
  console.error(error);
  process.exit(1);
});
