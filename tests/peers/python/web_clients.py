"""Python clients from PyPI against one target, the same cases for each:
sonora (gRPC-web, sync and asyncio), or grpcio (native gRPC).

    web_clients.py http://HOST:PORT          sonora, sync and asyncio
    web_clients.py --grpcio HOST:PORT        grpcio

CLIENT_CASES=name limits the run to that case.

Runs each case with each client and prints one JSON line per (client,
case): what the client library reported (status, message, trailing
metadata, messages) and when (ms from the call's start to each message;
sonora has no callback for the response headers, so "ms_to_headers" is
when the first message or the unary reply arrived). The Rust test that runs it
(tests/peers/tests/clients.rs) decides what is right, for the bridge and
for Envoy's own gRPC-web filter side by side.
"""

import asyncio
import json
import queue
import os
import sys
import time

import grpc

import interop  # generates and loads the interop service modules
import sonora.aio
import sonora.client

messages_pb2 = interop.messages_pb2
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"


class Stub:
    """The calls the cases make, built on the channel directly: the stubs
    grpcio-tools generates pass an argument sonora does not take. Request
    streams are native gRPC only (gRPC-web cannot stream requests)."""

    METHODS = [
        ("UnaryCall", "unary_unary", "SimpleRequest", "SimpleResponse"),
        ("StreamingOutputCall", "unary_stream", "StreamingOutputCallRequest", "StreamingOutputCallResponse"),
        ("StreamingInputCall", "stream_unary", "StreamingInputCallRequest", "StreamingInputCallResponse"),
        ("FullDuplexCall", "stream_stream", "StreamingOutputCallRequest", "StreamingOutputCallResponse"),
    ]

    def __init__(self, channel):
        for name, kind, request, response in self.METHODS:
            call = getattr(channel, kind)(
                "/grpc.testing.TestService/" + name,
                request_serializer=getattr(messages_pb2, request).SerializeToString,
                response_deserializer=getattr(messages_pb2, response).FromString,
            )
            setattr(self, name, call)


def spaced_stream():
    params = [messages_pb2.ResponseParameters(size=8, interval_us=100_000) for _ in range(3)]
    return messages_pb2.StreamingOutputCallRequest(response_parameters=params)


CASES = {
    "unary": lambda: ("unary", messages_pb2.SimpleRequest(response_size=10, payload=interop.payload(10)), None, None),
    "server_stream_spaced": lambda: ("stream", spaced_stream(), None, None),
    "empty_stream": lambda: ("stream", messages_pb2.StreamingOutputCallRequest(), None, None),
    "error_with_metadata": lambda: (
        "unary",
        messages_pb2.SimpleRequest(
            response_status=messages_pb2.EchoStatus(code=7, message="denied: ☺"),
        ),
        [(ECHO_TRAILING, b"\x00\x01\xfe\xff")],
        None,
    ),
    "large_message_1mib": lambda: ("unary", messages_pb2.SimpleRequest(response_size=1 << 20), None, None),
    "deadline_while_server_sleeps": lambda: (
        "stream",
        messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=8, interval_us=3_000_000)]
        ),
        None,
        0.5,
    ),
}


def ping_pong_requests(requests, answered):
    for index, request in enumerate(requests):
        if index:
            answered.get(timeout=10)
        yield request


# Native gRPC only: request streams and a client cancel (grpcio; sonora has
# neither). The interop service's sizes.
NATIVE_CASES = {
    "client_streaming": lambda: (
        "client_stream",
        [messages_pb2.StreamingInputCallRequest(payload=interop.payload(n)) for n in (27182, 8, 1828, 45904)],
        None,
        None,
    ),
    "ping_pong": lambda: (
        "bidi",
        [
            messages_pb2.StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=size)], payload=interop.payload(body)
            )
            for size, body in ((31415, 27182), (9, 8), (2653, 1828), (58979, 45904))
        ],
        None,
        None,
    ),
    "cancel_mid_stream": lambda: (
        "cancel",
        messages_pb2.StreamingOutputCallRequest(
            response_parameters=[
                messages_pb2.ResponseParameters(size=8),
                messages_pb2.ResponseParameters(size=8, interval_us=2_000_000),
            ]
        ),
        None,
        None,
    ),
}


