//! The interop cases and the response-path probes, many at once with both
//! cores saturated, through edge → nginx → origin, against a server that
//! sends response headers early (tonic) and one that sends them with the
//! first message (grpcio). Every call must end with exactly the status and
//! metadata the server sent, and the bridges must count no error but the
//! deadlines the cases ask for.
//!
//! `STRESS_SUITES` (default 24) sets how many interop suites run per
//! server, `STRESS_PARALLEL` (default 12) how many calls run at once.
//! Results: docs/stress.md.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use bridge_peers::harness::{grpcio_client, grpcio_server, interop_server, runtime};
use bridge_peers::interop_client::{CASES, Case, NEEDS_REQUEST_COMPRESSION_FLAGS, PROBES};
use bridge_peers::topology::{Hop, Topology, Upstream, http_get};
use futures::StreamExt;

fn setting(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Every `grpc_web_bridge` counter of an Envoy, by name.
fn counters(admin: std::net::SocketAddr) -> Result<Vec<(String, u64)>> {
    let (_, body) = http_get(admin, "/stats?filter=grpc_web_bridge")?;
    Ok(body
        .lines()
        .filter_map(|line| {
            let (name, value) = line.split_once(": ")?;
            Some((name.to_string(), value.trim().parse().ok()?))
        })
        .collect())
}

fn counter(all: &[(String, u64)], suffix: &str) -> u64 {
    all.iter()
        .filter(|(name, _)| name.ends_with(suffix))
        .map(|(_, value)| value)
        .sum()
}

/// Spins on every core until `stop`, so the proxies compete for CPU.
fn burn(stop: Arc<AtomicBool>) -> Vec<std::thread::JoinHandle<()>> {
    (0..2)
        .map(|_| {
            let stop = stop.clone();
            std::thread::spawn(move || {
                let mut x = 0u64;
                while !stop.load(Ordering::Relaxed) {
                    x = std::hint::black_box(x.wrapping_mul(6364136223846793005).wrapping_add(1));
                }
            })
        })
        .collect()
}

/// (busy, total) jiffies of all cores, from /proc/stat.
fn cpu_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total - idle, total)
}

/// What is under way, for the report when the run passes its bound:
/// each case's name and how many of its runs have not ended, and whether
/// the grpcio client is still running.
static IN_FLIGHT: std::sync::Mutex<Vec<(&'static str, usize)>> = std::sync::Mutex::new(Vec::new());

fn in_flight(name: &'static str, delta: isize) {
    let mut cases = IN_FLIGHT.lock().unwrap_or_else(|e| e.into_inner());
    match cases.iter_mut().find(|(n, _)| *n == name) {
        Some((_, count)) => *count = count.saturating_add_signed(delta),
        None => cases.push((name, delta.max(0) as usize)),
    }
}

async fn stress(name: &str, server: std::net::SocketAddr, skip: &[&str]) -> Result<()> {
    let topology = Topology::start(Hop::Nginx, Upstream::Server(server))?;
    let target = format!("http://{}", topology.edge);
    let topology_edge = topology.edge;
    let origin_admin = topology.origin_admin.expect("an origin");
    let cases: Vec<&'static Case> = CASES
        .iter()
        .chain(PROBES)
        .chain(PROBES)
        .chain(PROBES)
        .filter(|case| !skip.contains(&case.name))
        .collect();
    let suites = setting("STRESS_SUITES", 24);
    let parallel = setting("STRESS_PARALLEL", 12);
    let stop = Arc::new(AtomicBool::new(false));
    let burners = burn(stop.clone());
    let started = Instant::now();
    let cpu_before = cpu_jiffies();
    // The grpcio client runs alongside: another real client, more load.
    let python = tokio::spawn(async move {
        in_flight("grpcio client (python)", 1);
        let result = grpcio_client(topology_edge, (suites / 4).max(1) as u32).await;
        in_flight("grpcio client (python)", -1);
        result
    });
    let runs = futures::stream::iter((0..suites).flat_map(|_| cases.iter().copied()))
        .map(|case| {
            let target = target.clone();
            async move {
                in_flight(case.name, 1);
                let result = (case.run)(target).await;
                in_flight(case.name, -1);
                (case.name, result)
            }
        })
        .buffer_unordered(parallel)
        .collect::<Vec<_>>()
        .await;
    let python = python.await?;
    let took = started.elapsed();
    let cpu_after = cpu_jiffies();
    let busy = (cpu_after.0 - cpu_before.0) as f64 / (cpu_after.1 - cpu_before.1).max(1) as f64;
    stop.store(true, Ordering::Relaxed);
    for burner in burners {
        let _ = burner.join();
    }
    let failures: Vec<String> = runs
        .iter()
        .filter_map(|(name, result)| result.as_ref().err().map(|e| format!("{name}: {e:#}")))
        .collect();
    let edge = counters(topology.edge_admin)?;
    let origin = counters(origin_admin)?;
    let calls = counter(&edge, "edge.converted");
    let unexpected: Vec<&(String, u64)> = edge
        .iter()
        .chain(&origin)
        .filter(|(name, value)| {
            *value > 0 && name.contains(".errors.") && !name.ends_with(".deadline_exceeded")
        })
        .collect();
    println!(
        "{name}: {} case runs, {calls} calls through the edge, {} failed, {:.1} s, CPU {:.0}% busy; \
         deadline_reset edge {} origin {}; grpcio client: {}",
        runs.len(),
        failures.len(),
        took.as_secs_f64(),
        busy * 100.0,
        counter(&edge, "deadline_reset"),
        counter(&origin, "deadline_reset"),
        python
            .as_ref()
            .map(|text| text.lines().last().unwrap_or("").to_string())
            .unwrap_or_else(|e| format!("{e:#}")),
    );
    ensure!(
        failures.is_empty(),
        "{} calls failed:\n{}",
        failures.len(),
        failures.join("\n")
    );
    python?;
    ensure!(unexpected.is_empty(), "error counters: {unexpected:?}");
    ensure!(
        counter(&edge, "deadline_reset") + counter(&origin, "deadline_reset") == 0,
        "streams were reset at their deadline"
    );
    ensure!(calls >= 2000, "only {calls} calls; raise STRESS_SUITES");
    Ok(())
}

fn main() -> Result<()> {
    let runtime = runtime();
    let tonic = interop_server(&runtime)?;
    let grpcio = grpcio_server()?;
    let deadline = Duration::from_secs(300);
    let result = runtime.block_on(async {
        tokio::time::timeout(deadline, async {
            stress("tonic (eager headers)", tonic, &[]).await?;
            stress(
                "grpcio (headers with the first message)",
                grpcio.address,
                NEEDS_REQUEST_COMPRESSION_FLAGS,
            )
            .await
        })
        .await
    });
    drop(grpcio);
    match result {
        Ok(Ok(())) => {
            println!("2 passed, 0 failed");
            Ok(())
        }
        Ok(Err(error)) => {
            println!("0 passed, 1 failed");
            Err(error)
        }
        Err(_) => {
            let pending: Vec<String> = IN_FLIGHT
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .filter(|(_, count)| *count > 0)
                .map(|(name, count)| format!("{name} ×{count}"))
                .collect();
            anyhow::bail!(
                "stress run passed its {deadline:?} bound; still under way: {}",
                pending.join(", ")
            )
        }
    }
}
