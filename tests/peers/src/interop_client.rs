//! The interop test cases (grpc/doc/interop-test-descriptions.md) as a
//! client of `grpc.testing.TestService` at any address, so they run against
//! the bridge chain, a direct server, or an official interop server alike.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::body::Body;
use tonic::codec::CompressionEncoding;
use tonic::metadata::{BinaryMetadataValue, MetadataValue};
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Request};

use crate::flags::{RecordingBody, SeenFlags};
use crate::proto::test_service_client::TestServiceClient;
use crate::proto::unimplemented_service_client::UnimplementedServiceClient;
use crate::proto::{
    BoolValue, EchoStatus, Empty, Payload, ResponseParameters, SimpleRequest,
    StreamingInputCallRequest, StreamingOutputCallRequest,
};

type CaseFuture = Pin<Box<dyn Future<Output = Result<()>> + Send>>;

/// A named interop case run against a target address.
pub struct Case {
    pub name: &'static str,
    pub run: fn(String) -> CaseFuture,
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        &[$(Case { name: stringify!($name), run: |target| Box::pin($name(target)) }),*]
    };
}

/// Every case, in the order of the interop descriptions.
pub const CASES: &[Case] = cases![
    empty_unary,
    large_unary,
    client_compressed_unary,
    server_compressed_unary,
    client_streaming,
    client_compressed_streaming,
    server_streaming,
    server_compressed_streaming,
    ping_pong,
    empty_stream,
    custom_metadata,
    status_code_and_message,
    special_status_message,
    unimplemented_method,
    unimplemented_service,
    cancel_after_begin,
    cancel_after_first_response,
    timeout_on_sleeping_server,
    soak_one_channel,
    soak_fresh_channels,
];

/// Cases a grpcio server cannot serve: it hides whether a request message
/// was compressed, so it cannot refuse the uncompressed probe (grpc's own
/// Python interop server skips these too).
pub const NEEDS_REQUEST_COMPRESSION_FLAGS: &[&str] =
    &["client_compressed_unary", "client_compressed_streaming"];

/// Runs every case against `target`, printing a table of results and
/// times; returns how many failed.
pub fn run_all(runtime: &tokio::runtime::Runtime, target: &str) -> usize {
    run_cases(runtime, target, CASES.iter())
}

/// Runs `cases` against `target` as [`run_all`] does.
pub fn run_cases<'a>(
    runtime: &tokio::runtime::Runtime,
    target: &str,
    cases: impl Iterator<Item = &'a Case>,
) -> usize {
    println!("{:<36} {:<6} {:>10}", "case", "result", "time");
    println!("{:-<36} {:-<6} {:->10}", "", "", "");
    let (mut passed, mut failed) = (0, 0);
    for case in cases {
        let started = std::time::Instant::now();
        let result = runtime.block_on((case.run)(target.to_string()));
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        let verdict = if result.is_ok() { "pass" } else { "FAIL" };
        println!("{:<36} {:<6} {:>8.1}ms", case.name, verdict, millis);
        match result {
            Ok(()) => passed += 1,
            Err(error) => {
                failed += 1;
                println!("    {error:#}");
            }
        }
    }
    println!();
    println!("{passed} passed, {failed} failed");
    failed
}

/// The await-headers-then-send pattern, as a case (for servers that send
/// headers first, like tonic).
pub const AWAITING_HEADERS: Case = Case {
    name: "ping_pong_awaiting_headers",
    run: |target| Box::pin(ping_pong_awaiting_headers(target)),
};

const REQUEST_SIZES: [usize; 4] = [27182, 8, 1828, 45904];
const RESPONSE_SIZES: [i32; 4] = [31415, 9, 2653, 58979];

/// The CA an `https://` target's certificate must chain to: set by
/// [`trust`], or read from the PEM file named by `INTEROP_CA_FILE`.
static TRUSTED_CA: std::sync::OnceLock<Vec<u8>> = std::sync::OnceLock::new();

/// Trusts `pem` for every `https://` target of this process.
pub fn trust(pem: Vec<u8>) {
    let _ = TRUSTED_CA.set(pem);
}

