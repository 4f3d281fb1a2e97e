//! The intermediaries of the hop matrix (docs/hops.md): ordinary HTTP/1.1
//! proxies from Debian's packages, each started on loopback from a config
//! in `envoy/hops/` and put between the edge and the origin, alone or in a
//! cascade. The configs carry placeholders the harness fills in:
//! `@LISTEN@` and `@UPSTREAM@` (`127.0.0.1:port`), `@UPSTREAM_HOST@`,
//! `@UPSTREAM_PORT@`, `@DIR@` (a directory of the hop's own) and `@HOPS@`
//! (the same directory, where every file of `envoy/hops/` is rendered, for
//! the files a config includes).

use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command};

use anyhow::{Context as _, Result, bail};

use crate::topology::{free_port, nginx_config_between, repo_root, spawn, wait_for};

/// Which proxy program a hop runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Program {
    Nginx,
    Haproxy,
    Apache,
    Squid,
    Varnish,
    Caddy,
}

/// One intermediary in one configuration.
#[derive(Debug, Clone, Copy)]
pub struct Intermediary {
    /// Short name, unique in the matrix (`nginx-usual`, `haproxy`, ...).
    pub name: &'static str,
    pub program: Program,
    /// The config file: `nginx.conf` (the compose topology's) or a file of
    /// `envoy/hops/`; `None` for Varnish's built-in VCL (`varnishd -b`).
    pub config: Option<&'static str>,
}

/// Each intermediary the way most people configure it, with nothing
/// changed for gRPC: what a new user meets first.
pub const USUAL: &[Intermediary] = &[
    hop("nginx-usual", Program::Nginx, "nginx-usual.conf"),
    hop("haproxy-usual", Program::Haproxy, "haproxy-usual.cfg"),
    hop("apache-usual", Program::Apache, "apache-usual.conf"),
    hop("squid-usual", Program::Squid, "squid-usual.conf"),
    hop("varnish-usual", Program::Varnish, ""),
    // Nothing in Caddy's usual configuration needs changing (docs/hops.md).
    hop("caddy-usual", Program::Caddy, "Caddyfile"),
    hop("waf-usual", Program::Apache, "apache-waf-usual.conf"),
];

/// The configurations this project ships for each intermediary.
pub const SHIPPED: &[Intermediary] = &[
    hop("nginx", Program::Nginx, "nginx.conf"),
    hop("haproxy", Program::Haproxy, "haproxy.cfg"),
    hop("apache", Program::Apache, "apache.conf"),
    hop("squid", Program::Squid, "squid.conf"),
    hop("varnish", Program::Varnish, "varnish.vcl"),
    hop("caddy", Program::Caddy, "Caddyfile"),
    hop("waf", Program::Apache, "apache-waf.conf"),
];

/// An intermediary whose config is `config` ("": none; see
/// [`Intermediary::config`]).
const fn hop(name: &'static str, program: Program, config: &'static str) -> Intermediary {
    Intermediary {
        name,
        program,
        config: match config.is_empty() {
            true => None,
            false => Some(config),
        },
    }
}

/// Finds an intermediary of either list by name.
pub fn by_name(name: &str) -> Option<Intermediary> {
    USUAL
        .iter()
        .chain(SHIPPED)
        .find(|i| i.name == name)
        .copied()
}

/// A running intermediary: its whole process group is killed when it is
/// dropped (Varnish and Squid run more than one process).
pub struct Running {
    pub name: &'static str,
    pub listen: SocketAddr,
    dir: PathBuf,
    child: Child,
}

