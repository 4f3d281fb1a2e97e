// gRPC with the JSON codec (application/grpc+json), from real libraries on
// both ends: a @connectrpc/connect-node server and client (useBinaryFormat:
// false), which speak the gRPC protocol with JSON.
//
//   node connect_json.mjs server         prints "listening PORT"; serves
//                                         until the test stops it
//   node connect_json.mjs client URL     one JSON line per case
//
// The server implements the interop behaviour the cases use: payload of
// response_size zeros, response_status as the call's error, the echo
// metadata, spaced stream messages (tests/peers/tests/content_types.rs).
import http2 from "node:http2";
import { create } from "@bufbuild/protobuf";
import { Code, ConnectError, createClient } from "@connectrpc/connect";
import { connectNodeAdapter, createGrpcTransport } from "@connectrpc/connect-node";
import {
  ResponseParametersSchema,
  SimpleRequestSchema,
  SimpleResponseSchema,
  StreamingOutputCallRequestSchema,
  StreamingOutputCallResponseSchema,
} from "./gen/grpc/testing/messages_pb.js";
import { TestService } from "./gen/grpc/testing/test_pb.js";

const ECHO_INITIAL = "x-grpc-test-echo-initial";
const ECHO_TRAILING = "x-grpc-test-echo-trailing-bin";

function echo(context) {
  // What protocol and codec the call arrived in, for the test to check.
  context.responseHeader.set("x-seen-content-type", context.requestHeader.get("content-type"));
  const initial = context.requestHeader.get(ECHO_INITIAL);
  if (initial !== null) context.responseHeader.set(ECHO_INITIAL, initial);
  const trailing = context.requestHeader.get(ECHO_TRAILING);
  if (trailing !== null) context.responseTrailer.set(ECHO_TRAILING, trailing);
}

function fail(status, context) {
  if (status && status.code !== 0) {
    throw new ConnectError(status.message, status.code, context.responseTrailer);
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function serve() {
  const routes = (router) =>
    router.service(TestService, {
      async unaryCall(request, context) {
        echo(context);
        fail(request.responseStatus, context);
        return create(SimpleResponseSchema, { payload: { body: new Uint8Array(request.responseSize) } });
      },
      async *streamingOutputCall(request, context) {
        echo(context);
        for (const p of request.responseParameters) {
          await sleep(p.intervalUs / 1000);
          yield create(StreamingOutputCallResponseSchema, { payload: { body: new Uint8Array(p.size) } });
        }
        fail(request.responseStatus, context);
      },
    });
  const server = http2.createServer(connectNodeAdapter({ routes }));
  server.listen(0, "127.0.0.1", () => console.log(`listening ${server.address().port}`));
}

const codeName = (code) => Code[code].replace(/([a-z])([A-Z])/g, "$1_$2").toUpperCase();

async function record(run) {
  const started = Date.now();
  const out = { status: "OK", message: "", content_type: null, seen_content_type: null, initial: null, trailing: null, messages: [], ms_to_messages: [] };
  try {
    await run((size) => {
      out.messages.push(size);
      out.ms_to_messages.push(Date.now() - started);
    }, {
      onHeader: (headers) => {
        out.content_type = headers.get("content-type");
        out.seen_content_type = headers.get("x-seen-content-type");
        out.initial = headers.get(ECHO_INITIAL);
      },
      onTrailer: (trailers) => (out.trailing = trailers.get(ECHO_TRAILING)),
    });
  } catch (error) {
    const e = ConnectError.from(error);
    out.status = codeName(e.code);
    out.message = e.rawMessage;
    out.trailing = e.metadata.get(ECHO_TRAILING);
  }
  return out;
}

async function clients(url) {
  const transport = createGrpcTransport({ baseUrl: url, useBinaryFormat: false });
  const client = createClient(TestService, transport);
  const metadata = { [ECHO_INITIAL]: "initial", [ECHO_TRAILING]: Buffer.from([0, 1, 0xfe]).toString("base64") };
  const params = (list) => list.map((p) => create(ResponseParametersSchema, p));
  const stream = async (got, options, request) => {
    for await (const r of client.streamingOutputCall(create(StreamingOutputCallRequestSchema, request), options))
      got(r.payload.body.length);
  };
  const cases = {
    unary: (got, options) =>
      client
        .unaryCall(create(SimpleRequestSchema, { responseSize: 10 }), { headers: metadata, ...options })
        .then((r) => got(r.payload.body.length)),
    server_stream_spaced: (got, options) =>
      stream(got, { headers: metadata, ...options }, { responseParameters: params([8, 16, 24].map((size) => ({ size, intervalUs: 100000 }))) }),
    error_after_messages: (got, options) =>
      stream(got, options, { responseParameters: params([{ size: 8 }]), responseStatus: { code: 9, message: "late: \u263a" } }),
    error_with_metadata: (got, options) =>
      client.unaryCall(create(SimpleRequestSchema, { responseStatus: { code: 7, message: "denied: \u263a" } }), {
        headers: metadata,
        ...options,
      }),
    unimplemented_method: (got, options) => client.unimplementedCall({}, options),
  };
  for (const [name, run] of Object.entries(cases)) {
    console.log(JSON.stringify({ case: name, ...(await record(run)) }));
  }
}

const [mode, url] = process.argv.slice(2);
if (mode === "server") serve();
else await clients(url);
