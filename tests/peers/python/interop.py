"""grpc.testing.TestService on grpcio, as a server and as a client.

The server is a second, independent implementation of the interop service
(grpc/doc/interop-test-descriptions.md) with grpcio's behaviour: it sends
no response headers before its first message unless asked to echo initial
metadata, and it ends a call whose deadline passes with DEADLINE_EXCEEDED.
The client runs the interop cases grpcio supports, as grpcio does them.

    interop.py server              # prints "listening PORT", serves on 127.0.0.1
    interop.py client HOST:PORT    # runs every case, prints a line each

Needs grpcio and grpcio-tools (scripts/install-python-peers.sh); the
service code is generated from tests/peers/proto at start-up.
"""

import os
import sys
import tempfile
import threading
import time
from concurrent import futures

import grpc
from grpc_tools import protoc

PROTO = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "proto")


def generate():
    """Generates the service modules into a temporary folder; returns them."""
    out = tempfile.mkdtemp(prefix="interop-py-")
    files = [f"grpc/testing/{name}.proto" for name in ("empty", "messages", "test")]
    args = ["protoc", f"-I{PROTO}", f"--python_out={out}", f"--grpc_python_out={out}"]
    if protoc.main(args + files) != 0:
        sys.exit("protoc failed")
    # The generated package is grpc.testing: graft it onto grpcio's `grpc`.
    grpc.__path__.append(os.path.join(out, "grpc"))
    from grpc.testing import empty_pb2, messages_pb2, test_pb2_grpc  # noqa: E402

    return empty_pb2, messages_pb2, test_pb2_grpc


empty_pb2, messages_pb2, test_pb2_grpc = generate()

ECHO_INITIAL = "x-grpc-test-echo-initial"
ECHO_TRAILING = "x-grpc-test-echo-trailing-bin"
SPECIAL_MESSAGE = "\t\ntest with whitespace\r\nand Unicode BMP \u263a and non-BMP \U0001f608\t\n"
REQUEST_SIZES = [27182, 8, 1828, 45904]
RESPONSE_SIZES = [31415, 9, 2653, 58979]


# ---------------------------------------------------------------- server


def echo_metadata(context):
    metadata = dict(context.invocation_metadata())
    if ECHO_INITIAL in metadata:
        context.send_initial_metadata([(ECHO_INITIAL, metadata[ECHO_INITIAL])])
    if ECHO_TRAILING in metadata:
        context.set_trailing_metadata([(ECHO_TRAILING, metadata[ECHO_TRAILING])])


def request_compressed(context):
    """grpcio hides per-message flags; a request is compressed when the call
    carries a grpc-encoding other than identity (what the clients here do)."""
    encoding = dict(context.invocation_metadata()).get("grpc-encoding", "identity")
    return encoding != "identity"


def check_compressed(expect, context):
    if expect.value and not request_compressed(context):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, "expected a compressed message")


def end_with(status, context):
    if status.code != 0:
        context.abort(grpc.StatusCode(_code(status.code)), status.message)


def _code(number):
    return next(code for code in grpc.StatusCode if code.value[0] == number).value


def payload(size):
    return messages_pb2.Payload(body=b"\0" * size)


class TestService(test_pb2_grpc.TestServiceServicer):
    def EmptyCall(self, request, context):
        echo_metadata(context)
        return empty_pb2.Empty()

    def UnaryCall(self, request, context):
        echo_metadata(context)
        check_compressed(request.expect_compressed, context)
        end_with(request.response_status, context)
        if request.response_compressed.value:
            context.set_compression(grpc.Compression.Gzip)
        return messages_pb2.SimpleResponse(payload=payload(request.response_size))

    CacheableUnaryCall = UnaryCall

    def StreamingOutputCall(self, request, context):
        echo_metadata(context)
        yield from self._respond(request.response_parameters, context)
        end_with(request.response_status, context)

    def StreamingInputCall(self, request_iterator, context):
        echo_metadata(context)
        total = 0
        for request in request_iterator:
            check_compressed(request.expect_compressed, context)
            total += len(request.payload.body)
        return messages_pb2.StreamingInputCallResponse(aggregated_payload_size=total)

    def FullDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        for request in request_iterator:
            end_with(request.response_status, context)
            yield from self._respond(request.response_parameters, context)

    def HalfDuplexCall(self, request_iterator, context):
        echo_metadata(context)
        requests = list(request_iterator)
        for request in requests:
            yield from self._respond(request.response_parameters, context)

    @staticmethod
    def _respond(parameters, context):
        if any(p.compressed.value for p in parameters):
            context.set_compression(grpc.Compression.Gzip)
        for parameter in parameters:
            if parameter.interval_us:
                time.sleep(parameter.interval_us / 1e6)
            if not parameter.compressed.value:
                context.disable_next_message_compression()
            yield messages_pb2.StreamingOutputCallResponse(payload=payload(parameter.size))


