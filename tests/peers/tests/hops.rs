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

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use std::net::SocketAddr;

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::harness::{interop_server, runtime};
use bridge_peers::hops::{self, Intermediary, Running};
use bridge_peers::interop_client::{AWAITING_HEADERS, CASES, Case};
use bridge_peers::proto::SimpleRequest;
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
    match (hop, full_duplex) {
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
        ("varnish-usual", true) => (
            Fails,
            "Varnish reads the request before it fetches, then gives up: 503 after 5 s",
        ),
        // The CRS refuses gRPC-web's content type (920420, 403) and bodies
        // over 128 KiB (413); a client deadline of 1 ms fires first.
        ("waf-usual", false) if case != "timeout_on_sleeping_server" => (
            Fails,
            "the CRS refuses the content type (403) or the body size (413)",
        ),
        _ => (Pass, ""),
    }
}

/// The cases every hop runs: the interop cases and a client that awaits
/// the response headers before it sends.
fn cases() -> Vec<&'static Case> {
    CASES
        .iter()
        .chain(std::iter::once(&AWAITING_HEADERS))
        .collect()
}

/// A row of the matrix: one hop (or cascade), each case's outcome.
struct Row {
    name: String,
    outcomes: Vec<(&'static str, Outcome, Duration, String)>,
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
    let mut outcomes = Vec::new();
    for case in cases() {
        let started = Instant::now();
        let run = (case.run)(target.clone());
        let result = runtime.block_on(async { tokio::time::timeout(BOUND, run).await });
        let took = started.elapsed();
        let (outcome, detail) = match result {
            Ok(Ok(())) => (Outcome::Pass, String::new()),
            Ok(Err(error)) => (Outcome::Fails, format!("{error:#}")),
            Err(_) => (Outcome::Hangs, String::new()),
        };
        outcomes.push((case.name, outcome, took, detail));
    }
    Ok((
        Row {
            name: name.to_string(),
            outcomes,
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

    let mut by_case: BTreeMap<&str, Vec<String>> = BTreeMap::new();
    let mut text = String::from("| case |");
    for row in &table {
        text.push_str(&format!(" {} |", row.name));
        for (case, outcome, took, _) in &row.outcomes {
            let cell = match outcome {
                Outcome::Pass => format!("pass {:.0} ms", took.as_secs_f64() * 1000.0),
                other => format!("**{}** {:.1} s", symbol(*other), took.as_secs_f64()),
            };
            by_case.entry(case).or_default().push(cell);
        }
    }
    text.push_str("\n|---|");
    text.push_str(&"---|".repeat(table.len()));
    text.push('\n');
    for case in cases() {
        let cells = by_case
            .get(case.name)
            .map(|c| c.join(" | "))
            .unwrap_or_default();
        text.push_str(&format!("| `{}` | {cells} |\n", case.name));
    }
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
