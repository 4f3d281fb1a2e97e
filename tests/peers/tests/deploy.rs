//! The deployment manifests of `envoy/deploy/`, rendered by `make deploy`
//! (scripts/deploy-render.sh) as a user would, checked for what their
//! controllers would do with them (docs/deploy.md):
//! - nothing is left to fill in, and every sha256 is the build's;
//! - each document fits the parts of its CRD we rely on (written from the
//!   CRDs Istio, Envoy Gateway and Kuma publish);
//! - each embedded Envoy config passes `envoy --mode validate` on the
//!   pinned Envoy with the built module, put together as the controller
//!   would;
//! - the rules: Envoy's gRPC-web filter runs only where the module runs,
//!   streams have no route timeout, buffers hold two largest messages;
//! - the pieces each controller would put in its Envoys, in place of the
//!   shipped configs' filters in the local chain (client → edge → nginx →
//!   origin → interop server), serve every interop case with each build.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail, ensure};
use bridge_peers::topology::{envoy_validates, local_files, repo_root, use_native_module};
use serde::Deserialize;
use serde_json::{Value, json};

/// Room for one largest message per direction: 2 × max_frame_bytes.
const BUFFER: u64 = 2 * grpc_web_bridge::config::DEFAULT_MAX_FRAME_BYTES as u64;
const GATE_HEADER: &str = "x-grpc-web-bridge";

/// Runs the render script into a fresh folder with `vars`; its output.
fn render(source: &Path, vars: &[(&str, &str)]) -> Result<(PathBuf, std::process::Output)> {
    let out = std::env::temp_dir().join(format!(
        "deploy-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_nanos()
    ));
    let output = Command::new(repo_root().join("scripts/deploy-render.sh"))
        .env("DEPLOY_OUT", &out)
        .env("DEPLOY_SOURCE", source)
        .env_remove("REGISTRY")
        .env_remove("MODULE_URL")
        .env_remove("MARKER_KEY")
        .envs(vars.iter().copied())
        .output()?;
    Ok((out, output))
}

const VARS: &[(&str, &str)] = &[
    ("REGISTRY", "registry.test:5000/team"),
    (
        "MODULE_URL",
        "http://modules.kuma-system.svc.cluster.local:8080/grpc_web_bridge.wasm",
    ),
];

/// Every rendered document, by file.
fn rendered() -> Result<BTreeMap<String, Vec<Value>>> {
    let (out, output) = render(&repo_root().join("envoy/deploy"), VARS)?;
    ensure!(
        output.status.success(),
        "make deploy failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(&out)? {
        let path = entry?.path();
        if path.extension().is_none_or(|e| e != "yaml") {
            continue;
        }
        let text = std::fs::read_to_string(&path)?;
        ensure!(
            !text.contains("@@"),
            "{}: a placeholder is left",
            path.display()
        );
        let mut documents = Vec::new();
        for document in serde_yaml::Deserializer::from_str(&text) {
            documents.push(Value::deserialize(document)?);
        }
        let name = path.file_name().context("name")?.to_string_lossy().into();
        files.insert(name, documents);
    }
    std::fs::remove_dir_all(&out)?;
    ensure!(files.len() == 8, "rendered {:?}", files.keys());
    Ok(files)
}

fn all(files: &BTreeMap<String, Vec<Value>>) -> impl Iterator<Item = (&str, &Value)> {
    files
        .iter()
        .flat_map(|(name, docs)| docs.iter().map(move |d| (name.as_str(), d)))
}

fn kind_of<'a>(docs: &'a [Value], kind: &str) -> Vec<&'a Value> {
    docs.iter().filter(|d| d["kind"] == kind).collect()
}

fn one<'a>(docs: &'a [Value], kind: &str) -> Result<&'a Value> {
    match kind_of(docs, kind).as_slice() {
        [doc] => Ok(doc),
        found => bail!("{} {kind} documents, wanted one", found.len()),
    }
}

fn hex64(value: &Value) -> bool {
    value.as_str().is_some_and(|s| {
        s.len() == 64
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
    })
}

/// The build's module sha256 and the `compat` image's manifest digest.
fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    sha2::Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn build_digests() -> Result<(String, String)> {
    let module = sha256_hex(&std::fs::read(
        repo_root().join("dist/grpc_web_bridge.wasm"),
    )?);
    let index: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("dist/oci/index.json"),
    )?)?;
    let compat = index["manifests"]
        .as_array()
        .context("no manifests")?
        .iter()
        .find(|m| m["annotations"]["org.opencontainers.image.ref.name"] == "compat")
        .and_then(|m| m["digest"].as_str())
        .and_then(|d| d.strip_prefix("sha256:"))
        .context("no compat image")?;
    // The compat image's one layer is the module, so the digest is this build's.
    let manifest: Value = serde_json::from_str(&std::fs::read_to_string(
        repo_root().join("dist/oci/blobs/sha256").join(compat),
    )?)?;
    ensure!(manifest["layers"].as_array().is_some_and(|l| l.len() == 1));
    Ok((module, compat.to_string()))
}