def serve():
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=64),
        options=[
            ("grpc.max_receive_message_length", 8 << 20),
            ("grpc.max_send_message_length", 8 << 20),
        ],
    )
    test_pb2_grpc.add_TestServiceServicer_to_server(TestService(), server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(f"listening {port}", flush=True)
    server.wait_for_termination()


# ---------------------------------------------------------------- client


class Failure(Exception):
    pass


def ensure(condition, what):
    if not condition:
        raise Failure(what)


def expect_status(call, code, message=None):
    try:
        result = call()
        if hasattr(result, "__iter__") and not isinstance(result, messages_pb2.SimpleResponse):
            list(result)
    except grpc.RpcError as error:
        ensure(error.code() == code, f"got {error.code()} {error.details()!r}, wanted {code}")
        if message is not None:
            ensure(error.details() == message, f"message {error.details()!r}")
        return
    raise Failure(f"succeeded, wanted {code}")


def empty_unary(stub):
    ensure(stub.EmptyCall(empty_pb2.Empty()) == empty_pb2.Empty(), "not empty")


def large_unary(stub):
    response = stub.UnaryCall(
        messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828))
    )
    ensure(len(response.payload.body) == 314159, "wrong size")


def client_streaming(stub):
    requests = (messages_pb2.StreamingInputCallRequest(payload=payload(n)) for n in REQUEST_SIZES)
    response = stub.StreamingInputCall(requests)
    ensure(response.aggregated_payload_size == 74922, f"{response.aggregated_payload_size}")


def server_streaming(stub):
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=n) for n in RESPONSE_SIZES]
    )
    sizes = [len(r.payload.body) for r in stub.StreamingOutputCall(request)]
    ensure(sizes == RESPONSE_SIZES, f"{sizes}")


class Pipe:
    """A request iterator the test feeds one message at a time."""

    def __init__(self):
        self._items = []
        self._cond = threading.Condition()

    def send(self, item):
        with self._cond:
            self._items.append(item)
            self._cond.notify()

    def close(self):
        self.send(None)

    def __iter__(self):
        return self

    def __next__(self):
        with self._cond:
            while not self._items:
                self._cond.wait()
            item = self._items.pop(0)
        if item is None:
            raise StopIteration
        return item


def ping_pong(stub):
    pipe = Pipe()
    responses = stub.FullDuplexCall(pipe)
    for request_size, response_size in zip(REQUEST_SIZES, RESPONSE_SIZES):
        pipe.send(
            messages_pb2.StreamingOutputCallRequest(
                response_parameters=[messages_pb2.ResponseParameters(size=response_size)],
                payload=payload(request_size),
            )
        )
        response = next(responses)
        ensure(len(response.payload.body) == response_size, "wrong size")
    pipe.close()
    ensure(next(responses, None) is None, "extra response")


def empty_stream(stub):
    ensure(list(stub.FullDuplexCall(iter([]))) == [], "responses to nothing")


