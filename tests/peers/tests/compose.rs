//! The docker-compose topology and the native one are the same graph: every
//! compose file validates with `docker-compose config -q` (no engine
//! needed), its request chain is edge → hop → origin → server, it pins the
//! Envoy the tests run, and the native runner starts exactly its services
//! with exactly their configs.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::graph::{Graph, Kind, compose_file};
use bridge_peers::topology::{Hop, Topology, Upstream, repo_root};

fn compose_files() -> Result<Vec<std::path::PathBuf>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("envoy"))? {
        let path = entry?.path();
        let name = path
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .into_owned();
        if name.starts_with("docker-compose") && (name.ends_with(".yaml") || name.ends_with(".yml"))
        {
            files.push(path);
        }
    }
    ensure!(!files.is_empty(), "no compose files");
    Ok(files)
}

#[test]
fn every_compose_file_is_valid_for_docker_compose() -> Result<()> {
    for file in compose_files()? {
        let output = Command::new("docker-compose")
            .arg("-f")
            .arg(&file)
            .args(["config", "-q"])
            .output()
            .context("docker-compose is not installed (make setup-e2e installs it)")?;
        ensure!(
            output.status.success(),
            "{}: {}",
            file.display(),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

#[test]
fn compose_request_chain_is_edge_hop_origin_server() -> Result<()> {
    let graph = Graph::load()?;
    let chain: Vec<&str> = graph
        .chain("edge")?
        .iter()
        .map(|s| s.name.as_str())
        .collect();
    ensure!(
        chain == ["edge", "hop", "origin", "server"],
        "chain {chain:?}"
    );
    let kinds: Vec<Kind> = graph.chain("edge")?.iter().map(|s| s.kind).collect();
    ensure!(
        kinds == [Kind::Envoy, Kind::Nginx, Kind::Envoy, Kind::InteropServer],
        "kinds {kinds:?}"
    );
    // The one-shot client calls the edge, which is published on its own port.
    let client = graph.chain("client")?;
    ensure!(
        client.iter().map(|s| s.name.as_str()).collect::<Vec<_>>()
            == ["client", "edge", "hop", "origin", "server"]
    );
    let edge = graph.service("edge")?;
    ensure!(
        edge.published == [edge.listen.context("edge port")?],
        "edge publishes {:?}",
        edge.published
    );
    Ok(())
}

#[test]
fn compose_pins_the_envoy_the_tests_run() -> Result<()> {
    let common = std::fs::read_to_string(repo_root().join("scripts/common.sh"))?;
    let version = common
        .lines()
        .find_map(|line| line.strip_prefix("ENVOY_VERSION=\"")?.strip_suffix('"'))
        .context("ENVOY_VERSION not in scripts/common.sh")?;
    let graph = Graph::load()?;
    let envoys: Vec<_> = graph
        .services
        .iter()
        .filter(|s| s.kind == Kind::Envoy)
        .collect();
    ensure!(envoys.len() == 2);
    for envoy in envoys {
        ensure!(
            envoy.image == format!("envoyproxy/envoy:v{version}"),
            "{} runs {}",
            envoy.name,
            envoy.image
        );
    }
    let installed = Command::new(repo_root().join(".tools/bin/envoy"))
        .arg("--version")
        .output()?;
    ensure!(
        String::from_utf8_lossy(&installed.stdout).contains(&format!("/{version}/")),
        "installed Envoy is not {version}"
    );
    Ok(())
}

#[test]
fn compose_envoys_mount_the_module_where_their_configs_load_it() -> Result<()> {
    let compose = std::fs::read_to_string(compose_file())?;
    let graph = Graph::load()?;
    for envoy in graph.services.iter().filter(|s| s.kind == Kind::Envoy) {
        let config = std::fs::read_to_string(envoy.config.as_ref().context("config")?)?;
        ensure!(
            config.contains("filename: /etc/envoy/grpc_web_bridge.wasm"),
            "{} loads another path",
            envoy.name
        );
    }
    ensure!(
        compose
            .matches("../dist/grpc_web_bridge.wasm:/etc/envoy/grpc_web_bridge.wasm:ro")
            .count()
            == 2
    );
    // BRIDGE_BUILD=native: each Envoy finds the native build where its
    // native config (the Wasm one with the module swapped, see the deploy
    // tests) looks for it.
    let services: serde_json::Value = serde_yaml::from_str(&compose)?;
    for envoy in graph.services.iter().filter(|s| s.kind == Kind::Envoy) {
        let spec = &services["services"][envoy.name.as_str()];
        ensure!(
            spec["command"][2] == "/etc/envoy/envoy-${BRIDGE_BUILD:-wasm}.yaml",
            "{}: command {}",
            envoy.name,
            spec["command"]
        );
        ensure!(
            spec["environment"]["ENVOY_DYNAMIC_MODULES_SEARCH_PATH"] == "/etc/envoy/native",
            "{}: no search path",
            envoy.name
        );
        let volumes: Vec<&str> = spec["volumes"]
            .as_array()
            .context("volumes")?
            .iter()
            .filter_map(|v| v.as_str())
            .collect();
        let config = envoy.config.as_ref().context("config")?;
        let stem = config.file_stem().unwrap_or_default().to_string_lossy();
        for mount in [
            format!("./{stem}-native.yaml:/etc/envoy/envoy-native.yaml:ro"),
            "../dist/native:/etc/envoy/native:ro".to_string(),
        ] {
            ensure!(
                volumes.contains(&mount.as_str()),
                "{}: no {mount}",
                envoy.name
            );
        }
        let native =
            std::fs::read_to_string(repo_root().join(format!("envoy/{stem}-native.yaml")))?;
        ensure!(
            native.contains("dynamic_module_config: { name: grpc_web_bridge }"),
            "{stem}-native.yaml loads another module"
        );
    }
    Ok(())
}

#[test]
fn native_topology_starts_exactly_the_compose_services_with_their_configs() -> Result<()> {
    let runtime = tokio::runtime::Runtime::new()?;
    let server = bridge_peers::harness::interop_server(&runtime)?;
    let topology = Topology::start(Hop::Nginx, Upstream::Server(server))?;

    let graph = Graph::load()?;
    let mut expected: Vec<(String, std::path::PathBuf)> = graph
        .chain("edge")?
        .iter()
        .filter(|s| matches!(s.kind, Kind::Envoy | Kind::Nginx))
        .map(|s| (s.name.clone(), s.config.clone().unwrap_or_default()))
        .collect();
    let mut started = topology.processes.clone();
    expected.sort();
    started.sort();
    ensure!(
        started == expected,
        "native started {started:?}, compose has {expected:?}"
    );

    // And the graph it started carries a call end to end.
    let target = format!("http://{}", topology.edge);
    let case = bridge_peers::interop_client::CASES
        .iter()
        .find(|c| c.name == "large_unary")
        .context("case")?;
    runtime.block_on((case.run)(target))
}
