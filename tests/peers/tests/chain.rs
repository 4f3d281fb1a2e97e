//! Every interop case through the whole chain (native gRPC client → edge
//! Envoy → nginx over HTTP/1.1 → origin Envoy → interop server), and again
//! with the edge talking to the origin directly over HTTP/1.1 and over
//! HTTP/2. Plus: every Envoy config in the repo passes `envoy --mode validate`.

use std::process::Command;
use std::sync::Arc;

use anyhow::{Result, bail};
use bridge_peers::harness::{
    grpcio_client, grpcio_client_with, grpcio_server, interop_server, runtime, trial,
};
use bridge_peers::interop_client::{
    AWAITING_HEADERS, CASES, NEEDS_REQUEST_COMPRESSION_FLAGS, PROBES,
};
use bridge_peers::topology::{self, Hop, Topology, Upstream};
use libtest_mimic::{Arguments, Trial};

fn validate(name: &'static str) -> Trial {
    Trial::test(format!("envoy_validates::{name}"), move || {
        let text = std::fs::read_to_string(topology::repo_root().join("envoy").join(name))?;
        let local = topology::local_files(&text, &topology::wasm_module())?;
        Ok(topology::envoy_validates(name, &local)?)
    })
}

/// A bad plugin configuration stops Envoy at start-up, and the log names
/// the field.
fn bad_config_fails_the_plugin() -> Trial {
    Trial::test("bad_plugin_config_fails_start_up_naming_the_field", || {
        let ports = bridge_peers::graph::Graph::load()?
            .ports()
            .into_iter()
            .map(|port| Ok((port, topology::free_port()?)))
            .collect::<Result<_>>()?;
        let config = topology::local_envoy_config(
            &topology::repo_root().join("envoy/edge.yaml"),
            &ports,
            &topology::wasm_module(),
        )?;
        let text = serde_json::to_string(&config)?
            .replace(r#"\"side\": \"edge\""#, r#"\"side\": \"middle\""#);
        if !text.contains("middle") {
            return Err("could not plant the bad side in edge.yaml".into());
        }
        let path = std::env::temp_dir().join(format!("bad-config-{}.json", std::process::id()));
        std::fs::write(&path, text)?;
        let mut child = Command::new(topology::envoy_binary())
            .arg("-c")
            .arg(&path)
            .args(["--disable-hot-restart", "--concurrency", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()?;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
        let status = loop {
            if let Some(status) = child.try_wait()? {
                break status;
            }
            if std::time::Instant::now() > deadline {
                let _ = child.kill();
                return Err("Envoy kept running with a bad plugin configuration".into());
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
        };
        let mut log = String::new();
        std::io::Read::read_to_string(&mut child.stderr.take().ok_or("no stderr")?, &mut log)?;
        let _ = std::fs::remove_file(&path);
        if status.success()
            || !log.contains("invalid configuration: side: unknown variant `middle`")
        {
            return Err(format!("exit {status}; log:\n{log}").into());
        }
        Ok(())
    })
}

/// The edge's TLS (same port, ALPN h2 and http/1.1, the development
/// certificate of scripts/dev-cert.sh): every interop case from tonic and
/// from grpcio over TLS through the whole chain, and a client limited to
/// HTTP/1.1 getting the status as chunked trailers, over TLS and in clear.
fn tls_trials(
    trials: &mut Vec<Trial>,
    runtime: &Arc<tokio::runtime::Runtime>,
    topology: &Arc<Topology>,
) -> Result<()> {
    let ca = topology::repo_root().join("envoy/tls/ca.crt");
    bridge_peers::interop_client::trust(std::fs::read(&ca)?);
    for case in CASES.iter().chain(PROBES) {
        let run = case.run;
        trials.push(trial(
            format!("tls::nginx::{}", case.name),
            runtime,
            topology,
            move |topology| run(format!("https://{}", topology.edge)),
        ));
    }
    let grpcio_ca = ca.clone();
    trials.push(trial(
        "grpcio_client::tls::every_case_to_tonic".into(),
        runtime,
        topology,
        move |topology| async move {
            grpcio_client_with(topology.edge, 1, Some(&grpcio_ca))
                .await
                .map(drop)
        },
    ));
    for scheme in ["https", "http"] {
        let ca = ca.clone();
        trials.push(trial(
            format!("tls::http1_only_client_gets_its_status_as_trailers_over_{scheme}"),
            runtime,
            topology,
            move |topology| async move { http1_only_call(scheme, topology.edge, &ca).await },
        ));
    }
    Ok(())
}

/// A unary call from curl limited to HTTP/1.1: it must negotiate HTTP/1.1,
/// end by itself, and see grpc-status 0 in the chunked trailers.
async fn http1_only_call(
    scheme: &str,
    edge: std::net::SocketAddr,
    ca: &std::path::Path,
) -> Result<()> {
    let url = format!("{scheme}://{edge}/grpc.testing.TestService/EmptyCall");
    // An empty message: flag 0, length 0.
    let body = std::env::temp_dir().join(format!("empty-call-{}-{scheme}", std::process::id()));
    std::fs::write(&body, [0u8; 5])?;
    let output = tokio::process::Command::new("curl")
        .args(["-sS", "--http1.1", "--raw", "--max-time", "10", "--cacert"])
        .arg(ca)
        .args(["-H", "content-type: application/grpc", "-H", "te: trailers"])
        .arg("--data-binary")
        .arg(format!("@{}", body.display()))
        .args(["-w", "\nhttp_version=%{http_version}"])
        .arg(&url)
        .kill_on_drop(true)
        .output()
        .await;
    let _ = std::fs::remove_file(&body);
    let output = output?;
    let text = String::from_utf8_lossy(&output.stdout);
    if !output.status.success()
        || !text.contains("http_version=1.1")
        || !text.to_ascii_lowercase().contains("grpc-status: 0")
    {
        bail!(
            "curl --http1.1 {url}: {}\n{text}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(())
}

fn envoy_configs() -> Result<Vec<&'static str>> {
    let mut names = Vec::new();
    for entry in std::fs::read_dir(topology::repo_root().join("envoy"))? {
        let name = entry?.file_name().to_string_lossy().into_owned();
        // The native build's configs need Envoy 1.40's dynamic-module ABI.
        let native_only = name.ends_with("-native.yaml") && topology::envoy_version() < (1, 40);
        if name.ends_with(".yaml") && !name.starts_with("docker-compose") && !native_only {
            names.push(&*Box::leak(name.into_boxed_str()));
        }
    }
    if names.is_empty() {
        bail!("no Envoy configs found");
    }
    names.sort();
    Ok(names)
}

fn main() -> Result<()> {
    let args = Arguments::from_args();
    let runtime = runtime();
    let server = interop_server(&runtime)?;
    let mut trials: Vec<Trial> = envoy_configs()?.into_iter().map(validate).collect();
    trials.push(bad_config_fails_the_plugin());
    for (label, hop) in [
        ("nginx", Hop::Nginx),
        ("direct_http1", Hop::DirectHttp1),
        ("direct_http2", Hop::DirectHttp2),
    ] {
        let topology = Arc::new(Topology::start(hop, Upstream::Server(server))?);
        for case in CASES.iter().chain(PROBES) {
            let run = case.run;
            trials.push(trial(
                format!("{label}::{}", case.name),
                &runtime,
                &topology,
                move |topology| run(format!("http://{}", topology.edge)),
            ));
        }
        if hop == Hop::Nginx {
            let run = AWAITING_HEADERS.run;
            trials.push(trial(
                format!("{label}::{}", AWAITING_HEADERS.name),
                &runtime,
                &topology,
                move |topology| run(format!("http://{}", topology.edge)),
            ));
            trials.push(trial(
                "grpcio_client::nginx::every_case_to_tonic".into(),
                &runtime,
                &topology,
                |topology| async move { grpcio_client(topology.edge, 1).await.map(drop) },
            ));
            tls_trials(&mut trials, &runtime, &topology)?;
        }
    }

    // A second, independent server: grpcio sends no response headers before
    // its first message, so a client that waits for them would hang.
    let grpcio = grpcio_server()?;
    let direct = Arc::new(Topology::start(
        Hop::Nginx,
        Upstream::Server(grpcio.address),
    )?);
    let cases = || {
        CASES
            .iter()
            .chain(PROBES)
            .filter(|case| !NEEDS_REQUEST_COMPRESSION_FLAGS.contains(&case.name))
    };
    for case in cases() {
        let run = case.run;
        let address = grpcio.address;
        trials.push(trial(
            format!("grpcio_server::direct::{}", case.name),
            &runtime,
            &direct,
            move |_| run(format!("http://{address}")),
        ));
        trials.push(trial(
            format!("grpcio_server::nginx::{}", case.name),
            &runtime,
            &direct,
            move |topology| run(format!("http://{}", topology.edge)),
        ));
    }
    trials.push(trial(
        "grpcio_client::nginx::every_case_to_grpcio".into(),
        &runtime,
        &direct,
        |topology| async move { grpcio_client(topology.edge, 1).await.map(drop) },
    ));
    let conclusion = libtest_mimic::run(&args, trials);
    drop((direct, grpcio));
    conclusion.exit();
}
