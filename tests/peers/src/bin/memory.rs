//! Peak memory of each Envoy while large messages are in flight, the bridge
//! against the same chain with the no-op Wasm filter in its place, both
//! through the shipped nginx (docs/benchmarks.md, "Memory per call").
//!
//! The loads: unary calls answered with one large message, read as fast as
//! the client can; and a slow reader, server streams of 1 MiB messages read
//! at 20 MB/s each, far slower than the server sends: with Envoy's flow
//! control honoured, neither Envoy holds more of a stream than its buffer
//! limits, whatever the stream's length.
//!
//! For each load, three rounds, each starting every chain afresh (an Envoy
//! keeps memory it freed, so a second load on the same process shows less
//! than the first): the calls run at once (each on its own connection,
//! read as fast as the client can), and the growth of each Envoy's peak
//! RSS over its RSS when idle is what a round shows. The server answers
//! each call with one message of the given size; `max_frame_bytes` is 64
//! MiB on both sides, the buffer limits as shipped (8 MiB).
//!
//! `MEMORY_ROUNDS=n` changes the rounds.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::harness::{NEW_KEY, runtime, signed_marker};
use bridge_peers::interop_server::serve_messages_up_to;
use bridge_peers::proto::{ResponseParameters, SimpleRequest, StreamingOutputCallRequest};
use bridge_peers::raw::frame;
use bridge_peers::topology::{self, Hop, Topology, Upstream, set_plugin_field};
use bytes::Bytes;
use prost::Message as _;

const MIB: usize = 1 << 20;
const UNARY: &str = "/grpc.testing.TestService/UnaryCall";
const STREAM: &str = "/grpc.testing.TestService/StreamingOutputCall";

/// What each call asks for and how fast its client reads.
#[derive(Clone, Copy)]
enum Load {
    /// One reply of this many bytes, read as fast as the client can.
    Unary(usize),
    /// A server stream of this many 1 MiB messages, read at this many bytes
    /// a second.
    SlowStream { messages: usize, read_per_s: usize },
}

impl Load {
    fn path(self) -> &'static str {
        match self {
            Load::Unary(_) => UNARY,
            Load::SlowStream { .. } => STREAM,
        }
    }

    fn request(self) -> Vec<u8> {
        let message = match self {
            Load::Unary(size) => SimpleRequest {
                response_size: size as i32,
                ..Default::default()
            }
            .encode_to_vec(),
            Load::SlowStream { messages, .. } => StreamingOutputCallRequest {
                response_parameters: (0..messages)
                    .map(|_| ResponseParameters {
                        size: MIB as i32,
                        ..Default::default()
                    })
                    .collect(),
                ..Default::default()
            }
            .encode_to_vec(),
        };
        frame(0, &message)
    }

    /// The reply's payload bytes, framing not counted.
    fn reply_bytes(self) -> usize {
        match self {
            Load::Unary(size) => size,
            Load::SlowStream { messages, .. } => messages * MIB,
        }
    }
}

/// A chain under test and how its client speaks to it.
struct Chain {
    name: &'static str,
    module: std::path::PathBuf,
    /// gRPC-web with the origin's marker (the no-op chain: nginx would drop
    /// native gRPC's trailers); else native gRPC.
    web: bool,
}

/// One call of `load`, read to its end; checks the status and the size,
/// and keeps none of the body.
async fn call(target: SocketAddr, web: bool, load: Load) -> Result<()> {
    let path = load.path();
    let socket = tokio::net::TcpStream::connect(target).await?;
    let (client, connection) = h2::client::handshake(socket).await?;
    tokio::spawn(connection);
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{target}{path}"));
    request = match web {
        true => request
            .header("content-type", "application/grpc-web")
            .header("x-grpc-web-bridge", signed_marker(NEW_KEY, path, 0)),
        false => request
            .header("content-type", "application/grpc")
            .header("te", "trailers"),
    };
    let body = load.request();
    let mut client = client.ready().await?;
    let (response, mut send) = client.send_request(request.body(())?, false)?;
    send.send_data(Bytes::from(body), true)?;
    let response = response.await?;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let mut body = response.into_body();
    let (mut received, mut tail) = (0, Vec::new());
    let started = std::time::Instant::now();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        received += chunk.len();
        if let Load::SlowStream { read_per_s, .. } = load {
            // Read no faster than the rate: the window opens only as fast.
            let due = Duration::from_secs_f64(received as f64 / read_per_s as f64);
            if let Some(wait) = due.checked_sub(started.elapsed()) {
                tokio::time::sleep(wait).await;
            }
        }
        let _ = body.flow_control().release_capacity(chunk.len());
        tail.extend_from_slice(&chunk[chunk.len().saturating_sub(64)..]);
        tail.drain(..tail.len().saturating_sub(64));
    }
    let ok = match body.trailers().await? {
        Some(trailers) => trailers.get("grpc-status").is_some_and(|s| s == "0"),
        None => tail.windows(13).any(|w| w == b"grpc-status:0"),
    };
    ensure!(ok, "the call did not end OK");
    let size = load.reply_bytes();
    ensure!(received > size, "{received} bytes for a {size}-byte reply");
    Ok(())
}

