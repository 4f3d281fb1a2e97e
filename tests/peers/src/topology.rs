//! Runs the edge → hop → origin topology as local processes on 127.0.0.1.
//! The process list, their configs and the hop order come from
//! `envoy/docker-compose.yaml` ([`Graph`]): every `socket_address` and nginx
//! address is moved to loopback and each fixed port is mapped to a free
//! ephemeral one.

use std::collections::HashMap;
use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use serde_json::Value;

use crate::graph::{Graph, Service};

/// How the edge reaches the origin.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hop {
    /// Through nginx over HTTP/1.1: trailers are dropped on the way.
    Nginx,
    /// Edge straight to origin over HTTP/1.1.
    DirectHttp1,
    /// Edge straight to origin over HTTP/2.
    DirectHttp2,
    /// Edge straight to origin over HTTP/2 with the bridge filter removed
    /// from both Envoys: the cost of the proxies alone, for benchmarks.
    PlainHttp2,
}

/// Where the last hop goes.
#[derive(Debug, Clone, Copy)]
pub enum Upstream {
    /// The origin's upstream is this native gRPC server (HTTP/2).
    Server(SocketAddr),
    /// No origin at all: the edge's upstream is this gRPC-web (HTTP/1.1) server.
    EdgeOnly(SocketAddr),
}

pub fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap_or_default()
}

pub fn envoy_binary() -> PathBuf {
    std::env::var_os("ENVOY_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".tools/bin/envoy"))
}

pub fn wasm_module() -> PathBuf {
    repo_root().join("dist/grpc_web_bridge.wasm")
}

/// The project's no-op Wasm filter (`make bench` builds it): the
/// benchmarks' reference for what any Wasm filter costs.
pub fn noop_module() -> PathBuf {
    repo_root().join("target/wasm32-wasip1/wasm/noop_filter.wasm")
}

/// The native build `make build` puts in dist/native/; a topology started
/// with it loads it as an Envoy dynamic module, whatever BRIDGE_BUILD says.
pub fn native_module() -> PathBuf {
    native_module_dir().join("libgrpc_web_bridge.so")
}

/// Where a topology loading `module` finds the native build, if it loads it.
fn native_dir_for(module: &Path) -> Option<PathBuf> {
    match module.extension().is_some_and(|ext| ext == "so") {
        true => module.parent().map(Path::to_path_buf),
        false => native_build().then(native_module_dir),
    }
}

/// A port no one listens on right now, below the kernel's ephemeral range.
/// A port the kernel handed out (bind to port 0) goes back to that range
/// when the probe closes, and an outgoing connection of any process may take
/// it before Envoy binds it ("Address already in use", seen in CI); ports
/// below the range are never handed out, so only listeners compete.
pub fn free_port() -> Result<u16> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    // Handed out by this process: not yet bound, so not seen by the probe.
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let (low, high) = ephemeral_range();
    let span = u64::from(low.saturating_sub(FIRST_PORT)).max(1);
    let seed = u64::from(std::process::id()).wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
    for _ in 0..1000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let mixed = (seed ^ n.wrapping_mul(0xBF58_476D_1CE4_E5B9)).rotate_left(17);
        let port = FIRST_PORT + (mixed % span) as u16;
        let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
        if port < low && !given.contains(&port) && TcpListener::bind(("127.0.0.1", port)).is_ok() {
            given.push(port);
            return Ok(port);
        }
    }
    bail!("no free port in {FIRST_PORT}..{low} (ephemeral range {low}-{high})")
}

/// The lowest port [`free_port`] hands out.
const FIRST_PORT: u16 = 10000;

/// The kernel's ephemeral port range (Linux's default if unreadable).
fn ephemeral_range() -> (u16, u16) {
    std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|text| {
            let mut parts = text.split_whitespace().map(|p| p.parse::<u16>().ok());
            Some((parts.next()??, parts.next()??))
        })
        .unwrap_or((32768, 60999))
}

