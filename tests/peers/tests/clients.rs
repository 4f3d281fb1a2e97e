//! Real client libraries, in one run, each side by side with a reference:
//! gRPC-web clients (`tests/peers/python/web_clients.py`) against the
//! browser-mode origin and against the same Envoy with only its own
//! gRPC-web filter; native gRPC clients (`tests/peers/node`, grpc-js)
//! through edge → nginx → origin and straight to the server. Each client
//! reports what it saw; this test checks it is right per the protocol, and
//! that every case right with the reference is right with the bridge.
//!
//! `CLIENTS_MATRIX=docs/clients.md cargo test -p bridge-peers --release
//! --test clients` also writes the matrix.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{interop_server, python_script, runtime};
use bridge_peers::topology::{self, Hop, Topology, Upstream, remove_bridge};
use serde_json::Value;

/// What each case must give: status, message sizes.
fn expected(case: &str) -> (&'static str, Value) {
    match case {
        "client_streaming" => ("OK", serde_json::json!([74922])),
        "ping_pong" => ("OK", serde_json::json!([31415, 9, 2653, 58979])),
        "cancel_mid_stream" => ("CANCELLED", serde_json::json!([8])),
        "unary" => ("OK", serde_json::json!([10])),
        "server_stream_spaced" => ("OK", serde_json::json!([8, 8, 8])),
        "empty_stream" => ("OK", serde_json::json!([])),
        "error_with_metadata" => ("PERMISSION_DENIED", serde_json::json!([])),
        "large_message_1mib" => ("OK", serde_json::json!([1048576])),
        "deadline_while_server_sleeps" => ("DEADLINE_EXCEEDED", serde_json::json!([])),
        _ => ("?", Value::Null),
    }
}

type Results = BTreeMap<(String, String), Value>;

/// The gRPC-web clients (Python) against a gRPC-web endpoint.
fn run_web_clients(target: std::net::SocketAddr) -> Result<Results> {
    let output = python_script("web_clients.py")
        .arg(format!("http://{target}"))
        .output()
        .context("running the Python gRPC-web clients")?;
    parse(output)
}

/// A Node client script of tests/peers/node with its arguments.
fn run_node(script: &str, args: &[String]) -> Result<Results> {
    let output = std::process::Command::new("node")
        .arg(topology::repo_root().join("tests/peers/node").join(script))
        .args(args)
        .output()
        .with_context(|| format!("running {script}"))?;
    parse(output)
}

/// The gRPC-web clients of Node (connect-node, HTTP/1.1 and HTTP/2).
fn run_node_web_clients(target: std::net::SocketAddr) -> Result<Results> {
    let mut results = Results::new();
    for protocol in ["grpc-web-http1", "grpc-web-http2"] {
        results.extend(run_node(
            "connect_client.mjs",
            &[format!("http://{target}"), protocol.into()],
        )?);
    }
    Ok(results)
}

/// The native gRPC clients (grpc-js, connect-node) against a gRPC endpoint.
fn run_native_clients(target: std::net::SocketAddr) -> Result<Results> {
    let mut results = run_node("grpc_js_client.js", &[target.to_string()])?;
    results.extend(run_node(
        "connect_client.mjs",
        &[format!("http://{target}"), "grpc".into()],
    )?);
    Ok(results)
}

fn parse(output: std::process::Output) -> Result<Results> {
    ensure!(
        output.status.success(),
        "clients failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    let mut results = BTreeMap::new();
    for line in String::from_utf8_lossy(&output.stdout).lines() {
        let value: Value = serde_json::from_str(line)?;
        let key = (
            value["client"].as_str().unwrap_or("").to_string(),
            value["case"].as_str().unwrap_or("").to_string(),
        );
        results.insert(key, value);
    }
    Ok(results)
}

fn correct(case: &str, result: &Value) -> bool {
    let (status, messages) = expected(case);
    let message_ok = case != "error_with_metadata" || result["message"] == "denied: ☺";
    // The Node clients report trailing metadata: the echo must be there.
    let reports_trailing = result["client"]
        .as_str()
        .is_some_and(|c| c.starts_with("grpc-js") || c.starts_with("connect-node"));
    let trailing_ok = case != "error_with_metadata"
        || !reports_trailing
        || result["trailing"] == serde_json::json!([["x-grpc-test-echo-trailing-bin", "0001feff"]]);
    result["status"] == status && result["messages"] == messages && message_ok && trailing_ok
}

/// "✓ STATUS | ms at which each message arrived" (sonora reports no
/// separate time for the response headers).
fn cell(result: &Value, right: bool) -> String {
    format!(
        "{} {}{} | {}",
        if right { "✓" } else { "✗" },
        result["status"].as_str().unwrap_or("?"),
        if right {
            String::new()
        } else {
            format!(" ({})", result["message"].as_str().unwrap_or(""))
        },
        result["ms_to_messages"]
    )
}

fn main() -> Result<()> {
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let bridge = Topology::start_origin("origin-browsers.yaml", server)?;
    let native = Topology::start_origin_with(
        "origin-browsers.yaml",
        server,
        &topology::wasm_module(),
        remove_bridge,
    )?;
    let chain = Topology::start(Hop::Nginx, Upstream::Server(server))?;
    let mut with_bridge = run_web_clients(bridge.edge)?;
    let mut reference = run_web_clients(native.edge)?;
    with_bridge.extend(run_node_web_clients(bridge.edge)?);
    reference.extend(run_node_web_clients(native.edge)?);
    with_bridge.extend(run_native_clients(chain.edge)?);
    reference.extend(run_native_clients(server)?);
    let mut rows = Vec::new();
    let mut failures = Vec::new();
    for ((client, case), result) in &with_bridge {
        let reference_result = reference
            .get(&(client.clone(), case.clone()))
            .context("the reference run lacks a case")?;
        let (bridge_right, reference_right) =
            (correct(case, result), correct(case, reference_result));
        if !bridge_right && reference_right {
            failures.push(format!(
                "{client} {case}: bridge {result}, reference {reference_result}"
            ));
        }
        if !bridge_right && !reference_right {
            println!("both wrong (a client limit, see docs/clients.md): {client} {case}: {result}");
        }
        rows.push(format!(
            "| {client} | {case} | {} | {} |",
            cell(result, bridge_right),
            cell(reference_result, reference_right)
        ));
    }
    let table = format!(
        "| client | case | bridge | ms to each message | reference | ms to each message |\n\
         |---|---|---|---|---|---|\n{}\n",
        rows.join("\n")
    );
    println!("{table}");
    if let Ok(path) = std::env::var("CLIENTS_MATRIX") {
        // Relative to the repository (cargo runs tests in the package's folder).
        let path = topology::repo_root().join(path);
        let doc = std::fs::read_to_string(&path).unwrap_or_default();
        let head = doc
            .split("<!-- matrix -->")
            .next()
            .unwrap_or("")
            .to_string();
        std::fs::write(&path, format!("{head}<!-- matrix -->\n\n{table}"))?;
    }
    let cases = with_bridge.len();
    ensure!(cases >= 12, "only {cases} client cases ran");
    ensure!(
        failures.is_empty(),
        "cases right with Envoy's filter but wrong with the bridge:\n{}",
        failures.join("\n")
    );
    println!("1 passed, 0 failed");
    Ok(())
}
