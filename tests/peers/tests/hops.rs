//! The hop matrix (docs/hops.md): every interop case through client → edge
//! → intermediary → origin → interop server, for ordinary HTTP/1.1 proxies
//! from Debian's packages, each in its usual configuration and in the one
//! this project ships (`envoy/hops/`), and a cascade of three. Each case is
//! bounded: a call a hop holds is cut at [`BOUND`] and shows as a hang.
//!
//! What each cell must be is written below ([`expected`]), a known gap
//! with its reason; the suite fails on any cell that differs, an
//! unexpected pass included, so the table in docs/hops.md stays true.
//!
//! `HOPS=shipped` (the default, `make test`), `HOPS=usual`, `HOPS=all`
//! (`make hops`) or hop names (`HOPS=haproxy,squid`); `HOPS_TABLE=FILE`
//! writes the table there, `HOPS_LOGS=1` prints the logs of a row that
//! differs.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::harness::{interop_server, runtime};
use bridge_peers::hops::{self, Intermediary, Running};
use bridge_peers::interop_client::{AWAITING_HEADERS, CASES, Case, channel};
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{Payload, ResponseParameters, SimpleRequest, StreamingOutputCallRequest};
use bridge_peers::raw::{frame, h2_call};
use bridge_peers::topology::{self, Hop, Topology, Upstream};
use prost::Message;

/// How long one case may take before it counts as a hang.
const BOUND: Duration = Duration::from_secs(10);

/// What a cell must show.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Pass,
    /// Ends with an error, within the bound.
    Fails,
    /// Still running at the bound.
    Hangs,
}

/// The cells that are not a pass, and why (docs/hops.md repeats these).
fn expected(hop: &str, case: &str) -> (Outcome, &'static str) {
    use Outcome::*;
    // The calls whose client waits for a reply before it sends more (or
    // ends): a hop that holds the request, or stops reading it once the
    // response has started, cannot carry them.
    let full_duplex = matches!(
        case,
        "ping_pong" | "cancel_after_first_response" | "ping_pong_awaiting_headers"
    );
    if case == IDLE.name {
        match hop {
            "nginx-usual" | "apache-usual" | "varnish-usual" => {
                return (Fails, "its upstream read timeout (60 s) resets the call");
            }
            "haproxy-usual" => return (Fails, "timeout server 50s resets the call"),
            _ => {}
        }
    }
    match (hop, full_duplex) {
        ("nginx-usual", false) => match case {
            "messages_of_1_mib" => (Fails, "client_max_body_size is 1 MiB: 413"),
            "stream_5_ms_apart_arrives_spaced" => (
                Fails,
                "proxy_buffering on: the response waits in nginx's buffers",
            ),
            "deadline_passing_mid_stream" => (
                Fails,
                "the first message waits in nginx's buffers past the deadline",
            ),
            _ => (Pass, ""),
        },
        ("haproxy-usual", false) if case == "stream_5_ms_apart_arrives_spaced" => (
            Fails,
            "without http-no-delay small messages wait to be sent together",
        ),
        ("nginx-usual", true) => (
            Hangs,
            "nginx sends an HTTP/1.0 upstream the whole request, so it reads it to its end first",
        ),
        ("apache-usual" | "apache" | "waf" | "waf-usual", true) => (
            Hangs,
            "mod_proxy_http sends the whole request before it reads any of the response",
        ),
        ("caddy-usual" | "caddy", true) => (
            Hangs,
            "Caddy 2.6 (Go's HTTP/1 server) stops reading the request once the response has started",
        ),
        ("varnish-usual", true) => (Fails, "Varnish answers a full-duplex call 503 after 5 s"),
        // The CRS refuses gRPC-web's content type (920420, 403) and bodies
        // over 128 KiB (413); a client deadline of 1 ms fires first.
        ("waf-usual", false) if case != "timeout_on_sleeping_server" => (
            Fails,
            "the CRS refuses the content type (403) or the body size (413)",
        ),
        _ => (Pass, ""),
    }
}

