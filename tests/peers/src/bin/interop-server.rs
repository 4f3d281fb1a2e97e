//! The interop server on its own, for the docker-compose topology:
//! `interop-server [ADDRESS]` (default 0.0.0.0:50051 in a container).

use anyhow::Result;

fn main() -> Result<()> {
    let address = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:50051".into());
    let runtime = tokio::runtime::Runtime::new()?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(&address).await?;
        println!("interop server listening on {address}");
        bridge_peers::interop_server::serve(listener).await?;
        Ok(())
    })
}