/// Peak RSS growth (MiB) of each Envoy of a fresh `topology` during `calls`
/// calls of `size` bytes.
fn round(
    runtime: &tokio::runtime::Runtime,
    topology: &Topology,
    web: bool,
    calls: usize,
    load: Load,
) -> Result<Vec<(String, f64)>> {
    let envoys: Vec<(String, u32)> = topology
        .pids()
        .into_iter()
        .filter(|(name, _)| name == "edge" || name == "origin")
        .collect();
    std::thread::sleep(Duration::from_millis(500));
    let before: Vec<u64> = envoys
        .iter()
        .map(|(_, pid)| topology::rss_kib(*pid))
        .collect();
    let target = topology.edge;
    runtime.block_on(async {
        let calls: Vec<_> = (0..calls)
            .map(|_| tokio::spawn(call(target, web, load)))
            .collect();
        for call in calls {
            tokio::time::timeout(Duration::from_secs(120), call)
                .await
                .context("a call took over 120 s")???;
        }
        anyhow::Ok(())
    })?;
    Ok(envoys
        .iter()
        .zip(before)
        .map(|((name, pid), before)| {
            let grown = topology::status_kib(*pid, "VmHWM").saturating_sub(before);
            (name.clone(), grown as f64 / 1024.0)
        })
        .collect())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

fn main() -> Result<()> {
    let noop = topology::noop_module();
    if !noop.exists() {
        bail!("{} is missing: run make bench", noop.display());
    }
    let rounds: usize = std::env::var("MEMORY_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let runtime = runtime();
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let server = listener.local_addr()?;
    runtime.spawn(serve_messages_up_to(listener, 80 * MIB));
    let start = |module: &std::path::Path| {
        Topology::start_edited(Hop::Nginx, Upstream::Server(server), module, Ok, |config| {
            set_plugin_field(config, "max_frame_bytes", &(64 * MIB).into())
        })
    };
    let chains = [
        Chain {
            name: "two Envoys, no-op Wasm filter, through nginx",
            module: noop,
            web: true,
        },
        Chain {
            name: "bridge (Wasm), edge → nginx → origin",
            module: topology::wasm_module(),
            web: false,
        },
        Chain {
            name: "bridge (native build), edge → nginx → origin",
            module: topology::native_module(),
            web: false,
        },
    ];
    let loads = [
        (64, Load::Unary(4 * MIB), "64 × 4 MiB"),
        (8, Load::Unary(64 * MIB - 16), "8 × 64 MiB"),
        (
            4,
            Load::SlowStream {
                messages: 64,
                read_per_s: 20_000_000,
            },
            "4 streams × 64 MiB, read at 20 MB/s",
        ),
    ];
    println!(
        "Peak RSS growth per Envoy (MiB; median of {rounds} rounds, range), \
         calls at once, each on its own connection:\n"
    );
    println!("| load | chain | edge | origin | edge − no-op | origin − no-op |");
    println!("|---|---|---:|---:|---:|---:|");
    for (calls, load, label) in loads {
        let mut runs: Vec<Vec<Vec<(String, f64)>>> = vec![Vec::new(); chains.len()];
        for _ in 0..rounds {
            for (chain, runs) in chains.iter().zip(&mut runs) {
                let topology = start(&chain.module)?;
                runs.push(
                    round(&runtime, &topology, chain.web, calls, load)
                        .with_context(|| format!("{} at {label}", chain.name))?,
                );
            }
        }
        let mut noop_medians = None;
        for (chain, runs) in chains.iter().zip(&runs) {
            let of = |envoy: &str| -> (f64, f64, f64) {
                let values: Vec<f64> = runs
                    .iter()
                    .filter_map(|run| run.iter().find(|(n, _)| n == envoy).map(|(_, v)| *v))
                    .collect();
                let min = values.iter().copied().fold(f64::MAX, f64::min);
                let max = values.iter().copied().fold(0.0, f64::max);
                (median(values), min, max)
            };
            let (edge, origin) = (of("edge"), of("origin"));
            let base = *noop_medians.get_or_insert((edge.0, origin.0));
            println!(
                "| {label} | {} | {:.0} ({:.0}–{:.0}) | {:.0} ({:.0}–{:.0}) | {:+.0} | {:+.0} |",
                chain.name,
                edge.0,
                edge.1,
                edge.2,
                origin.0,
                origin.1,
                origin.2,
                edge.0 - base.0,
                origin.0 - base.1,
            );
        }
    }
    Ok(())
}
