//! `make bench` (second part): throughput and CPU per request of each
//! Envoy, the bridge against the same Envoys with no filter, with a no-op
//! Rust Wasm filter (the floor any Wasm filter costs), and, at the origin,
//! with Envoy's native gRPC-web filter alone. Every Envoy runs one worker
//! pinned to core 0 (nginx too); the load generator and the server share
//! core 1. Rounds interleave the variants; ratios are per round, and the
//! table gives their median and range. Every response's gRPC status is
//! checked. Prints Markdown for docs/benchmarks.md.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::interop_client::sized_unary;
use bridge_peers::proto::SimpleRequest;
use bridge_peers::raw::frame;
use bridge_peers::topology::{self, Hop, Topology, Upstream, remove_bridge, rss_kib};
use bytes::Bytes;
use prost::Message;
use serde_json::Value;

const STREAMS: usize = 32;
/// Calls in flight in the hop table: past nginx's old 32 idle connections.
const HOP_STREAMS: usize = 128;
const SECONDS: u64 = 4;
/// Seconds per run: SECONDS unless THROUGHPUT_SECONDS says otherwise.
fn seconds() -> u64 {
    std::env::var("THROUGHPUT_SECONDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(SECONDS)
}

/// The origin as shipped, with the no-op filter in the module's place.
const ORIGIN_FLOOR: &str = "origin config, no-op Wasm filter in the module's place";
/// What the origin's CPU is held to: the shipped origin with no module.
const ORIGIN_REFERENCE: &str = "origin config, no module (gated gRPC-web filter alone)";
/// Rounds unless THROUGHPUT_ROUNDS says otherwise.
const ROUNDS: usize = 3;
const UNARY: &str = "/grpc.testing.TestService/UnaryCall";

/// What one load run measured.
#[derive(Clone, Default)]
struct Run {
    rps: f64,
    /// CPU ms per 1000 requests, per process name.
    cpu: Vec<(String, f64)>,
    rss_kib: Vec<(String, u64)>,
    p50_us: f64,
    p99_us: f64,
    /// TCP connections the origin accepted per 100 calls (the hop's reuse).
    origin_connections: f64,
}

#[derive(Clone)]
struct Call {
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Bytes,
    web: bool,
    /// grpc-web-text both ways (base64 request, `accept` asks for text).
    text: bool,
    /// Carries the edge's marker, signed when the run starts.
    marked: bool,
}

fn unary_body(size: usize) -> Bytes {
    Bytes::from(frame(0, &sized_unary(size).encode_to_vec()))
}

/// A StreamingOutputCall of 64 messages of 64 KiB.
fn stream_request() -> Bytes {
    let request = bridge_peers::proto::StreamingOutputCallRequest {
        response_parameters: (0..64)
            .map(|_| bridge_peers::proto::ResponseParameters {
                size: 64 << 10,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };
    Bytes::from(frame(0, &request.encode_to_vec()))
}

/// Reply sizes of the text-mode rows.
const TEXT_SIZES: [(usize, &str); 4] = [
    (64 << 10, "64 KiB"),
    (512 << 10, "512 KiB"),
    (2 << 20, "2 MiB"),
    (8 << 20, "8 MiB"),
];

/// Raises the module's frame limit (4 MiB by default) above the largest
/// text-mode reply.
fn allow_8_mib_frames(config: &mut Value) -> Result<()> {
    topology::set_plugin_field(config, "max_frame_bytes", &Value::from(16u32 << 20))
}

/// A unary request asking for a `size`-byte reply.
fn text_request(size: usize) -> Vec<u8> {
    let request = SimpleRequest {
        response_size: size as i32,
        ..Default::default()
    };
    frame(0, &request.encode_to_vec())
}

fn base64(bytes: &[u8]) -> Vec<u8> {
    let mut encoder = grpc_web_bridge::codec::Base64Encoder::new();
    let mut out = Vec::new();
    encoder.push(bytes, &mut out);
    encoder.end_segment(&mut out);
    out
}

/// Envoy's gRPC-web filter alone, converting every request.
fn native_filter_only(config: &mut Value) -> Result<()> {
    remove_bridge(config)?;
    ungate_grpc_web(config)
}

fn marker(path: &str) -> String {
    bridge_peers::harness::signed_marker(bridge_peers::harness::NEW_KEY, path, 0)
}

/// CPU seconds (user + system) a process has used so far.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map_or("", |(_, rest)| rest)
        .split_whitespace()
        .collect();
    let ticks: f64 = [11, 12]
        .iter()
        .filter_map(|&i| fields.get(i)?.parse::<f64>().ok())
        .sum();
    ticks / 100.0
}

/// One call; whether it ended with grpc-status 0.
async fn call(
    client: &mut h2::client::SendRequest<Bytes>,
    target: SocketAddr,
    c: &Call,
) -> Result<()> {
    let content_type = match (c.web, c.text) {
        (true, true) => "application/grpc-web-text",
        (true, false) => "application/grpc-web",
        (false, _) => "application/grpc",
    };
    let mut request = http::Request::builder()
        .method("POST")
        .uri(format!("http://{target}{}", c.path))
        .header("content-type", content_type);
    if !c.web {
        request = request.header("te", "trailers");
    }
    if c.text {
        request = request.header("accept", "application/grpc-web-text");
    }
    for (name, value) in &c.headers {
        request = request.header(*name, value);
    }
    let mut ready = client.clone().ready().await?;
    let (response, mut send) = ready.send_request(request.body(())?, false)?;
    send.send_data(c.body.clone(), true)?;
    let response = response.await?;
    ensure!(response.status() == 200, "HTTP {}", response.status());
    let mut body = response.into_body();
    let mut bytes = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk?;
        let _ = body.flow_control().release_capacity(chunk.len());
        bytes.extend_from_slice(&chunk);
    }
    let trailers = body.trailers().await?;
    if c.text {
        let mut decoder = grpc_web_bridge::codec::Base64Decoder::new();
        let mut binary = Vec::new();
        decoder
            .push(&bytes, &mut binary)
            .and_then(|()| decoder.finish(&mut binary))
            .map_err(|e| anyhow::anyhow!("response base64: {e:?}"))?;
        bytes = binary;
    }
    let status = match (c.web, &trailers) {
        (false, Some(trailers)) => trailers.get("grpc-status").map(|v| v.as_bytes().to_vec()),
        _ => {
            let at = bytes
                .windows(12)
                .position(|w| w == b"grpc-status:")
                .context("no status in the body")?;
            Some(bytes[at + 12..at + 13].to_vec())
        }
    };
    ensure!(status.as_deref() == Some(b"0"), "grpc-status {status:?}");
    Ok(())
}

/// Runs `streams` callers for `SECONDS` against `target`, each starting
/// calls back to back, or every `streams / rate` seconds.
async fn load(
    topology: &Topology,
    target: SocketAddr,
    c: Arc<Call>,
    streams: usize,
    rate: Option<f64>,
) -> Result<Run> {
    let mut clients = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpStream::connect(target).await?;
        socket.set_nodelay(true)?;
        let (client, connection) = h2::client::handshake(socket).await?;
        tokio::spawn(connection);
        clients.push(client);
    }
    // Warm up the connections and the Envoys' pools, up to the calls in
    // flight the run will have (each hop connection is opened once).
    for client in &mut clients {
        for _ in 0..20 {
            call(client, target, &c).await?;
        }
    }
    let mut warming = Vec::new();
    for i in 0..streams {
        let mut client = clients[i % clients.len()].clone();
        let c = c.clone();
        warming.push(tokio::spawn(
            async move { call(&mut client, target, &c).await },
        ));
    }
    for warm in warming {
        warm.await??;
    }
    let pids = topology.pids();
    let accepted = || Topology::counter(topology.origin_admin_or_edge(), ORIGIN_CONNECTIONS);
    let accepted_before = accepted();
    let before: Vec<f64> = pids.iter().map(|(_, pid)| cpu_seconds(*pid)).collect();
    let failed = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let deadline = started + Duration::from_secs(seconds());
    let mut workers = Vec::new();
    for i in 0..streams {
        let mut client = clients[i % clients.len()].clone();
        let c = c.clone();
        let failed = failed.clone();
        let mut pace = rate.map(|rate| {
            let period = Duration::from_secs_f64(streams as f64 / rate);
            let first = tokio::time::Instant::now() + period.mul_f64(i as f64 / streams as f64);
            let mut pace = tokio::time::interval_at(first, period);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            pace
        });
        workers.push(tokio::spawn(async move {
            let mut latencies = Vec::new();
            while Instant::now() < deadline {
                if let Some(pace) = &mut pace {
                    pace.tick().await;
                }
                let began = Instant::now();
                match call(&mut client, target, &c).await {
                    Ok(()) => latencies.push(began.elapsed()),
                    Err(_) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for worker in workers {
        latencies.extend(worker.await?);
    }
    let took = started.elapsed().as_secs_f64();
    let failed = failed.load(Ordering::Relaxed);
    ensure!(failed == 0, "{failed} calls failed");
    latencies.sort();
    let at = |p: f64| latencies[((latencies.len() - 1) as f64 * p) as usize].as_secs_f64() * 1e6;
    let done = latencies.len() as f64;
    Ok(Run {
        rps: done / took,
        cpu: pids
            .iter()
            .zip(before)
            .map(|((name, pid), before)| (name.clone(), (cpu_seconds(*pid) - before) * 1e6 / done))
            .collect(),
        rss_kib: pids
            .iter()
            .map(|(name, pid)| (name.clone(), rss_kib(*pid)))
            .collect(),
        p50_us: at(0.5),
        p99_us: at(0.99),
        origin_connections: (accepted() - accepted_before) as f64 * 100.0 / done,
    })
}

/// The origin's accepted connections (its HTTP connection manager's stat).
const ORIGIN_CONNECTIONS: &str = "http.origin.downstream_cx_total";

/// The HTTP filters of an origin config (one listener, one filter chain).
fn http_filters(config: &mut Value) -> Result<&mut Vec<Value>> {
    config
        .pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/http_filters",
        )
        .and_then(Value::as_array_mut)
        .context("no http_filters")
}

/// The Wasm filter's plugin configuration (a JSON string).
fn plugin_configuration(config: &mut Value) -> Result<&mut Value> {
    let wasm = http_filters(config)?
        .iter_mut()
        .find(|f| f["name"] == "envoy.filters.http.wasm")
        .context("no Wasm filter")?;
    Ok(&mut wasm["typed_config"]["config"]["configuration"]["value"])
}

/// Removes Envoy's gRPC-web filter's matcher (it converts every gRPC-web
/// request), as an origin serving browsers has it.
fn ungate_grpc_web(config: &mut Value) -> Result<()> {
    for filter in http_filters(config)?.iter_mut() {
        if let Some(inner) = filter.pointer("/typed_config/extension_config").cloned() {
            *filter = inner;
        }
    }
    Ok(())
}

/// The no-op filter at an origin serving browsers, making one kind of
/// hostcall N times per request (`<call> N`, see tests/noop-filter).
fn priced(config: &mut Value, calls: &str) -> Result<()> {
    ungate_grpc_web(config)?;
    *plugin_configuration(config)? = calls.into();
    Ok(())
}

fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

struct Variant {
    name: String,
    topology: Arc<Topology>,
    target: SocketAddr,
    call: Arc<Call>,
    runs: Vec<Run>,
}

/// Median and range of per-round ratios.
fn spread(ratios: &[f64]) -> String {
    let (lo, hi) = ratios
        .iter()
        .fold((f64::MAX, f64::MIN), |(lo, hi), r| (lo.min(*r), hi.max(*r)));
    format!("{:.2} ({lo:.2}–{hi:.2})", median(ratios.to_vec()))
}

/// A process's CPU ms per 1000 requests in a run.
fn cpu_of(run: &Run, process: &str) -> Option<f64> {
    run.cpu
        .iter()
        .find(|(name, _)| name == process)
        .map(|c| c.1)
}

/// A process's RSS in MiB at the end of a run.
fn rss_mib(run: &Run, process: &str) -> Option<f64> {
    run.rss_kib
        .iter()
        .find(|(name, _)| name == process)
        .map(|r| r.1 as f64 / 1024.0)
}

/// `f` of `a` against `f` of `b`, paired per round (`ratio`: a / b, else
/// a − b): median (min–max), or "—" where either did not run.
fn paired(
    variants: &[Variant],
    a: &str,
    b: &str,
    ratio: bool,
    f: impl Fn(&Run) -> Option<f64>,
) -> String {
    let find = |name: &str| variants.iter().find(|v| v.name == name);
    let (Some(a), Some(b)) = (find(a), find(b)) else {
        return "—".into();
    };
    let values: Vec<f64> = a
        .runs
        .iter()
        .zip(&b.runs)
        .filter_map(|(x, y)| {
            Some(match ratio {
                true => f(x)? / f(y)?,
                false => f(x)? - f(y)?,
            })
        })
        .collect();
    match values.is_empty() {
        true => "—".into(),
        false => spread(&values),
    }
}

/// Prints a table; req/s ratios are to `baseline`, CPU ratios (each
/// process's CPU per request, paired per round) to `floor`.
fn table(title: &str, variants: &[Variant], baseline: usize, floor: usize) {
    println!("\n#### {title}\n");
    println!(
        "| variant | req/s | ratio to {} (min–max) | CPU ms per 1k requests | CPU per request / {} (min–max) | RSS MiB | p50 µs | p99 µs | origin connections per 100 calls |",
        variants[baseline].name, variants[floor].name
    );
    println!("|---|---:|---:|---|---|---|---:|---:|---:|");
    for variant in variants.iter().filter(|v| !v.runs.is_empty()) {
        let rps = median(variant.runs.iter().map(|r| r.rps).collect());
        let ratios: Vec<f64> = variant
            .runs
            .iter()
            .zip(&variants[baseline].runs)
            .map(|(run, base)| run.rps / base.rps)
            .collect();
        let names: Vec<String> = variant.runs[0].cpu.iter().map(|(n, _)| n.clone()).collect();
        let cpu: Vec<String> = names
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let ms = median(variant.runs.iter().map(|r| r.cpu[i].1).collect());
                format!("{name} {ms:.0}")
            })
            .collect();
        let cpu_ratios: Vec<String> = names
            .iter()
            .enumerate()
            .filter_map(|(i, name)| {
                let ratios: Vec<f64> = variant
                    .runs
                    .iter()
                    .zip(&variants[floor].runs)
                    .filter_map(|(run, floor)| {
                        let base = floor.cpu.iter().find(|(n, _)| n == name)?.1;
                        Some(run.cpu[i].1 / base)
                    })
                    .collect();
                (!ratios.is_empty()).then(|| format!("{name} {}", spread(&ratios)))
            })
            .collect();
        let rss: Vec<String> = variant.runs[0]
            .rss_kib
            .iter()
            .map(|(name, kib)| format!("{name} {:.0}", *kib as f64 / 1024.0))
            .collect();
        println!(
            "| {} | {rps:.0} | {} | {} | {} | {} | {:.0} | {:.0} | {:.2} |",
            variant.name,
            spread(&ratios),
            cpu.join(", "),
            cpu_ratios.join(", "),
            rss.join(", "),
            median(variant.runs.iter().map(|r| r.p50_us).collect()),
            median(variant.runs.iter().map(|r| r.p99_us).collect()),
            median(variant.runs.iter().map(|r| r.origin_connections).collect()),
        );
    }
}

/// The targets (issue #25's "done when"), each paired per round in this
/// run.
fn native_targets(
    chain: &[Variant],
    hops: &[Variant],
    large: &[Variant],
    streams: &[Variant],
    origins: &[Variant],
) {
    const PLAIN: &str = "two Envoys, no filter";
    const NATIVE_H2: &str = "bridge, native build, edge → origin over HTTP/2";
    const NATIVE_NGINX: &str = "bridge, native build, edge → nginx → origin";
    const NOOP_NGINX: &str = "two Envoys, no-op Wasm filter, through nginx";
    const WASM_H2: &str = "bridge, edge → origin over HTTP/2";
    const WASM_NGINX: &str = "bridge, edge → nginx → origin";
    let rps = |r: &Run| Some(r.rps);
    let cpu = |process: &'static str| move |r: &Run| cpu_of(r, process);
    let rss = |process: &'static str| move |r: &Run| rss_mib(r, process);
    let rows = [
        (
            "origin CPU per request: native origin / shipped origin without the module (origin table)",
            paired(
                origins,
                "bridge origin, native build (gRPC-web filter + dynamic module)",
                "origin config, no module (gated gRPC-web filter alone)",
                true,
                cpu("origin"),
            ),
            "≤ 1.10",
        ),
        (
            "edge CPU per request: native edge / router-only edge (chain, over HTTP/2)",
            paired(chain, NATIVE_H2, PLAIN, true, cpu("edge")),
            "≤ 1.15",
        ),
        (
            "origin CPU per request: native origin / router-only origin (chain, over HTTP/2)",
            paired(chain, NATIVE_H2, PLAIN, true, cpu("origin")),
            "—",
        ),
        (
            "req/s: native edge → origin over HTTP/2 / two plain Envoys",
            paired(chain, NATIVE_H2, PLAIN, true, rps),
            "≥ 0.90",
        ),
        (
            "req/s: native through nginx / no-op Wasm pair through nginx (chain table)",
            paired(chain, NATIVE_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.85",
        ),
        (
            "req/s: the same at 128 in flight (hop table)",
            paired(hops, NATIVE_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.85",
        ),
        (
            "MB/s, 1 MiB unary over HTTP/2: native / two plain Envoys",
            paired(large, NATIVE_H2, PLAIN, true, rps),
            "≥ 0.95",
        ),
        (
            "MB/s, 1 MiB unary through nginx: native / no-op Wasm pair through nginx",
            paired(large, NATIVE_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.95",
        ),
        (
            "MB/s, 64 × 64 KiB stream over HTTP/2: native / two plain Envoys",
            paired(streams, NATIVE_H2, PLAIN, true, rps),
            "≥ 0.95",
        ),
        (
            "MB/s, 64 × 64 KiB stream through nginx: native / no-op Wasm pair through nginx",
            paired(streams, NATIVE_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.95",
        ),
        (
            "MB/s, 1 MiB unary over HTTP/2: Wasm / two plain Envoys",
            paired(large, WASM_H2, PLAIN, true, rps),
            "≥ 0.90",
        ),
        (
            "MB/s, 1 MiB unary through nginx: Wasm / no-op Wasm pair through nginx",
            paired(large, WASM_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.90",
        ),
        (
            "MB/s, 64 × 64 KiB stream over HTTP/2: Wasm / two plain Envoys",
            paired(streams, WASM_H2, PLAIN, true, rps),
            "≥ 0.90",
        ),
        (
            "MB/s, 64 × 64 KiB stream through nginx: Wasm / no-op Wasm pair through nginx",
            paired(streams, WASM_NGINX, NOOP_NGINX, true, rps),
            "≥ 0.90",
        ),
        (
            "RSS MiB, edge: native − plain (1 MiB unary table)",
            paired(large, NATIVE_H2, PLAIN, false, rss("edge")),
            "≤ 10",
        ),
        (
            "RSS MiB, origin: native − plain (1 MiB unary table)",
            paired(large, NATIVE_H2, PLAIN, false, rss("origin")),
            "≤ 10",
        ),
    ];
    println!("\n#### The native build against its targets (paired per round, median (min–max))\n");
    println!("| measure | this run | target |");
    println!("|---|---:|---|");
    for (what, value, target) in rows {
        println!("| {what} | {value} | {target} |");
    }
}

fn main() -> Result<()> {
    if !topology::noop_module().exists() {
        bail!(
            "{} is missing: run make bench",
            topology::noop_module().display()
        );
    }
    // SAFETY: set before any thread exists; read by the topology harness.
    unsafe {
        std::env::set_var("BRIDGE_ENVOY_WORKERS", "1");
        std::env::set_var("BRIDGE_PROXY_CPUS", "0");
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()?;
    // This process (load generator and server) on core 1.
    // SAFETY: a zeroed cpu_set_t, then CPU_SET on it; pid 0 is this process.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(1, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let native = || {
        Arc::new(Call {
            path: UNARY,
            headers: Vec::new(),
            body: unary_body(64),
            web: false,
            text: false,
            marked: false,
        })
    };
    let web = |marked| {
        Arc::new(Call {
            path: UNARY,
            headers: vec![("x-grpc-web", "1".into())],
            body: unary_body(64),
            web: true,
            text: false,
            marked,
        })
    };
    let bridge = topology::wasm_module();
    let native_bridge = topology::native_module();
    ensure!(
        native_bridge.exists(),
        "{} is missing: run make build",
        native_bridge.display()
    );
    // The native build loads on Envoy 1.38 on (docs/design.md); on older
    // lines (make matrix) its rows are left out.
    let native_loads = topology::envoy_version() >= (1, 38);
    // THROUGHPUT_BASELINE=<a.wasm>:<b.wasm> adds chain and origin rows
    // running other builds of the module (A/B of a change, in one run).
    let baselines: Vec<(String, PathBuf)> = std::env::var("THROUGHPUT_BASELINE")
        .unwrap_or_default()
        .split(':')
        .filter(|path| !path.is_empty())
        .map(|path| {
            let name = format!("bridge, module {path}");
            (name, PathBuf::from(path))
        })
        .collect();
    let mut chain = vec![
        (
            "two Envoys, no filter",
            Topology::start(Hop::PlainHttp2, Upstream::Server(server))?,
        ),
        (
            "two Envoys, no-op Wasm filter",
            Topology::start_with_module(
                Hop::DirectHttp2,
                Upstream::Server(server),
                &topology::noop_module(),
            )?,
        ),
        (
            "two Envoys, no-op Wasm filter, through nginx",
            Topology::start_with_module(
                Hop::Nginx,
                Upstream::Server(server),
                &topology::noop_module(),
            )?,
        ),
        (
            "bridge, edge → origin over HTTP/2",
            Topology::start_with_module(Hop::DirectHttp2, Upstream::Server(server), &bridge)?,
        ),
        (
            "bridge, edge → nginx → origin",
            Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &bridge)?,
        ),
    ];
    if native_loads {
        chain.push((
            "bridge, native build, edge → origin over HTTP/2",
            Topology::start_with_module(
                Hop::DirectHttp2,
                Upstream::Server(server),
                &native_bridge,
            )?,
        ));
        chain.push((
            "bridge, native build, edge → nginx → origin",
            Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &native_bridge)?,
        ));
    }
    for (name, module) in &baselines {
        chain.push((
            name,
            Topology::start_with_module(Hop::DirectHttp2, Upstream::Server(server), module)?,
        ));
    }
    // The hop alone: the plain pair, and the no-op filter through the
    // shipped nginx.conf and through it as it was (32 idle connections
    // kept, 1000 calls a connection), then the bridge through the shipped
    // one; HOP_STREAMS in flight.
    let before = |conf: String| -> Result<String> {
        ensure!(
            conf.contains("keepalive 1024;"),
            "nginx.conf no longer keeps 1024 idle connections"
        );
        Ok(conf
            .replace("keepalive 1024;", "keepalive 32;")
            .replace("keepalive_requests 100000;", ""))
    };
    let mut hop_variants = vec![
        (
            "two Envoys, no filter, over HTTP/2",
            Topology::start(Hop::PlainHttp2, Upstream::Server(server))?,
        ),
        (
            "two Envoys, no-op Wasm filter, through nginx",
            Topology::start_with_module(
                Hop::Nginx,
                Upstream::Server(server),
                &topology::noop_module(),
            )?,
        ),
        (
            "two Envoys, no-op Wasm filter, through nginx with keepalive 32 (before)",
            Topology::start_with_nginx(
                Hop::Nginx,
                Upstream::Server(server),
                &topology::noop_module(),
                before,
            )?,
        ),
        (
            "bridge, edge → nginx → origin",
            Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &bridge)?,
        ),
    ];
    if native_loads {
        hop_variants.push((
            "bridge, native build, edge → nginx → origin",
            Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &native_bridge)?,
        ));
    }
    let mut hops: Vec<Variant> = hop_variants
        .into_iter()
        .map(|(name, topology)| Variant {
            name: name.to_string(),
            target: topology.edge,
            topology: Arc::new(topology),
            // Without the bridge the hop drops native gRPC's trailers: the
            // no-op chains carry the marked gRPC-web the origin converts.
            call: match name.starts_with("bridge") {
                true => native(),
                false => web(true),
            },
            runs: Vec::new(),
        })
        .collect();
    // Without the bridge the hop drops native gRPC's trailers: the no-op
    // chain through nginx carries the marked gRPC-web the origin converts.
    let through_nginx_without_bridge = |name: &str| name.ends_with("through nginx");
    let mut chain = chain
        .into_iter()
        .map(|(name, topology)| Variant {
            name: name.to_string(),
            target: topology.edge,
            topology: Arc::new(topology),
            call: match through_nginx_without_bridge(name) {
                true => web(true),
                false => native(),
            },
            runs: Vec::new(),
        })
        .collect::<Vec<_>>();
    // The same topologies carrying other calls: native, or marked
    // gRPC-web through the no-op chain through nginx.
    let with_call = |path: &'static str, body: Bytes| -> Vec<Variant> {
        let call = |web: bool| {
            Arc::new(Call {
                path,
                headers: match web {
                    true => vec![("x-grpc-web", "1".into())],
                    false => Vec::new(),
                },
                body: body.clone(),
                web,
                text: false,
                marked: web,
            })
        };
        chain
            .iter()
            .map(|variant| Variant {
                name: variant.name.clone(),
                target: variant.target,
                topology: variant.topology.clone(),
                call: call(through_nginx_without_bridge(&variant.name)),
                runs: Vec::new(),
            })
            .collect()
    };
    // 1 MiB unary calls (1 MiB each way), and a server stream of 64 × 64 KiB.
    let mut large = with_call(UNARY, unary_body(1 << 20));
    let mut streams = with_call(
        "/grpc.testing.TestService/StreamingOutputCall",
        stream_request(),
    );
    let origin = |module: &std::path::Path, edit: fn(&mut Value) -> Result<()>| {
        Topology::start_origin_with("origin.yaml", server, module, edit)
    };
    // Envoy's gRPC-web filter alone, then the prices of single hostcalls
    // (a no-op filter making one kind of call 20 times), then the origin as
    // shipped (gRPC-web filter gated on the marker, then the module) with
    // the no-op filter in the module's place: the floor the bridge is held to.
    let priced_rows = [
        ("reading a header", "header"),
        ("reading a response header", "response"),
        ("reading the request body", "body"),
        ("reading the header map", "map"),
        ("reading the header map, unparsed", "rawmap"),
        ("replacing a header", "set"),
        ("reading the clock", "time"),
        ("incrementing a counter", "metric"),
    ];
    let mut origins = vec![
        (
            "Envoy's gRPC-web filter alone".into(),
            origin(&bridge, native_filter_only)?,
            false,
        ),
        (
            "gRPC-web filter + no-op Wasm filter".into(),
            origin(&topology::noop_module(), ungate_grpc_web)?,
            false,
        ),
    ];
    for (what, call) in priced_rows {
        let name = format!("gRPC-web filter + no-op Wasm filter {what} 20 times");
        let calls = format!("{call} 20");
        origins.push((
            name,
            Topology::start_origin_with("origin.yaml", server, &topology::noop_module(), |c| {
                priced(c, &calls)
            })?,
            false,
        ));
    }
    origins.push((
        ORIGIN_REFERENCE.into(),
        origin(&bridge, remove_bridge)?,
        true,
    ));
    origins.push((
        ORIGIN_FLOOR.into(),
        origin(&topology::noop_module(), |_| Ok(()))?,
        true,
    ));
    origins.push((
        "bridge origin (gRPC-web filter + module)".into(),
        origin(&bridge, |_| Ok(()))?,
        true,
    ));
    if native_loads {
        origins.push((
            "bridge origin, native build (gRPC-web filter + dynamic module)".into(),
            origin(&native_bridge, |_| Ok(()))?,
            true,
        ));
    }
    for (name, module) in &baselines {
        origins.push((name.clone(), origin(module, |_| Ok(()))?, true));
    }
    let mut origins = origins
        .into_iter()
        .map(|(name, topology, marked)| Variant {
            name,
            target: topology.edge,
            topology: Arc::new(topology),
            call: web(marked),
            runs: Vec::new(),
        })
        .collect::<Vec<_>>();
    // grpc-web-text replies of growing size: Envoy's filter encodes them;
    // CPU per MiB should stay flat (linear), for the bridge as for it.
    let text = |size: usize, marked| {
        Arc::new(Call {
            path: UNARY,
            headers: vec![("x-grpc-web", "1".into())],
            body: Bytes::from(base64(&text_request(size))),
            web: true,
            text: true,
            marked,
        })
    };
    let mut texts = Vec::new();
    for (size, label) in TEXT_SIZES {
        for (name, module, edit) in [
            (
                "Envoy's gRPC-web filter alone",
                &bridge,
                native_filter_only as fn(&mut Value) -> Result<()>,
            ),
            ("bridge origin", &bridge, allow_8_mib_frames),
            (
                "bridge origin, native build",
                &native_bridge,
                allow_8_mib_frames,
            ),
        ] {
            if !native_loads && module == &native_bridge {
                continue;
            }
            let topology = Topology::start_origin_with("origin.yaml", server, module, edit)?;
            texts.push((
                size,
                label,
                Variant {
                    name: name.to_string(),
                    target: topology.edge,
                    topology: Arc::new(topology),
                    call: text(size, name.starts_with("bridge origin")),
                    runs: Vec::new(),
                },
            ));
        }
    }
    // THROUGHPUT_ONLY=chain, =hop, =large, =stream, =origin or =text measures one table.
    let only = std::env::var("THROUGHPUT_ONLY").unwrap_or_default();
    let callers: usize = std::env::var("THROUGHPUT_STREAMS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(STREAMS);
    let rate: Option<f64> = std::env::var("THROUGHPUT_RATE")
        .ok()
        .and_then(|r| r.parse().ok());
    // THROUGHPUT_VARIANTS=a|b* runs only the variant named a and those
    // whose names start with b (and each table's first, the ratios' base);
    // THROUGHPUT_ROUNDS=n.
    let variants = std::env::var("THROUGHPUT_VARIANTS").unwrap_or_default();
    let wanted = |name: &str, first: bool| {
        first
            || variants.is_empty()
            || variants.split('|').any(|v| match v.strip_suffix('*') {
                Some(prefix) => name.starts_with(prefix),
                None => name == v,
            })
    };
    let rounds: usize = std::env::var("THROUGHPUT_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(ROUNDS);
    for round in 0..rounds {
        let tables: [(&str, Vec<&mut Variant>); 6] = [
            ("chain", chain.iter_mut().collect()),
            ("hop", hops.iter_mut().collect()),
            ("large", large.iter_mut().collect()),
            ("stream", streams.iter_mut().collect()),
            ("origin", origins.iter_mut().collect()),
            ("text", texts.iter_mut().map(|(_, _, v)| v).collect()),
        ];
        let selected = tables
            .into_iter()
            .filter(|(name, _)| only.is_empty() || *name == only);
        let selected = selected.flat_map(|(table, variants)| {
            variants
                .into_iter()
                .enumerate()
                .filter(|(i, v)| wanted(&v.name, *i == 0))
                .map(move |(_, v)| (table, v))
        });
        for (table, variant) in selected {
            let callers = match table {
                "hop" => HOP_STREAMS,
                _ => callers,
            };
            let mut call = (*variant.call).clone();
            if call.marked {
                call.headers.push(("x-grpc-web-bridge", marker(call.path)));
            }
            let run = runtime
                .block_on(load(
                    &variant.topology,
                    variant.target,
                    Arc::new(call),
                    callers,
                    rate,
                ))
                .with_context(|| format!("{} (round {round})", variant.name))?;
            variant.runs.push(run);
        }
    }
    println!(
        "{rounds} rounds × {} s per variant, {callers} concurrent unary calls (64-byte messages but in the text table), \
         every Envoy one worker on core 0, client and server on core 1.",
        seconds()
    );
    if !chain[0].runs.is_empty() {
        table(
            "Native gRPC through two Envoys (edge, origin)",
            &chain,
            0,
            0,
        );
    }
    if !hops[0].runs.is_empty() {
        table(
            &format!(
                "The HTTP/1.1 hop: {HOP_STREAMS} unary calls in flight through two Envoys (marked gRPC-web the origin converts; the bridge: native gRPC)"
            ),
            &hops,
            0,
            0,
        );
    }
    if !large[0].runs.is_empty() {
        table(
            "1 MiB unary calls (1 MiB each way) through two Envoys",
            &large,
            0,
            0,
        );
    }
    if !streams[0].runs.is_empty() {
        table(
            "A server stream of 64 × 64 KiB (4 MiB a call) through two Envoys: MB/s = req/s × 4.19",
            &streams,
            0,
            0,
        );
    }
    if !origins[0].runs.is_empty() {
        let floor = origins
            .iter()
            .position(|v| v.name == ORIGIN_REFERENCE)
            .unwrap_or(0);
        table(
            "gRPC-web at the origin (binary, marked)",
            &origins,
            0,
            floor,
        );
    }
    native_targets(&chain, &hops, &large, &streams, &origins);
    if !texts[0].2.runs.is_empty() {
        println!("\n#### grpc-web-text replies at the origin: CPU per MiB by size\n");
        println!(
            "| reply size | variant | req/s | ratio to Envoy's filter alone | origin CPU ms per MiB |"
        );
        println!("|---|---|---:|---:|---:|");
        for pair in texts.chunks(if native_loads { 3 } else { 2 }) {
            let (size, label, native) = (&pair[0].0, pair[0].1, &pair[0].2);
            for (_, _, variant) in pair {
                let rps = median(variant.runs.iter().map(|r| r.rps).collect());
                let ratio = median(
                    variant
                        .runs
                        .iter()
                        .zip(&native.runs)
                        .map(|(r, n)| r.rps / n.rps)
                        .collect(),
                );
                let per_mib = median(
                    variant
                        .runs
                        .iter()
                        .map(|r| r.cpu[0].1 / (*size as f64 / 1048576.0))
                        .collect(),
                ) / 1000.0;
                println!(
                    "| {label} | {} | {rps:.0} | {ratio:.2} | {per_mib:.1} |",
                    variant.name
                );
            }
        }
    }
    Ok(())
}