/// A running topology; dropping it stops every process it started.
pub struct Topology {
    pub edge: SocketAddr,
    pub origin: Option<SocketAddr>,
    pub edge_admin: SocketAddr,
    pub origin_admin: Option<SocketAddr>,
    pub dir: PathBuf,
    /// What was started: (compose service name, the repository config it runs).
    pub processes: Vec<(String, PathBuf)>,
    children: Vec<(String, Child)>,
    /// Where the Envoys find the native build, when they load it.
    native_dir: Option<PathBuf>,
}

/// Moves every socket address to loopback and maps its port.
fn localize(value: &mut Value, ports: &HashMap<u16, u16>) -> Result<()> {
    match value {
        Value::Object(map) => {
            if let Some(Value::Object(socket)) = map.get_mut("socket_address") {
                let port = socket
                    .get("port_value")
                    .and_then(Value::as_u64)
                    .context("socket_address without port")?;
                let mapped = ports
                    .get(&(port as u16))
                    .with_context(|| format!("no mapping for port {port}"))?;
                socket.insert("address".into(), "127.0.0.1".into());
                socket.insert("port_value".into(), (*mapped).into());
            }
            for child in map.values_mut() {
                localize(child, ports)?;
            }
        }
        Value::Array(items) => {
            for item in items {
                localize(item, ports)?;
            }
        }
        _ => {}
    }
    Ok(())
}

/// Reads an Envoy config, localized, loading `module`.
pub fn local_envoy_config(path: &Path, ports: &HashMap<u16, u16>, module: &Path) -> Result<Value> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let mut config: Value = serde_yaml::from_str(&text)?;
    localize(&mut config, ports)?;
    Ok(serde_json::from_str(&local_files(
        &serde_json::to_string(&config)?,
        module,
    )?)?)
}

/// An Envoy config's container paths (the module, the edge's certificate)
/// moved to this checkout's files, and made loadable by the Envoy under
/// test (see [`envoy_limits_header_fields`]).
pub fn local_files(config: &str, module: &Path) -> Result<String> {
    let certificates = repo_root().join("envoy/tls");
    if config.contains("/etc/envoy/tls/") && !certificates.join("tls.crt").exists() {
        bail!("envoy/tls/tls.crt is missing: run `make build` (scripts/dev-cert.sh)");
    }
    let mut config = config
        .replace("/etc/envoy/grpc_web_bridge.wasm", &module.to_string_lossy())
        .replace("/etc/envoy/tls/", &format!("{}/", certificates.display()));
    if !envoy_limits_header_fields() {
        for setting in [
            "\"max_header_field_size_kb\":256",
            "max_header_field_size_kb: 256",
        ] {
            config = config.replace(setting, "");
        }
    }
    Ok(config)
}

/// The Envoy under test's version, (major, minor), from `envoy --version`.
pub fn envoy_version() -> (u32, u32) {
    static VERSION: std::sync::OnceLock<(u32, u32)> = std::sync::OnceLock::new();
    *VERSION.get_or_init(|| {
        let output = Command::new(envoy_binary()).arg("--version").output();
        let text = output.map(|o| String::from_utf8_lossy(&o.stdout).into_owned());
        // "envoy  version: <sha>/1.36.4/Clean/RELEASE/BoringSSL"
        let text = text.unwrap_or_default();
        let version = text.split("version:").nth(1).unwrap_or_default();
        let mut numbers = version
            .split('/')
            .nth(1)
            .unwrap_or_default()
            .split('.')
            .map(|n| n.parse().unwrap_or(0));
        (numbers.next().unwrap_or(0), numbers.next().unwrap_or(0))
    })
}

/// Whether the Envoy under test has `max_header_field_size_kb` (1.38 on),
/// which the shipped origin configs set so that one trailer field may
/// exceed 64 KiB; on older lines the setting is dropped from them.
pub fn envoy_limits_header_fields() -> bool {
    envoy_version() >= (1, 38)
}

