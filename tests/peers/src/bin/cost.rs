//! `make bench`: instructions each Envoy executes per small unary call,
//! counted by valgrind's callgrind. Wall-clock CPU per call on a shared
//! 2-core machine swings by a third from run to run (docs/benchmarks.md);
//! instruction counts repeat to a fraction of a percent, so they show the
//! module's own cost apart from the machine's noise. They leave out what
//! the kernel does for a process (syscalls, scheduling): the throughput
//! bench still measures time.
//!
//! Each chain runs edge → origin over HTTP/2 in front of the interop
//! server, each Envoy on one worker under callgrind. After warm-up calls
//! the counters are zeroed, COST_CALLS small unary calls run (4 in
//! flight), and the counters are dumped; then the same for 1 MiB unary
//! calls and 64 × 64 KiB server streams (a tenth as many), per MiB.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bridge_peers::interop_client::sized_unary;
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{ResponseParameters, StreamingOutputCallRequest};
use bridge_peers::topology::{self, Hop, Topology, Upstream, remove_bridge};
use serde_json::Value;

/// Calls counted per chain.
fn calls() -> u64 {
    std::env::var("COST_CALLS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1000)
}

const IN_FLIGHT: u64 = 4;
const WARM_UP: u64 = 200;

/// Whether an Envoy config is the edge's (it has the `hop` cluster).
fn is_edge(config: &Value) -> bool {
    config
        .pointer("/static_resources/clusters")
        .and_then(Value::as_array)
        .is_some_and(|clusters| clusters.iter().any(|c| c["name"] == "hop"))
}

/// What each counted call does.
#[derive(Clone, Copy)]
enum Work {
    /// A unary call of this many bytes each way.
    Unary(usize),
    /// A server stream of 64 messages of 64 KiB.
    Stream,
}

impl Work {
    /// Calls counted: enough that the chain's idle work is noise.
    fn calls(self) -> u64 {
        match self {
            Work::Unary(size) if size <= 1024 => calls(),
            _ => calls() / 10,
        }
    }
}

/// `calls` calls of `work`, `IN_FLIGHT` at a time, each checked whole.
async fn run_calls(target: &str, work: Work, calls: u64) -> Result<()> {
    let channel = bridge_peers::interop_client::channel(target).await?;
    let mut callers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut client = TestServiceClient::new(channel.clone())
            .max_decoding_message_size(8 << 20)
            .max_encoding_message_size(8 << 20);
        callers.push(tokio::spawn(async move {
            for _ in 0..calls / IN_FLIGHT {
                let received = match work {
                    Work::Unary(size) => {
                        let reply = client.unary_call(sized_unary(size)).await?.into_inner();
                        ensure!(reply.payload.map(|p| p.body.len()) == Some(size));
                        size
                    }
                    Work::Stream => {
                        let request = StreamingOutputCallRequest {
                            response_parameters: (0..64)
                                .map(|_| ResponseParameters {
                                    size: 64 << 10,
                                    ..Default::default()
                                })
                                .collect(),
                            ..Default::default()
                        };
                        let mut stream = client.streaming_output_call(request).await?.into_inner();
                        let mut received = 0;
                        while let Some(reply) = stream.message().await? {
                            received += reply.payload.map_or(0, |p| p.body.len());
                        }
                        received
                    }
                };
                ensure!(received > 0, "an empty reply");
            }
            Ok(())
        }));
    }
    for caller in callers {
        caller.await??;
    }
    Ok(())
}

fn callgrind_control(option: &str, pid: u32) -> Result<()> {
    let status = Command::new("callgrind_control")
        .arg(option)
        .arg(pid.to_string())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .context("running callgrind_control (valgrind)")?;
    ensure!(status.success(), "callgrind_control {option} {pid} failed");
    Ok(())
}

/// How many dumps callgrind has written for `name` (it numbers them 1, 2, …).
fn dumps_of(dir: &Path, name: &str) -> Result<usize> {
    let prefix = format!("{name}.callgrind.");
    Ok(std::fs::read_dir(dir)?
        .filter_map(|entry| entry.ok())
        .filter(|entry| entry.file_name().to_string_lossy().starts_with(&prefix))
        .count())
}

