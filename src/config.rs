//! The plugin configuration: JSON in Envoy's `plugin_config`, validated once
//! when the plugin starts. A bad configuration fails the plugin with a
//! message naming the field.

use std::collections::BTreeMap;

use serde::Deserialize;

/// Which conversion this instance of the filter performs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Side {
    /// Downstream native gRPC → upstream gRPC-web.
    Edge,
    /// Downstream gRPC-web → upstream native gRPC.
    Origin,
}

/// Default largest frame (message or trailer block): gRPC's usual 4 MiB.
pub const DEFAULT_MAX_FRAME_BYTES: u32 = 4 * 1024 * 1024;
/// Default name of the header that marks requests the edge converted.
pub const DEFAULT_MARKER_HEADER: &str = "x-grpc-web-bridge";
/// Default for `max_trailer_bytes`: what grpc-java and grpc-core accept
/// by default (8 KiB of metadata).
pub const DEFAULT_MAX_TRAILER_BYTES: u32 = 8192;
/// Default for `deadline_grace_ms`.
pub const DEFAULT_DEADLINE_GRACE_MS: u32 = 1000;
/// Default for `marker.max_age_s`.
pub const DEFAULT_MARKER_MAX_AGE_S: u32 = 30;

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub side: Side,
    /// How the edge marks the requests it converts, and how the origin
    /// checks the mark.
    pub marker: Marker,
    /// Edge only: convert (and mark) only requests routed to these clusters,
    /// the ones that lead to an origin; empty: every gRPC request.
    #[serde(default)]
    pub origin_clusters: Vec<String>,
    /// Largest frame accepted in either direction, in bytes.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Largest trailer block passed to a client (HTTP/2 header-list size).
    #[serde(default = "default_max_trailer_bytes")]
    pub max_trailer_bytes: u32,
    /// Origin only: also guard unmarked calls (browsers' gRPC-web, which
    /// Envoy's gRPC-web filter then converts without a matcher).
    #[serde(default)]
    pub serve_browsers: bool,
    /// How long after a call's deadline the upstream may still end the call
    /// itself (it got the same `grpc-timeout`) once response headers have
    /// left; then the stream is reset. In ms.
    #[serde(default = "default_deadline_grace_ms")]
    pub deadline_grace_ms: u32,
}

/// The marker: signed with rotating keys (the default), or, as an explicit
/// legacy choice, one static secret.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Marker {
    #[serde(default = "default_marker_header")]
    pub header: String,
    /// Key id → key (32 or more printable characters). The origin accepts a
    /// marker signed with any of them; roll a new key out to every origin
    /// before an edge signs with it, and retire the old one after.
    #[serde(default)]
    pub keys: BTreeMap<String, String>,
    /// Edge: the key id it signs with.
    #[serde(default)]
    pub sign_with: Option<String>,
    /// Origin: how far (either way) a marker's time may be from its clock.
    #[serde(default = "default_marker_max_age_s")]
    pub max_age_s: u32,
    /// Legacy: the marker is this secret, sent as it is on every request
    /// (replayable by anyone who sees the hop). Excludes `keys`.
    #[serde(default)]
    pub static_secret: Option<String>,
    /// `<header>-content-type`, derived once at parse time: it is looked
    /// up on every call (see [`Marker::content_type_header`]).
    #[serde(skip)]
    pub content_type_header: String,
}

impl Marker {
    /// The header in which the edge carries a call's native content type
    /// when it is not plain `application/grpc` (and the origin the
    /// upstream's reply's, when it differs from the request's): Envoy's
    /// gRPC-web filter converts only the proto content types, so the hop
    /// itself sees `application/grpc-web` (docs/design.md).
    pub fn content_type_header(&self) -> &str {
        &self.content_type_header
    }

    /// An accepted key by its id.
    pub fn key(&self, id: &str) -> Option<&[u8]> {
        self.keys.get(id).map(|key| key.as_bytes())
    }
}

fn default_max_trailer_bytes() -> u32 {
    DEFAULT_MAX_TRAILER_BYTES
}

fn default_deadline_grace_ms() -> u32 {
    DEFAULT_DEADLINE_GRACE_MS
}

fn default_marker_max_age_s() -> u32 {
    DEFAULT_MARKER_MAX_AGE_S
}

fn default_marker_header() -> String {
    DEFAULT_MARKER_HEADER.to_string()
}

fn default_max_frame_bytes() -> u32 {
    DEFAULT_MAX_FRAME_BYTES
}