/// Runs `envoy --mode validate` on `config` (YAML or JSON text); the
/// error is Envoy's.
pub fn envoy_validates(name: &str, config: &str) -> Result<()> {
    let path = std::env::temp_dir().join(format!("validate-{}-{name}", std::process::id()));
    std::fs::write(&path, config)?;
    let output = Command::new(envoy_binary())
        .args(["--mode", "validate", "-c"])
        .arg(&path)
        .env("ENVOY_DYNAMIC_MODULES_SEARCH_PATH", native_module_dir())
        .output();
    let _ = std::fs::remove_file(&path);
    let output = output?;
    ensure!(
        output.status.success(),
        "{name}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

/// Whether the suites run the native build of the bridge (`BRIDGE_BUILD=native`):
/// every Envoy config's bridge filter becomes the dynamic module, with the
/// same plugin configuration.
pub fn native_build() -> bool {
    std::env::var("BRIDGE_BUILD").is_ok_and(|build| build == "native")
}

/// Where `make build` puts the native module (`libgrpc_web_bridge.so`).
pub fn native_module_dir() -> PathBuf {
    std::env::var_os("BRIDGE_NATIVE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("dist/native"))
}

/// Replaces, in every filter chain, the Wasm filter that loads the bridge
/// with the dynamic module loading its native build, with the same JSON.
pub fn use_native_module(config: &mut Value) {
    let is_bridge = config["name"] == "envoy.filters.http.wasm"
        && config
            .pointer("/typed_config/config/vm_config/code/local/filename")
            .and_then(Value::as_str)
            .is_some_and(|file| {
                file.ends_with("grpc_web_bridge.wasm") || file.ends_with("libgrpc_web_bridge.so")
            });
    if is_bridge {
        let plugin = config
            .pointer("/typed_config/config/configuration/value")
            .cloned()
            .unwrap_or(Value::Null);
        *config = native_filter(plugin);
        return;
    }
    match config {
        Value::Object(map) => map.values_mut().for_each(use_native_module),
        Value::Array(items) => {
            items.iter_mut().for_each(use_native_module);
        }
        _ => {}
    }
}

/// The bridge as an Envoy dynamic module, with `plugin` (JSON text) as its
/// configuration.
pub fn native_filter(plugin: Value) -> Value {
    serde_json::json!({
        "name": "envoy.filters.http.dynamic_modules",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.dynamic_modules.v3.DynamicModuleFilter",
            "dynamic_module_config": {"name": "grpc_web_bridge"},
            "filter_name": "grpc_web_bridge",
            "filter_config": {"@type": "type.googleapis.com/google.protobuf.StringValue", "value": plugin}
        }
    })
}

/// Sets `field` of the bridge's JSON configuration to `value`, in every
/// filter chain of an Envoy config (before [`use_native_module`], which
/// carries the JSON over).
pub fn set_plugin_field(config: &mut Value, field: &str, value: &Value) -> Result<()> {
    let mut found = 0;
    set_plugin_field_in(config, field, value, &mut found)?;
    ensure!(found > 0, "no bridge filter to configure");
    Ok(())
}

fn set_plugin_field_in(
    config: &mut Value,
    field: &str,
    value: &Value,
    found: &mut usize,
) -> Result<()> {
    let bridge = (config["name"] == "envoy.filters.http.wasm")
        .then(|| config.pointer_mut("/typed_config/config/configuration/value"))
        .flatten();
    if let Some(text) = bridge {
        let mut plugin: Value = serde_json::from_str(text.as_str().unwrap_or_default())?;
        if plugin.get("side").is_some() {
            plugin[field] = value.clone();
            *text = Value::from(plugin.to_string());
            *found += 1;
            return Ok(());
        }
    }
    match config {
        Value::Object(map) => map
            .values_mut()
            .try_for_each(|v| set_plugin_field_in(v, field, value, found)),
        Value::Array(items) => items
            .iter_mut()
            .try_for_each(|v| set_plugin_field_in(v, field, value, found)),
        _ => Ok(()),
    }
}

/// Removes the bridge filter from an Envoy config, in every filter chain
/// (the edge has one for TLS and one for plaintext).
pub fn remove_bridge(config: &mut Value) -> Result<()> {
    let chains = config
        .pointer_mut("/static_resources/listeners/0/filter_chains")
        .and_then(Value::as_array_mut)
        .context("no filter chains")?;
    for chain in chains {
        let filters = chain
            .pointer_mut("/filters/0/typed_config/http_filters")
            .and_then(Value::as_array_mut)
            .context("no http_filters")?;
        filters.retain(|filter| filter["name"] != "envoy.filters.http.wasm");
    }
    Ok(())
}

/// Makes the edge's `hop` cluster speak HTTP/2 (prior knowledge).
fn use_http2_to_hop(config: &mut Value) -> Result<()> {
    let clusters = config
        .pointer_mut("/static_resources/clusters")
        .and_then(Value::as_array_mut)
        .context("no clusters")?;
    let hop = clusters
        .iter_mut()
        .find(|c| c["name"] == "hop")
        .context("no hop cluster")?;
    hop["typed_extension_protocol_options"] = serde_json::json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": { "http2_protocol_options": {} }
        }
    });
    Ok(())
}

