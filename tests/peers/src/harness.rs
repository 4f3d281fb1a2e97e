//! What the end-to-end test binaries share: a background runtime, servers
//! on 127.0.0.1, and libtest-mimic trials whose failures carry the logs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use libtest_mimic::{Failed, Trial};

use crate::topology::{self, Topology};

/// A multi-threaded runtime that outlives every trial.
pub fn runtime() -> Arc<tokio::runtime::Runtime> {
    Arc::new(
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap_or_else(|e| panic!("runtime: {e}")),
    )
}

/// Starts the interop server on an ephemeral loopback port.
pub fn interop_server(runtime: &tokio::runtime::Runtime) -> Result<SocketAddr> {
    let listener = runtime.block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
    let address = listener.local_addr()?;
    runtime.spawn(crate::interop_server::serve(listener));
    Ok(address)
}

/// The marker keys of envoy/*.yaml: the origin accepts both, the edge
/// signs with the new one.
pub const OLD_KEY: (&str, &str) = ("demo-1", "demo-key-change-me-0123456789abcdef");
pub const NEW_KEY: (&str, &str) = ("demo-2", "demo-key-2-change-me-0123456789abcdef");

/// A marker for a POST to `path`, signed with `key`, `age_s` seconds ago,
/// as an edge would make it (for calls straight to the origin).
pub fn signed_marker(key: (&str, &str), path: &str, age_s: u64) -> String {
    let now_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let request = grpc_web_bridge::marker::Request {
        method: b"POST",
        path: path.as_bytes(),
        now_s: now_s.saturating_sub(age_s),
    };
    grpc_web_bridge::marker::sign(key.0, key.1.as_bytes(), &request).unwrap_or_default()
}

/// A process started for a test; stopped (and reaped) when dropped, and
/// killed by the kernel if the test process dies first.
pub struct Peer {
    pub address: SocketAddr,
    child: std::process::Child,
    pub log: std::path::PathBuf,
}

impl Drop for Peer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.log);
    }
}

/// A script of `tests/peers/python`, run with the packages that
/// scripts/install-python-peers.sh put in `.tools/python`.
pub fn python_script(name: &str) -> std::process::Command {
    let root = topology::repo_root();
    let mut command = std::process::Command::new("python3");
    command
        .arg(root.join("tests/peers/python").join(name))
        .env("PYTHONPATH", root.join(".tools/python"));
    command
}

/// The Python interop script (grpcio server and client).
pub fn python_interop() -> std::process::Command {
    python_script("interop.py")
}

/// Starts the grpcio interop server on an ephemeral loopback port. It sends
/// no response headers before its first message, unlike tonic.
pub fn grpcio_server() -> Result<Peer> {
    listening_peer("grpcio interop server", python_interop().arg("server"))
}

/// Starts a server that prints `listening PORT` once it listens on an
/// ephemeral loopback port.
pub fn listening_peer(name: &str, command: &mut std::process::Command) -> Result<Peer> {
    let log = std::env::temp_dir().join(format!(
        "{}-{}-{}.log",
        name.replace(' ', "-"),
        std::process::id(),
        topology::free_port()?
    ));
    let child = topology::spawn(command, &log)?;
    let mut peer = Peer {
        address: SocketAddr::from(([127, 0, 0, 1], 0)),
        child,
        log,
    };
    topology::wait_for(name, || {
        let text = std::fs::read_to_string(&peer.log).unwrap_or_default();
        match text
            .lines()
            .find_map(|line| line.strip_prefix("listening "))
        {
            Some(port) => {
                peer.address.set_port(port.trim().parse().unwrap_or(0));
                true
            }
            None => false,
        }
    })
    .map_err(|e| {
        let text = std::fs::read_to_string(&peer.log).unwrap_or_default();
        anyhow::anyhow!("{e}: {text}")
    })?;
    Ok(peer)
}

/// Runs the grpcio interop client against `target` (`host:port`), `rounds`
/// times over; fails with its output if any case failed.
pub async fn grpcio_client(target: SocketAddr, rounds: u32) -> Result<String> {
    grpcio_client_with(target, rounds, None).await
}

/// [`grpcio_client`], over TLS checked against `ca` (a PEM file) when given.
pub async fn grpcio_client_with(
    target: SocketAddr,
    rounds: u32,
    ca: Option<&std::path::Path>,
) -> Result<String> {
    let mut command = tokio::process::Command::from(python_interop());
    if let Some(ca) = ca {
        command.env("INTEROP_CA_FILE", ca);
    }
    let output = command
        .arg("client")
        .arg(target.to_string())
        .arg(rounds.to_string())
        .kill_on_drop(true)
        .output()
        .await?;
    let text = String::from_utf8_lossy(&output.stdout).into_owned()
        + &String::from_utf8_lossy(&output.stderr);
    anyhow::ensure!(output.status.success(), "grpcio client failed:\n{text}");
    Ok(text)
}

/// A trial that runs `test` on the shared runtime; a failure reports the
/// topology's logs.
pub fn trial<F, Fut>(
    name: String,
    runtime: &Arc<tokio::runtime::Runtime>,
    topology: &Arc<Topology>,
    test: F,
) -> Trial
where
    F: FnOnce(Arc<Topology>) -> Fut + Send + 'static,
    Fut: Future<Output = Result<()>> + Send + 'static,
{
    let runtime = runtime.clone();
    let topology = topology.clone();
    Trial::test(name, move || {
        let logs = topology.clone();
        runtime
            .block_on(test(topology))
            .map_err(|error| Failed::from(format!("{error:#}\n{}", logs.logs())))
    })
}
