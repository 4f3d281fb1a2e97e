//! The native build's panic safety: a test build of the module
//! (`--features panic-test`, dist/native-panic-test/) panics inside its
//! request-headers callback when a request carries
//! `x-grpc-web-bridge-test-panic`. That call ends with INTERNAL, the panic
//! is counted, and the next call through the same Envoys succeeds. Both
//! sides run the test build; the edge, which the call meets first, panics.

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{interop_server, runtime};
use bridge_peers::proto::SimpleRequest;
use bridge_peers::raw::{frame, h2_call};
use bridge_peers::topology::{self, Hop, Topology, Upstream};
use prost::Message;

const UNARY: &str = "/grpc.testing.TestService/UnaryCall";

fn main() -> Result<()> {
    if !topology::native_build() {
        println!("0 passed, 0 failed (BRIDGE_BUILD=native runs this)");
        return Ok(());
    }
    let dir = topology::repo_root().join("dist/native-panic-test");
    ensure!(
        dir.join("libgrpc_web_bridge.so").exists(),
        "run make build-panic-test"
    );
    // SAFETY: set before any thread of this process starts.
    unsafe { std::env::set_var("BRIDGE_NATIVE_DIR", &dir) };
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let chain = Topology::start(Hop::Nginx, Upstream::Server(server))?;
    let body = frame(
        0,
        &SimpleRequest {
            response_size: 4,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let admin = chain.edge_admin;
    let counter = "wasmcustom.grpc_web_bridge.edge.errors.upstream.internal_panic";
    let result = runtime.block_on(async {
        let r = h2_call(
            chain.edge,
            UNARY,
            &[("x-grpc-web-bridge-test-panic", "1")],
            &body,
        )
        .await?;
        ensure!(r.error.is_none(), "the call was reset: {r:?}");
        ensure!(r.grpc_status() == Some("13"), "panicking call: {r:?}");
        ensure!(
            r.grpc_message() == "grpc-web-bridge: internal error in the bridge module",
            "message {:?}",
            r.grpc_message()
        );
        ensure!(
            Topology::counter(admin, counter) == 1,
            "the panic was not counted"
        );
        for _ in 0..3 {
            let r = h2_call(chain.edge, UNARY, &[], &body).await?;
            ensure!(r.grpc_status() == Some("0"), "the next call: {r:?}");
        }
        Ok(())
    });
    let logs = chain.logs();
    match result.context(logs) {
        Ok(()) => {
            println!("1 passed, 0 failed");
            Ok(())
        }
        Err(error) => {
            println!("0 passed, 1 failed");
            Err(error)
        }
    }
}