/// The cases every hop runs: the interop cases, a client that awaits the
/// response headers before it sends, and what a hop shows on its own:
/// messages of 1 MiB, a server stream whose messages 5 ms apart must not
/// arrive bunched, a deadline that passes mid-stream, and (`HOPS_IDLE_S`,
/// `make hops`: 60) a stream idle that long between two messages.
fn cases() -> Vec<&'static Case> {
    let mut cases: Vec<&'static Case> = CASES.iter().chain([&AWAITING_HEADERS]).collect();
    cases.extend(PROBES);
    if idle_seconds() > 0 {
        cases.push(&IDLE);
    }
    cases
}

const PROBES: &[Case] = &[
    Case {
        name: "messages_of_1_mib",
        run: |target| Box::pin(messages_of_1_mib(target)),
    },
    Case {
        name: "stream_5_ms_apart_arrives_spaced",
        run: |target| Box::pin(stream_arrives_spaced(target)),
    },
    Case {
        name: "deadline_passing_mid_stream",
        run: |target| Box::pin(deadline_passing_mid_stream(target)),
    },
];

const IDLE: Case = Case {
    name: "stream_idle_between_messages",
    run: |target| Box::pin(stream_idle_between_messages(target)),
};

fn idle_seconds() -> u64 {
    std::env::var("HOPS_IDLE_S")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0)
}

fn payload(size: usize) -> Option<Payload> {
    Some(Payload {
        body: vec![7; size],
        ..Default::default()
    })
}

async fn messages_of_1_mib(target: String) -> Result<()> {
    let mut client = TestServiceClient::new(channel(&target).await?)
        .max_decoding_message_size(4 << 20)
        .max_encoding_message_size(4 << 20);
    let request = SimpleRequest {
        response_size: 1 << 20,
        payload: payload(1 << 20),
        ..Default::default()
    };
    let response = client.unary_call(request).await?.into_inner();
    let size = response.payload.map_or(0, |p| p.body.len());
    ensure!(size == 1 << 20, "a reply of {size} bytes");
    Ok(())
}

/// Ten messages 5 ms apart: a hop that buffers the response delivers them
/// together at the end. Timing on a busy machine varies, so the check is
/// that they are spread over at least half the time the server took.
async fn stream_arrives_spaced(target: String) -> Result<()> {
    const INTERVAL: Duration = Duration::from_millis(5);
    let mut client = TestServiceClient::new(channel(&target).await?);
    let request = StreamingOutputCallRequest {
        response_parameters: (0..10)
            .map(|_| ResponseParameters {
                size: 10,
                interval_us: INTERVAL.as_micros() as i32,
                compressed: None,
            })
            .collect(),
        ..Default::default()
    };
    let mut stream = client.streaming_output_call(request).await?.into_inner();
    let mut arrivals = Vec::new();
    while stream.message().await?.is_some() {
        arrivals.push(Instant::now());
    }
    ensure!(arrivals.len() == 10, "{} messages", arrivals.len());
    let spread = arrivals[9] - arrivals[0];
    ensure!(
        spread >= INTERVAL * 9 / 2,
        "ten messages 5 ms apart arrived within {spread:?}"
    );
    Ok(())
}

/// A message, then a server that goes quiet past the call's 500 ms
/// deadline: the client gets the message, then the deadline in time.
async fn deadline_passing_mid_stream(target: String) -> Result<()> {
    let mut client = TestServiceClient::new(channel(&target).await?);
    let mut request = tonic::Request::new(two_messages(3_000_000));
    request.set_timeout(Duration::from_millis(500));
    let started = Instant::now();
    let mut stream = client.streaming_output_call(request).await?.into_inner();
    ensure!(stream.message().await?.is_some(), "no first message");
    let status = match stream.message().await {
        Err(status) => status,
        Ok(message) => bail!("after the deadline: {message:?}"),
    };
    let took = started.elapsed();
    // tonic reports its own timer as CANCELLED when it fires first.
    ensure!(
        matches!(
            status.code(),
            tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
        ),
        "{status:?}"
    );
    ensure!(took < Duration::from_millis(2500), "ended after {took:?}");
    Ok(())
}

/// A server stream of two 10-byte messages, the second `second_after_us`
/// after the first.
fn two_messages(second_after_us: i32) -> StreamingOutputCallRequest {
    let message = |interval_us| ResponseParameters {
        size: 10,
        interval_us,
        compressed: None,
    };
    StreamingOutputCallRequest {
        response_parameters: vec![message(0), message(second_after_us)],
        ..Default::default()
    }
}

