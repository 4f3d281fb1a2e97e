//! Reinstalling the native module under running Envoys. Envoy maps the
//! `.so` it loaded (dlopen); a build that rewrote that file in place made
//! every Envoy with it loaded jump into changed code on its next request.
//! `scripts/install-module.sh` (what `make build` runs) writes a new file
//! and renames it into place. Here a chain loads a copy of the native
//! build, the script installs a different build (the panic-test one) over
//! that path, and then:
//! - the running Envoys serve the next calls, still with the module they
//!   loaded (a request asking the test build to panic is served normally);
//! - a chain started afterwards loads the new file (the same request makes
//!   it panic, and the call ends with INTERNAL).

use std::path::Path;
use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{interop_server, runtime};
use bridge_peers::proto::SimpleRequest;
use bridge_peers::raw::{Received, frame, h2_call};
use bridge_peers::topology::{self, Hop, Topology, Upstream};
use prost::Message;

const UNARY: &str = "/grpc.testing.TestService/UnaryCall";
const PANIC: (&str, &str) = ("x-grpc-web-bridge-test-panic", "1");

fn install(source: &Path, destination: &Path) -> Result<()> {
    let status = Command::new(topology::repo_root().join("scripts/install-module.sh"))
        .arg(source)
        .arg(destination)
        .status()?;
    ensure!(status.success(), "install-module.sh failed: {status}");
    Ok(())
}

fn main() -> Result<()> {
    let root = topology::repo_root();
    let built = topology::native_module();
    let other = root.join("dist/native-panic-test/libgrpc_web_bridge.so");
    ensure!(built.exists(), "run make build-native");
    ensure!(other.exists(), "run make build-panic-test");
    let dir =
        std::env::temp_dir().join(format!("grpc-web-bridge-reinstall-{}", std::process::id()));
    let module = dir.join("libgrpc_web_bridge.so");
    install(&built, &module)?;

    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let body = frame(
        0,
        &SimpleRequest {
            response_size: 4,
            ..Default::default()
        }
        .encode_to_vec(),
    );
    let call = |chain: &Topology, headers: &[(&str, &str)]| -> Result<Received> {
        runtime.block_on(h2_call(chain.edge, UNARY, headers, &body))
    };

    let running = Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &module)?;
    let result = (|| -> Result<()> {
        let r = call(&running, &[PANIC])?;
        ensure!(r.grpc_status() == Some("0"), "before the reinstall: {r:?}");
        install(&other, &module)?;
        for _ in 0..3 {
            let r = call(&running, &[PANIC])?;
            ensure!(
                r.error.is_none() && r.grpc_status() == Some("0"),
                "a running Envoy after the reinstall: {r:?}"
            );
        }
        let started = Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &module)?;
        let r = call(&started, &[PANIC])?;
        ensure!(
            r.grpc_status() == Some("13"),
            "an Envoy started after the reinstall did not load the new build: {r:?}\n{}",
            started.logs()
        );
        Ok(())
    })();
    let result = result.with_context(|| running.logs());
    drop(running);
    let _ = std::fs::remove_dir_all(&dir);
    match result {
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
