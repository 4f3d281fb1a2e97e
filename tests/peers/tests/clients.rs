//! Real client libraries, in one run, each side by side with a reference:
//! gRPC-web clients (sonora in `tests/peers/python/web_clients.py`;
//! grpc-web, connect-web and improbable in Chromium and grpc-web and
//! connect-node in Node, `tests/peers/node`) against the browser-mode
//! origin and against the same Envoy with only its own gRPC-web filter;
//! native gRPC clients (grpc-js, connect-node) through edge → nginx →
//! origin and straight to the server. Each client reports what it saw;
//! this test checks it is right per the protocol, that every case right
//! with the reference is right with the bridge, and that no client sees
//! the response headers later through the bridge than through the
//! reference.
//!
//! `CLIENTS_MATRIX=docs/clients.md cargo test -p bridge-peers --release
//! --test clients` also writes the matrix.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use bridge_peers::harness::{grpcio_server, interop_server, python_script, runtime};
use bridge_peers::raw::{Scripts, Step, h2_server};
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
        "deadline_while_server_sleeps" | "deadline_while_server_is_silent" => {
            ("DEADLINE_EXCEEDED", serde_json::json!([]))
        }
        _ => ("?", Value::Null),
    }
}

type Results = BTreeMap<(String, String), Value>;

/// A server that reads the request and then says nothing for longer than
/// any case waits (each client script bounds a case at 10 s).
fn silent_scripts() -> Scripts {
    let mut scripts = HashMap::new();
    scripts.insert(
        "/grpc.testing.TestService/StreamingOutputCall",
        vec![Step::Sleep(Duration::from_secs(12))],
    );
    Arc::new(scripts)
}

/// Every client the matrix must hold, as the scripts name them.
const CLIENTS: [&str; 16] = [
    "sonora",
    "sonora-asyncio",
    "connect-node (grpc-web-http1)",
    "connect-node (grpc-web-http2)",
    "grpc-web (binary) in Node (xhr2)",
    "grpc-web (text) in Node (xhr2)",
    "grpc-web (binary) in Chromium",
    "grpc-web (text) in Chromium",
    "connect-web (grpc-web) in Chromium",
    "improbable-eng/grpc-web in Chromium",
    "grpc-js",
    "connect-node (grpc)",
    "grpcio",
    "sonora → grpcio server",
    "grpc-web (text) in Node (xhr2) → grpcio server",
    "connect-node (grpc-web-http2) → grpcio server",
];

/// Runs a client script, limited to one case when `only` names it
/// (`CLIENT_CASES`, which every script reads).
fn run(mut command: std::process::Command, only: Option<&str>) -> Result<Results> {
    if let Some(case) = only {
        command.env("CLIENT_CASES", case);
    }
    let started = std::time::Instant::now();
    let output = command
        .output()
        .with_context(|| format!("running {command:?}"))?;
    println!(
        "ran {:?} {:?} in {:.1} s",
        command.get_program(),
        command.get_args().collect::<Vec<_>>(),
        started.elapsed().as_secs_f64()
    );
    parse(output)
}

/// A Node client script of tests/peers/node with its arguments.
fn node(script: &str, args: &[&str]) -> std::process::Command {
    let mut command = std::process::Command::new("node");
    command
        .arg(topology::repo_root().join("tests/peers/node").join(script))
        .args(args);
    command
}

/// The gRPC-web clients against a gRPC-web endpoint: sonora (sync,
/// asyncio), grpc-web over xhr2 and connect-node (HTTP/1.1, HTTP/2) in
/// Node, and with `browser` grpc-web, connect-web and improbable in
/// Chromium.
fn run_web_clients(
    target: std::net::SocketAddr,
    browser: bool,
    only: Option<&str>,
) -> Result<Results> {
    let url = format!("http://{target}");
    let mut sonora = python_script("web_clients.py");
    sonora.arg(&url);
    let mut results = run(sonora, only)?;
    results.extend(run(node("grpc_web_node_client.mjs", &[&url]), only)?);
    for protocol in ["grpc-web-http1", "grpc-web-http2"] {
        results.extend(run(node("connect_client.mjs", &[&url, protocol]), only)?);
    }
    if browser {
        results.extend(run(node("browser_clients.mjs", &[&url]), only)?);
    }
    Ok(results)
}

/// The native gRPC clients (grpc-js, connect-node, grpcio) against a gRPC
/// endpoint.
fn run_native_clients(target: std::net::SocketAddr) -> Result<Results> {
    let address = target.to_string();
    let mut results = run(node("grpc_js_client.js", &[&address]), None)?;
    let mut grpcio = python_script("web_clients.py");
    grpcio.args(["--grpcio", &address]);
    results.extend(run(grpcio, None)?);
    let url = format!("http://{target}");
    results.extend(run(node("connect_client.mjs", &[&url, "grpc"]), None)?);
    Ok(results)
}