def custom_metadata(stub):
    metadata = [(ECHO_INITIAL, "test_initial_metadata_value"), (ECHO_TRAILING, b"\xab\xab\xab")]
    request = messages_pb2.SimpleRequest(response_size=314159, payload=payload(271828))
    _, call = stub.UnaryCall.with_call(request, metadata=metadata)
    check_echo(call.initial_metadata(), call.trailing_metadata())
    request = messages_pb2.StreamingOutputCallRequest(
        response_parameters=[messages_pb2.ResponseParameters(size=314159)],
        payload=payload(271828),
    )
    call = stub.FullDuplexCall(iter([request]), metadata=metadata)
    ensure(len(list(call)) == 1, "one response")
    check_echo(call.initial_metadata(), call.trailing_metadata())


def check_echo(initial, trailing):
    ensure((ECHO_INITIAL, "test_initial_metadata_value") in initial, f"initial {initial}")
    ensure((ECHO_TRAILING, b"\xab\xab\xab") in trailing, f"trailing {trailing}")


def status_code_and_message(stub):
    status = messages_pb2.EchoStatus(code=2, message="test status message")
    expect_status(
        lambda: stub.UnaryCall(messages_pb2.SimpleRequest(response_status=status)),
        grpc.StatusCode.UNKNOWN,
        "test status message",
    )
    request = messages_pb2.StreamingOutputCallRequest(response_status=status)
    expect_status(
        lambda: stub.FullDuplexCall(iter([request])),
        grpc.StatusCode.UNKNOWN,
        "test status message",
    )


def special_status_message(stub):
    status = messages_pb2.EchoStatus(code=2, message=SPECIAL_MESSAGE)
    expect_status(
        lambda: stub.UnaryCall(messages_pb2.SimpleRequest(response_status=status)),
        grpc.StatusCode.UNKNOWN,
        SPECIAL_MESSAGE,
    )


def unimplemented_method(stub):
    expect_status(
        lambda: stub.UnimplementedCall(empty_pb2.Empty()), grpc.StatusCode.UNIMPLEMENTED
    )


def cancel_after_first_response(stub):
    pipe = Pipe()
    call = stub.FullDuplexCall(pipe)
    pipe.send(
        messages_pb2.StreamingOutputCallRequest(
            response_parameters=[messages_pb2.ResponseParameters(size=31415)],
            payload=payload(27182),
        )
    )
    ensure(len(next(call).payload.body) == 31415, "wrong size")
    call.cancel()
    expect_status(lambda: next(call), grpc.StatusCode.CANCELLED)


def timeout_on_sleeping_server(stub):
    pipe = Pipe()
    call = stub.FullDuplexCall(pipe, timeout=0.001)
    pipe.send(messages_pb2.StreamingOutputCallRequest(payload=payload(27182)))
    expect_status(lambda: list(call), grpc.StatusCode.DEADLINE_EXCEEDED)
    pipe.close()


CASES = [
    empty_unary,
    large_unary,
    client_streaming,
    server_streaming,
    ping_pong,
    empty_stream,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    cancel_after_first_response,
    timeout_on_sleeping_server,
]


def run_client(target, rounds):
    options = [("grpc.max_receive_message_length", 8 << 20)]
    failed = passed = 0
    # INTEROP_CA_FILE (a PEM CA): TLS, with ALPN h2, checked against that CA.
    ca_file = os.environ.get("INTEROP_CA_FILE")
    if ca_file:
        with open(ca_file, "rb") as pem:
            credentials = grpc.ssl_channel_credentials(root_certificates=pem.read())
        channel = grpc.secure_channel(target, credentials, options=options)
    else:
        channel = grpc.insecure_channel(target, options=options)
    with channel:
        stub = test_pb2_grpc.TestServiceStub(channel)
        for _ in range(rounds):
            for case in CASES:
                started = time.monotonic()
                try:
                    case(stub)
                    passed += 1
                    verdict = "pass"
                except (Failure, grpc.RpcError) as error:
                    failed += 1
                    verdict = f"FAIL {error!r}"
                millis = (time.monotonic() - started) * 1000
                print(f"{case.__name__:<32} {millis:8.1f}ms {verdict}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return failed


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve()
    elif sys.argv[1:2] == ["client"] and len(sys.argv) >= 3:
        rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 1
        sys.exit(1 if run_client(sys.argv[2], rounds) else 0)
    else:
        sys.exit(__doc__)
