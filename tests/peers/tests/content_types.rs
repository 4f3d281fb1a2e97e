//! Every call keeps its content type and its status through edge → nginx →
//! origin, side by side with the same call straight to the server:
//! - `json_codec::*`: @connectrpc/connect-node speaking gRPC with the JSON
//!   codec (`application/grpc+json`) to a connect-node server
//!   (`tests/peers/node/connect_json.mjs`): unary, a spaced server stream,
//!   errors with and without messages, an unimplemented method;
//! - `subtype::*`: raw HTTP/2 calls with each content type (none, proto,
//!   json, a custom subtype) against a scripted server that answers in the
//!   content type it was asked for and says what it got: unary, streaming,
//!   trailers-only, and a server that answers plain `application/grpc`;
//! - `malformed::*`: a content type that claims gRPC but is not valid gets
//!   a clear status at the edge, counted, and never reaches the server.
//!
//! After each case, a normal call through the same Envoys must succeed.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{listening_peer, runtime, trial};
use bridge_peers::raw::{Received, Scripts, Step, frame, h2_call, h2_server};
use bridge_peers::topology::{self, Hop, Topology, Upstream};
use libtest_mimic::{Arguments, Trial};
use serde_json::Value;

/// The content types every subtype case runs with.
const CONTENT_TYPES: [&str; 4] = [
    "application/grpc",
    "application/grpc+proto",
    "application/grpc+json",
    "application/grpc+x-custom.v1",
];

fn echo_scripts() -> Scripts {
    let hello = || frame(0, b"hello");
    let ok = || Step::Trailers(vec![("grpc-status", "0"), ("x-trailer", "t")]);
    let mut s: HashMap<&'static str, Vec<Step>> = HashMap::new();
    s.insert(
        "/echo/unary",
        vec![
            Step::EchoContentType(vec![("x-initial", "i")], false),
            Step::Data(hello(), false),
            ok(),
        ],
    );
    s.insert(
        "/echo/stream",
        vec![
            Step::EchoContentType(vec![], false),
            Step::Data(hello(), false),
            Step::Sleep(Duration::from_millis(100)),
            Step::Data(frame(0, b"world!"), false),
            ok(),
        ],
    );
    s.insert(
        "/echo/trailers-only",
        vec![Step::EchoContentType(
            vec![("grpc-status", "5"), ("grpc-message", "not found")],
            true,
        )],
    );
    // A server that answers plain gRPC whatever it was asked (grpcio does).
    s.insert(
        "/plain-reply",
        vec![
            Step::Headers(200, vec![("content-type", "application/grpc")], false),
            Step::Data(hello(), false),
            ok(),
        ],
    );
    Arc::new(s)
}

/// What a client can tell of a reply: HTTP status, content-type, the
/// server's account of what it got, status, message, metadata, body.
fn seen(r: &Received) -> Result<BTreeMap<&'static str, String>> {
    ensure!(r.error.is_none(), "stream failed: {:?}", r.error);
    let header = |name| {
        r.headers
            .get(name)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned())
            .unwrap_or_default()
    };
    let field = |name| r.field(name).unwrap_or_default().to_string();
    Ok(BTreeMap::from([
        ("http", r.status.to_string()),
        ("content-type", header("content-type")),
        ("x-seen-content-type", header("x-seen-content-type")),
        ("x-initial", header("x-initial")),
        ("grpc-status", field("grpc-status")),
        ("grpc-message", r.grpc_message()),
        ("x-trailer", field("x-trailer")),
        ("body", format!("{:?}", r.body)),
    ]))
}

