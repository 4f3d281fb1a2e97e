//! What the end-to-end test binaries share: a background runtime, servers
//! on 127.0.0.1, and libtest-mimic trials whose failures carry the logs.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::Result;
use libtest_mimic::{Failed, Trial};

use crate::topology::Topology;

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
