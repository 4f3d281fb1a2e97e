//! The OCI images `make oci` writes survive a real registry: both tags are
//! pushed to a local docker-registry with skopeo and pulled back, digests
//! compared, the module extracted from each and checked against the build,
//! and the pulled module loaded into real Envoy, which then passes a call.

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::graph::Graph;
use bridge_peers::raw::{Step, frame, h2_call, http1_server, serve_each};
use bridge_peers::topology::{
    Hop, Topology, Upstream, envoy_binary, envoy_ready, free_port, http_get, local_envoy_config,
    repo_root, spawn, wait_for, wasm_module,
};
use serde_json::Value;
use sha2::{Digest, Sha256};

struct Registry {
    address: SocketAddr,
    child: Child,
    dir: PathBuf,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn start_registry() -> Result<Registry> {
    let port = free_port()?;
    let dir = std::env::temp_dir().join(format!("oci-registry-{}-{port}", std::process::id()));
    std::fs::create_dir_all(dir.join("data"))?;
    let config = format!(
        "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: 127.0.0.1:{port}\n",
        dir.join("data").display()
    );
    std::fs::write(dir.join("config.yml"), config)?;
    let child = Command::new("docker-registry")
        .arg("serve")
        .arg(dir.join("config.yml"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .context("docker-registry is not installed (make setup-e2e installs it)")?;
    let address = SocketAddr::from(([127, 0, 0, 1], port));
    let registry = Registry {
        address,
        child,
        dir,
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !http_get(address, "/v2/").is_ok_and(|(status, _)| status == 200) {
        ensure!(Instant::now() < deadline, "registry did not start");
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(registry)
}

fn skopeo(args: &[&str]) -> Result<String> {
    let output = Command::new("skopeo")
        .args(args)
        .output()
        .context("skopeo is not installed")?;
    if !output.status.success() {
        bail!(
            "skopeo {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&output.stdout).into_owned())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// The manifest digest of `tag` in an OCI layout's index.
fn tagged(layout: &Path, tag: &str) -> Result<String> {
    let index: Value = serde_json::from_slice(&std::fs::read(layout.join("index.json"))?)?;
    index["manifests"]
        .as_array()
        .context("no manifests")?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == tag)
        .and_then(|m| m["digest"].as_str())
        .map(str::to_string)
        .with_context(|| format!("no tag {tag}"))
}

fn blob(layout: &Path, digest: &str) -> Result<Vec<u8>> {
    let bytes = std::fs::read(
        layout
            .join("blobs/sha256")
            .join(digest.trim_start_matches("sha256:")),
    )?;
    ensure!(
        format!("sha256:{}", sha256_hex(&bytes)) == digest,
        "blob {digest} does not match its digest"
    );
    Ok(bytes)
}

fn manifest(layout: &Path, tag: &str) -> Result<Value> {
    Ok(serde_json::from_slice(&blob(
        layout,
        &tagged(layout, tag)?,
    )?)?)
}

#[test]
fn both_images_round_trip_a_registry_and_the_pulled_module_serves_a_call() -> Result<()> {
    let layout = repo_root().join("dist/oci");
    ensure!(
        layout.join("index.json").exists(),
        "dist/oci is missing: run `make oci`"
    );
    let built = std::fs::read(wasm_module())?;
    let registry = start_registry()?;
    let pulled = registry.dir.join("pulled");

    for tag in ["compat", "artifact"] {
        let remote = format!("docker://{}/grpc-web-bridge:{tag}", registry.address);
        skopeo(&[
            "copy",
            "--quiet",
            "--dest-tls-verify=false",
            "--preserve-digests",
            &format!("oci:{}:{tag}", layout.display()),
            &remote,
        ])?;
        let raw = skopeo(&["inspect", "--tls-verify=false", "--raw", &remote])?;
        ensure!(
            format!("sha256:{}", sha256_hex(raw.as_bytes())) == tagged(&layout, tag)?,
            "{tag}: registry digest differs"
        );
        skopeo(&[
            "copy",
            "--quiet",
            "--src-tls-verify=false",
            "--preserve-digests",
            &remote,
            &format!("oci:{}:{tag}", pulled.display()),
        ])?;
        ensure!(
            tagged(&pulled, tag)? == tagged(&layout, tag)?,
            "{tag}: pulled digest differs"
        );
    }

    // compat: one gzip tar layer holding /plugin.wasm, annotated as compat.
    let compat = manifest(&pulled, "compat")?;
    ensure!(compat["annotations"]["module.wasm.image/variant"] == "compat");
    let layers = compat["layers"].as_array().context("layers")?;
    ensure!(
        layers.len() == 1
            && layers[0]["mediaType"] == "application/vnd.oci.image.layer.v1.tar+gzip"
    );
    let layer = blob(&pulled, layers[0]["digest"].as_str().context("digest")?)?;
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer.as_slice()));
    let mut from_compat = None;
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry.path()?.to_string_lossy().into_owned();
        ensure!(
            path == "plugin.wasm",
            "unexpected file {path} in the compat layer"
        );
        let mut bytes = Vec::new();
        entry.read_to_end(&mut bytes)?;
        from_compat = Some(bytes);
    }
    let from_compat = from_compat.context("no plugin.wasm in the compat layer")?;
    ensure!(
        sha256_hex(&from_compat) == sha256_hex(&built),
        "compat module differs from the build"
    );

    // artifact: CNCF Wasm config and one application/wasm layer.
    let artifact = manifest(&pulled, "artifact")?;
    ensure!(artifact["config"]["mediaType"] == "application/vnd.wasm.config.v0+json");
    let layers = artifact["layers"].as_array().context("layers")?;
    ensure!(layers.len() == 1 && layers[0]["mediaType"] == "application/wasm");
    let from_artifact = blob(&pulled, layers[0]["digest"].as_str().context("digest")?)?;
    ensure!(
        sha256_hex(&from_artifact) == sha256_hex(&built),
        "artifact module differs from the build"
    );

    // The pulled module, in real Envoy on both sides, passes a call.
    let module = registry.dir.join("pulled-plugin.wasm");
    std::fs::write(&module, &from_compat)?;
    let runtime = tokio::runtime::Runtime::new()?;
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let topology = Topology::start_with_module(Hop::Nginx, Upstream::Server(server), &module)?;
    let case = bridge_peers::interop_client::CASES
        .iter()
        .find(|c| c.name == "large_unary")
        .context("case")?;
    runtime.block_on((case.run)(format!("http://{}", topology.edge)))?;
    ensure!(
        Topology::counter(
            topology.edge_admin,
            "wasmcustom.grpc_web_bridge.edge.converted"
        ) >= 1
    );
    Ok(())
}

/// Serves one file over HTTP/1.1 on loopback, as a module server would.
async fn serve_file(bytes: Vec<u8>) -> Result<SocketAddr> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let bytes = std::sync::Arc::new(bytes);
    serve_each(move |mut socket| {
        let bytes = bytes.clone();
        async move {
            let mut request = [0; 4096];
            let _ = socket.read(&mut request).await;
            let head = format!(
                "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                bytes.len()
            );
            let _ = socket.write_all(head.as_bytes()).await;
            let _ = socket.write_all(&bytes).await;
        }
    })
    .await
}

#[test]
fn remote_wasm_config_loads_the_module_over_http_checked_by_sha256() -> Result<()> {
    let built = std::fs::read(wasm_module())?;
    let runtime = tokio::runtime::Runtime::new()?;
    let modules = runtime.block_on(serve_file(built.clone()))?;
    let scripts = [(
        "/ok",
        vec![
            Step::Headers(200, vec![("content-type", "application/grpc-web")], false),
            Step::Data(
                [frame(0, b"hi"), frame(0x80, b"grpc-status:0\r\n")].concat(),
                false,
            ),
            Step::Data(vec![], true),
        ],
    )];
    let web = runtime.block_on(http1_server(std::sync::Arc::new(
        scripts.into_iter().collect(),
    )))?;

    let mut ports: std::collections::HashMap<u16, u16> = Graph::load()?
        .ports()
        .into_iter()
        .map(|p| Ok((p, free_port()?)))
        .collect::<Result<_>>()?;
    ports.insert(8081, web.port());
    ports.insert(8090, modules.port());
    let config = local_envoy_config(
        &repo_root().join("envoy/remote-wasm.yaml"),
        &ports,
        &wasm_module(),
    )?;
    let text = serde_json::to_string(&config)?
        .replace("SHA256_OF_GRPC_WEB_BRIDGE_WASM", &sha256_hex(&built));
    let dir = std::env::temp_dir().join(format!("remote-wasm-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    std::fs::write(dir.join("edge.json"), text)?;
    let mut envoy = spawn(
        Command::new(envoy_binary())
            .arg("-c")
            .arg(dir.join("edge.json"))
            .args(["--disable-hot-restart", "--concurrency", "1"]),
        &dir.join("edge.log"),
    )?;
    let admin = SocketAddr::from(([127, 0, 0, 1], ports[&9901]));
    let edge = SocketAddr::from(([127, 0, 0, 1], ports[&8080]));
    let result = (|| {
        wait_for("remote-wasm edge", || envoy_ready(admin))?;
        let received = runtime.block_on(h2_call(edge, "/ok", &[], &frame(0, b"")))?;
        ensure!(received.grpc_status() == Some("0"), "{received:?}");
        ensure!(received.body == frame(0, b"hi"), "{received:?}");
        Ok(())
    })();
    let _ = envoy.kill();
    let _ = envoy.wait();
    if result.is_err() {
        eprintln!(
            "{}",
            std::fs::read_to_string(dir.join("edge.log")).unwrap_or_default()
        );
    }
    let _ = std::fs::remove_dir_all(&dir);
    result
}