/// A server stream whose second message comes `HOPS_IDLE_S` after the
/// first: the idle time a hop allows a call (a channel without the
/// harness's 30 s per-call timeout).
async fn stream_idle_between_messages(target: String) -> Result<()> {
    let channel = tonic::transport::Endpoint::from_shared(target)?
        .connect()
        .await?;
    let mut client = TestServiceClient::new(channel);
    let request = two_messages((idle_seconds() * 1_000_000) as i32);
    let mut stream = client.streaming_output_call(request).await?.into_inner();
    ensure!(stream.message().await?.is_some(), "no first message");
    ensure!(
        stream.message().await?.is_some(),
        "no message after the idle time"
    );
    ensure!(stream.message().await?.is_none(), "the call did not end");
    Ok(())
}

/// A row of the matrix: one hop (or cascade), each case's outcome, and
/// how many calls the edge sent through it against how many connections
/// the origin accepted meanwhile (a hop that reuses its upstream
/// connections opens few).
struct Row {
    name: String,
    outcomes: Vec<(&'static str, Outcome, Duration, String)>,
    calls: u64,
    origin_connections: u64,
}

fn run_row(
    runtime: &tokio::runtime::Runtime,
    name: &str,
    hops: &[Intermediary],
    origin: &Topology,
) -> Result<(Row, Vec<Running>, Topology)> {
    let running = hops::start_cascade(hops, origin.origin_or_edge())?;
    let edge = Topology::start_with_module(
        Hop::Nginx,
        Upstream::EdgeOnly(running[0].listen),
        &topology::wasm_module(),
    )?;
    let target = format!("http://{}", edge.edge);
    let connections = || {
        Topology::counter(
            origin.origin_admin_or_edge(),
            "http.origin.downstream_cx_total",
        )
    };
    let connections_before = connections();
    let mut outcomes = Vec::new();
    for case in cases() {
        let started = Instant::now();
        let run = (case.run)(target.clone());
        let bound = match case.name == IDLE.name {
            true => BOUND + Duration::from_secs(idle_seconds()),
            false => BOUND,
        };
        let result = runtime.block_on(async { tokio::time::timeout(bound, run).await });
        let took = started.elapsed();
        let (outcome, detail) = match result {
            Ok(Ok(())) => (Outcome::Pass, String::new()),
            Ok(Err(error)) => (Outcome::Fails, format!("{error:#}")),
            Err(_) => (Outcome::Hangs, String::new()),
        };
        outcomes.push((case.name, outcome, took, detail));
    }
    let calls = Topology::counter(edge.edge_admin, "cluster.hop.upstream_rq_total");
    Ok((
        Row {
            name: name.to_string(),
            outcomes,
            calls,
            origin_connections: connections() - connections_before,
        },
        running,
        edge,
    ))
}

/// With the shipped CRS settings the WAF still inspects what it can read:
/// an attack in the path's query or in a metadata header is refused with
/// 403, which reaches the client as PERMISSION_DENIED naming the WAF's
/// server; the same call without it passes.
async fn waf_still_blocks_attacks(edge: SocketAddr) -> Result<()> {
    const UNARY: &str = "/grpc.testing.TestService/UnaryCall";
    let body = frame(0, &SimpleRequest::default().encode_to_vec());
    let clean = h2_call(edge, UNARY, &[], &body).await?;
    ensure!(
        clean.grpc_status() == Some("0"),
        "the clean call: {clean:?}"
    );
    let probes: [(&str, &[(&str, &str)]); 2] = [
        // CRS 930100/930120: path traversal to an OS file in the query.
        (
            "/grpc.testing.TestService/UnaryCall?file=../../etc/passwd",
            &[],
        ),
        // CRS 932170: Shellshock in a request header.
        (UNARY, &[("x-probe", "() { :; }; /bin/cat /etc/passwd")]),
    ];
    for (path, headers) in probes {
        let r = h2_call(edge, path, headers, &body).await?;
        ensure!(
            r.grpc_status() == Some("7")
                && r.grpc_message().starts_with(
                    "grpc-web-bridge: upstream answered with HTTP status 403 Forbidden, from \"Apache/"
                ),
            "an attack through the WAF ({path} {headers:?}): {r:?}"
        );
    }
    Ok(())
}

fn symbol(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Pass => "pass",
        Outcome::Fails => "FAILS",
        Outcome::Hangs => "HANGS",
    }
}

