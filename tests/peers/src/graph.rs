//! The topology as `envoy/docker-compose.yaml` describes it, read together
//! with the configs each service mounts: who listens where and who
//! forwards to whom. The local topology starts its processes from this, so
//! the compose topology and the native one are one graph.

use std::path::PathBuf;

use anyhow::{Context as _, Result, bail};
use serde_json::Value;

use crate::topology::repo_root;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Envoy,
    Nginx,
    /// The interop server (the test peers' image).
    InteropServer,
    /// The one-shot interop client.
    InteropClient,
}

#[derive(Debug, Clone)]
pub struct Service {
    pub name: String,
    pub kind: Kind,
    pub image: String,
    /// The repository file mounted as this service's configuration.
    pub config: Option<PathBuf>,
    /// The port it serves on.
    pub listen: Option<u16>,
    /// Envoy's admin port.
    pub admin: Option<u16>,
    /// Where it forwards requests: (host, port).
    pub upstream: Option<(String, u16)>,
    /// Ports published to the host.
    pub published: Vec<u16>,
}

#[derive(Debug, Clone)]
pub struct Graph {
    pub services: Vec<Service>,
}

pub fn compose_file() -> PathBuf {
    repo_root().join("envoy/docker-compose.yaml")
}

fn port(value: &Value) -> Option<u16> {
    value.as_u64().and_then(|p| u16::try_from(p).ok())
}

/// The repository path mounted at `target` (`./x.yaml:/etc/...:ro`).
fn mounted(service: &Value, target: &str) -> Option<PathBuf> {
    service["volumes"].as_array()?.iter().find_map(|volume| {
        let mut parts = volume.as_str()?.split(':');
        let (source, mounted_at) = (parts.next()?, parts.next()?);
        (mounted_at == target).then(|| repo_root().join("envoy").join(source))
    })
}

fn envoy_facts(config: &Value) -> Result<(u16, u16, (String, u16))> {
    let listen = port(
        &config["static_resources"]["listeners"][0]["address"]["socket_address"]["port_value"],
    )
    .context("no listener port")?;
    let admin = port(&config["admin"]["address"]["socket_address"]["port_value"])
        .context("no admin port")?;
    let endpoint = &config["static_resources"]["clusters"][0]["load_assignment"]["endpoints"][0]["lb_endpoints"]
        [0]["endpoint"]["address"]["socket_address"];
    let host = endpoint["address"]
        .as_str()
        .context("no cluster address")?
        .to_string();
    let upstream = port(&endpoint["port_value"]).context("no cluster port")?;
    Ok((listen, admin, (host, upstream)))
}

fn nginx_facts(text: &str) -> Result<(u16, (String, u16))> {
    let directive = |name: &str| {
        text.lines()
            .map(str::trim)
            .find_map(|line| line.strip_prefix(name)?.strip_suffix(';').map(str::trim))
    };
    let listen = directive("listen ").context("no listen")?.parse()?;
    let (host, upstream) = directive("server ")
        .and_then(|s| s.split_once(':'))
        .context("no upstream server")?;
    Ok((listen, (host.to_string(), upstream.parse()?)))
}

/// A compose value with each `${NAME:-default}` read as its default: the
/// graph is the one users get without setting anything.
fn with_defaults(value: &str) -> String {
    let mut out = String::new();
    let mut rest = value;
    while let Some(start) = rest.find("${") {
        out.push_str(&rest[..start]);
        let Some(end) = rest[start..].find('}') else {
            break;
        };
        let inner = &rest[start + 2..start + end];
        out.push_str(inner.split_once(":-").map_or("", |(_, default)| default));
        rest = &rest[start + end + 1..];
    }
    out.push_str(rest);
    out
}

impl Graph {
    pub fn load() -> Result<Graph> {
        let text = std::fs::read_to_string(compose_file())?;
        let compose: Value = serde_yaml::from_str(&text)?;
        let mut services = Vec::new();
        for (name, spec) in compose["services"].as_object().context("no services")? {
            let image = with_defaults(spec["image"].as_str().unwrap_or_default());
            let command: Vec<&str> = spec["command"]
                .as_array()
                .map(|c| c.iter().filter_map(Value::as_str).collect())
                .unwrap_or_default();
            let published = spec["ports"]
                .as_array()
                .map(|ports| {
                    ports
                        .iter()
                        .filter_map(|p| {
                            // [address:]host-port:container-port
                            let spec = with_defaults(p.as_str()?);
                            let parts: Vec<&str> = spec.split(':').collect();
                            parts.get(parts.len().checked_sub(2)?)?.parse().ok()
                        })
                        .collect()
                })
                .unwrap_or_default();
            let mut service = Service {
                name: name.clone(),
                kind: Kind::InteropServer,
                image,
                config: None,
                listen: None,
                admin: None,
                upstream: None,
                published,
            };
            if service.image.starts_with("envoyproxy/envoy:") {
                let config =
                    mounted(spec, "/etc/envoy/envoy-wasm.yaml").context("envoy without config")?;
                let (listen, admin, upstream) =
                    envoy_facts(&serde_yaml::from_str(&std::fs::read_to_string(&config)?)?)?;
                service = Service {
                    kind: Kind::Envoy,
                    config: Some(config),
                    listen: Some(listen),
                    admin: Some(admin),
                    upstream: Some(upstream),
                    ..service
                };
            } else if service.image.starts_with("nginx:") {
                let config =
                    mounted(spec, "/etc/nginx/nginx.conf").context("nginx without config")?;
                let (listen, upstream) = nginx_facts(&std::fs::read_to_string(&config)?)?;
                service = Service {
                    kind: Kind::Nginx,
                    config: Some(config),
                    listen: Some(listen),
                    upstream: Some(upstream),
                    ..service
                };
            } else if command.first() == Some(&"interop-server") {
                let address = command.get(1).context("interop-server without address")?;
                service.listen = Some(address.rsplit(':').next().context("no port")?.parse()?);
            } else if command.first() == Some(&"interop-client") {
                let target = command.get(1).context("interop-client without target")?;
                let (host, port) = target
                    .trim_start_matches("http://")
                    .split_once(':')
                    .context("bad target")?;
                service = Service {
                    kind: Kind::InteropClient,
                    upstream: Some((host.into(), port.parse()?)),
                    ..service
                };
            } else {
                bail!("service {name}: unknown kind");
            }
            services.push(service);
        }
        Ok(Graph { services })
    }

    pub fn service(&self, name: &str) -> Result<&Service> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .with_context(|| format!("no service {name}"))
    }

    /// The request path from `entry`, following each upstream to the
    /// service that listens on that host and port, until one forwards nowhere.
    pub fn chain(&self, entry: &str) -> Result<Vec<&Service>> {
        let mut path = vec![self.service(entry)?];
        while let Some((host, port)) = &path[path.len() - 1].upstream {
            let next = self.service(host)?;
            if next.listen != Some(*port) {
                bail!(
                    "{} forwards to {host}:{port}, but {host} listens on {:?}",
                    path[path.len() - 1].name,
                    next.listen
                );
            }
            if path.len() > self.services.len() {
                bail!("the chain loops");
            }
            path.push(next);
        }
        Ok(path)
    }

    /// Every port a service listens on, admin ports included.
    pub fn ports(&self) -> Vec<u16> {
        self.services
            .iter()
            .flat_map(|s| [s.listen, s.admin])
            .flatten()
            .collect()
    }
}