/// A channel to `target`: `http://` is cleartext HTTP/2 (prior knowledge),
/// `https://` is TLS with ALPN h2.
pub async fn channel(target: &str) -> Result<Channel> {
    let mut endpoint = Endpoint::from_shared(target.to_string())?
        .connect_timeout(Duration::from_secs(5))
        .timeout(Duration::from_secs(30));
    if target.starts_with("https://") {
        let pem = match TRUSTED_CA.get() {
            Some(pem) => pem.clone(),
            None => {
                let path = std::env::var("INTEROP_CA_FILE")
                    .context("an https:// target needs INTEROP_CA_FILE (a PEM CA)")?;
                std::fs::read(&path).with_context(|| format!("reading {path}"))?
            }
        };
        endpoint = endpoint.tls_config(
            tonic::transport::ClientTlsConfig::new()
                .ca_certificate(tonic::transport::Certificate::from_pem(pem)),
        )?;
    }
    endpoint
        .connect()
        .await
        .with_context(|| format!("connecting to {target}"))
}

async fn client(target: &str) -> Result<TestServiceClient<Channel>> {
    Ok(TestServiceClient::new(channel(target).await?)
        .max_decoding_message_size(8 << 20)
        .max_encoding_message_size(8 << 20))
}

/// A UnaryCall request of `size` zero bytes asking for as many back (the
/// benchmarks' calls).
pub fn sized_unary(size: usize) -> SimpleRequest {
    SimpleRequest {
        response_size: size as i32,
        payload: payload(size),
        ..Default::default()
    }
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; size],
    })
}

fn flag(value: bool) -> Option<BoolValue> {
    Some(BoolValue { value })
}

fn body_len(payload: &Option<Payload>) -> usize {
    payload.as_ref().map_or(0, |p| p.body.len())
}

fn stream_request(size: i32, interval_us: i32) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size,
            interval_us,
            compressed: None,
        }],
        ..Default::default()
    }
}

async fn empty_unary(target: String) -> Result<()> {
    let response = client(&target).await?.empty_call(Empty {}).await?;
    ensure!(response.into_inner() == Empty {});
    Ok(())
}

async fn large_unary(target: String) -> Result<()> {
    let request = SimpleRequest {
        response_size: 314159,
        payload: payload(271828),
        ..Default::default()
    };
    let response = client(&target)
        .await?
        .unary_call(request)
        .await?
        .into_inner();
    ensure!(
        body_len(&response.payload) == 314159,
        "got {} bytes",
        body_len(&response.payload)
    );
    Ok(())
}

async fn client_compressed_unary(target: String) -> Result<()> {
    let mut plain = client(&target).await?;
    let probe = SimpleRequest {
        expect_compressed: flag(true),
        response_size: 314159,
        payload: payload(271828),
        ..Default::default()
    };
    let status = plain
        .unary_call(probe.clone())
        .await
        .err()
        .context("uncompressed probe accepted")?;
    ensure!(status.code() == Code::InvalidArgument, "probe: {status:?}");
    let mut compressed = client(&target)
        .await?
        .send_compressed(CompressionEncoding::Gzip);
    let response = compressed.unary_call(probe).await?.into_inner();
    ensure!(body_len(&response.payload) == 314159);
    let uncompressed = SimpleRequest {
        expect_compressed: flag(false),
        ..SimpleRequest::default()
    };
    plain.unary_call(uncompressed).await?;
    Ok(())
}

async fn server_compressed_unary(target: String) -> Result<()> {
    for compressed in [true, false] {
        let (channel, seen) = RecordingChannel::new(channel(&target).await?);
        let mut client =
            TestServiceClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
        let request = SimpleRequest {
            response_compressed: flag(compressed),
            response_size: 314159,
            payload: payload(271828),
            ..Default::default()
        };
        let response = client.unary_call(request).await?.into_inner();
        ensure!(body_len(&response.payload) == 314159);
        ensure!(
            seen.all() == [compressed],
            "response flags {:?}, wanted [{compressed}]",
            seen.all()
        );
    }
    Ok(())
}

