//! `make demo`: starts the local topology (native gRPC client → edge Envoy
//! → nginx, HTTP/1.1 → origin Envoy → interop server), runs every interop
//! case through it, then a client that awaits the response headers before
//! sending and the response-path probes, prints a table, and stops
//! everything.

use anyhow::Result;
use bridge_peers::topology::{Hop, Topology, Upstream};

fn main() -> Result<()> {
    let hop = match std::env::args().nth(1).as_deref() {
        None | Some("nginx") => Hop::Nginx,
        Some("http1") => Hop::DirectHttp1,
        Some("http2") => Hop::DirectHttp2,
        Some("plain") => Hop::PlainHttp2,
        Some(other) => anyhow::bail!("unknown hop {other:?}: use nginx, http1, http2 or plain"),
    };
    let runtime = tokio::runtime::Runtime::new()?;
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let topology = Topology::start(hop, Upstream::Server(server))?;
    println!(
        "topology: client → edge {} → {hop:?} → origin {} → server {server}",
        topology.edge,
        topology.origin.map_or("-".into(), |o| o.to_string())
    );
    println!();
    use bridge_peers::interop_client::{AWAITING_HEADERS, CASES, PROBES, run_cases};
    let cases = CASES
        .iter()
        .chain(std::iter::once(&AWAITING_HEADERS))
        .chain(PROBES);
    let failed = run_cases(&runtime, &format!("http://{}", topology.edge), cases);
    if failed > 0 {
        eprintln!("{}", topology.logs());
        std::process::exit(1);
    }
    Ok(())
}
