//! The docker-compose topology and the native one are the same graph: every
//! compose file validates with `docker-compose config -q` (no engine
//! needed), its request chain is edge → hop → origin → server, it pins the
//! Envoy the tests run, and the native runner starts exactly its services
//! with exactly their configs.

use std::process::Command;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::graph::{Graph, Kind, compose_file};
use bridge_peers::topology::{Hop, Topology, Upstream, envoy_validates, repo_root};

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

/// The plugin configuration inside a deployment manifest, as JSON.
fn plugin_configs(document: &serde_json::Value) -> Vec<String> {
    let mut found = Vec::new();
    match document {
        serde_json::Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("pluginConfig", _) => found.push(value.to_string()),
                    ("config", serde_json::Value::Object(inner)) if inner.contains_key("side") => {
                        found.push(value.to_string())
                    }
                    ("configuration", _) => {
                        if let Some(text) = value["value"].as_str() {
                            found.push(text.to_string());
                        }
                    }
                    // Kuma's MeshProxyPatch carries xDS resources as YAML text.
                    ("value", serde_json::Value::String(text)) => {
                        if let Ok(inner) = serde_yaml::from_str::<serde_json::Value>(text) {
                            found.extend(plugin_configs(&inner));
                        }
                    }
                    _ => found.extend(plugin_configs(value)),
                }
            }
        }
        serde_json::Value::Array(items) => items
            .iter()
            .for_each(|item| found.extend(plugin_configs(item))),
        _ => {}
    }
    found
}

/// Istio's WasmPlugin CRD takes `sha256` as 64 bare hex digits.
#[test]
fn istio_wasmplugin_sha256_is_bare_hex_as_the_crd_requires() -> Result<()> {
    let text =
        std::fs::read_to_string(repo_root().join("envoy/deploy/istio-edge-wasmplugin.yaml"))?;
    let plugin: serde_json::Value = serde_yaml::from_str(&text)?;
    let sha = plugin["spec"]["sha256"]
        .as_str()
        .context("no spec.sha256")?;
    ensure!(!sha.contains(':'), "sha256 {sha:?} has a prefix");
    ensure!(
        sha.starts_with("REPLACE_WITH_64_HEX_DIGITS"),
        "placeholder {sha:?} does not say the form"
    );
    let layout = std::fs::read_to_string(repo_root().join("scripts/oci-layout.sh"))?;
    ensure!(
        layout.contains("Istio WasmPlugin spec.sha256 (bare hex"),
        "make oci does not print the Istio form"
    );
    Ok(())
}

#[test]
fn deployment_manifests_carry_valid_plugin_configs_for_both_sides() -> Result<()> {
    use serde::Deserialize;
    let mut sides = Vec::new();
    for entry in std::fs::read_dir(repo_root().join("envoy/deploy"))? {
        let path = entry?.path();
        let text = std::fs::read_to_string(&path)?;
        let mut configs = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            configs.extend(plugin_configs(&serde_json::Value::deserialize(document)?));
        }
        ensure!(
            !configs.is_empty(),
            "{}: no plugin configuration found",
            path.display()
        );
        for json in configs {
            let config = grpc_web_bridge::config::Config::from_json(json.as_bytes())
                .map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
            sides.push(config.side);
        }
    }
    use grpc_web_bridge::config::Side;
    // Istio, Envoy Gateway and Kuma: one edge and one origin each.
    ensure!(
        sides.iter().filter(|s| **s == Side::Edge).count() == 3,
        "{sides:?}"
    );
    ensure!(
        sides.iter().filter(|s| **s == Side::Origin).count() == 3,
        "{sides:?}"
    );
    Ok(())
}

/// Kuma's MeshProxyPatch (kuma.io/v1alpha1): the fields and operations of
/// its schema, and the Envoy resources it adds, put together as Kuma would
/// (clusters added, filters before the router in order), pass
/// `envoy --mode validate` with the module loaded from the build.
#[test]
fn kuma_patches_are_what_envoy_accepts() -> Result<()> {
    let yaml = |value: &serde_json::Value| -> Result<serde_json::Value> {
        Ok(serde_yaml::from_str(
            value.as_str().context("value is not YAML text")?,
        )?)
    };
    for name in [
        "kuma-edge-meshproxypatch.yaml",
        "kuma-origin-meshproxypatch.yaml",
    ] {
        let text = std::fs::read_to_string(repo_root().join("envoy/deploy").join(name))?;
        let patch: serde_json::Value = serde_yaml::from_str(&text)?;
        ensure!(patch["apiVersion"] == "kuma.io/v1alpha1" && patch["kind"] == "MeshProxyPatch");
        ensure!(
            patch["metadata"]["labels"]["kuma.io/mesh"].is_string(),
            "{name}: no mesh label"
        );
        let kind = patch["spec"]["targetRef"]["kind"].as_str().unwrap_or("");
        ensure!(
            ["Mesh", "MeshSubset", "MeshGateway", "MeshService"].contains(&kind),
            "{name}: targetRef kind {kind:?}"
        );
        let (mut clusters, mut filters) = (Vec::new(), Vec::new());
        for modification in patch["spec"]["default"]["appendModifications"]
            .as_array()
            .context("no appendModifications")?
        {
            if let Some(cluster) = modification.get("cluster") {
                ensure!(cluster["operation"] == "Add", "{name}: {cluster}");
                clusters.push(yaml(&cluster["value"])?);
            } else if let Some(filter) = modification.get("httpFilter") {
                ensure!(
                    filter["operation"] == "AddBefore"
                        && filter["match"]["name"] == "envoy.filters.http.router"
                        && ["inbound", "gateway"]
                            .contains(&filter["match"]["origin"].as_str().unwrap_or("")),
                    "{name}: {filter}"
                );
                let mut filter = yaml(&filter["value"])?;
                if let Some(code) = filter.pointer_mut("/typed_config/config/vm_config/code") {
                    ensure!(
                        code.pointer("/remote/http_uri/cluster").is_some(),
                        "{name}: the module is not loaded from a cluster"
                    );
                    *code = serde_json::json!({"local": {"filename": repo_root().join("dist/grpc_web_bridge.wasm")}});
                }
                filters.push(filter);
            } else {
                anyhow::bail!("{name}: unexpected modification {modification}");
            }
        }
        filters.push(serde_json::json!({
            "name": "envoy.filters.http.router",
            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
        }));
        let bootstrap = serde_json::json!({
            "static_resources": {
                "listeners": [{
                    "name": "patched",
                    "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
                    "filter_chains": [{"filters": [{
                        "name": "envoy.filters.network.http_connection_manager",
                        "typed_config": {
                            "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                            "stat_prefix": "patched",
                            "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                                {"match": {"prefix": "/"}, "route": {"cluster": "grpc-web-bridge-modules"}}
                            ]}]},
                            "http_filters": filters,
                        }
                    }]}]
                }],
                "clusters": clusters,
            }
        });
        envoy_validates(name, &serde_json::to_string(&bootstrap)?)?;
    }
    Ok(())
}
