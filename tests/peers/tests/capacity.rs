//! What the shipped hop holds, and a soak. Through edge → nginx → origin:
//!
//! - `hold_2000_streams`: 2000 bidi streams open at once (each has had its
//!   first exchange), then closed; none may fail. Each stream across the
//!   HTTP/1.1 hop holds a connection of its own, so this is what
//!   `envoy/nginx.conf` is sized for. Prints what the streams cost each
//!   process (RSS).
//! - `soak`: the interop cases, the probes and cancels, `SOAK_SECONDS`
//!   (default 20; `make soak` runs 300) with 8 calls at a time: zero
//!   failures, and the RSS of both Envoys flat after warm-up.
//!
//! Results: docs/capacity.md.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{interop_server, runtime};
use bridge_peers::interop_client::{CASES, PROBES, channel};
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{ResponseParameters, StreamingOutputCallRequest};
use bridge_peers::topology::{Hop, Topology, Upstream};
use futures::StreamExt;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const STREAMS: usize = 2000;

fn ping() -> StreamingOutputCallRequest {
    StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: 16,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn hold_streams(topology: &Topology) -> Result<()> {
    let target = format!("http://{}", topology.edge);
    // A few HTTP/2 connections from the client, as a real fleet would have.
    let mut channels = Vec::new();
    for _ in 0..8 {
        channels.push(channel(&target).await?);
    }
    let idle = topology.rss_kib();
    let started = Instant::now();
    let opened = futures::stream::iter(0..STREAMS)
        .map(|i| {
            let channel = channels[i % channels.len()].clone();
            async move {
                let mut client = TestServiceClient::new(channel);
                let (tx, rx) = mpsc::channel(1);
                tx.send(ping()).await?;
                let mut responses = client
                    .full_duplex_call(ReceiverStream::new(rx))
                    .await
                    .with_context(|| format!("stream {i}"))?
                    .into_inner();
                responses
                    .message()
                    .await
                    .with_context(|| format!("stream {i}"))?
                    .context("no first response")?;
                anyhow::Ok((tx, responses))
            }
        })
        .buffer_unordered(200)
        .collect::<Vec<_>>()
        .await;
    let failures: Vec<String> = opened
        .iter()
        .filter_map(|r| r.as_ref().err().map(|e| format!("{e:#}")))
        .collect();
    ensure!(
        failures.is_empty(),
        "{} of {STREAMS} streams failed, first: {}",
        failures.len(),
        failures[0]
    );
    let open = topology.rss_kib();
    let took = started.elapsed();
    // All open at once; now each ends cleanly.
    let mut streams: Vec<_> = opened.into_iter().filter_map(Result::ok).collect();
    let mut ended = 0;
    for (tx, mut responses) in streams.drain(..) {
        drop(tx);
        ensure!(responses.message().await?.is_none(), "extra response");
        ended += 1;
    }
    println!("{STREAMS} streams open at once in {took:?}; {ended} ended with OK");
    println!("| process | RSS idle (KiB) | RSS with {STREAMS} streams (KiB) | per stream (KiB) |");
    println!("|---|---:|---:|---:|");
    for ((name, before), (_, after)) in idle.iter().zip(&open) {
        let per = (*after as f64 - *before as f64) / STREAMS as f64;
        println!("| {name} | {before} | {after} | {per:.1} |");
    }
    Ok(())
}

async fn soak(topology: &Topology, seconds: u64) -> Result<()> {
    let target = format!("http://{}", topology.edge);
    let cases: Vec<_> = CASES.iter().chain(PROBES).collect();
    let envoys = |samples: Vec<(String, u64)>| -> Vec<(String, u64)> {
        samples
            .into_iter()
            .filter(|(name, _)| name == "edge" || name == "origin")
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    let warm_up = Instant::now() + Duration::from_secs(seconds / 4);
    let mut baseline = None;
    let (mut calls, mut rounds) = (0usize, 0usize);
    let mut peak = Vec::new();
    while Instant::now() < deadline {
        let results = futures::stream::iter(cases.iter())
            .map(|case| (case.run)(target.clone()))
            .buffer_unordered(8)
            .collect::<Vec<_>>()
            .await;
        rounds += 1;
        calls += results.len();
        if let Some(error) = results.into_iter().find_map(Result::err) {
            return Err(error.context(format!("round {rounds}")));
        }
        let now = envoys(topology.rss_kib());
        if baseline.is_none() && Instant::now() >= warm_up {
            baseline = Some(now.clone());
        }
        peak = now;
    }
    let baseline = baseline.context("the soak ended before its warm-up")?;
    println!("soak: {rounds} rounds, {calls} case runs in {seconds} s, none failed");
    for ((name, before), (_, after)) in baseline.iter().zip(&peak) {
        println!("  {name}: RSS {before} KiB after warm-up, {after} KiB at the end");
        ensure!(
            (*after as f64) < *before as f64 * 1.10 + 2048.0,
            "{name} grew from {before} to {after} KiB"
        );
    }
    Ok(())
}

fn main() -> Result<()> {
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let topology = Topology::start(Hop::Nginx, Upstream::Server(server))?;
    let seconds = std::env::var("SOAK_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(20);
    let bound = Duration::from_secs(120 + seconds);
    let result = runtime.block_on(async {
        tokio::time::timeout(bound, async {
            hold_streams(&topology).await?;
            soak(&topology, seconds).await
        })
        .await
    });
    let result = match result {
        Ok(result) => result,
        Err(_) => Err(anyhow::anyhow!("passed its {bound:?} bound")),
    };
    match result {
        Ok(()) => {
            println!("2 passed, 0 failed");
            Ok(())
        }
        Err(error) => {
            println!("0 passed, 1 failed");
            Err(error.context(topology.logs()))
        }
    }
}