/// Headers the bridge itself rewrites; using one as the marker would break it.
const RESERVED_HEADERS: &[&str] = &[
    "content-type",
    "content-length",
    "te",
    "accept",
    "grpc-status",
    "grpc-message",
    "grpc-encoding",
    "grpc-timeout",
];

impl Config {
    /// Parses and validates the plugin configuration.
    pub fn from_json(json: &[u8]) -> Result<Self, String> {
        let deserializer = &mut serde_json::Deserializer::from_slice(json);
        let mut config: Config =
            serde_path_to_error::deserialize(deserializer).map_err(|error| {
                match error.path().to_string().as_str() {
                    "." => format!("invalid configuration: {}", error.inner()),
                    field => format!("invalid configuration: {field}: {}", error.inner()),
                }
            })?;
        config.validate()?;
        config.marker.content_type_header = format!("{}-content-type", config.marker.header);
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        self.marker.validate(self.side)?;
        if self.max_frame_bytes == 0 || self.max_frame_bytes > 1 << 30 {
            return Err(format!(
                "max_frame_bytes: {} must be between 1 and 1073741824",
                self.max_frame_bytes
            ));
        }
        if !(256..=1 << 20).contains(&self.max_trailer_bytes) {
            return Err(format!(
                "max_trailer_bytes: {} must be between 256 and 1048576",
                self.max_trailer_bytes
            ));
        }
        if !(1..=60_000).contains(&self.deadline_grace_ms) {
            return Err(format!(
                "deadline_grace_ms: {} must be between 1 and 60000",
                self.deadline_grace_ms
            ));
        }
        if self.serve_browsers && self.side == Side::Edge {
            return Err("serve_browsers: only applies to side \"origin\"".to_string());
        }
        if !self.origin_clusters.is_empty() && self.side == Side::Origin {
            return Err("origin_clusters: only applies to side \"edge\"".to_string());
        }
        Ok(())
    }
}

