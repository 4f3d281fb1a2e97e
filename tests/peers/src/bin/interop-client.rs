//! Every interop case against one target, as a table; exits 1 if any
//! failed. `interop-client http://edge:8080` is the compose topology's
//! one-shot client; any official interop server can be the target too.

use anyhow::Result;

fn main() -> Result<()> {
    let target = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "http://127.0.0.1:8080".into());
    let runtime = tokio::runtime::Runtime::new()?;
    println!("interop cases against {target}\n");
    if bridge_peers::interop_client::run_all(&runtime, &target) > 0 {
        std::process::exit(1);
    }
    Ok(())
}