/// Renames each result's client (a suffix) or case (a new name), so runs
/// against another server sit beside the others in the matrix.
fn renamed(results: Results, client_suffix: &str, case: Option<&str>) -> Results {
    results
        .into_iter()
        .map(|((client, old_case), mut value)| {
            let client = format!("{client}{client_suffix}");
            let case = case.map_or(old_case, str::to_string);
            value["client"] = Value::from(client.clone());
            value["case"] = Value::from(case.clone());
            ((client, case), value)
        })
        .collect()
}

fn parse(output: std::process::Output) -> Result<Results> {
    ensure!(
        output.status.success(),
        "clients failed ({}): {}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr),
        String::from_utf8_lossy(&output.stdout)
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
    // The JavaScript clients report trailing metadata: the echo must be there.
    let reports_trailing = result["client"].as_str().is_some_and(|c| {
        ["grpc-js", "connect", "grpc-web", "improbable", "grpcio"]
            .iter()
            .any(|name| c.starts_with(name))
    });
    let trailing_ok = case != "error_with_metadata"
        || !reports_trailing
        || result["trailing"] == serde_json::json!([["x-grpc-test-echo-trailing-bin", "0001feff"]]);
    result["status"] == status && result["messages"] == messages && message_ok && trailing_ok
}

/// Whether a client saw the response headers of the spaced stream well
/// before its first message (the server sends them at once, the message
/// 100 ms later): the headers were not held back for the message.
fn headers_early(case: &str, result: &Value) -> Option<bool> {
    if case != "server_stream_spaced" {
        return None;
    }
    let headers = result["ms_to_headers"].as_f64()?;
    let first = result["ms_to_messages"].get(0)?.as_f64()?;
    Some(headers + 50.0 < first)
}

/// "✓ STATUS | ms to the headers | ms at which each message arrived"
/// (sonora reports no separate time for the response headers).
fn cell(result: &Value, right: bool) -> String {
    let headers = result["ms_to_headers"]
        .as_f64()
        .map_or("–".to_string(), |ms| format!("{ms}"));
    format!(
        "{} {}{} | {headers} | {}",
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
    let module = topology::wasm_module();
    // Each upstream behind an origin pair: the bridge as shipped, and the
    // same Envoy with Envoy's gRPC-web filter alone.
    let origins = |upstream| -> Result<[Topology; 2]> {
        Ok([
            Topology::start_origin_with("origin-browsers.yaml", upstream, &module, |_| Ok(()))?,
            Topology::start_origin_with("origin-browsers.yaml", upstream, &module, remove_bridge)?,
        ])
    };
    let mut with_bridge = run_web_clients(bridge.edge, true, None)?;
    let mut reference = run_web_clients(native.edge, true, None)?;
    with_bridge.extend(run_native_clients(chain.edge)?);
    reference.extend(run_native_clients(server)?);
    // The gRPC-web clients again, with grpcio as the server behind the origin.
    let grpcio = grpcio_server()?;
    let [bridge_to_grpcio, native_to_grpcio] = origins(grpcio.address)?;
    let suffix = " → grpcio server";
    with_bridge.extend(renamed(
        run_web_clients(bridge_to_grpcio.edge, false, None)?,
        suffix,
        None,
    ));
    reference.extend(renamed(
        run_web_clients(native_to_grpcio.edge, false, None)?,
        suffix,
        None,
    ));
    // The deadline case against a server that ignores deadlines and stays
    // silent: only a proxy that enforces the deadline answers in time.
    let silent = runtime.block_on(h2_server(silent_scripts()))?;
    let [bridge_to_silent, native_to_silent] = origins(silent)?;
    let deadline = Some("deadline_while_server_sleeps");
    let silent_case = Some("deadline_while_server_is_silent");
    with_bridge.extend(renamed(
        run_web_clients(bridge_to_silent.edge, true, deadline)?,
        "",
        silent_case,
    ));
    reference.extend(renamed(
        run_web_clients(native_to_silent.edge, true, deadline)?,
        "",
        silent_case,
    ));
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
        if headers_early(case, reference_result) == Some(true)
            && headers_early(case, result) != Some(true)
        {
            failures.push(format!(
                "{client} {case}: the reference gave the headers before the first message, the bridge did not: \
                 bridge {result}, reference {reference_result}"
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
        "| client | case | bridge | ms to headers | ms to each message | reference | ms to headers | ms to each message |\n\
         |---|---|---|---|---|---|---|---|\n{}\n",
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
    for client in CLIENTS {
        let ran = with_bridge.keys().filter(|(c, _)| c == client).count();
        ensure!(ran >= 6, "{client}: {ran} cases ran");
    }
    ensure!(
        failures.is_empty(),
        "cases right with Envoy's filter but wrong with the bridge:\n{}",
        failures.join("\n")
    );
    println!("1 passed, 0 failed");
    Ok(())
}