def describe(status, message, trailing, received, t_headers, t_messages):
    return {
        "status": status,
        "message": message,
        "trailing": sorted(
            [k, v.hex() if isinstance(v, bytes) else v] for k, v in (trailing or []) if k.startswith("x-grpc-test")
        ),
        "messages": received,
        "ms_to_headers": t_headers,
        "ms_to_messages": t_messages,
    }


def run_sync(target, name, open_channel=sonora.client.insecure_web_channel):
    kind, request, metadata, timeout = CASES[name]()
    started = time.monotonic()
    ms = lambda: round((time.monotonic() - started) * 1000, 1)  # noqa: E731
    with open_channel(target) as channel:
        stub = Stub(channel)
        received, times, trailing, t_headers = [], [], None, None
        try:
            if kind == "unary":
                response, call = stub.UnaryCall.with_call(request, timeout=timeout, metadata=metadata)
                t_headers = ms()
                received.append(len(response.payload.body))
                times.append(ms())
                trailing = call.trailing_metadata()
            elif kind == "client_stream":
                response, call = stub.StreamingInputCall.with_call(iter(request), metadata=metadata)
                t_headers = ms()
                received.append(response.aggregated_payload_size)
                times.append(ms())
                trailing = call.trailing_metadata()
            else:
                requests = request
                if kind == "bidi":
                    # Each request leaves only once the previous response came.
                    answered = queue.Queue()
                    requests = ping_pong_requests(request, answered)
                    call = stub.FullDuplexCall(requests, metadata=metadata)
                else:
                    call = stub.StreamingOutputCall(request, timeout=timeout, metadata=metadata)
                for response in call:
                    if t_headers is None:
                        t_headers = ms()
                    received.append(len(response.payload.body))
                    times.append(ms())
                    if kind == "bidi":
                        answered.put(None)
                    if kind == "cancel":
                        call.cancel()
                trailing = call.trailing_metadata()
            return describe("OK", "", trailing, received, t_headers, times)
        except grpc.RpcError as error:
            trailing = getattr(error, "trailing_metadata", lambda: None)()
            return describe(error.code().name, error.details(), trailing, received, t_headers, times)


async def run_async(target, name):
    kind, request, metadata, timeout = CASES[name]()
    started = time.monotonic()
    ms = lambda: round((time.monotonic() - started) * 1000, 1)  # noqa: E731
    async with sonora.aio.insecure_web_channel(target) as channel:
        stub = Stub(channel)
        received, times, trailing, t_headers = [], [], None, None
        try:
            if kind == "unary":
                call = stub.UnaryCall(request, timeout=timeout, metadata=metadata)
                response = await call
                t_headers = ms()
                received.append(len(response.payload.body))
                times.append(ms())
                trailing = await call.trailing_metadata()
            else:
                call = stub.StreamingOutputCall(request, timeout=timeout, metadata=metadata)
                async for response in call:
                    if t_headers is None:
                        t_headers = ms()
                    received.append(len(response.payload.body))
                    times.append(ms())
                trailing = await call.trailing_metadata()
            return describe("OK", "", trailing, received, t_headers, times)
        except grpc.RpcError as error:
            trailing = None
            try:
                trailing = error.trailing_metadata()
            except Exception:  # noqa: BLE001 - some errors carry none
                pass
            return describe(error.code().name, error.details(), trailing, received, t_headers, times)
        except Exception as error:  # noqa: BLE001 - reported as the client saw it
            return describe("CLIENT_ERROR", repr(error), None, received, t_headers, times)


def main():
    if sys.argv[1] == "--grpcio":
        target = sys.argv[2]
        clients = [("grpcio", lambda name: run_sync(target, name, grpc.insecure_channel))]
        CASES.update(NATIVE_CASES)
    else:
        target = sys.argv[1]
        clients = [
            ("sonora", lambda name: run_sync(target, name)),
            ("sonora-asyncio", lambda name: asyncio.run(run_async(target, name))),
        ]
    only = os.environ.get("CLIENT_CASES")
    for name in [name for name in CASES if not only or name == only]:
        for client, run in clients:
            try:
                outcome = run(name)
            except Exception as error:  # noqa: BLE001 - reported as the client saw it
                outcome = describe("CLIENT_ERROR", repr(error), None, [], None, [])
            print(json.dumps({"client": client, "case": name, **outcome}), flush=True)


if __name__ == "__main__":
    main()
