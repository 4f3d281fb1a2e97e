//! Messages larger than Envoy's buffers (8 MiB per connection, as shipped)
//! pass whole through client → edge → nginx → origin → interop server: the
//! bridge streams message bytes on as they come instead of holding a
//! message until it is whole (docs/design.md, "Truncated messages").
//!
//! - With `max_frame_bytes` at 64 MiB on both sides, replies and requests
//!   of 12 MiB and 64 MiB, and a stream of 12 MiB messages, arrive whole.
//! - With the shipped limit (4 MiB, gRPC's usual), a 4 MiB reply passes and
//!   a larger one ends with RESOURCE_EXHAUSTED naming the limit.
//!
//! A server that ends inside a large message is conformance's
//! `hostile_upstream::truncated_large_message_resets_the_stream`.

use std::sync::Arc;

use anyhow::{Result, ensure};
use bridge_peers::harness::{runtime, trial};
use bridge_peers::interop_client::channel;
use bridge_peers::interop_server::serve_messages_up_to;
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{Payload, ResponseParameters, SimpleRequest, StreamingOutputCallRequest};
use bridge_peers::topology::{Hop, Topology, Upstream, set_plugin_field, wasm_module};
use libtest_mimic::{Arguments, Trial};
use tokio_stream::StreamExt as _;

const MIB: usize = 1 << 20;
/// What the server and clients here accept: above the largest message.
const PEER_LIMIT: usize = 80 * MIB;

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        body: vec![7; size],
        ..Default::default()
    })
}

async fn client(target: &str) -> Result<TestServiceClient<tonic::transport::Channel>> {
    Ok(TestServiceClient::new(channel(target).await?)
        .max_decoding_message_size(PEER_LIMIT)
        .max_encoding_message_size(PEER_LIMIT))
}

/// A unary call sending `request` bytes and asking for `reply` bytes back;
/// both must arrive whole.
async fn unary(target: String, request: usize, reply: usize) -> Result<()> {
    let response = client(&target)
        .await?
        .unary_call(SimpleRequest {
            response_size: reply as i32,
            payload: payload(request),
            ..Default::default()
        })
        .await?
        .into_inner();
    let body = response.payload.map(|p| p.body).unwrap_or_default();
    ensure!(body.len() == reply, "a reply of {} bytes", body.len());
    ensure!(body.iter().all(|&b| b == 0), "the reply's bytes changed");
    Ok(())
}

/// A server stream of three 12 MiB messages.
async fn stream_of_12_mib(target: String) -> Result<()> {
    let mut stream = client(&target)
        .await?
        .streaming_output_call(StreamingOutputCallRequest {
            response_parameters: (0..3)
                .map(|_| ResponseParameters {
                    size: (12 * MIB) as i32,
                    ..Default::default()
                })
                .collect(),
            ..Default::default()
        })
        .await?
        .into_inner();
    let mut sizes = Vec::new();
    while let Some(message) = stream.next().await {
        sizes.push(message?.payload.map_or(0, |p| p.body.len()));
    }
    ensure!(sizes == [12 * MIB; 3], "messages of {sizes:?} bytes");
    Ok(())
}

async fn over_the_limit(target: String) -> Result<()> {
    let result = client(&target)
        .await?
        .unary_call(SimpleRequest {
            response_size: (4 * MIB + 1) as i32,
            ..Default::default()
        })
        .await;
    let Err(status) = result else {
        anyhow::bail!("a reply over the limit passed");
    };
    ensure!(
        status.code() == tonic::Code::ResourceExhausted
            && status.message().contains("4194304-byte limit"),
        "{status:?}"
    );
    Ok(())
}

fn main() -> Result<()> {
    let args = Arguments::from_args();
    let runtime = runtime();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let server = listener.local_addr()?;
    runtime.spawn(serve_messages_up_to(listener, PEER_LIMIT));

    let allow_64_mib = Arc::new(Topology::start_edited(
        Hop::Nginx,
        Upstream::Server(server),
        &wasm_module(),
        Ok,
        |config| set_plugin_field(config, "max_frame_bytes", &(64 * MIB).into()),
    )?);
    let shipped = Arc::new(Topology::start(Hop::Nginx, Upstream::Server(server))?);
    let mut trials: Vec<Trial> = Vec::new();
    let target = |topology: &Topology| format!("http://{}", topology.edge);
    for (name, request, reply) in [
        ("a_12_mib_reply_passes_whole", 0, 12 * MIB),
        // The message's framing takes a few bytes of the 64 MiB frame.
        ("a_64_mib_reply_passes_whole", 0, 64 * MIB - 16),
        ("a_12_mib_request_passes_whole", 12 * MIB, 0),
        ("a_64_mib_request_passes_whole", 64 * MIB - 16, 0),
    ] {
        trials.push(trial(
            format!("with_64_mib_frames::{name}"),
            &runtime,
            &allow_64_mib,
            move |t| unary(target(&t), request, reply),
        ));
    }
    trials.push(trial(
        "with_64_mib_frames::a_stream_of_12_mib_messages_passes_whole".into(),
        &runtime,
        &allow_64_mib,
        move |t| stream_of_12_mib(target(&t)),
    ));
    trials.push(trial(
        "shipped::a_4_mib_reply_passes_whole".into(),
        &runtime,
        &shipped,
        // The reply's framing takes a few bytes of the 4 MiB.
        move |t| unary(target(&t), 0, 4 * MIB - 16),
    ));
    trials.push(trial(
        "shipped::a_reply_over_4_mib_ends_resource_exhausted".into(),
        &runtime,
        &shipped,
        move |t| over_the_limit(target(&t)),
    ));
    libtest_mimic::run(&args, trials).exit();
}