impl Running {
    /// The intermediary's log, for failure reports.
    pub fn log(&self) -> String {
        let mut out = String::new();
        for name in ["hop.log", "squid-cache.log"] {
            if let Ok(text) = std::fs::read_to_string(self.dir.join(name)) {
                out.push_str(&format!("----- {} {name} -----\n{text}\n", self.name));
            }
        }
        out
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group this child leads.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
        if !std::thread::panicking() {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

/// A config file of `envoy/hops/` with its placeholders filled in.
fn render(config: &Path, listen: SocketAddr, upstream: SocketAddr, dir: &Path) -> Result<String> {
    let text =
        std::fs::read_to_string(config).with_context(|| format!("reading {}", config.display()))?;
    Ok(text
        .replace("@LISTEN@", &listen.to_string())
        .replace("@UPSTREAM_HOST@", &upstream.ip().to_string())
        .replace("@UPSTREAM_PORT@", &upstream.port().to_string())
        .replace("@UPSTREAM@", &upstream.to_string())
        .replace("@DIR@", &dir.display().to_string())
        .replace("@HOPS@", &dir.display().to_string()))
}

impl Intermediary {
    /// Starts the intermediary on a free loopback port, forwarding to
    /// `upstream`, and waits until it accepts connections.
    pub fn start(&self, upstream: SocketAddr) -> Result<Running> {
        let listen = SocketAddr::from(([127, 0, 0, 1], free_port()?));
        let dir = std::env::temp_dir().join(format!(
            "grpc-web-bridge-hop-{}-{}-{}",
            self.name,
            std::process::id(),
            listen.port()
        ));
        std::fs::create_dir_all(dir.join("tmp"))?;
        // Every file of envoy/hops/, rendered: the config and what it includes.
        for entry in std::fs::read_dir(repo_root().join("envoy/hops"))? {
            let path = entry?.path();
            if let Some(name) = path.file_name().filter(|_| path.is_file()) {
                std::fs::write(dir.join(name), render(&path, listen, upstream, &dir)?)?;
            }
        }
        let config = match self.config {
            // The compose topology's hop, moved to these addresses.
            Some("nginx.conf") => {
                let path = dir.join("nginx.conf");
                std::fs::write(&path, nginx_config_between(listen, upstream)?)?;
                Some(path)
            }
            Some(file) => Some(dir.join(file)),
            None => None,
        };
        let mut command = self.command(listen, upstream, &dir, config.as_deref())?;
        command.process_group(0);
        let child = spawn(&mut command, &dir.join("hop.log"))
            .with_context(|| format!("starting {:?}", self.program))?;
        let running = Running {
            name: self.name,
            listen,
            dir,
            child,
        };
        if let Err(error) = wait_for(&format!("{} on {listen}", self.name), || {
            TcpStream::connect(listen).is_ok()
        }) {
            bail!("{error}\n{}", running.log());
        }
        Ok(running)
    }

    fn command(
        &self,
        listen: SocketAddr,
        upstream: SocketAddr,
        dir: &Path,
        config: Option<&Path>,
    ) -> Result<Command> {
        let file = || config.context("this intermediary needs a config file");
        let mut command;
        match self.program {
            Program::Nginx => {
                command = Command::new("nginx");
                command.arg("-p").arg(dir).arg("-c").arg(file()?);
                command.args(["-g", "daemon off; master_process off;"]);
            }
            Program::Haproxy => {
                command = Command::new("haproxy");
                command.arg("-db").arg("-f").arg(file()?);
            }
            Program::Apache => {
                command = Command::new("apache2");
                command.arg("-X").arg("-f").arg(file()?);
                // Debian's apache2 reads its run-time paths from these.
                command
                    .env("APACHE_RUN_DIR", dir)
                    .env("APACHE_LOCK_DIR", dir);
            }
            Program::Squid => {
                // Squid drops to user `proxy`, which must write its files.
                std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o777))?;
                command = Command::new("squid");
                command.arg("-N").arg("-f").arg(file()?);
            }
            Program::Varnish => {
                command = Command::new("varnishd");
                command.arg("-F").arg("-n").arg(dir.join("varnish"));
                command.arg("-a").arg(listen.to_string());
                match config {
                    // The shipped VCL pipes gRPC-web, and a pipe is closed
                    // after pipe_timeout (60 s) without a byte either way.
                    Some(vcl) => command.arg("-f").arg(vcl).args(["-p", "pipe_timeout=3600"]),
                    None => command.arg("-b").arg(upstream.to_string()),
                };
                command.args(["-s", "malloc,64m"]);
            }
            Program::Caddy => {
                command = Command::new("caddy");
                command.args(["run", "--adapter", "caddyfile", "--config"]);
                command.arg(file()?);
                command
                    .env("HOME", dir)
                    .env("XDG_DATA_HOME", dir)
                    .env("XDG_CONFIG_HOME", dir);
            }
        }
        Ok(command)
    }
}

/// A cascade of intermediaries, started from the origin's side; the first
/// is the one the edge talks to.
pub fn start_cascade(hops: &[Intermediary], origin: SocketAddr) -> Result<Vec<Running>> {
    let mut running: Vec<Running> = Vec::new();
    let mut upstream = origin;
    for hop in hops.iter().rev() {
        let started = hop.start(upstream)?;
        upstream = started.listen;
        running.insert(0, started);
    }
    Ok(running)
}