fn subtype_trials(
    runtime: &Arc<tokio::runtime::Runtime>,
    chain: &Arc<Topology>,
    server: std::net::SocketAddr,
    trials: &mut Vec<Trial>,
) {
    for path in [
        "/echo/unary",
        "/echo/stream",
        "/echo/trailers-only",
        "/plain-reply",
    ] {
        for content_type in CONTENT_TYPES {
            let name = format!(
                "subtype::{}_with_{content_type}_is_as_straight_to_the_server",
                path.trim_start_matches('/').replace(['/', '-'], "_")
            );
            trials.push(trial(name, runtime, chain, move |t| async move {
                let headers = [("content-type", content_type)];
                let body = frame(0, b"ping");
                let straight = seen(&h2_call(server, path, &headers, &body).await?)?;
                let through = seen(&h2_call(t.edge, path, &headers, &body).await?)?;
                ensure!(
                    straight == through,
                    "straight: {straight:#?}\nthrough the chain: {through:#?}"
                );
                // And what that is, so both cannot be wrong alike.
                let answered = match path {
                    "/plain-reply" => "application/grpc",
                    _ => content_type,
                };
                ensure!(through["content-type"] == answered, "{through:#?}");
                if path != "/plain-reply" {
                    ensure!(through["x-seen-content-type"] == content_type);
                }
                let status = if path == "/echo/trailers-only" {
                    "5"
                } else {
                    "0"
                };
                ensure!(through["grpc-status"] == status, "{through:#?}");
                normal_call(&t).await
            }));
        }
    }
    trials.push(trial(
        "subtype::parameters_are_dropped_and_the_subtype_kept".into(),
        runtime,
        chain,
        |t| async move {
            let headers = [("content-type", "application/grpc+json; charset=utf-8")];
            let r = h2_call(t.edge, "/echo/unary", &headers, &frame(0, b"ping")).await?;
            let through = seen(&r)?;
            ensure!(through["x-seen-content-type"] == "application/grpc+json");
            ensure!(through["content-type"] == "application/grpc+json");
            ensure!(through["grpc-status"] == "0", "{through:#?}");
            Ok(())
        },
    ));
}

fn malformed_trials(
    runtime: &Arc<tokio::runtime::Runtime>,
    chain: &Arc<Topology>,
    trials: &mut Vec<Trial>,
) {
    // One trial, the cases in turn: the counter's delta is exact only
    // while no other trial sends a malformed content type.
    trials.push(trial(
        "malformed::each_is_refused_at_the_edge_and_counted".into(),
        runtime,
        chain,
        |t| async move {
            let cases = [
                "application/grpc+",
                "application/grpc+a/b",
                "application/grpc-webby",
            ];
            let before = edge_counter(&t);
            for content_type in cases {
                let headers = [("content-type", content_type)];
                let r = h2_call(t.edge, "/echo/unary", &headers, &frame(0, b"ping")).await?;
                let through = seen(&r)?;
                ensure!(through["grpc-status"] == "13", "{content_type}: {through:#?}");
                ensure!(
                    through["grpc-message"]
                        == format!(
                            "grpc-web-bridge: client sent a malformed gRPC content-type {content_type:?}"
                        ),
                    "{through:#?}"
                );
                ensure!(through["content-type"] == "application/grpc");
                // The server never saw it.
                ensure!(through["x-seen-content-type"].is_empty(), "{through:#?}");
                ensure!(r.body.is_empty(), "body {:?}", r.body);
                normal_call(&t).await?;
            }
            let counted = edge_counter(&t) - before;
            ensure!(counted == cases.len() as u64, "counted {counted}");
            Ok(())
        },
    ));
}

fn edge_counter(t: &Topology) -> u64 {
    Topology::counter(
        t.edge_admin,
        "wasmcustom.grpc_web_bridge.edge.errors.downstream.malformed_content_type",
    )
}

/// An ordinary proto call through the same Envoys (each server here
/// answers `/echo/unary` or UnaryCall).
async fn normal_call(t: &Topology) -> Result<()> {
    let r = h2_call(t.edge, "/echo/unary", &[], &frame(0, b"")).await?;
    let through = seen(&r).context("the next normal call on the same Envoys")?;
    ensure!(
        through["grpc-status"] == "0",
        "next normal call: {through:#?}"
    );
    Ok(())
}