async fn client_streaming_with(target: &str, compressed: bool) -> Result<()> {
    let mut client = client(target).await?;
    if compressed {
        client = client.send_compressed(CompressionEncoding::Gzip);
    }
    let requests = REQUEST_SIZES.map(|size| StreamingInputCallRequest {
        payload: payload(size),
        expect_compressed: compressed.then_some(BoolValue { value: true }),
    });
    let response = client
        .streaming_input_call(tokio_stream::iter(requests))
        .await?
        .into_inner();
    ensure!(
        response.aggregated_payload_size == 74922,
        "aggregated {}",
        response.aggregated_payload_size
    );
    Ok(())
}

async fn client_streaming(target: String) -> Result<()> {
    client_streaming_with(&target, false).await
}

async fn client_compressed_streaming(target: String) -> Result<()> {
    // The probe: an uncompressed message that claims to expect compression fails.
    let probe = StreamingInputCallRequest {
        payload: payload(27182),
        expect_compressed: flag(true),
    };
    let status = client(&target)
        .await?
        .streaming_input_call(tokio_stream::iter([probe]))
        .await
        .err();
    ensure!(
        status.map(|s| s.code()) == Some(Code::InvalidArgument),
        "probe was not refused"
    );
    client_streaming_with(&target, true).await
}