/// The sha256 fields a controller or Envoy checks the module against.
fn sha256_fields(value: &Value, found: &mut Vec<(String, Value)>) {
    match value {
        Value::Object(map) => {
            for (key, inner) in map {
                match (key.as_str(), inner) {
                    ("sha256", _) => found.push((key.clone(), inner.clone())),
                    // Kuma carries xDS resources as YAML text.
                    ("value", Value::String(text)) => {
                        if let Ok(parsed) = serde_yaml::from_str::<Value>(text) {
                            sha256_fields(&parsed, found);
                        }
                    }
                    _ => sha256_fields(inner, found),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| sha256_fields(i, found)),
        _ => {}
    }
}

#[test]
fn render_fills_every_placeholder_with_the_builds_digests() -> Result<()> {
    let files = rendered()?;
    let (module, compat) = build_digests()?;
    let native = sha256_hex(&std::fs::read(
        repo_root().join("dist/native/libgrpc_web_bridge.so"),
    )?);
    for (name, doc) in all(&files) {
        let mut found = Vec::new();
        sha256_fields(doc, &mut found);
        for (_, value) in found {
            // Images are checked against the compat manifest, modules fetched
            // over HTTP against the module itself, the native build against
            // its shared object.
            let by_image =
                doc.pointer("/spec/url").is_some() || doc.to_string().contains("\"image\"");
            let expected = match (doc["kind"] == "EnvoyProxy", by_image) {
                (true, _) => &native,
                (false, true) => &compat,
                (false, false) => &module,
            };
            ensure!(
                value == *expected.as_str(),
                "{name}: sha256 {value}, wanted {expected}"
            );
        }
    }
    // Each module a controller pulls is pinned: Istio's two WasmPlugins,
    // Envoy Gateway's two policies and two native registries, Kuma's two
    // remote sources.
    let mut pins = 0;
    for (_, doc) in all(&files) {
        let mut found = Vec::new();
        sha256_fields(doc, &mut found);
        pins += found.len();
    }
    ensure!(pins == 8, "{pins} pinned modules, wanted 8");
    Ok(())
}

#[test]
fn render_refuses_missing_variables_and_leftover_placeholders() -> Result<()> {
    let (_, output) = render(&repo_root().join("envoy/deploy"), &[])?;
    ensure!(!output.status.success(), "rendered without REGISTRY");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("REGISTRY is not set"));
    let (_, output) = render(
        &repo_root().join("envoy/deploy"),
        &[VARS[0], ("MODULE_URL", "https://modules/x.wasm")],
    )?;
    ensure!(
        !output.status.success(),
        "rendered an https MODULE_URL for Kuma's plain cluster"
    );
    // A manifest with a placeholder the script does not know.
    let source = std::env::temp_dir().join(format!("deploy-source-{}", std::process::id()));
    std::fs::create_dir_all(&source)?;
    std::fs::write(
        source.join("x.yaml"),
        "kind: X\nvalue: \"@@SOMETHING_NEW@@\"\n",
    )?;
    let (out, output) = render(&source, VARS)?;
    let _ = std::fs::remove_dir_all(&source);
    let _ = std::fs::remove_dir_all(&out);
    ensure!(!output.status.success(), "a placeholder was left silently");
    ensure!(String::from_utf8_lossy(&output.stderr).contains("@@SOMETHING_NEW@@"));
    Ok(())
}

/// What a controller cannot do, or does its own way, is said in the
/// manifest an operator applies (docs/deploy.md says the same at length).
#[test]
fn each_manifest_states_its_controllers_limits() -> Result<()> {
    let stated: &[(&str, &[&str])] = &[
        ("istio-edge-wasmplugin.yaml", &["Marker keys"]),
        (
            "istio-origin-envoyfilter.yaml",
            &[
                "Marker keys",
                "resets\n# it at the deadline",
                "max_header_field_size_kb",
            ],
        ),
        ("envoy-gateway-edge.yaml", &["Marker keys", "v1.6 or later"]),
        (
            "envoy-gateway-origin.yaml",
            &[
                "Marker keys",
                "v1.6 or later",
                "grpc.enableWeb: false",
                "mergeType",
                "kubernetes.io/h2c",
                "header limits",
            ],
        ),
        (
            "envoy-gateway-edge-native.yaml",
            &[
                "Marker keys",
                "v1.8 or later",
                "last filter before the router",
                "parametersRef",
            ],
        ),
        (
            "envoy-gateway-origin-native.yaml",
            &[
                "Marker keys",
                "v1.8 or later",
                "last filter before the router",
                "grpc.enableWeb: false",
                "header limits",
            ],
        ),
        (
            "kuma-edge-meshproxypatch.yaml",
            &[
                "Marker keys",
                "Kuma 2.13",
                "Kuma 3.0",
                "outside the\n# mesh's mTLS",
            ],
        ),
        (
            "kuma-origin-meshproxypatch.yaml",
            &["Marker keys", "2.13 or later", "outside the\n# mesh's mTLS"],
        ),
    ];
    for (name, phrases) in stated {
        let text = std::fs::read_to_string(repo_root().join("envoy/deploy").join(name))?;
        for phrase in *phrases {
            ensure!(text.contains(phrase), "{name} does not state {phrase:?}");
        }
    }
    Ok(())
}

/// Kuma's mesh and gateway are the operator's, not hard-coded names.
#[test]
fn kuma_manifests_take_the_mesh_and_gateway_names_given() -> Result<()> {
    let mut vars = VARS.to_vec();
    vars.extend([("KUMA_MESH", "payments"), ("EDGE_GATEWAY", "public-gw")]);
    let (out, output) = render(&repo_root().join("envoy/deploy"), &vars)?;
    ensure!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    for name in [
        "kuma-edge-meshproxypatch.yaml",
        "kuma-origin-meshproxypatch.yaml",
    ] {
        let text = std::fs::read_to_string(out.join(name))?;
        for document in serde_yaml::Deserializer::from_str(&text) {
            let doc = Value::deserialize(document)?;
            if doc["apiVersion"] == "kuma.io/v1alpha1" {
                ensure!(
                    doc["metadata"]["labels"]["kuma.io/mesh"] == "payments",
                    "{name}: {} not in the mesh given",
                    doc["kind"]
                );
                if doc["spec"]["targetRef"]["kind"] == "MeshGateway" {
                    ensure!(
                        doc["spec"]["targetRef"]["name"] == "public-gw",
                        "{name}: gateway"
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&out)?;
    Ok(())
}

/// The bridge side an Envoy config is for (its plugin's `side`).
fn plugin_side(config: &Value) -> Option<String> {
    plugin_configs(config).into_iter().find_map(|json| {
        let plugin: Value = serde_json::from_str(&json).ok()?;
        plugin["side"].as_str().map(str::to_string)
    })
}

/// Puts a controller's pieces for this config's side in place of its
/// HTTP filters, and its listener, cluster and route fields on top.
fn shape_like(config: &mut Value, pieces: &[Assembled]) -> Result<()> {
    let side = plugin_side(config).context("no bridge in the config")?;
    let piece = pieces
        .iter()
        .find(|p| p.side == side)
        .context("no piece for this side")?;
    let mut filters = piece.filters.clone();
    filters.push(router());
    for listener in config["static_resources"]["listeners"]
        .as_array_mut()
        .context("listeners")?
    {
        merge(listener, &piece.listener_fields);
        for chain in listener["filter_chains"]
            .as_array_mut()
            .into_iter()
            .flatten()
        {
            let hcm = &mut chain["filters"][0]["typed_config"];
            hcm["http_filters"] = Value::from(filters.clone());
            for host in hcm["route_config"]["virtual_hosts"]
                .as_array_mut()
                .into_iter()
                .flatten()
            {
                for route in host["routes"].as_array_mut().into_iter().flatten() {
                    merge_deep(route, &piece.route_fields);
                }
            }
        }
    }
    for cluster in config["static_resources"]["clusters"]
        .as_array_mut()
        .context("clusters")?
    {
        merge(cluster, &piece.cluster_fields);
    }
    Ok(())
}

/// Each controller's pieces serve every interop case in the local chain,
/// with each build, and a call whose server answers past its deadline ends
/// DEADLINE_EXCEEDED at the deadline.
#[test]
fn controller_shaped_chains_serve_every_interop_case() -> Result<()> {
    use bridge_peers::harness::{interop_server, runtime};
    use bridge_peers::interop_client::CASES;
    use bridge_peers::topology::{Hop, Topology, Upstream, native_module, wasm_module};
    let files = rendered()?;
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let mut failures = Vec::new();
    for (controller, pieces, native_only) in [
        ("Istio", istio_pieces(&files)?, false),
        ("Envoy Gateway", envoy_gateway_pieces(&files, false)?, false),
        (
            "Envoy Gateway, native files",
            envoy_gateway_pieces(&files, true)?,
            true,
        ),
        ("Kuma", kuma_pieces(&files)?, false),
    ] {
        let builds = [("Wasm", wasm_module()), ("native", native_module())];
        for (build, module) in builds
            .into_iter()
            .filter(|(b, _)| !native_only || *b == "native")
        {
            let chain =
                Topology::start_edited(Hop::Nginx, Upstream::Server(server), &module, Ok, |c| {
                    shape_like(c, &pieces)
                })?;
            let target = format!("http://{}", chain.edge);
            for case in CASES {
                let run = (case.run)(target.clone());
                let call =
                    async { tokio::time::timeout(std::time::Duration::from_secs(20), run).await };
                match runtime.block_on(call) {
                    Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        failures.push(format!("{controller}, {build}: {}: {e:#}", case.name))
                    }
                    Err(_) => failures.push(format!("{controller}, {build}: {}: hangs", case.name)),
                }
            }
            // Istio's inbound route times the call from grpc-timeout itself
            // and resets it at the deadline once the response has started
            // (docs/deploy.md, Istio).
            let reset_by_envoy = controller == "Istio";
            let deadline = deadline_ends_the_call_at_the_deadline(chain.edge, reset_by_envoy);
            if let Err(e) = runtime.block_on(deadline) {
                failures.push(format!("{controller}, {build}: deadline: {e:#}"));
            }
        }
    }
    ensure!(failures.is_empty(), "{}", failures.join("\n"));
    Ok(())
}

/// A call with `grpc-timeout: 700m` whose server answers after 2 s, from a
/// client with no timer of its own: DEADLINE_EXCEEDED, at the deadline; or,
/// where the controller's own route timer may reset it first
/// (`reset_by_envoy`), that or a reset within the deadline plus Envoy's 1 s
/// delayed close.
async fn deadline_ends_the_call_at_the_deadline(
    edge: std::net::SocketAddr,
    reset_by_envoy: bool,
) -> Result<()> {
    use bridge_peers::proto::{ResponseParameters, StreamingOutputCallRequest};
    use prost::Message as _;
    let request = StreamingOutputCallRequest {
        response_parameters: vec![ResponseParameters {
            size: 10,
            interval_us: 2_000_000,
            ..Default::default()
        }],
        ..Default::default()
    };
    let started = std::time::Instant::now();
    let received = bridge_peers::raw::h2_call(
        edge,
        "/grpc.testing.TestService/StreamingOutputCall",
        &[("grpc-timeout", "700m")],
        &bridge_peers::raw::frame(0, &request.encode_to_vec()),
    )
    .await?;
    let took = started.elapsed();
    // Envoy's timer and the server's own DEADLINE_EXCEEDED race: the status
    // when the server's trailers win.
    let deadline_exceeded = received.grpc_status() == Some("4");
    let (ended, bound) = match reset_by_envoy {
        true => (received.error.is_some() || deadline_exceeded, 2500),
        false => (deadline_exceeded, 1500),
    };
    ensure!(
        ended && took < std::time::Duration::from_millis(bound),
        "status {:?} ({:?}), after {took:?}",
        received.grpc_status(),
        received.error
    );
    Ok(())
}

/// A check of one field: the value at `pointer` (None: absent).
type Rule = (&'static str, fn(Option<&Value>) -> bool, &'static str);

/// An Envoy Gateway dynamic module name: `^[a-z0-9]([a-z0-9.-]*[a-z0-9])?$`,
/// at most 253 characters.
fn module_name(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|n| {
        let edge =
            |c: Option<char>| c.is_some_and(|c| c.is_ascii_lowercase() || c.is_ascii_digit());
        n.len() <= 253
            && edge(n.chars().next())
            && edge(n.chars().last())
            && n.chars()
                .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-')
    })
}

fn is_str(v: Option<&Value>) -> bool {
    v.is_some_and(Value::is_string)
}
fn absent_or_str(v: Option<&Value>) -> bool {
    v.is_none_or(Value::is_string)
}
fn one_of(v: Option<&Value>, values: &[&str]) -> bool {
    v.and_then(Value::as_str)
        .is_some_and(|s| values.contains(&s))
}
/// Gateway API's Duration.
fn duration(v: Option<&Value>) -> bool {
    let Some(s) = v.and_then(Value::as_str) else {
        return false;
    };
    let mut rest = s;
    let mut parts = 0;
    while !rest.is_empty() {
        let digits = rest.bytes().take_while(u8::is_ascii_digit).count();
        if !(1..=5).contains(&digits) {
            return false;
        }
        rest = &rest[digits..];
        let unit = ["ms", "h", "m", "s"]
            .into_iter()
            .find(|u| rest.starts_with(u));
        let Some(unit) = unit else { return false };
        rest = &rest[unit.len()..];
        parts += 1;
    }
    (1..=4).contains(&parts)
}
/// A Kubernetes Quantity in bytes (plain or binary suffix), as a number.
fn quantity(v: Option<&Value>) -> Option<u64> {
    match v? {
        Value::Number(n) => n.as_u64(),
        Value::String(s) => {
            let (digits, suffix) = s.split_at(s.bytes().take_while(u8::is_ascii_digit).count());
            let n: u64 = digits.parse().ok()?;
            let unit = match suffix {
                "" => 1,
                "Ki" => 1 << 10,
                "Mi" => 1 << 20,
                "Gi" => 1 << 30,
                "k" => 1000,
                "M" => 1_000_000,
                _ => return None,
            };
            Some(n * unit)
        }
        _ => None,
    }
}
/// A DNS-1123 subdomain (Gateway API's SectionName and object names).
fn dns_name(v: Option<&Value>) -> bool {
    v.and_then(Value::as_str).is_some_and(|s| {
        !s.is_empty()
            && s.len() <= 253
            && s.split('.').all(|label| {
                !label.is_empty()
                    && label
                        .bytes()
                        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
                    && !label.starts_with('-')
                    && !label.ends_with('-')
            })
    })
}

/// The fields each kind may have under `spec` (more is a typo its CRD
/// would prune or refuse), and the rules its CRD sets on the fields we use.
fn crd(kind: &str) -> Option<(&'static [&'static str], Vec<Rule>)> {
    let target_refs: Rule = (
        "/spec/targetRefs",
        |v| {
            v.and_then(Value::as_array).is_some_and(|refs| {
                !refs.is_empty()
                    && refs.iter().all(|r| {
                        is_str(r.get("group"))
                            && is_str(r.get("kind"))
                            && is_str(r.get("name"))
                            && (r.get("sectionName").is_none() || dns_name(r.get("sectionName")))
                    })
            })
        },
        "targetRefs items need group, kind, name; sectionName a DNS name",
    );
    Some(match kind {
        "WasmPlugin" => (
            &[
                "selector",
                "targetRef",
                "targetRefs",
                "url",
                "sha256",
                "imagePullPolicy",
                "imagePullSecret",
                "pluginConfig",
                "pluginName",
                "phase",
                "priority",
                "failStrategy",
                "vmConfig",
                "match",
                "type",
                "verificationKey",
            ],
            vec![
                (
                    "/spec/url",
                    |v| {
                        v.and_then(Value::as_str).is_some_and(|u| {
                            u.starts_with("oci://")
                                || u.starts_with("https://")
                                || u.starts_with("http://")
                                || u.starts_with("file://")
                        })
                    },
                    "url is oci://, http(s):// or file://",
                ),
                (
                    "/spec/sha256",
                    |v| hex64(v.unwrap_or(&Value::Null)),
                    "sha256: 64 lowercase hex digits, no prefix",
                ),
                (
                    "/spec/imagePullPolicy",
                    |v| v.is_none() || one_of(v, &["UNSPECIFIED_POLICY", "IfNotPresent", "Always"]),
                    "imagePullPolicy enum",
                ),
                (
                    "/spec/failStrategy",
                    |v| v.is_none() || one_of(v, &["FAIL_CLOSE", "FAIL_OPEN", "FAIL_RELOAD"]),
                    "failStrategy enum",
                ),
                (
                    "/spec/match",
                    |v| {
                        v.is_none_or(|m| {
                            m.as_array().is_some_and(|m| {
                                m.iter().all(|t| {
                                    one_of(
                                        t.get("mode"),
                                        &["UNDEFINED", "CLIENT", "SERVER", "CLIENT_AND_SERVER"],
                                    )
                                })
                            })
                        })
                    },
                    "match[].mode enum",
                ),
                (
                    "/spec/pluginConfig",
                    |v| v.is_some_and(Value::is_object),
                    "pluginConfig is an object",
                ),
            ],
        ),
        "EnvoyFilter" => (
            &[
                "workloadSelector",
                "targetRefs",
                "configPatches",
                "priority",
            ],
            vec![
                (
                    "/spec/configPatches",
                    |v| {
                        v.and_then(Value::as_array).is_some_and(|patches| {
                            patches.iter().all(|p| {
                                one_of(
                                    p.get("applyTo"),
                                    &[
                                        "INVALID",
                                        "LISTENER",
                                        "FILTER_CHAIN",
                                        "NETWORK_FILTER",
                                        "HTTP_FILTER",
                                        "ROUTE_CONFIGURATION",
                                        "VIRTUAL_HOST",
                                        "HTTP_ROUTE",
                                        "CLUSTER",
                                        "EXTENSION_CONFIG",
                                        "BOOTSTRAP",
                                        "LISTENER_FILTER",
                                    ],
                                ) && one_of(
                                    p.pointer("/match/context"),
                                    &["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"],
                                ) && one_of(
                                    p.pointer("/patch/operation"),
                                    &[
                                        "INVALID",
                                        "MERGE",
                                        "ADD",
                                        "REMOVE",
                                        "INSERT_BEFORE",
                                        "INSERT_AFTER",
                                        "INSERT_FIRST",
                                        "REPLACE",
                                    ],
                                ) && p.pointer("/patch/value").is_some_and(Value::is_object)
                            })
                        })
                    },
                    "configPatches: applyTo, match.context, patch.operation enums; patch.value an object",
                ),
                (
                    "/spec/workloadSelector/labels",
                    |v| v.is_some_and(Value::is_object),
                    "workloadSelector.labels",
                ),
            ],
        ),
        "EnvoyExtensionPolicy" => (
            &[
                "targetRef",
                "targetRefs",
                "targetSelectors",
                "wasm",
                "extProc",
                "lua",
                "dynamicModule",
                "mergeType",
            ],
            vec![
                target_refs,
                (
                    "/spec",
                    |v| {
                        v.is_some_and(|spec| {
                            spec.get("wasm").is_some() != spec.get("dynamicModule").is_some()
                        })
                    },
                    "the module as wasm or as dynamicModule, one of them",
                ),
                (
                    "/spec/dynamicModule",
                    |v| {
                        v.is_none_or(|d| {
                            d.as_array().is_some_and(|d| {
                                d.iter().all(|d| {
                                    module_name(d.get("name"))
                                        && absent_or_str(d.get("filterName"))
                                        && d.get("config").is_none_or(Value::is_object)
                                        && d.get("terminalFilter").is_none_or(Value::is_boolean)
                                })
                            })
                        })
                    },
                    "dynamicModule[]: name (a registered module: lowercase DNS-like), filterName, config",
                ),
                (
                    "/spec/wasm",
                    |v| {
                        v.is_none_or(|v| {
                            v.as_array().is_some_and(|w| {
                                w.iter().all(|w| {
                                    one_of(w.pointer("/code/type"), &["HTTP", "Image", "ConfigMap"])
                                        && is_str(w.pointer("/code/image/url"))
                                        && hex64(
                                            w.pointer("/code/image/sha256").unwrap_or(&Value::Null),
                                        )
                                        && w.get("failOpen").is_none_or(Value::is_boolean)
                                        && absent_or_str(w.get("rootID"))
                                })
                            })
                        })
                    },
                    "wasm[]: code.type enum, image.url, image.sha256 as 64 bare hex digits (Envoy Gateway compares it with the manifest digest)",
                ),
            ],
        ),
        "EnvoyProxy" => (
            &[
                "provider",
                "logging",
                "telemetry",
                "bootstrap",
                "concurrency",
                "routingType",
                "extraArgs",
                "mergeGateways",
                "shutdown",
                "filterOrder",
                "backendTLS",
                "ipFamily",
                "preserveRouteOrder",
                "disableLuaValidation",
                "luaValidation",
                "dynamicModules",
            ],
            vec![(
                "/spec/dynamicModules",
                |v| {
                    v.is_none_or(|d| {
                        d.as_array().is_some_and(|d| {
                            d.iter().all(|d| {
                                let source = &d["source"];
                                let remote = || {
                                    source.get("local").is_none()
                                        && source
                                            .pointer("/remote/url")
                                            .and_then(Value::as_str)
                                            .is_some_and(|u| {
                                                u.starts_with("http://")
                                                    || u.starts_with("https://")
                                            })
                                        && hex64(
                                            source
                                                .pointer("/remote/sha256")
                                                .unwrap_or(&Value::Null),
                                        )
                                };
                                let local = || {
                                    source.get("remote").is_none()
                                        && source
                                            .pointer("/local/path")
                                            .and_then(Value::as_str)
                                            .is_some_and(|p| p.starts_with('/'))
                                };
                                module_name(d.get("name"))
                                    && match source.get("type").and_then(Value::as_str) {
                                        Some("Remote") => remote(),
                                        Some("Local") | None => local(),
                                        Some(_) => false,
                                    }
                            })
                        })
                    })
                },
                "dynamicModules[]: name; source.type Local (local.path absolute) or Remote (remote.url http(s), remote.sha256 64 hex digits), not both",
            )],
        ),
        "EnvoyPatchPolicy" => (
            &["type", "jsonPatches", "targetRef", "targetRefs", "priority"],
            vec![
                ("/spec/type", |v| one_of(v, &["JSONPatch"]), "type enum"),
                (
                    "/spec/targetRef",
                    |v| {
                        v.is_some_and(|r| {
                            is_str(r.get("group"))
                                && is_str(r.get("kind"))
                                && is_str(r.get("name"))
                                && r.get("sectionName").is_none()
                        })
                    },
                    "targetRef: group, kind, name (no sectionName)",
                ),
                (
                    "/spec/jsonPatches",
                    |v| {
                        v.and_then(Value::as_array).is_some_and(|p| p.iter().all(|p| {
                    is_str(p.get("name"))
                        && one_of(p.get("type"), &["type.googleapis.com/envoy.config.listener.v3.Listener", "type.googleapis.com/envoy.config.route.v3.RouteConfiguration", "type.googleapis.com/envoy.config.cluster.v3.Cluster", "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment", "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"])
                        && one_of(p.pointer("/operation/op"), &["add", "remove", "replace", "move", "copy", "test"])
                        && absent_or_str(p.pointer("/operation/jsonPath"))
                        && absent_or_str(p.pointer("/operation/path"))
                }))
                    },
                    "jsonPatches[]: name, type enum, operation.op enum",
                ),
            ],
        ),
        "BackendTrafficPolicy" | "ClientTrafficPolicy" => (
            &[
                "targetRef",
                "targetRefs",
                "targetSelectors",
                "timeout",
                "connection",
                "mergeType",
                "retry",
                "circuitBreaker",
                "loadBalancer",
                "http2",
                "http1",
                "tcpKeepalive",
                "timeouts",
            ],
            vec![
                target_refs,
                (
                    "/spec/timeout/http/requestTimeout",
                    |v| v.is_none() || duration(v),
                    "timeout.http.requestTimeout: a Gateway API Duration",
                ),
                (
                    "/spec/connection/bufferLimit",
                    |v| quantity(v).is_some(),
                    "connection.bufferLimit: a Quantity",
                ),
            ],
        ),
        "Gateway" => (
            &[
                "gatewayClassName",
                "listeners",
                "addresses",
                "infrastructure",
            ],
            vec![(
                "/spec/listeners",
                |v| {
                    v.and_then(Value::as_array).is_some_and(|l| {
                        l.iter().all(|l| {
                            dns_name(l.get("name"))
                                && one_of(
                                    l.get("protocol"),
                                    &["HTTP", "HTTPS", "TLS", "TCP", "UDP"],
                                )
                                && l.get("port").is_some_and(Value::is_u64)
                        })
                    })
                },
                "listeners[]: name, protocol, port",
            )],
        ),
        "HTTPRoute" => (
            &["parentRefs", "hostnames", "rules"],
            vec![(
                "/spec/parentRefs",
                |v| {
                    v.and_then(Value::as_array)
                        .is_some_and(|p| p.iter().all(|p| is_str(p.get("name"))))
                },
                "parentRefs[].name",
            )],
        ),
        "MeshProxyPatch" => (
            &["targetRef", "default"],
            vec![
                (
                    "/spec/targetRef",
                    |v| {
                        v.is_some_and(|r| {
                            let kind = r.get("kind").and_then(Value::as_str).unwrap_or("");
                            // MeshSubset is deprecated from Kuma 2.10: Dataplane with labels.
                            ["Mesh", "Dataplane", "MeshGateway", "MeshService"].contains(&kind)
                                && (r.get("labels").is_none()
                                    || kind == "Dataplane"
                                    || kind == "MeshService")
                                && (r.get("tags").is_none())
                        })
                    },
                    "targetRef.kind: Mesh, Dataplane, MeshGateway or MeshService (not the deprecated MeshSubset); labels only with Dataplane",
                ),
                (
                    "/spec/default/appendModifications",
                    |v| {
                        v.and_then(Value::as_array).is_some_and(|m| {
                            m.iter().all(|m| {
                                let Some(map) = m.as_object() else {
                                    return false;
                                };
                                let [(what, body)] = map.iter().collect::<Vec<_>>()[..] else {
                                    return false;
                                };
                                let operations: &[&str] = match what.as_str() {
                                    "cluster" | "listener" | "networkFilter" => {
                                        &["Add", "Remove", "Patch"]
                                    }
                                    "httpFilter" => &[
                                        "AddFirst",
                                        "AddLast",
                                        "AddBefore",
                                        "AddAfter",
                                        "Remove",
                                        "Patch",
                                    ],
                                    "virtualHost" => &["Add", "Remove", "Patch"],
                                    _ => return false,
                                };
                                one_of(body.get("operation"), operations)
                                    && absent_or_str(body.get("value"))
                                    && body.get("match").is_none_or(|m| {
                                        absent_or_str(m.get("origin"))
                                            && absent_or_str(m.get("name"))
                                    })
                            })
                        })
                    },
                    "appendModifications[]: one of cluster, listener, networkFilter, httpFilter, virtualHost with its operations",
                ),
            ],
        ),
        "MeshTimeout" => (
            &["targetRef", "to", "from", "rules"],
            vec![
                (
                    "/spec/targetRef/kind",
                    |v| one_of(v, &["Mesh", "Dataplane", "MeshGateway", "MeshService"]),
                    "targetRef.kind",
                ),
                (
                    "/spec",
                    |v| {
                        v.is_some_and(|s| {
                            let confs: Vec<&Value> = ["rules", "to"]
                                .iter()
                                .filter_map(|k| s.get(*k))
                                .filter_map(Value::as_array)
                                .flatten()
                                .filter_map(|r| r.pointer("/default/http"))
                                .collect();
                            !confs.is_empty()
                                && confs.iter().all(|h| {
                                    h.get("requestTimeout").is_none()
                                        || duration(h.get("requestTimeout"))
                                })
                        })
                    },
                    "rules[]/to[].default.http.requestTimeout: a duration",
                ),
            ],
        ),
        "Service" => (
            &["selector", "ports", "type"],
            vec![(
                "/spec/ports",
                |v| {
                    v.and_then(Value::as_array)
                        .is_some_and(|p| p.iter().all(|p| p.get("port").is_some_and(Value::is_u64)))
                },
                "ports[].port",
            )],
        ),
        _ => return None,
    })
}

#[test]
fn every_rendered_document_fits_its_crd() -> Result<()> {
    let files = rendered()?;
    let api = |kind: &str| match kind {
        "WasmPlugin" => "extensions.istio.io/v1alpha1",
        "EnvoyFilter" => "networking.istio.io/v1alpha3",
        "Gateway" | "HTTPRoute" => "gateway.networking.k8s.io/v1",
        "MeshProxyPatch" | "MeshTimeout" => "kuma.io/v1alpha1",
        "Service" => "v1",
        _ => "gateway.envoyproxy.io/v1alpha1",
    };
    for (name, doc) in all(&files) {
        let kind = doc["kind"].as_str().context("no kind")?;
        let (fields, rules) =
            crd(kind).with_context(|| format!("{name}: no check for kind {kind}"))?;
        ensure!(
            doc["apiVersion"] == api(kind),
            "{name}: {kind} apiVersion {}",
            doc["apiVersion"]
        );
        ensure!(
            dns_name(doc.pointer("/metadata/name")),
            "{name}: {kind} metadata.name"
        );
        let spec = doc["spec"]
            .as_object()
            .with_context(|| format!("{name}: {kind} has no spec"))?;
        for key in spec.keys() {
            ensure!(
                fields.contains(&key.as_str()),
                "{name}: {kind} has no field spec.{key}"
            );
        }
        for (pointer, rule, what) in rules {
            ensure!(
                rule(doc.pointer(pointer)),
                "{name}: {kind}: {what}: {:?}",
                doc.pointer(pointer)
            );
        }
        if kind.starts_with("Mesh") {
            ensure!(
                doc.pointer("/metadata/labels/kuma.io~1mesh")
                    .is_some_and(Value::is_string),
                "{name}: no kuma.io/mesh label"
            );
        }
    }
    Ok(())
}

/// The plugin configurations inside a document, as JSON text.
fn plugin_configs(document: &Value) -> Vec<String> {
    let mut found = Vec::new();
    match document {
        Value::Object(map) => {
            for (key, value) in map {
                match (key.as_str(), value) {
                    ("pluginConfig", _) => found.push(value.to_string()),
                    ("config", Value::Object(inner)) if inner.contains_key("side") => {
                        found.push(value.to_string())
                    }
                    ("configuration", _) => {
                        if let Some(text) = value["value"].as_str() {
                            found.push(text.to_string());
                        }
                    }
                    ("value", Value::String(text)) => {
                        if let Ok(inner) = serde_yaml::from_str::<Value>(text) {
                            found.extend(plugin_configs(&inner));
                        }
                    }
                    _ => found.extend(plugin_configs(value)),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|i| found.extend(plugin_configs(i))),
        _ => {}
    }
    found
}

#[test]
fn plugin_configs_are_ones_the_module_accepts_one_edge_and_one_origin_each() -> Result<()> {
    use grpc_web_bridge::config::{Config, Side};
    let files = rendered()?;
    let mut keys = Vec::new();
    for (name, docs) in &files {
        let configs: Vec<Config> = docs
            .iter()
            .flat_map(plugin_configs)
            .map(|json| {
                Config::from_json(json.as_bytes()).map_err(|e| anyhow::anyhow!("{name}: {e}"))
            })
            .collect::<Result<_>>()?;
        let side = if name.contains("edge") {
            Side::Edge
        } else {
            Side::Origin
        };
        ensure!(
            configs.len() == 1 && configs[0].side == side,
            "{name}: {} plugin configs, wanted one for the {side:?}",
            configs.len()
        );
        keys.push(configs[0].marker.keys.clone());
    }
    // One key, the same at every edge and origin.
    ensure!(keys.windows(2).all(|w| w[0] == w[1]), "marker keys differ");
    Ok(())
}

fn router() -> Value {
    json!({"name": "envoy.filters.http.router", "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}})
}

fn module_filter(config: &str) -> Value {
    json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": {
                "name": "grpc_web_bridge", "root_id": "grpc_web_bridge",
                "configuration": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
                "vm_config": {"vm_id": "grpc_web_bridge", "runtime": "envoy.wasm.runtime.v8",
                    "code": {"local": {"filename": repo_root().join("dist/grpc_web_bridge.wasm")}}}
            }
        }
    })
}

/// A bootstrap with one HTTP listener running `filters` (router last) and
/// `clusters`, with `listener_fields` and `cluster_fields` merged in.
fn bootstrap(
    filters: Vec<Value>,
    mut clusters: Vec<Value>,
    listener_fields: &Value,
    cluster_fields: &Value,
) -> Value {
    let mut filters = filters;
    filters.push(router());
    clusters.push(json!({"name": "server", "type": "STATIC", "connect_timeout": "1s",
        "load_assignment": {"cluster_name": "server", "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}}}}]}]}}));
    for cluster in &mut clusters {
        merge(cluster, cluster_fields);
    }
    let mut listener = json!({
        "name": "patched",
        "address": {"socket_address": {"address": "127.0.0.1", "port_value": 1}},
        "filter_chains": [{"filters": [{
            "name": "envoy.filters.network.http_connection_manager",
            "typed_config": {
                "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                "stat_prefix": "patched",
                "route_config": {"virtual_hosts": [{"name": "all", "domains": ["*"], "routes": [
                    {"match": {"prefix": "/"}, "route": {"cluster": "server", "timeout": "0s"}}
                ]}]},
                "http_filters": filters,
            }
        }]}]
    });
    merge(&mut listener, listener_fields);
    json!({"static_resources": {"listeners": [listener], "clusters": clusters}})
}

/// Merges `fields` into `target`, object by object.
fn merge_deep(target: &mut Value, fields: &Value) {
    match (target.as_object_mut(), fields.as_object()) {
        (Some(target), Some(fields)) => {
            for (k, v) in fields {
                merge_deep(target.entry(k.clone()).or_insert(Value::Null), v);
            }
        }
        _ => *target = fields.clone(),
    }
}

fn merge(target: &mut Value, fields: &Value) {
    if let (Some(target), Some(fields)) = (target.as_object_mut(), fields.as_object()) {
        for (k, v) in fields {
            target.insert(k.clone(), v.clone());
        }
    }
}

/// The gRPC-web filter a manifest adds: gated on the marker header.
fn assert_gated(filter: &Value, name: &str) -> Result<()> {
    ensure!(
        filter.pointer("/typed_config/extension_config/name")
            == Some(&json!("envoy.filters.http.grpc_web")),
        "{name}: not Envoy's gRPC-web filter: {filter}"
    );
    let header = filter
        .pointer("/typed_config/xds_matcher/matcher_list/matchers/0/predicate/not_matcher/single_predicate/input/typed_config/header_name");
    ensure!(
        header == Some(&json!(GATE_HEADER)),
        "{name}: the gate is not the marker header: {header:?}"
    );
    Ok(())
}

#[test]
fn istio_manifests_gate_exactly_where_the_module_runs_with_buffers_and_validate() -> Result<()> {
    validate_all(&istio_pieces(&rendered()?)?)
}

/// What one side of a controller's manifests puts in an Envoy, as the
/// controller assembles it: the HTTP filters before the router, clusters
/// it adds, and the fields it sets on the listener, on clusters and on the
/// route.
struct Assembled {
    name: &'static str,
    side: &'static str,
    filters: Vec<Value>,
    clusters: Vec<Value>,
    listener_fields: Value,
    cluster_fields: Value,
    /// What goes on the route (merged into it): what the controller itself
    /// sets there, and what enables a per-route filter.
    route_fields: Value,
}

fn validate_all(pieces: &[Assembled]) -> Result<()> {
    for piece in pieces {
        let mut config = bootstrap(
            piece.filters.clone(),
            piece.clusters.clone(),
            &piece.listener_fields,
            &piece.cluster_fields,
        );
        if let Some(route) = config.pointer_mut(
            "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config/route_config/virtual_hosts/0/routes/0",
        ) {
            merge_deep(route, &piece.route_fields);
        }
        envoy_validates(piece.name, &config.to_string())?;
    }
    Ok(())
}

/// The origin's patch on the server's cluster lets a trailer block of up to
/// 1 MiB in up to 10000 fields reach the module, as `envoy/origin.yaml` does
/// (at Envoy's defaults the codec resets the stream: no status).
fn assert_server_limits(cluster: &Value, name: &str) -> Result<()> {
    let options = cluster.pointer(
        "/typed_extension_protocol_options/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
    );
    let common = options.and_then(|o| o.get("common_http_protocol_options"));
    let at_least = |field: &str, floor: u64| {
        common
            .and_then(|c| c.get(field))
            .and_then(Value::as_u64)
            .is_some_and(|v| v >= floor)
    };
    ensure!(
        at_least("max_response_headers_kb", 1024) && at_least("max_headers_count", 10000),
        "{name}: the server's cluster keeps Envoy's trailer limits: {options:?}"
    );
    ensure!(
        options
            .and_then(|o| o.pointer("/explicit_http_config/http2_protocol_options"))
            .is_some(),
        "{name}: the server's cluster is not HTTP/2"
    );
    Ok(())
}

/// Istio's manifests, checked, as Istio assembles them. Istio's inbound
/// routes carry `max_stream_duration` with `grpc_timeout_header_max: 0s`
/// (its route builder for every inbound route).
fn istio_pieces(files: &BTreeMap<String, Vec<Value>>) -> Result<Vec<Assembled>> {
    let mut pieces = Vec::new();
    for (name, side) in [
        ("istio-edge-wasmplugin.yaml", "edge"),
        ("istio-origin-envoyfilter.yaml", "origin"),
    ] {
        let docs = &files[name];
        let plugin = one(docs, "WasmPlugin")?;
        let filter = one(docs, "EnvoyFilter")?;
        ensure!(
            plugin["metadata"]["namespace"] == filter["metadata"]["namespace"],
            "{name}: namespaces differ"
        );
        // Scope: the same workload.
        ensure!(
            plugin["spec"]["selector"]["matchLabels"]
                == filter["spec"]["workloadSelector"]["labels"],
            "{name}: the EnvoyFilter selects other workloads than the WasmPlugin"
        );
        let patches = filter["spec"]["configPatches"]
            .as_array()
            .context("patches")?;
        let context = if side == "edge" {
            "GATEWAY"
        } else {
            "SIDECAR_INBOUND"
        };
        let mut buffers = (0, 0);
        let mut cluster_fields = json!({});
        let mut gates = Vec::new();
        for patch in patches {
            ensure!(
                patch["match"]["context"] == context,
                "{name}: a patch outside {context}"
            );
            let value = &patch["patch"]["value"];
            match patch["applyTo"].as_str() {
                Some("LISTENER") => {
                    buffers.0 = value["per_connection_buffer_limit_bytes"]
                        .as_u64()
                        .unwrap_or(0)
                }
                Some("CLUSTER") => {
                    buffers.1 = value["per_connection_buffer_limit_bytes"]
                        .as_u64()
                        .unwrap_or(0);
                    cluster_fields = value.clone();
                }
                Some("HTTP_FILTER") => {
                    // First, so it runs before the module wherever Istio puts it.
                    ensure!(
                        patch["patch"]["operation"] == "INSERT_FIRST",
                        "{name}: the gate is not inserted first"
                    );
                    gates.push(value.clone());
                }
                other => bail!("{name}: unexpected patch {other:?}"),
            }
        }
        ensure!(
            buffers.0 >= BUFFER && buffers.1 >= BUFFER,
            "{name}: buffers {buffers:?}, wanted {BUFFER} on listeners and clusters"
        );
        match side {
            "edge" => ensure!(gates.is_empty(), "{name}: a gRPC-web filter at the edge"),
            _ => {
                ensure!(gates.len() == 1, "{name}: {} gates", gates.len());
                assert_gated(&gates[0], name)?;
                // The module runs on the same traffic: inbound.
                ensure!(
                    plugin["spec"]["match"] == json!([{"mode": "SERVER"}]),
                    "{name}: the module is not on inbound traffic only"
                );
            }
        }
        if side == "origin" {
            assert_server_limits(&cluster_fields, name)?;
        }
        let config = plugin["spec"]["pluginConfig"].to_string();
        let mut filters = gates;
        filters.push(module_filter(&config));
        pieces.push(Assembled {
            name,
            side,
            filters,
            clusters: vec![],
            listener_fields: json!({"per_connection_buffer_limit_bytes": buffers.0}),
            cluster_fields,
            route_fields: match side {
                "origin" => {
                    json!({"route": {"max_stream_duration": {"grpc_timeout_header_max": "0s"}}})
                }
                _ => json!({}),
            },
        });
        // Streams: Istio sets no route timeout unless a VirtualService does.
        ensure!(
            kind_of(docs, "VirtualService").is_empty(),
            "{name}: ships a VirtualService"
        );
        let text = std::fs::read_to_string(repo_root().join("envoy/deploy").join(name))?;
        ensure!(
            text.contains("no VirtualService")
                || text.contains("no `timeout` on the VirtualService"),
            "{name}: the timeout precondition is not stated"
        );
    }
    Ok(pieces)
}

#[test]
fn envoy_gateway_manifests_gate_exactly_where_the_module_runs_with_timeouts_buffers_and_validate()
-> Result<()> {
    let files = rendered()?;
    validate_all(&envoy_gateway_pieces(&files, false)?)?;
    validate_all(&envoy_gateway_pieces(&files, true)?)
}

/// Envoy Gateway's manifests, checked, as Envoy Gateway assembles them:
/// the Wasm files, or (`native`) their native twins, whose module Envoy
/// Gateway adds to the HTTP connection manager disabled and enables on each
/// route of the policy's scope (its `dynamicmodule` translator).
fn envoy_gateway_pieces(
    files: &BTreeMap<String, Vec<Value>>,
    native: bool,
) -> Result<Vec<Assembled>> {
    let mut pieces = Vec::new();
    let names = match native {
        false => [
            ("envoy-gateway-edge.yaml", "edge"),
            ("envoy-gateway-origin.yaml", "origin"),
        ],
        true => [
            ("envoy-gateway-edge-native.yaml", "edge"),
            ("envoy-gateway-origin-native.yaml", "origin"),
        ],
    };
    for (name, side) in names {
        let docs = &files[name];
        let policy = one(docs, "EnvoyExtensionPolicy")?;
        let scope = &policy["spec"]["targetRefs"];
        let backend = one(docs, "BackendTrafficPolicy")?;
        // Streams: no route timeout wherever the module runs.
        ensure!(
            backend["spec"]["targetRefs"] == *scope,
            "{name}: the timeout does not cover the module's scope"
        );
        ensure!(
            backend["spec"]["timeout"]["http"]["requestTimeout"] == "0s",
            "{name}: a request timeout"
        );
        ensure!(
            quantity(backend.pointer("/spec/connection/bufferLimit")).unwrap_or(0) >= BUFFER,
            "{name}: backend buffer"
        );
        let client = one(docs, "ClientTrafficPolicy")?;
        ensure!(
            quantity(client.pointer("/spec/connection/bufferLimit")).unwrap_or(0) >= BUFFER,
            "{name}: client buffer"
        );
        ensure!(
            client["spec"]["targetRefs"][0]["kind"] == "Gateway",
            "{name}: ClientTrafficPolicy targets a Gateway"
        );
        let (module, route) = match native {
            false => (
                module_filter(&policy["spec"]["wasm"][0]["config"].to_string()),
                json!({}),
            ),
            true => eg_dynamic_module(docs, policy, name)?,
        };
        let mut filters = vec![];
        if side == "origin" {
            // The module runs on one Gateway listener; the gate on the same.
            let [target] = scope.as_array().context("targetRefs")?.as_slice() else {
                bail!(
                    "{name}: the module has {} targets",
                    scope.as_array().map_or(0, Vec::len)
                );
            };
            ensure!(
                target["kind"] == "Gateway" && target["sectionName"].is_string(),
                "{name}: the module is not on one Gateway listener"
            );
            ensure!(
                client["spec"]["targetRefs"] == *scope,
                "{name}: the client buffer does not cover the listener"
            );
            let namespace = policy["metadata"]["namespace"]
                .as_str()
                .context("namespace")?;
            let gateway = target["name"].as_str().context("name")?;
            let listener = target["sectionName"].as_str().context("sectionName")?;
            let patch = one(docs, "EnvoyPatchPolicy")?;
            ensure!(
                patch["spec"]["targetRef"]["kind"] == "Gateway"
                    && patch["spec"]["targetRef"]["name"] == gateway,
                "{name}: the patch is on another Gateway"
            );
            let [json_patch] = patch["spec"]["jsonPatches"]
                .as_array()
                .context("jsonPatches")?
                .as_slice()
            else {
                bail!("{name}: one JSON patch expected");
            };
            ensure!(
                json_patch["name"] == format!("{namespace}/{gateway}/{listener}"),
                "{name}: the patch names listener {}, the module runs on {namespace}/{gateway}/{listener}",
                json_patch["name"]
            );
            let operation = &json_patch["operation"];
            ensure!(
                operation["op"] == "add" && operation["path"] == "/0",
                "{name}: the gate is not added first"
            );
            ensure!(
                operation["jsonPath"]
                    == "..filters[?(@.name=='envoy.filters.network.http_connection_manager')].typed_config.http_filters",
                "{name}: the patch does not find every HTTP connection manager of the listener: {}",
                operation["jsonPath"]
            );
            assert_gated(&operation["value"], name)?;
            filters.push(operation["value"].clone());
            // The shipped Gateway has that listener; gRPC rides an HTTPRoute.
            let gw = one(docs, "Gateway")?;
            ensure!(gw["metadata"]["name"] == gateway, "{name}: Gateway name");
            ensure!(
                gw["spec"]["listeners"]
                    .as_array()
                    .is_some_and(|l| l.iter().any(|l| l["name"] == listener)),
                "{name}: no listener {listener}"
            );
            let route = one(docs, "HTTPRoute")?;
            ensure!(
                route["spec"]["parentRefs"][0]["sectionName"] == listener,
                "{name}: the route is on another listener"
            );
            ensure!(
                kind_of(docs, "GRPCRoute").is_empty(),
                "{name}: a GRPCRoute (Envoy Gateway adds its own, ungated, grpc_web filter for it)"
            );
            // Envoy Gateway speaks HTTP/1.1 to a Service port unless its
            // appProtocol says HTTP/2; native gRPC needs HTTP/2.
            let service = one(docs, "Service")?;
            let backend = &route["spec"]["rules"][0]["backendRefs"][0];
            ensure!(
                service["metadata"]["name"] == backend["name"]
                    && service["metadata"]["namespace"] == route["metadata"]["namespace"],
                "{name}: the route's backend is not the Service shipped"
            );
            ensure!(
                service["spec"]["ports"]
                    .as_array()
                    .is_some_and(|ports| ports.iter().any(|p| {
                        p["port"] == backend["port"]
                            && matches!(
                                p["appProtocol"].as_str(),
                                Some("kubernetes.io/h2c" | "grpc")
                            )
                    })),
                "{name}: the backend's port is not appProtocol kubernetes.io/h2c: Envoy Gateway would speak HTTP/1.1 to the gRPC server"
            );
            for precondition in ["grpc.enableWeb: false", "mergeType", "plain text"] {
                ensure!(
                    std::fs::read_to_string(repo_root().join("envoy/deploy").join(name))?
                        .contains(precondition),
                    "{name}: the precondition on {precondition} is not stated"
                );
            }
        } else {
            ensure!(
                kind_of(docs, "EnvoyPatchPolicy").is_empty(),
                "{name}: a gRPC-web filter at the edge"
            );
        }
        filters.push(module);
        let fields = json!({"per_connection_buffer_limit_bytes": BUFFER});
        pieces.push(Assembled {
            name,
            side,
            filters,
            clusters: vec![],
            listener_fields: fields.clone(),
            cluster_fields: fields,
            route_fields: route,
        });
    }
    Ok(pieces)
}

#[test]
fn kuma_manifests_gate_exactly_where_the_module_runs_with_timeouts_buffers_and_validate()
-> Result<()> {
    validate_all(&kuma_pieces(&rendered()?)?)
}

/// The dynamic module filter Envoy Gateway builds from a native file's
/// policy and the EnvoyProxy that registers the module, and the route
/// config that enables it; the module from the local build, where Envoy
/// Gateway would have fetched the same bytes (the sha256 is checked).
fn eg_dynamic_module(docs: &[Value], policy: &Value, name: &str) -> Result<(Value, Value)> {
    let [module] = policy["spec"]["dynamicModule"]
        .as_array()
        .context("dynamicModule")?
        .as_slice()
    else {
        bail!("{name}: one dynamic module expected");
    };
    let registry = one(docs, "EnvoyProxy")?;
    let entry = registry["spec"]["dynamicModules"]
        .as_array()
        .and_then(|entries| entries.iter().find(|e| e["name"] == module["name"]))
        .with_context(|| format!("{name}: module {} is not registered", module["name"]))?;
    let built = repo_root().join("dist/native/libgrpc_web_bridge.so");
    let sha256 = sha256_hex(&std::fs::read(&built)?);
    ensure!(
        entry
            .pointer("/source/remote/sha256")
            .and_then(Value::as_str)
            == Some(sha256.as_str()),
        "{name}: the registered sha256 is not the native build's"
    );
    // Envoy Gateway serialises `config` as JSON into a StringValue.
    let config = module["config"].to_string();
    let filter_name = format!(
        "envoy.filters.http.dynamic_modules/{}",
        module["name"].as_str().context("name")?
    );
    let filter = json!({
        "name": filter_name,
        "disabled": true,
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"module": {"local": {"filename": built}}},
            "filter_name": module["filterName"],
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": config},
        }
    });
    let route = json!({"typed_per_filter_config": {filter_name: {
        "@type": "type.googleapis.com/envoy.config.route.v3.FilterConfig",
        "config": {}
    }}});
    Ok((filter, route))
}

/// Kuma's manifests, checked, as Kuma assembles them.
fn kuma_pieces(files: &BTreeMap<String, Vec<Value>>) -> Result<Vec<Assembled>> {
    let mut pieces = Vec::new();
    let yaml = |value: &Value| -> Result<Value> {
        Ok(serde_yaml::from_str(
            value.as_str().context("value is not YAML text")?,
        )?)
    };
    for (name, side, origin) in [
        ("kuma-edge-meshproxypatch.yaml", "edge", "gateway"),
        ("kuma-origin-meshproxypatch.yaml", "origin", "inbound"),
    ] {
        let docs = &files[name];
        let patch = one(docs, "MeshProxyPatch")?;
        let timeout = one(docs, "MeshTimeout")?;
        ensure!(
            timeout["spec"]["targetRef"] == patch["spec"]["targetRef"],
            "{name}: the timeout covers other proxies than the module"
        );
        let requests: Vec<&Value> = ["rules", "to"]
            .iter()
            .filter_map(|k| timeout["spec"][k].as_array())
            .flatten()
            .map(|r| &r["default"]["http"]["requestTimeout"])
            .collect();
        ensure!(
            !requests.is_empty() && requests.iter().all(|t| **t == "0s"),
            "{name}: a request timeout: {requests:?}"
        );
        let (mut clusters, mut filters) = (Vec::new(), Vec::new());
        let (mut listener_fields, mut cluster_fields) = (json!({}), json!({}));
        for modification in patch["spec"]["default"]["appendModifications"]
            .as_array()
            .context("appendModifications")?
        {
            if let Some(cluster) = modification.get("cluster") {
                match cluster["operation"].as_str() {
                    Some("Add") => clusters.push(yaml(&cluster["value"])?),
                    Some("Patch") => cluster_fields = yaml(&cluster["value"])?,
                    other => bail!("{name}: cluster {other:?}"),
                }
            } else if let Some(listener) = modification.get("listener") {
                ensure!(
                    listener["operation"] == "Patch" && listener["match"]["origin"] == origin,
                    "{name}: {listener}"
                );
                listener_fields = yaml(&listener["value"])?;
            } else if let Some(filter) = modification.get("httpFilter") {
                ensure!(
                    filter["operation"] == "AddBefore"
                        && filter["match"]["name"] == "envoy.filters.http.router"
                        && filter["match"]["origin"] == origin,
                    "{name}: {filter}"
                );
                let mut filter = yaml(&filter["value"])?;
                if let Some(code) = filter.pointer_mut("/typed_config/config/vm_config/code") {
                    ensure!(
                        code.pointer("/remote/http_uri/cluster").is_some(),
                        "{name}: the module is not loaded from a cluster"
                    );
                    *code = json!({"local": {"filename": repo_root().join("dist/grpc_web_bridge.wasm")}});
                }
                filters.push(filter);
            } else {
                bail!("{name}: unexpected modification {modification}");
            }
        }
        for fields in [&listener_fields, &cluster_fields] {
            ensure!(
                fields["per_connection_buffer_limit_bytes"]
                    .as_u64()
                    .unwrap_or(0)
                    >= BUFFER,
                "{name}: buffers {fields}"
            );
        }
        match side {
            "origin" => {
                assert_server_limits(&cluster_fields, name)?;
                // One patch, one target: gate first, the module right after.
                ensure!(filters.len() == 2, "{name}: {} filters", filters.len());
                assert_gated(&filters[0], name)?;
                ensure!(
                    filters[1]["name"] == "envoy.filters.http.wasm",
                    "{name}: the module is not right after the gate"
                );
                ensure!(
                    patch["spec"]["targetRef"]["kind"] == "Dataplane",
                    "{name}: target {}",
                    patch["spec"]["targetRef"]
                );
                // Kuma builds an HTTP connection manager only for http, http2 or grpc.
                let service = one(docs, "Service")?;
                let app = &patch["spec"]["targetRef"]["labels"]["app"];
                ensure!(
                    service["spec"]["selector"]["app"] == *app,
                    "{name}: the Service selects another workload"
                );
                ensure!(
                    service["spec"]["ports"]
                        .as_array()
                        .is_some_and(|p| p.iter().all(|p| p["appProtocol"] == "grpc")),
                    "{name}: the Service port is not appProtocol grpc"
                );
            }
            _ => ensure!(
                filters.len() == 1,
                "{name}: {} filters at the edge",
                filters.len()
            ),
        }
        pieces.push(Assembled {
            name,
            side,
            filters,
            clusters,
            listener_fields,
            cluster_fields,
            route_fields: json!({}),
        });
    }
    Ok(pieces)
}

/// The shipped native configs (envoy/*-native.yaml) are the Wasm ones with
/// the bridge filter swapped for the dynamic module, nothing else, and load
/// the built module on the pinned Envoy.
#[test]
fn native_configs_are_the_wasm_ones_with_the_dynamic_module() -> Result<()> {
    let envoy = repo_root().join("envoy");
    let read = |name: &str| -> Result<Value> {
        let text = std::fs::read_to_string(envoy.join(name)).context(name.to_string())?;
        Ok(serde_yaml::from_str(&text)?)
    };
    for side in ["edge", "origin"] {
        let mut expected = read(&format!("{side}.yaml"))?;
        use_native_module(&mut expected);
        let native = read(&format!("{side}-native.yaml"))?;
        ensure!(
            native == expected,
            "envoy/{side}-native.yaml differs from envoy/{side}.yaml beyond the module"
        );
        let module = repo_root().join("dist/grpc_web_bridge.wasm");
        let config = local_files(&serde_json::to_string(&native)?, &module)?;
        envoy_validates(&format!("{side}-native.json"), &config)?;
    }
    Ok(())
}