/// Runs the connect-node JSON client against `url`: case → what it saw.
fn connect_json(url: &str) -> Result<BTreeMap<String, Value>> {
    let output = std::process::Command::new("node")
        .arg(topology::repo_root().join("tests/peers/node/connect_json.mjs"))
        .args(["client", url])
        .output()
        .context("running node")?;
    ensure!(
        output.status.success(),
        "connect_json.mjs client failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut cases = BTreeMap::new();
    for line in String::from_utf8(output.stdout)?.lines() {
        let value: Value = serde_json::from_str(line).with_context(|| line.to_string())?;
        let name = value["case"].as_str().context("no case")?.to_string();
        cases.insert(name, value);
    }
    Ok(cases)
}

/// What each JSON case must give: status, message, content-type, messages.
fn expected_json(case: &str) -> (&'static str, &'static str, Value, Value) {
    let json = Value::from("application/grpc+json");
    match case {
        "unary" => ("OK", "", json, serde_json::json!([10])),
        "server_stream_spaced" => ("OK", "", json, serde_json::json!([8, 16, 24])),
        "error_after_messages" => (
            "FAILED_PRECONDITION",
            "late: \u{263a}",
            json,
            serde_json::json!([8]),
        ),
        "error_with_metadata" => (
            "PERMISSION_DENIED",
            "denied: \u{263a}",
            Value::Null,
            serde_json::json!([]),
        ),
        "unimplemented_method" => (
            "UNIMPLEMENTED",
            "grpc.testing.TestService.UnimplementedCall is not implemented",
            Value::Null,
            serde_json::json!([]),
        ),
        _ => ("?", "", Value::Null, Value::Null),
    }
}

fn json_trial(chain: &Arc<Topology>, server: std::net::SocketAddr) -> Trial {
    let chain = chain.clone();
    Trial::test(
        "json_codec::connect_node_grpc_json_through_the_chain_as_straight",
        move || {
            let check = || -> Result<()> {
                let straight = connect_json(&format!("http://{server}"))?;
                let through = connect_json(&format!("http://{}", chain.edge))?;
                ensure!(straight.len() == 5, "cases run: {straight:?}");
                for (case, mut straight) in straight {
                    let mut through = through.get(&case).cloned().context("case missing")?;
                    let (status, message, content_type, messages) = expected_json(&case);
                    ensure!(through["status"] == status, "{case}: {through}");
                    ensure!(through["message"] == message, "{case}: {through}");
                    ensure!(through["content_type"] == content_type, "{case}: {through}");
                    ensure!(through["messages"] == messages, "{case}: {through}");
                    if case == "unary" || case == "server_stream_spaced" {
                        // The server got gRPC with JSON, not gRPC-web (which
                        // connect-node would also serve).
                        ensure!(
                            through["seen_content_type"] == "application/grpc+json",
                            "{case}: {through}"
                        );
                        ensure!(through["initial"] == "initial", "{case}: {through}");
                        ensure!(through["trailing"] == "AAH+", "{case}: {through}");
                    }
                    if case == "server_stream_spaced" {
                        // Each message as it comes, 100 ms apart: none held.
                        let at: Vec<u64> = through["ms_to_messages"]
                            .as_array()
                            .context("no times")?
                            .iter()
                            .filter_map(Value::as_u64)
                            .collect();
                        ensure!(
                            at.windows(2).all(|w| w[1] >= w[0] + 50),
                            "{case}: messages bunched {at:?}"
                        );
                    }
                    for side in [&mut straight, &mut through] {
                        side["ms_to_messages"] = Value::Null;
                    }
                    ensure!(
                        straight == through,
                        "{case}: straight {straight}\nthrough the chain {through}"
                    );
                }
                Ok(())
            };
            check().map_err(|e| format!("{e:#}\n{}", chain.logs()).into())
        },
    )
}

fn main() -> Result<()> {
    let args = Arguments::from_args();
    let runtime = runtime();
    let mut trials = Vec::new();

    let scripted = runtime.block_on(h2_server(echo_scripts()))?;
    let chain = Arc::new(Topology::start(Hop::Nginx, Upstream::Server(scripted))?);
    subtype_trials(&runtime, &chain, scripted, &mut trials);
    malformed_trials(&runtime, &chain, &mut trials);

    let mut node = std::process::Command::new("node");
    node.arg(topology::repo_root().join("tests/peers/node/connect_json.mjs"))
        .arg("server");
    let connect = listening_peer("connect-node server", &mut node)?;
    let json_chain = Arc::new(Topology::start(
        Hop::Nginx,
        Upstream::Server(connect.address),
    )?);
    trials.push(json_trial(&json_chain, connect.address));

    let conclusion = libtest_mimic::run(&args, trials);
    for topology in [&chain, &json_chain] {
        let logs = topology.logs();
        for sign in ["panic", "Uncaught", "RuntimeError", "VM failed"] {
            ensure!(!logs.contains(sign), "Envoy logs show {sign:?}:\n{logs}");
        }
    }
    drop(connect);
    conclusion.exit()
}