/// The compose topology's nginx.conf, listening on `listen` and forwarding
/// to `upstream` (both on loopback): the hop matrix's shipped nginx.
pub fn nginx_config_between(listen: SocketAddr, upstream: SocketAddr) -> Result<String> {
    let graph = Graph::load()?;
    let chain = graph.chain("edge")?;
    let hop = chain.get(1).context("the compose graph has no hop")?;
    let from_listen = hop.listen.context("nginx without listen")?;
    let (_, from_upstream) = hop.upstream.clone().context("nginx without upstream")?;
    let ports = HashMap::from([
        (from_listen, listen.port()),
        (from_upstream, upstream.port()),
    ]);
    local_nginx_config(hop, &ports)
}

/// nginx's config with its listen and upstream addresses moved to loopback.
fn local_nginx_config(hop: &Service, ports: &HashMap<u16, u16>) -> Result<String> {
    let path = hop.config.as_ref().context("nginx without config")?;
    let text = std::fs::read_to_string(path)?;
    let listen_port = hop.listen.context("nginx without listen")?;
    let (host, port) = hop.upstream.clone().context("nginx without upstream")?;
    let listen = format!("listen {listen_port};");
    let upstream = format!("server {host}:{port};");
    if !text.contains(&listen) || !text.contains(&upstream) {
        bail!(
            "{} no longer has `{listen}` and `{upstream}`",
            path.display()
        );
    }
    Ok(text
        .replace(
            &listen,
            &format!("listen 127.0.0.1:{};", ports[&listen_port]),
        )
        .replace(&upstream, &format!("server 127.0.0.1:{};", ports[&port])))
}

/// Resident memory of a process, in KiB (0 if it is gone).
pub fn rss_kib(pid: u32) -> u64 {
    status_kib(pid, "VmRSS")
}

