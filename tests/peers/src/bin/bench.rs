//! `make bench`: latency through the bridge chain (client → edge → nginx →
//! origin → server) against the same calls made straight to the server, in
//! one run on one machine. Prints a Markdown table for docs/benchmarks.md.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bridge_peers::interop_client::channel;
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{Empty, Payload, ResponseParameters, StreamingOutputCallRequest};
use bridge_peers::topology::{Hop, Topology, Upstream};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const ROUND_TRIPS: usize = 2000;
const UNARY_CALLS: usize = 2000;
const AWAIT_HEADERS_CALLS: usize = 500;
const STREAM_MESSAGES: usize = 200;
const STREAM_INTERVAL: Duration = Duration::from_millis(5);

fn ask(size: i32) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size,
            interval_us: 0,
            compressed: None,
        }],
        payload: Some(Payload {
            r#type: 0,
            body: vec![0; size as usize],
        }),
        ..Default::default()
    }
}

/// Percentiles in microseconds.
fn percentiles(mut samples: Vec<Duration>) -> [f64; 3] {
    samples.sort();
    let at = |p: f64| samples[((samples.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    [at(0.5), at(0.9), at(0.99)]
}

async fn ping_pong(target: &str) -> Result<Vec<Duration>> {
    let mut client = TestServiceClient::new(channel(target).await?);
    let (tx, rx) = mpsc::channel(1);
    tx.send(ask(64)).await?;
    let mut started = Instant::now();
    let mut pongs = client
        .full_duplex_call(ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut samples = Vec::with_capacity(ROUND_TRIPS);
    for round in 0..=ROUND_TRIPS {
        if round > 0 {
            started = Instant::now();
            tx.send(ask(64)).await?;
        }
        pongs.message().await?.context("stream ended")?;
        // Round 0 includes the call set-up: not a round trip.
        if round > 0 {
            samples.push(started.elapsed());
        }
    }
    Ok(samples)
}

/// Bidi calls whose client waits for the response headers before its first
/// message (tonic's natural await-then-send pattern): each sample is one
/// call, from its start to its first response. A proxy that held response
/// headers would add its hold to every one.
async fn await_headers_first_exchange(target: &str) -> Result<Vec<Duration>> {
    let mut client = TestServiceClient::new(channel(target).await?);
    let mut samples = Vec::with_capacity(AWAIT_HEADERS_CALLS);
    for _ in 0..AWAIT_HEADERS_CALLS {
        let started = Instant::now();
        let (tx, rx) = mpsc::channel(1);
        let mut pongs = client
            .full_duplex_call(ReceiverStream::new(rx))
            .await?
            .into_inner();
        tx.send(ask(64)).await?;
        pongs.message().await?.context("stream ended")?;
        samples.push(started.elapsed());
        drop(tx);
        ensure!(pongs.message().await?.is_none(), "extra response");
    }
    Ok(samples)
}

async fn unary(target: &str) -> Result<Vec<Duration>> {
    let mut client = TestServiceClient::new(channel(target).await?);
    client.empty_call(Empty {}).await?;
    let mut samples = Vec::with_capacity(UNARY_CALLS);
    for _ in 0..UNARY_CALLS {
        let started = Instant::now();
        client.empty_call(Empty {}).await?;
        samples.push(started.elapsed());
    }
    Ok(samples)
}

/// How late each message of a spaced server stream arrives, relative to the
/// first one and the spacing the server keeps.
async fn stream_lateness(target: &str) -> Result<Vec<Duration>> {
    let mut client = TestServiceClient::new(channel(target).await?);
    let request = StreamingOutputCallRequest {
        response_parameters: (0..STREAM_MESSAGES)
            .map(|_| ResponseParameters {
                size: 256,
                interval_us: STREAM_INTERVAL.as_micros() as i32,
                compressed: None,
            })
            .collect(),
        ..Default::default()
    };
    let mut stream = client.streaming_output_call(request).await?.into_inner();
    let mut arrivals = Vec::with_capacity(STREAM_MESSAGES);
    while stream.message().await?.is_some() {
        arrivals.push(Instant::now());
    }
    ensure!(arrivals.len() == STREAM_MESSAGES);
    // The server sleeps between messages, so message i leaves no earlier than
    // i intervals after message 0; lateness is what the path adds on top.
    let mut samples = Vec::new();
    let mut previous = arrivals[0];
    for arrival in &arrivals[1..] {
        samples.push((*arrival - previous).saturating_sub(STREAM_INTERVAL));
        previous = *arrival;
    }
    Ok(samples)
}

fn main() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let bridged = Topology::start(Hop::Nginx, Upstream::Server(server))?;
    let bridged_h2 = Topology::start(Hop::DirectHttp2, Upstream::Server(server))?;
    let plain = Topology::start(Hop::PlainHttp2, Upstream::Server(server))?;
    let paths = [
        ("direct to the server", format!("http://{server}")),
        (
            "two Envoys over HTTP/2, no bridge",
            format!("http://{}", plain.edge),
        ),
        (
            "bridge, edge → origin over HTTP/2",
            format!("http://{}", bridged_h2.edge),
        ),
        (
            "bridge, edge → nginx (HTTP/1.1) → origin",
            format!("http://{}", bridged.edge),
        ),
    ];

    println!("| measurement | path | p50 µs | p90 µs | p99 µs | p50 / direct |");
    println!("|---|---|---:|---:|---:|---:|");
    type Measure = fn(
        &str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Vec<Duration>>> + '_>,
    >;
    let measurements: [(&str, Measure); 4] = [
        ("bidi ping-pong round trip (64 B)", |t| {
            Box::pin(ping_pong(t))
        }),
        ("unary EmptyCall", |t| Box::pin(unary(t))),
        ("bidi call awaiting headers, start to first response", |t| {
            Box::pin(await_headers_first_exchange(t))
        }),
        ("server-stream inter-arrival excess (5 ms spacing)", |t| {
            Box::pin(stream_lateness(t))
        }),
    ];
    for (name, measure) in measurements {
        let mut direct_p50 = 0.0;
        for (path, target) in &paths {
            let [p50, p90, p99] = percentiles(runtime.block_on(measure(target))?);
            if direct_p50 == 0.0 {
                direct_p50 = p50;
            }
            let ratio = if direct_p50 > 0.0 {
                p50 / direct_p50
            } else {
                0.0
            };
            println!("| {name} | {path} | {p50:.0} | {p90:.0} | {p99:.0} | {ratio:.1}× |");
        }
    }
    Ok(())
}