fn main() -> Result<()> {
    let which = std::env::var("HOPS").unwrap_or_else(|_| "shipped".into());
    let mut rows: Vec<(String, Vec<Intermediary>)> = Vec::new();
    let single = |list: &[Intermediary]| {
        list.iter()
            .map(|i| (i.name.to_string(), vec![*i]))
            .collect::<Vec<_>>()
    };
    match which.as_str() {
        "shipped" => rows.extend(single(hops::SHIPPED)),
        "usual" => rows.extend(single(hops::USUAL)),
        "all" => {
            rows.extend(single(hops::USUAL));
            rows.extend(single(hops::SHIPPED));
        }
        names => {
            for name in names.split(',') {
                let hop = hops::by_name(name).with_context(|| {
                    format!("HOPS={name}: use shipped, usual, all or hop names")
                })?;
                rows.push((name.to_string(), vec![hop]));
            }
        }
    }
    if matches!(which.as_str(), "shipped" | "all") {
        let cascade: Vec<Intermediary> = ["haproxy", "squid", "nginx"]
            .iter()
            .map(|name| hops::by_name(name).context("no such hop"))
            .collect::<Result<_>>()?;
        rows.push(("haproxy → squid → nginx".into(), cascade));
    }

    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let origin = Topology::start_origin("origin.yaml", server)?;
    let mut table = Vec::new();
    let (mut passed, mut failed) = (0, 0);
    for (name, hops) in &rows {
        let (row, running, edge) = run_row(&runtime, name, hops, &origin)?;
        let mut logs_needed = false;
        for (case, outcome, took, detail) in &row.outcomes {
            let (want, why) = expected(name, case);
            if *outcome != Outcome::Pass {
                println!(
                    "  {name} / {case}: {} in {took:.1?} {detail}",
                    symbol(*outcome)
                );
            }
            if *outcome == want {
                passed += 1;
            } else {
                failed += 1;
                logs_needed = true;
                println!(
                    "MISMATCH {name} / {case}: {} in {took:.1?}, expected {} ({why}) {detail}",
                    symbol(*outcome),
                    symbol(want)
                );
            }
        }
        if hops.iter().any(|hop| hop.name == "waf") {
            match runtime.block_on(waf_still_blocks_attacks(edge.edge)) {
                Ok(()) => passed += 1,
                Err(error) => {
                    failed += 1;
                    logs_needed = true;
                    println!("MISMATCH {name} / attack probes: {error:#}");
                }
            }
        }
        if logs_needed && std::env::var_os("HOPS_LOGS").is_some() {
            for hop in &running {
                println!("{}", hop.log());
            }
            println!("{}", edge.logs());
        }
        drop(edge);
        drop(running);
        table.push(row);
    }
    drop(origin);

    // Every row ran the same cases in the same order.
    let mut text = String::from("| case |");
    for row in &table {
        text.push_str(&format!(" {} |", row.name));
    }
    text.push_str("\n|---|");
    text.push_str(&"---|".repeat(table.len()));
    text.push('\n');
    for (index, case) in cases().iter().enumerate() {
        text.push_str(&format!("| `{}` |", case.name));
        for row in &table {
            let (_, outcome, took, _) = &row.outcomes[index];
            text.push_str(&match outcome {
                Outcome::Pass => format!(" pass {:.0} ms |", took.as_secs_f64() * 1000.0),
                other => format!(" **{}** {:.1} s |", symbol(*other), took.as_secs_f64()),
            });
        }
        text.push('\n');
    }
    text.push_str("| calls / new connections to the origin |");
    for row in &table {
        text.push_str(&format!(" {} / {} |", row.calls, row.origin_connections));
    }
    text.push('\n');
    println!("\n{text}");
    if let Ok(path) = std::env::var("HOPS_TABLE") {
        std::fs::write(path, &text)?;
    }
    println!("{passed} passed, {failed} failed");
    if failed > 0 {
        bail!("{failed} cells differ from what docs/hops.md says");
    }
    Ok(())
}