/// A memory field of a process's `/proc/PID/status` (`VmRSS`, `VmHWM`),
/// in KiB (0 if it is gone).
pub fn status_kib(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches(" kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A command for `program`, pinned to the cores in BRIDGE_PROXY_CPUS if
/// set (benchmarks keep the proxies off the load generator's core).
fn pinned(program: &Path) -> Command {
    match std::env::var("BRIDGE_PROXY_CPUS") {
        Ok(cpus) => {
            let mut taskset = Command::new("taskset");
            taskset.args(["-c", &cpus]).arg(program);
            taskset
        }
        Err(_) => Command::new(program),
    }
}

/// Starts a child that dies with this process, whatever way it ends.
pub fn spawn(command: &mut Command, log: &Path) -> Result<Child> {
    let log = std::fs::File::create(log)?;
    command
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: prctl is async-signal-safe; it only asks the kernel to kill
    // the child when the thread that spawned it exits.
    unsafe {
        command.pre_exec(|| {
            libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
            Ok(())
        });
    }
    Ok(command.spawn()?)
}

pub fn wait_for<F: FnMut() -> bool>(what: &str, mut ready: F) -> Result<()> {
    // Envoys under valgrind (the cost bench) start some 50 times slower.
    let seconds = match std::env::var_os("BRIDGE_ENVOY_CALLGRIND") {
        Some(_) => 300,
        None => 30,
    };
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while Instant::now() < deadline {
        if ready() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    bail!("{what} did not become ready in {seconds} s")
}

/// Whether Envoy's admin `/ready` answers 200.
pub fn envoy_ready(admin: SocketAddr) -> bool {
    http_get(admin, "/ready").is_ok_and(|(status, _)| status == 200)
}

/// A minimal HTTP/1.1 GET (admin endpoints only; Envoy refuses HTTP/1.0).
pub fn http_get(address: SocketAddr, path: &str) -> Result<(u16, String)> {
    use std::io::Write;
    let mut stream = TcpStream::connect_timeout(&address, Duration::from_secs(2))?;
    stream.set_read_timeout(Some(Duration::from_secs(5)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: admin\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .context("bad response")?;
    let body = response
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    Ok((status, body))
}

impl Topology {
    /// Starts the compose graph's Envoys (2 workers each) and, for
    /// [`Hop::Nginx`], its nginx, from the edge's upstream chain.
    pub fn start(hop: Hop, upstream: Upstream) -> Result<Topology> {
        Self::start_with_module(hop, upstream, &wasm_module())
    }

    /// Like [`Topology::start`], with both Envoys loading `module`.
    pub fn start_with_module(hop: Hop, upstream: Upstream, module: &Path) -> Result<Topology> {
        Self::start_with_nginx(hop, upstream, module, Ok)
    }

    /// Like [`Topology::start_with_module`], with `edit` applied to the
    /// localized nginx.conf (the benchmark's before-and-after of the hop).
    pub fn start_with_nginx(
        hop: Hop,
        upstream: Upstream,
        module: &Path,
        edit: impl FnOnce(String) -> Result<String>,
    ) -> Result<Topology> {
        Self::start_edited(hop, upstream, module, edit, |_| Ok(()))
    }

    /// Like [`Topology::start_with_nginx`], with `edit_envoy` applied to
    /// each Envoy's localized config (e.g. [`set_plugin_field`]).
    pub fn start_edited(
        hop: Hop,
        upstream: Upstream,
        module: &Path,
        edit: impl FnOnce(String) -> Result<String>,
        edit_envoy: impl Fn(&mut Value) -> Result<()>,
    ) -> Result<Topology> {
        let graph = Graph::load()?;
        let chain = graph.chain("edge")?;
        let [edge, hop_service, origin, server] = chain.as_slice() else {
            bail!(
                "expected edge -> hop -> origin -> server, found {:?}",
                chain.iter().map(|s| &s.name).collect::<Vec<_>>()
            );
        };
        let listen = |service: &Service| service.listen.context("service without a port");
        let admin = |service: &Service| service.admin.context("Envoy without an admin port");
        if !module.exists() {
            bail!("{} is missing: run `make build`", module.display());
        }
        let dir = std::env::temp_dir().join(format!(
            "grpc-web-bridge-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(dir.join("nginx/tmp"))?;
        let mut ports = HashMap::new();
        for port in graph.ports() {
            ports.insert(port, free_port()?);
        }
        match upstream {
            Upstream::Server(address) => {
                ports.insert(listen(server)?, address.port());
                if hop != Hop::Nginx {
                    ports.insert(listen(hop_service)?, ports[&listen(origin)?]);
                }
            }
            Upstream::EdgeOnly(address) => {
                ports.insert(listen(hop_service)?, address.port());
            }
        }
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], ports[&port]));
        let mut topology = Topology {
            edge: local(listen(edge)?),
            origin: None,
            edge_admin: local(admin(edge)?),
            origin_admin: None,
            dir: dir.clone(),
            processes: Vec::new(),
            children: Vec::new(),
            native_dir: native_dir_for(module),
        };
        if let Upstream::Server(_) = upstream {
            let mut config = local_envoy_config(
                origin.config.as_deref().context("origin config")?,
                &ports,
                module,
            )?;
            if hop == Hop::PlainHttp2 {
                remove_bridge(&mut config)?;
            }
            edit_envoy(&mut config)?;
            topology.start_envoy(origin, &config)?;
            topology.origin = Some(local(listen(origin)?));
            topology.origin_admin = Some(local(admin(origin)?));
            if hop == Hop::Nginx {
                std::fs::write(
                    dir.join("nginx/nginx.conf"),
                    edit(local_nginx_config(hop_service, &ports)?)?,
                )?;
                let child = spawn(
                    pinned(Path::new("nginx"))
                        .arg("-p")
                        .arg(dir.join("nginx"))
                        .arg("-c")
                        .arg(dir.join("nginx/nginx.conf"))
                        // One process, no workers: when the test process
                        // dies, the kernel kills it (PR_SET_PDEATHSIG), where
                        // a master's workers would outlive it.
                        .args(["-g", "daemon off; master_process off;"]),
                    &dir.join(format!("{}.log", hop_service.name)),
                )?;
                topology.record(hop_service, child);
            }
        }
        let mut config = local_envoy_config(
            edge.config.as_deref().context("edge config")?,
            &ports,
            module,
        )?;
        if matches!(hop, Hop::DirectHttp2 | Hop::PlainHttp2) {
            use_http2_to_hop(&mut config)?;
        }
        if hop == Hop::PlainHttp2 {
            remove_bridge(&mut config)?;
        }
        edit_envoy(&mut config)?;
        topology.start_envoy(edge, &config)?;
        topology.wait_ready(local(listen(hop_service)?))?;
        Ok(topology)
    }

    /// Starts one origin Envoy from `config` (a file in `envoy/`, e.g.
    /// `origin-browsers.yaml`) in front of `server`; `edge` and `origin`
    /// are both its listener.
    pub fn start_origin(config: &str, server: SocketAddr) -> Result<Topology> {
        Self::start_origin_with(config, server, &wasm_module(), |_| Ok(()))
    }

    /// Like [`Topology::start_origin`], loading `module` and applying `edit`
    /// to the localized config first (the benchmark's variants).
    pub fn start_origin_with(
        config: &str,
        server: SocketAddr,
        module: &Path,
        edit: impl FnOnce(&mut Value) -> Result<()>,
    ) -> Result<Topology> {
        let path = repo_root().join("envoy").join(config);
        let text = std::fs::read_to_string(&path)?;
        let raw: Value = serde_yaml::from_str(&text)?;
        let listen = raw
            .pointer("/static_resources/listeners/0/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .context("no listener port")? as u16;
        let admin = raw
            .pointer("/admin/address/socket_address/port_value")
            .and_then(Value::as_u64)
            .context("no admin port")? as u16;
        let ports = HashMap::from([
            (listen, free_port()?),
            (admin, free_port()?),
            (50051, server.port()),
        ]);
        let dir = std::env::temp_dir().join(format!(
            "grpc-web-bridge-{}-{}",
            std::process::id(),
            free_port()?
        ));
        std::fs::create_dir_all(&dir)?;
        let local = |port: u16| SocketAddr::from(([127, 0, 0, 1], ports[&port]));
        let mut topology = Topology {
            edge: local(listen),
            origin: Some(local(listen)),
            edge_admin: local(admin),
            origin_admin: Some(local(admin)),
            dir,
            processes: Vec::new(),
            children: Vec::new(),
            native_dir: native_dir_for(module),
        };
        let service = Service {
            name: config.trim_end_matches(".yaml").to_string(),
            kind: crate::graph::Kind::Envoy,
            image: String::new(),
            config: Some(path.clone()),
            listen: Some(listen),
            admin: Some(admin),
            upstream: None,
            published: Vec::new(),
        };
        let mut envoy_config = local_envoy_config(&path, &ports, module)?;
        edit(&mut envoy_config)?;
        topology.start_envoy(&service, &envoy_config)?;
        let result = wait_for("origin admin", || envoy_ready(local(admin))).and_then(|()| {
            wait_for("origin listener", || {
                TcpStream::connect(local(listen)).is_ok()
            })
        });
        if let Err(error) = result {
            bail!("{error}\n{}", topology.logs());
        }
        Ok(topology)
    }

    fn record(&mut self, service: &Service, child: Child) {
        self.processes.push((
            service.name.clone(),
            service.config.clone().unwrap_or_default(),
        ));
        self.children.push((service.name.clone(), child));
    }

    fn start_envoy(&mut self, service: &Service, config: &Value) -> Result<()> {
        let path = self.dir.join(format!("{}.json", service.name));
        let mut config = config.clone();
        if self.native_dir.is_some() {
            use_native_module(&mut config);
        }
        std::fs::write(&path, serde_json::to_vec_pretty(&config)?)?;
        // Benchmarks run each Envoy on one worker (BRIDGE_ENVOY_WORKERS).
        let workers = std::env::var("BRIDGE_ENVOY_WORKERS").unwrap_or_else(|_| "2".into());
        let mut command = match std::env::var_os("BRIDGE_ENVOY_CALLGRIND") {
            // The cost bench counts each Envoy's instructions (valgrind's
            // callgrind, counters zeroed and dumped by callgrind_control).
            Some(_) => {
                let mut valgrind = pinned(Path::new("valgrind"));
                valgrind
                    // V8 writes the code it runs: callgrind must see it change.
                    .args(["--tool=callgrind", "--smc-check=all-non-file"])
                    .arg(format!(
                        "--callgrind-out-file={}",
                        self.dir
                            .join(format!("{}.callgrind", service.name))
                            .display()
                    ))
                    .arg(envoy_binary());
                valgrind
            }
            None => pinned(&envoy_binary()),
        };
        command.env(
            "ENVOY_DYNAMIC_MODULES_SEARCH_PATH",
            self.native_dir.clone().unwrap_or_else(native_module_dir),
        );
        let child = spawn(
            command.arg("-c").arg(&path).args([
                "--concurrency",
                &workers,
                "--disable-hot-restart",
                "--log-level",
                &std::env::var("BRIDGE_ENVOY_LOG_LEVEL").unwrap_or_else(|_| "warn".into()),
            ]),
            &self.dir.join(format!("{}.log", service.name)),
        )
        .with_context(|| format!("starting {}", envoy_binary().display()))?;
        self.record(service, child);
        Ok(())
    }

    fn wait_ready(&mut self, hop: SocketAddr) -> Result<()> {
        let admins: Vec<SocketAddr> = [Some(self.edge_admin), self.origin_admin]
            .into_iter()
            .flatten()
            .collect();
        let result = (|| {
            for admin in admins {
                wait_for(&format!("envoy admin {admin}"), || envoy_ready(admin))?;
            }
            wait_for(&format!("hop {hop}"), || TcpStream::connect(hop).is_ok())?;
            wait_for("edge listener", || TcpStream::connect(self.edge).is_ok())
        })();
        if let Err(error) = result {
            bail!("{error}\n{}", self.logs());
        }
        Ok(())
    }

    /// Resident memory of each process it started: (name, KiB).
    pub fn rss_kib(&self) -> Vec<(String, u64)> {
        self.pids()
            .into_iter()
            .map(|(name, pid)| (name, rss_kib(pid)))
            .collect()
    }

    /// The processes it started: (compose service name, pid).
    pub fn pids(&self) -> Vec<(String, u32)> {
        self.children
            .iter()
            .map(|(name, child)| (name.clone(), child.id()))
            .collect()
    }

    /// Every process's log, for failure reports.
    pub fn logs(&self) -> String {
        let mut out = String::new();
        for (name, _) in &self.children {
            let log =
                std::fs::read_to_string(self.dir.join(format!("{name}.log"))).unwrap_or_default();
            out.push_str(&format!("----- {name}.log -----\n{log}\n"));
        }
        out
    }

    /// A counter from an Envoy's admin `/stats` (0 if absent).
    /// The origin's listener, or the edge's where only one Envoy runs.
    pub fn origin_or_edge(&self) -> SocketAddr {
        self.origin.unwrap_or(self.edge)
    }

    /// The origin's admin address, or the edge's where only one Envoy runs.
    pub fn origin_admin_or_edge(&self) -> SocketAddr {
        self.origin_admin.unwrap_or(self.edge_admin)
    }

    pub fn counter(admin: SocketAddr, name: &str) -> u64 {
        // The native build counts the same, under another prefix.
        let name = match (native_build(), name.strip_prefix("wasmcustom.")) {
            (true, Some(rest)) if rest.starts_with("grpc_web_bridge.") => {
                format!("dynamicmodulescustom.{rest}")
            }
            _ => name.to_string(),
        };
        let Ok((_, body)) = http_get(admin, &format!("/stats?filter=^{name}$")) else {
            return 0;
        };
        body.lines()
            .find_map(|line| line.strip_prefix(&format!("{name}: ")))
            .and_then(|value| value.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        for (_, child) in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}