async fn server_streaming(target: String) -> Result<()> {
    let (channel, seen) = RecordingChannel::new(channel(&target).await?);
    let mut client = TestServiceClient::new(channel);
    let request = StreamingOutputCallRequest {
        response_parameters: RESPONSE_SIZES
            .iter()
            .map(|&size| ResponseParameters {
                size,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    let sizes = response_sizes(client.streaming_output_call(request).await?.into_inner()).await?;
    ensure!(sizes == RESPONSE_SIZES, "sizes {sizes:?}");
    ensure!(seen.all() == [false; 4], "response flags {:?}", seen.all());
    Ok(())
}

/// The payload sizes of every message of a response stream.
async fn response_sizes(
    mut stream: tonic::Streaming<crate::proto::StreamingOutputCallResponse>,
) -> Result<Vec<i32>> {
    let mut sizes = Vec::new();
    while let Some(message) = stream.message().await? {
        sizes.push(body_len(&message.payload) as i32);
    }
    Ok(sizes)
}

async fn server_compressed_streaming(target: String) -> Result<()> {
    let (channel, seen) = RecordingChannel::new(channel(&target).await?);
    let mut client = TestServiceClient::new(channel).accept_compressed(CompressionEncoding::Gzip);
    let sizes = [31415, 92653];
    let request = StreamingOutputCallRequest {
        response_parameters: sizes
            .iter()
            .zip([true, false])
            .map(|(&size, compressed)| ResponseParameters {
                size,
                interval_us: 0,
                compressed: flag(compressed),
            })
            .collect(),
        ..Default::default()
    };
    let received =
        response_sizes(client.streaming_output_call(request).await?.into_inner()).await?;
    ensure!(received == sizes, "sizes {received:?}");
    // The second message's flag is not checked: a tonic server compresses
    // all of a stream's messages or none ("if supported by the
    // implementation", the interop description says).
    ensure!(
        seen.get(0) == Some(true) && seen.all().len() == 2,
        "response flags {:?}",
        seen.all()
    );
    Ok(())
}

async fn ping_pong(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let (tx, rx) = mpsc::channel(1);
    let mut exchanges = REQUEST_SIZES.iter().zip(RESPONSE_SIZES);
    // The first message goes out with the call: a server may send no
    // response headers before it (grpc-go, grpcio do not).
    let (request_size, response_size) = exchanges.next().context("no sizes")?;
    tx.send(ping(*request_size, response_size)).await?;
    let mut responses = client
        .full_duplex_call(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let response = responses.message().await?.context("stream ended early")?;
    ensure!(body_len(&response.payload) == response_size as usize);
    for (request_size, response_size) in exchanges {
        tx.send(ping(*request_size, response_size)).await?;
        let response = responses.message().await?.context("stream ended early")?;
        ensure!(body_len(&response.payload) == response_size as usize);
    }
    drop(tx);
    ensure!(responses.message().await?.is_none(), "extra response");
    Ok(())
}

fn ping(request_size: usize, response_size: i32) -> StreamingOutputCallRequest {
    let mut request = stream_request(response_size, 0);
    request.payload = payload(request_size);
    request
}

/// Ping-pong as many users write it: wait for the call (its response
/// headers) before sending the first message. Valid only against servers
/// that send headers before the first message (tonic does); it shows what
/// a proxy that holds response headers would cost.
async fn ping_pong_awaiting_headers(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let (tx, rx) = mpsc::channel(1);
    let mut responses = client
        .full_duplex_call(ReceiverStream::new(rx))
        .await?
        .into_inner();
    for (request_size, response_size) in REQUEST_SIZES.iter().zip(RESPONSE_SIZES) {
        tx.send(ping(*request_size, response_size)).await?;
        let response = responses.message().await?.context("stream ended early")?;
        ensure!(body_len(&response.payload) == response_size as usize);
    }
    drop(tx);
    ensure!(responses.message().await?.is_none(), "extra response");
    Ok(())
}

async fn empty_stream(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let mut responses = client
        .full_duplex_call(tokio_stream::empty())
        .await?
        .into_inner();
    ensure!(responses.message().await?.is_none());
    Ok(())
}

const INITIAL_KEY: &str = "x-grpc-test-echo-initial";
const TRAILING_KEY: &str = "x-grpc-test-echo-trailing-bin";
const INITIAL_VALUE: &str = "test_initial_metadata_value";
const TRAILING_VALUE: &[u8] = &[0xab, 0xab, 0xab];

fn with_echo_metadata<T>(message: T) -> Request<T> {
    let mut request = Request::new(message);
    request
        .metadata_mut()
        .insert(INITIAL_KEY, MetadataValue::from_static(INITIAL_VALUE));
    request.metadata_mut().insert_bin(
        TRAILING_KEY,
        BinaryMetadataValue::from_bytes(TRAILING_VALUE),
    );
    request
}

fn check_echo(
    initial: &tonic::metadata::MetadataMap,
    trailing: &tonic::metadata::MetadataMap,
) -> Result<()> {
    ensure!(
        initial.get(INITIAL_KEY).map(|v| v.as_bytes()) == Some(INITIAL_VALUE.as_bytes()),
        "initial {initial:?}"
    );
    let echoed = trailing.get_bin(TRAILING_KEY).map(|v| v.to_bytes());
    ensure!(
        matches!(echoed, Some(Ok(ref b)) if b.as_ref() == TRAILING_VALUE),
        "trailing {trailing:?}"
    );
    Ok(())
}

async fn custom_metadata(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    // Unary: tonic exposes trailers through the raw call's extensions only,
    // so read them from a streaming call below and check unary initial here.
    let request = SimpleRequest {
        response_size: 314159,
        payload: payload(271828),
        ..Default::default()
    };
    let response = client.unary_call(with_echo_metadata(request)).await?;
    ensure!(
        response.metadata().get(INITIAL_KEY).is_some(),
        "unary initial metadata missing"
    );
    // Full duplex: initial metadata with the headers, trailing with the trailers.
    let request = stream_request(314159, 0);
    let response = client
        .full_duplex_call(with_echo_metadata(tokio_stream::iter([request])))
        .await?;
    let initial = response.metadata().clone();
    let mut stream = response.into_inner();
    let message = stream.message().await?.context("no response")?;
    ensure!(body_len(&message.payload) == 314159);
    ensure!(stream.message().await?.is_none());
    let trailing = stream.trailers().await?.context("no trailers")?;
    check_echo(&initial, &trailing)
}

async fn status_code_and_message(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let echo = EchoStatus {
        code: 2,
        message: "test status message".into(),
    };
    let request = SimpleRequest {
        response_status: Some(echo.clone()),
        ..Default::default()
    };
    let status = client
        .unary_call(request)
        .await
        .err()
        .context("unary succeeded")?;
    ensure!(
        status.code() == Code::Unknown && status.message() == echo.message,
        "unary: {status:?}"
    );
    let request = StreamingOutputCallRequest {
        response_status: Some(echo.clone()),
        ..Default::default()
    };
    // The status may end a trailers-only reply (the call fails) or follow
    // response headers (the stream fails): both are the call's status.
    let status = match client.full_duplex_call(tokio_stream::iter([request])).await {
        Err(status) => status,
        Ok(response) => {
            let mut stream = response.into_inner();
            stream.message().await.err().context("stream succeeded")?
        }
    };
    ensure!(
        status.code() == Code::Unknown && status.message() == echo.message,
        "stream: {status:?}"
    );
    Ok(())
}

pub const SPECIAL_MESSAGE: &str =
    "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";

async fn special_status_message(target: String) -> Result<()> {
    let echo = EchoStatus {
        code: 2,
        message: SPECIAL_MESSAGE.into(),
    };
    let request = SimpleRequest {
        response_status: Some(echo),
        ..Default::default()
    };
    let status = client(&target)
        .await?
        .unary_call(request)
        .await
        .err()
        .context("succeeded")?;
    ensure!(status.code() == Code::Unknown, "{status:?}");
    ensure!(
        status.message() == SPECIAL_MESSAGE,
        "message {:?}",
        status.message()
    );
    Ok(())
}

async fn unimplemented_method(target: String) -> Result<()> {
    let status = client(&target)
        .await?
        .unimplemented_call(Empty {})
        .await
        .err()
        .context("succeeded")?;
    ensure!(status.code() == Code::Unimplemented, "{status:?}");
    Ok(())
}

async fn unimplemented_service(target: String) -> Result<()> {
    let mut client = UnimplementedServiceClient::new(channel(&target).await?);
    let status = client
        .unimplemented_call(Empty {})
        .await
        .err()
        .context("succeeded")?;
    ensure!(status.code() == Code::Unimplemented, "{status:?}");
    Ok(())
}

async fn cancel_after_begin(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let (tx, rx) = mpsc::channel::<StreamingInputCallRequest>(1);
    let call =
        tokio::spawn(async move { client.streaming_input_call(ReceiverStream::new(rx)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    call.abort();
    drop(tx);
    ensure!(
        call.await.is_err_and(|e| e.is_cancelled()),
        "call was not cancelled"
    );
    // The channel and bridge are still healthy afterwards.
    empty_unary(target).await
}

async fn cancel_after_first_response(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let (tx, rx) = mpsc::channel(1);
    tx.send(ping(27182, 31415)).await?;
    let mut responses = client
        .full_duplex_call(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let first = responses.message().await?.context("no first response")?;
    ensure!(body_len(&first.payload) == 31415);
    drop(responses);
    drop(tx);
    empty_unary(target).await
}

async fn timeout_on_sleeping_server(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let deadline = Duration::from_millis(1);
    // One message and no half-close: the server has nothing to answer.
    let (tx, rx) = mpsc::channel(1);
    tx.send(StreamingOutputCallRequest {
        payload: payload(27182),
        ..Default::default()
    })
    .await?;
    let mut request = Request::new(ReceiverStream::new(rx));
    request.set_timeout(deadline);
    let call = async {
        let mut stream = client.full_duplex_call(request).await?.into_inner();
        while stream.message().await?.is_some() {}
        Ok::<(), tonic::Status>(())
    };
    // Like every gRPC client, the deadline holds over the whole call, not
    // only until the response headers (tonic's own timeout stops there).
    let result = match tokio::time::timeout(deadline, call).await {
        Ok(result) => result.map_err(own_timeout_is_deadline),
        Err(_) => Err(tonic::Status::deadline_exceeded("client deadline")),
    };
    drop(tx);
    match result {
        Err(status) if status.code() == Code::DeadlineExceeded => Ok(()),
        other => bail!("expected DEADLINE_EXCEEDED, got {other:?}"),
    }
}

/// tonic reports its own deadline timer, which fires only until the
/// response headers, as CANCELLED with a `TimeoutExpired` source: that is
/// the client's deadline, DEADLINE_EXCEEDED in gRPC's terms.
fn own_timeout_is_deadline(status: tonic::Status) -> tonic::Status {
    let timed_out = std::error::Error::source(&status).is_some_and(|source| {
        source
            .downcast_ref::<tonic::transport::Error>()
            .and_then(std::error::Error::source)
            .is_some_and(|inner| inner.is::<tonic::TimeoutExpired>())
    });
    match status.code() == Code::Cancelled && timed_out {
        true => tonic::Status::deadline_exceeded(status.message().to_string()),
        false => status,
    }
}

async fn soak_one_channel(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    for _ in 0..50 {
        let request = SimpleRequest {
            response_size: 314159,
            payload: payload(271828),
            ..Default::default()
        };
        let response = client.unary_call(request).await?.into_inner();
        ensure!(body_len(&response.payload) == 314159);
    }
    Ok(())
}

async fn soak_fresh_channels(target: String) -> Result<()> {
    for _ in 0..20 {
        large_unary(target.clone()).await?;
    }
    Ok(())
}

/// Probes of the response path where a proxy that holds or merges response
/// headers goes wrong; each is one call.
pub const PROBES: &[Case] = cases![
    late_first_message_then_error,
    empty_bidi_keeps_initial_metadata,
];

/// A bidi call whose only message comes 200 ms after the call started and
/// asks for an error: the server (asked to echo initial metadata, so even
/// grpcio sends headers first) answers headers, then the status with no
/// message. The client must read exactly that status.
async fn late_first_message_then_error(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let (tx, rx) = mpsc::channel(1);
    let sender = tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(200)).await;
        let request = StreamingOutputCallRequest {
            response_status: Some(EchoStatus {
                code: 7,
                message: "denied late".into(),
            }),
            ..Default::default()
        };
        tx.send(request).await
    });
    let status = match client
        .full_duplex_call(with_echo_metadata(ReceiverStream::new(rx)))
        .await
    {
        Err(status) => status,
        Ok(response) => {
            ensure!(
                response.metadata().get(INITIAL_KEY).is_some(),
                "initial metadata missing: {:?}",
                response.metadata()
            );
            let mut stream = response.into_inner();
            stream.message().await.err().context("stream succeeded")?
        }
    };
    sender.await??;
    ensure!(
        status.code() == Code::PermissionDenied && status.message() == "denied late",
        "{status:?}"
    );
    Ok(())
}

/// A bidi call with no messages whose server echoes initial and trailing
/// metadata: each must arrive where the server put it.
async fn empty_bidi_keeps_initial_metadata(target: String) -> Result<()> {
    let mut client = client(&target).await?;
    let response = client
        .full_duplex_call(with_echo_metadata(tokio_stream::empty()))
        .await?;
    let initial = response.metadata().clone();
    let mut stream = response.into_inner();
    ensure!(stream.message().await?.is_none(), "a response to nothing");
    let trailing = stream.trailers().await?.context("no trailers")?;
    check_echo(&initial, &trailing)
}

/// A channel that records the compression flags of response messages.
#[derive(Clone)]
pub struct RecordingChannel {
    inner: Channel,
    seen: SeenFlags,
}

impl RecordingChannel {
    pub fn new(inner: Channel) -> (Self, SeenFlags) {
        let seen = SeenFlags::default();
        (
            Self {
                inner,
                seen: seen.clone(),
            },
            seen,
        )
    }
}

impl tower::Service<http::Request<Body>> for RecordingChannel {
    type Response = http::Response<Body>;
    type Error = tonic::transport::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, Self::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        tower::Service::poll_ready(&mut self.inner, cx)
    }

    fn call(&mut self, request: http::Request<Body>) -> Self::Future {
        let call = tower::Service::call(&mut self.inner, request);
        let seen = self.seen.clone();
        Box::pin(async move {
            let response = call.await?;
            Ok(response.map(|body| Body::new(RecordingBody::new(body, seen))))
        })
    }
}