impl Marker {
    fn validate(&self, side: Side) -> Result<(), String> {
        let name = &self.header;
        let token = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!(
                "marker.header: {name:?} must be a non-empty lowercase header name (a-z, 0-9, '-', '_')"
            ));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("grpc-") {
            return Err(format!(
                "marker.header: {name:?} is a header the bridge or gRPC uses"
            ));
        }
        let printable = |s: &str| s.bytes().all(|b| b.is_ascii_graphic());
        if let Some(secret) = &self.static_secret {
            if !self.keys.is_empty() || self.sign_with.is_some() {
                return Err("marker.static_secret: excludes keys and sign_with".to_string());
            }
            if secret.len() < 16 || !printable(secret) {
                return Err(
                    "marker.static_secret: must be 16 or more printable ASCII characters"
                        .to_string(),
                );
            }
            return Ok(());
        }
        if self.keys.is_empty() {
            return Err("marker.keys: at least one key (or an explicit static_secret)".to_string());
        }
        for (id, key) in &self.keys {
            let id_ok = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
            if id.is_empty() || id.len() > 64 || !id.bytes().all(id_ok) {
                return Err(format!(
                    "marker.keys: key id {id:?} must be 1-64 of A-Z, a-z, 0-9, '-', '_'"
                ));
            }
            if key.len() < 32 || !printable(key) {
                return Err(format!(
                    "marker.keys.{id}: must be 32 or more printable ASCII characters"
                ));
            }
        }
        match (side, &self.sign_with) {
            (Side::Edge, None) => Err("marker.sign_with: the edge needs a key id".to_string()),
            (Side::Edge, Some(id)) if !self.keys.contains_key(id) => {
                Err(format!("marker.sign_with: {id:?} is not in marker.keys"))
            }
            (Side::Origin, Some(_)) => Err("marker.sign_with: only the edge signs".to_string()),
            _ if !(1..=3600).contains(&self.max_age_s) => Err(format!(
                "marker.max_age_s: {} must be between 1 and 3600",
                self.max_age_s
            )),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const KEY: &str = "0123456789abcdef0123456789abcdef";

    fn edge(extra: &str) -> String {
        format!(r#"{{"side":"edge","marker":{{"keys":{{"k1":"{KEY}"}},"sign_with":"k1"}}{extra}}}"#)
    }

    #[test]
    fn minimal_config_takes_defaults() {
        let config = Config::from_json(edge("").as_bytes()).unwrap();
        assert_eq!(config.side, Side::Edge);
        assert_eq!(config.marker.header, DEFAULT_MARKER_HEADER);
        assert_eq!(config.marker.max_age_s, DEFAULT_MARKER_MAX_AGE_S);
        assert_eq!(config.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert_eq!(config.max_trailer_bytes, DEFAULT_MAX_TRAILER_BYTES);
        assert_eq!(config.deadline_grace_ms, DEFAULT_DEADLINE_GRACE_MS);
        assert!(config.origin_clusters.is_empty());
        assert!(!config.serve_browsers);
    }

    #[test]
    fn every_field_is_read() {
        let json = format!(
            r#"{{"side":"origin","marker":{{"header":"x-bridged","keys":{{"a":"{KEY}","b":"{KEY}"}},
                "max_age_s":5}},"max_frame_bytes":1024,"serve_browsers":true,
                "deadline_grace_ms":20,"max_trailer_bytes":4096}}"#
        );
        let config = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            config,
            Config {
                side: Side::Origin,
                marker: Marker {
                    header: "x-bridged".into(),
                    keys: [("a".into(), KEY.into()), ("b".into(), KEY.into())].into(),
                    sign_with: None,
                    max_age_s: 5,
                    static_secret: None,
                    content_type_header: "x-bridged-content-type".into(),
                },
                origin_clusters: Vec::new(),
                max_frame_bytes: 1024,
                serve_browsers: true,
                deadline_grace_ms: 20,
                max_trailer_bytes: 4096,
            }
        );
        let json = r#"{"side":"origin","marker":{"static_secret":"0123456789abcdef"}}"#;
        let config = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            config.marker.static_secret.as_deref(),
            Some("0123456789abcdef")
        );
        let config = Config::from_json(edge(r#","origin_clusters":["hop"]"#).as_bytes()).unwrap();
        assert_eq!(config.origin_clusters, ["hop"]);
    }

    #[test]
    fn errors_name_the_field() {
        let origin = |marker: &str| format!(r#"{{"side":"origin","marker":{marker}}}"#);
        let cases = [
            (r#"{"side":"middle"}"#.to_string(), "side"),
            (r#"{"side":"edge"}"#.into(), "marker"),
            (edge(r#","colour":1"#), "colour"),
            (origin(r#"{"keys":{}}"#), "marker.keys"),
            (origin(r#"{"keys":{"k":"short"}}"#), "marker.keys.k"),
            (
                origin(&format!(r#"{{"keys":{{"a.b":"{KEY}"}}}}"#)),
                "key id",
            ),
            (
                origin(&format!(r#"{{"keys":{{"k":"{KEY}"}},"sign_with":"k"}}"#)),
                "sign_with",
            ),
            (
                format!(r#"{{"side":"edge","marker":{{"keys":{{"k":"{KEY}"}}}}}}"#),
                "marker.sign_with",
            ),
            (
                format!(r#"{{"side":"edge","marker":{{"keys":{{"k":"{KEY}"}},"sign_with":"j"}}}}"#),
                "marker.sign_with",
            ),
            (
                origin(&format!(r#"{{"keys":{{"k":"{KEY}"}},"max_age_s":0}}"#)),
                "max_age_s",
            ),
            (origin(r#"{"static_secret":"short"}"#), "static_secret"),
            (
                origin(&format!(
                    r#"{{"static_secret":"{KEY}","keys":{{"k":"{KEY}"}}}}"#
                )),
                "static_secret",
            ),
            (
                origin(&format!(r#"{{"header":"X-Up","keys":{{"k":"{KEY}"}}}}"#)),
                "marker.header",
            ),
            (
                origin(&format!(r#"{{"header":"te","keys":{{"k":"{KEY}"}}}}"#)),
                "marker.header",
            ),
            (edge(r#","max_frame_bytes":0"#), "max_frame_bytes"),
            (edge(r#","serve_browsers":true"#), "serve_browsers"),
            (edge(r#","deadline_grace_ms":0"#), "deadline_grace_ms"),
            (edge(r#","max_trailer_bytes":10"#), "max_trailer_bytes"),
            (
                origin(&format!(
                    r#"{{"keys":{{"k":"{KEY}"}}}},"origin_clusters":["x"]"#
                )),
                "origin_clusters",
            ),
            ("not json".into(), "invalid configuration"),
        ];
        for (json, field) in cases {
            let error = Config::from_json(json.as_bytes()).unwrap_err();
            assert!(error.contains(field), "{json}: {error}");
        }
    }
}
