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
//! the counters are zeroed, COST_CALLS calls run (4 in flight), and the
//! counters are dumped.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use bridge_peers::proto::test_service_client::TestServiceClient;
use bridge_peers::proto::{Payload, SimpleRequest};
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

/// `calls` unary calls of 64 bytes each way, `IN_FLIGHT` at a time.
async fn unary_calls(target: &str, calls: u64) -> Result<()> {
    let channel = bridge_peers::interop_client::channel(target).await?;
    let mut callers = Vec::new();
    for _ in 0..IN_FLIGHT {
        let mut client = TestServiceClient::new(channel.clone());
        callers.push(tokio::spawn(async move {
            for _ in 0..calls / IN_FLIGHT {
                let request = SimpleRequest {
                    response_size: 64,
                    payload: Some(Payload {
                        r#type: 0,
                        body: vec![0; 64],
                    }),
                    ..Default::default()
                };
                let reply = client.unary_call(request).await?.into_inner();
                ensure!(
                    reply.payload.map(|p| p.body.len()) == Some(64),
                    "wrong reply size"
                );
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

/// The `totals:` of the newest dump callgrind wrote for `name`.
fn dumped_total(dir: &Path, name: &str) -> Result<u64> {
    let prefix = format!("{name}.callgrind.");
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut dumps: Vec<PathBuf> = std::fs::read_dir(dir)?
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|path| {
                path.file_name()
                    .and_then(|n| n.to_str())
                    .is_some_and(|n| n.starts_with(&prefix))
            })
            .collect();
        dumps.sort();
        if let Some(dump) = dumps.last() {
            let text = std::fs::read_to_string(dump)?;
            let total = text
                .lines()
                .find_map(|line| line.strip_prefix("totals:"))
                .and_then(|v| v.trim().parse().ok());
            if let Some(total) = total {
                return Ok(total);
            }
        }
        if Instant::now() > deadline {
            bail!("no callgrind dump for {name} in {}", dir.display());
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Instructions per call of each Envoy of `topology`: (edge, origin).
fn measure(runtime: &tokio::runtime::Runtime, topology: &Topology) -> Result<(f64, f64)> {
    let target = format!("http://{}", topology.edge);
    runtime.block_on(unary_calls(&target, WARM_UP))?;
    let pids = topology.pids();
    for (_, pid) in &pids {
        callgrind_control("-z", *pid)?;
    }
    let calls = calls();
    runtime.block_on(unary_calls(&target, calls))?;
    for (_, pid) in &pids {
        callgrind_control("-d", *pid)?;
    }
    let per_call = |name: &str| -> Result<f64> {
        Ok(dumped_total(&topology.dir, name)? as f64 / calls as f64)
    };
    Ok((per_call("edge")?, per_call("origin")?))
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
    ensure!(
        native.exists(),
        "{} is missing: run make build",
        native.display()
    );
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
    let plain = Topology::start(Hop::PlainHttp2, Upstream::Server(server))?;
    let bridge = start(&native, true)?;
    let no_origin_module = start(&native, false)?;
    println!(
        "Instructions per small unary call (callgrind; {} calls, {IN_FLIGHT} in flight, edge → origin over HTTP/2):",
        calls()
    );
    println!();
    println!("| chain | edge | origin |");
    println!("|---|---:|---:|");
    let mut rows = Vec::new();
    for (name, topology) in [
        ("two Envoys, router only", &plain),
        ("bridge, native build", &bridge),
        (
            "native edge → origin without the module (gated gRPC-web filter alone)",
            &no_origin_module,
        ),
    ] {
        let (edge, origin) = measure(&runtime, topology)?;
        println!("| {name} | {edge:.0} | {origin:.0} |");
        rows.push((edge, origin));
    }
    let [
        (plain_edge, plain_origin),
        (edge, origin),
        (_, gated_origin),
    ] = rows[..]
    else {
        bail!("three chains measured");
    };
    println!();
    println!("| measure | this run | target |");
    println!("|---|---:|---|");
    println!(
        "| edge: native edge / router-only edge | {:.2} | ≤ 1.15 |",
        edge / plain_edge
    );
    println!(
        "| origin: native origin / origin without the module | {:.2} | ≤ 1.10 |",
        origin / gated_origin
    );
    println!(
        "| origin: native origin / router-only origin | {:.2} | — |",
        origin / plain_origin
    );
    println!(
        "| both Envoys: router-only pair / native pair (calls per instruction) | {:.2} | ≥ 0.90 (as req/s) |",
        (plain_edge + plain_origin) / (edge + origin)
    );
    Ok(())
}
