//! Streaming and concurrency through the full chain (edge → nginx → origin,
//! both Envoys with 2 workers): a 200-round-trip bidi ping-pong, a server
//! stream whose spaced messages must arrive spaced (not batched at the end),
//! and 100 concurrent mixed calls. Bounded in count and time.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{interop_server, runtime, trial};
use bridge_peers::interop_client::channel;
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{
    Payload, ResponseParameters, SimpleRequest, StreamingInputCallRequest,
    StreamingOutputCallRequest,
};
use bridge_peers::topology::{Hop, Topology, Upstream};
use libtest_mimic::Arguments;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        r#type: 0,
        body: vec![0; size],
    })
}

fn ask(size: i32, interval_us: i32) -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size,
            interval_us,
            compressed: None,
        }],
        payload: payload(size as usize),
        ..Default::default()
    }
}

/// `rounds` request/response pairs on one bidi stream.
async fn ping_pong(channel: Channel, rounds: usize, size: i32) -> Result<()> {
    let mut client = TestServiceClient::new(channel);
    let (tx, rx) = mpsc::channel(1);
    // Send the first ping before waiting for the response headers.
    tx.send(ask(size, 0)).await?;
    let mut pongs = client
        .full_duplex_call(ReceiverStream::new(rx))
        .await?
        .into_inner();
    for round in 0..rounds {
        if round > 0 {
            tx.send(ask(size, 0)).await?;
        }
        let pong = pongs
            .message()
            .await?
            .with_context(|| format!("stream ended at round {round}"))?;
        ensure!(pong.payload.map_or(0, |p| p.body.len()) == size as usize);
    }
    drop(tx);
    ensure!(pongs.message().await?.is_none());
    Ok(())
}

async fn spaced_server_stream(channel: Channel) -> Result<()> {
    const INTERVAL: Duration = Duration::from_millis(200);
    let mut client = TestServiceClient::new(channel);
    let request = StreamingOutputCallRequest {
        response_parameters: (0..5)
            .map(|_| ResponseParameters {
                size: 100,
                interval_us: INTERVAL.as_micros() as i32,
                compressed: None,
            })
            .collect(),
        ..Default::default()
    };
    let started = Instant::now();
    let mut stream = client.streaming_output_call(request).await?.into_inner();
    let mut arrivals = Vec::new();
    while let Some(_message) = stream.message().await? {
        arrivals.push(started.elapsed());
    }
    ensure!(arrivals.len() == 5, "{} messages", arrivals.len());
    // Batched delivery would put all five at the end, ~0 apart.
    for pair in arrivals.windows(2) {
        ensure!(
            pair[1] - pair[0] >= INTERVAL / 2,
            "messages arrived bunched: {arrivals:?}"
        );
    }
    Ok(())
}

/// One of four call shapes, chosen by `index`.
async fn mixed_call(channel: Channel, index: usize) -> Result<()> {
    let mut client = TestServiceClient::new(channel.clone()).max_decoding_message_size(8 << 20);
    match index % 4 {
        0 => {
            let request = SimpleRequest {
                response_size: 65536,
                payload: payload(65536),
                ..Default::default()
            };
            let response = client.unary_call(request).await?.into_inner();
            ensure!(response.payload.map_or(0, |p| p.body.len()) == 65536);
        }
        1 => {
            let request = StreamingOutputCallRequest {
                response_parameters: (1..=10)
                    .map(|i| ResponseParameters {
                        size: i * 1000,
                        interval_us: 1000,
                        compressed: None,
                    })
                    .collect(),
                ..Default::default()
            };
            let mut stream = client.streaming_output_call(request).await?.into_inner();
            let mut sizes = Vec::new();
            while let Some(message) = stream.message().await? {
                sizes.push(message.payload.map_or(0, |p| p.body.len()));
            }
            ensure!(
                sizes == (1..=10).map(|i| i * 1000).collect::<Vec<_>>(),
                "sizes {sizes:?}"
            );
        }
        2 => {
            let requests = (0..10).map(|i| StreamingInputCallRequest {
                payload: payload(i * 100),
                expect_compressed: None,
            });
            let response = client
                .streaming_input_call(tokio_stream::iter(requests))
                .await?
                .into_inner();
            ensure!(response.aggregated_payload_size == 4500);
        }
        _ => ping_pong(channel, 10, 1000).await?,
    }
    Ok(())
}

fn main() -> Result<()> {
    let args = Arguments::from_args();
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let chain = Arc::new(Topology::start(Hop::Nginx, Upstream::Server(server))?);
    let trials = vec![
        trial(
            "bidi_ping_pong_200_round_trips".into(),
            &runtime,
            &chain,
            |t| async move { ping_pong(channel(&format!("http://{}", t.edge)).await?, 200, 64).await },
        ),
        trial(
            "server_stream_messages_arrive_as_sent".into(),
            &runtime,
            &chain,
            |t| async move { spaced_server_stream(channel(&format!("http://{}", t.edge)).await?).await },
        ),
        trial(
            "hundred_concurrent_mixed_calls".into(),
            &runtime,
            &chain,
            |t| async move {
                let target = format!("http://{}", t.edge);
                // Ten connections, so both workers of each Envoy carry streams.
                let mut channels = Vec::new();
                for _ in 0..10 {
                    channels.push(channel(&target).await?);
                }
                let calls: Vec<_> = (0..100)
                    .map(|i| tokio::spawn(mixed_call(channels[i % channels.len()].clone(), i)))
                    .collect();
                let all =
                    tokio::time::timeout(Duration::from_secs(60), futures::future::join_all(calls))
                        .await?;
                let failures: Vec<String> = all
                    .into_iter()
                    .enumerate()
                    .filter_map(|(i, r)| match r {
                        Ok(Ok(())) => None,
                        Ok(Err(e)) => Some(format!("call {i}: {e:#}")),
                        Err(e) => Some(format!("call {i}: {e}")),
                    })
                    .collect();
                ensure!(
                    failures.is_empty(),
                    "{} of 100 failed:\n{}",
                    failures.len(),
                    failures.join("\n")
                );
                Ok(())
            },
        ),
    ];
    libtest_mimic::run(&args, trials).exit();
}