/// Dump `number` for `name`, once written whole, and its `totals:`.
fn dump(dir: &Path, name: &str, number: usize) -> Result<(PathBuf, u64)> {
    let path = dir.join(format!("{name}.callgrind.{number}"));
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let total = std::fs::read_to_string(&path).ok().and_then(|text| {
            text.lines()
                .find_map(|line| line.strip_prefix("totals:"))
                .and_then(|v| v.trim().parse().ok())
        });
        if let Some(total) = total {
            return Ok((path, total));
        }
        if Instant::now() > deadline {
            bail!("no callgrind dump {}", path.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// One Envoy's count over `calls` calls.
struct Count {
    per_call: f64,
    calls: u64,
    dump: PathBuf,
}

/// Counts each Envoy of `topology` over the calls of `work`: (edge, origin).
fn measure(
    runtime: &tokio::runtime::Runtime,
    topology: &Topology,
    work: Work,
) -> Result<(Count, Count)> {
    let target = format!("http://{}", topology.edge);
    // Each caller makes an equal share: the calls counted are those made.
    let calls = work.calls() / IN_FLIGHT * IN_FLIGHT;
    runtime.block_on(run_calls(&target, work, WARM_UP.min(calls)))?;
    let pids = topology.pids();
    for (_, pid) in &pids {
        callgrind_control("-z", *pid)?;
    }
    runtime.block_on(run_calls(&target, work, calls))?;
    let next = |name: &str| dumps_of(&topology.dir, name).map(|n| n + 1);
    let (edge_dump, origin_dump) = (next("edge")?, next("origin")?);
    for (_, pid) in &pids {
        callgrind_control("-d", *pid)?;
    }
    let count = |name: &str, number: usize| -> Result<Count> {
        let (dump, total) = dump(&topology.dir, name, number)?;
        Ok(Count {
            per_call: total as f64 / calls as f64,
            calls,
            dump,
        })
    };
    Ok((count("edge", edge_dump)?, count("origin", origin_dump)?))
}

/// Instructions per call under each of the native module's stream hooks
/// (Envoy's work in the callbacks they make included), from a count's dump.
fn native_hooks(count: &Count) -> Result<Vec<(String, f64)>> {
    let output = Command::new("callgrind_annotate")
        .args(["--inclusive=yes", "--threshold=100"])
        .arg(&count.dump)
        .output()
        .context("running callgrind_annotate (valgrind)")?;
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text
        .lines()
        .filter_map(|line| {
            let (instructions, rest) = line.trim().split_once(' ')?;
            let hook = rest.split("envoy_dynamic_module_on_http_filter_").nth(1)?;
            let hook = hook.split_whitespace().next()?.to_string();
            let instructions: f64 = instructions.replace(',', "").parse().ok()?;
            Some((hook, instructions / count.calls as f64))
        })
        .collect())
}

fn main() -> Result<()> {
    // SAFETY: set before any thread exists; read by the topology harness.
    unsafe {
        std::env::set_var("BRIDGE_ENVOY_CALLGRIND", "1");
        std::env::set_var("BRIDGE_ENVOY_WORKERS", "1");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let native = topology::native_module();
    let noop = topology::noop_module();
    for module in [&native, &noop] {
        ensure!(
            module.exists(),
            "{} is missing: run make bench",
            module.display()
        );
    }
    let start = |module: &Path, origin_module: bool| -> Result<Topology> {
        Topology::start_edited(
            Hop::DirectHttp2,
            Upstream::Server(server),
            module,
            Ok,
            |config| match origin_module || is_edge(config) {
                true => Ok(()),
                false => remove_bridge(config),
            },
        )
    };
    // Each started once (under valgrind an Envoy takes tens of seconds to
    // start) and counted for every kind of call.
    let chains = [
        (
            "two Envoys, router only",
            Topology::start(Hop::PlainHttp2, Upstream::Server(server))?,
        ),
        ("two Envoys, no-op Wasm filter", start(&noop, true)?),
        ("bridge, Wasm build", start(&topology::wasm_module(), true)?),
        ("bridge, native build", start(&native, true)?),
        (
            "native edge → origin without the module (gated gRPC-web filter alone)",
            start(&native, false)?,
        ),
    ];
    println!(
        "Instructions per small unary call (callgrind; {} calls, {IN_FLIGHT} in flight, edge → origin over HTTP/2, 64-byte messages):",
        calls()
    );
    println!();
    println!("| chain | edge | origin |");
    println!("|---|---:|---:|");
    let mut counts = Vec::new();
    for (name, topology) in &chains {
        let (edge, origin) = measure(&runtime, topology, Work::Unary(64))?;
        println!("| {name} | {:.0} | {:.0} |", edge.per_call, origin.per_call);
        counts.push((edge, origin));
    }
    let per_call = |row: usize| (counts[row].0.per_call, counts[row].1.per_call);
    let ((plain_edge, plain_origin), (noop_edge, noop_origin)) = (per_call(0), per_call(1));
    let ((wasm_edge, wasm_origin), (edge, origin)) = (per_call(2), per_call(3));
    let (_, gated_origin) = per_call(4);
    println!();
    println!("| measure | this run | target |");
    println!("|---|---:|---|");
    let row = |measure: &str, value: f64, target: &str| {
        println!("| {measure} | {value:.2} | {target} |");
    };
    row(
        "edge: native / router-only edge",
        edge / plain_edge,
        "≤ 1.15",
    );
    row(
        "origin: native / origin without the module",
        origin / gated_origin,
        "≤ 1.10",
    );
    row(
        "origin: native / router-only origin",
        origin / plain_origin,
        "—",
    );
    row(
        "both Envoys: router-only pair / native pair",
        (plain_edge + plain_origin) / (edge + origin),
        "≥ 0.90 (as req/s)",
    );
    row(
        "both Envoys: no-op Wasm pair / native pair",
        (noop_edge + noop_origin) / (edge + origin),
        "—",
    );
    row(
        "both Envoys: Wasm pair / native pair",
        (wasm_edge + wasm_origin) / (edge + origin),
        "—",
    );
    println!();
    println!(
        "Where the native edge's and origin's instructions go, per call (each stream hook, Envoy's work in the callbacks it makes included):"
    );
    println!();
    println!("| hook | edge | origin |");
    println!("|---|---:|---:|");
    let edge_hooks = native_hooks(&counts[3].0)?;
    let origin_hooks = native_hooks(&counts[3].1)?;
    for (hook, edge) in &edge_hooks {
        let origin = origin_hooks
            .iter()
            .find(|(h, _)| h == hook)
            .map_or(0.0, |(_, n)| *n);
        println!("| {hook} | {edge:.0} | {origin:.0} |");
    }
    for (hook, origin) in origin_hooks
        .iter()
        .filter(|(h, _)| !edge_hooks.iter().any(|(e, _)| e == h))
    {
        println!("| {hook} | 0 | {origin:.0} |");
    }
    println!();
    println!(
        "Large messages: instructions per MiB carried, both Envoys together ({} calls a row, {IN_FLIGHT} in flight):",
        Work::Stream.calls()
    );
    println!();
    println!(
        "| work | router-only pair | no-op Wasm pair | native pair | Wasm pair | router-only / native | router-only / Wasm |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for (label, work, mib) in [
        ("1 MiB unary (1 MiB each way)", Work::Unary(1 << 20), 2.0),
        ("server stream, 64 × 64 KiB", Work::Stream, 4.0),
    ] {
        let mut pairs = Vec::new();
        for (_, topology) in &chains[..4] {
            let (edge, origin) = measure(&runtime, topology, work)?;
            pairs.push((edge.per_call + origin.per_call) / mib);
        }
        println!(
            "| {label} | {:.0} | {:.0} | {:.0} | {:.0} | {:.2} | {:.2} |",
            pairs[0],
            pairs[1],
            pairs[3],
            pairs[2],
            pairs[0] / pairs[3],
            pairs[0] / pairs[2]
        );
    }
    Ok(())
}
