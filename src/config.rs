//! The plugin configuration: JSON in Envoy's `plugin_config`, validated once
//! when the plugin starts. A bad configuration fails the plugin with a
//! message naming the field.

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

#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    pub side: Side,
    /// Header the edge adds to each request it converts.
    #[serde(default = "default_marker_header")]
    pub marker_header: String,
    /// Shared secret carried as the marker's value: the origin converts only
    /// requests whose marker matches, so clients cannot forge it.
    pub marker_secret: String,
    /// Largest frame accepted in either direction, in bytes.
    #[serde(default = "default_max_frame_bytes")]
    pub max_frame_bytes: u32,
    /// Largest trailer block passed to a client (HTTP/2 header-list size).
    #[serde(default = "default_max_trailer_bytes")]
    pub max_trailer_bytes: u32,
    /// Origin only: also convert unmarked gRPC-web from browsers.
    #[serde(default)]
    pub serve_browsers: bool,
    /// How long after a call's deadline the upstream may still end the call
    /// itself (it got the same `grpc-timeout`) once response headers have
    /// left; then the stream is reset. In ms.
    #[serde(default = "default_deadline_grace_ms")]
    pub deadline_grace_ms: u32,
}

/// Default for `max_trailer_bytes`: what grpc-java and grpc-core accept
/// by default (8 KiB of metadata).
pub const DEFAULT_MAX_TRAILER_BYTES: u32 = 8192;

fn default_max_trailer_bytes() -> u32 {
    DEFAULT_MAX_TRAILER_BYTES
}

/// Default for `deadline_grace_ms`.
pub const DEFAULT_DEADLINE_GRACE_MS: u32 = 1000;

fn default_deadline_grace_ms() -> u32 {
    DEFAULT_DEADLINE_GRACE_MS
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
        let config: Config = serde_path_to_error::deserialize(deserializer).map_err(|error| {
            match error.path().to_string().as_str() {
                "." => format!("invalid configuration: {}", error.inner()),
                field => format!("invalid configuration: {field}: {}", error.inner()),
            }
        })?;
        config.validate()?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), String> {
        let name = &self.marker_header;
        let token = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_';
        if name.is_empty() || !name.bytes().all(token) {
            return Err(format!(
                "marker_header: {name:?} must be a non-empty lowercase header name (a-z, 0-9, '-', '_')"
            ));
        }
        if RESERVED_HEADERS.contains(&name.as_str()) || name.starts_with("grpc-") {
            return Err(format!(
                "marker_header: {name:?} is a header the bridge or gRPC uses"
            ));
        }
        if self.marker_secret.len() < 16 {
            return Err("marker_secret: must be at least 16 characters".to_string());
        }
        if !self.marker_secret.bytes().all(|b| b.is_ascii_graphic()) {
            return Err("marker_secret: must be printable ASCII without spaces".to_string());
        }
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
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const SECRET: &str = "0123456789abcdef";

    #[test]
    fn minimal_config_takes_defaults() {
        let config = Config::from_json(
            format!(r#"{{"side":"edge","marker_secret":"{SECRET}"}}"#).as_bytes(),
        )
        .unwrap();
        assert_eq!(config.side, Side::Edge);
        assert_eq!(config.marker_header, DEFAULT_MARKER_HEADER);
        assert_eq!(config.max_frame_bytes, DEFAULT_MAX_FRAME_BYTES);
        assert!(!config.serve_browsers);
    }

    #[test]
    fn every_field_is_read() {
        let json = format!(
            r#"{{"side":"origin","marker_header":"x-bridged","marker_secret":"{SECRET}",
                "max_frame_bytes":1024,"serve_browsers":true,"deadline_grace_ms":20,"max_trailer_bytes":4096}}"#
        );
        let config = Config::from_json(json.as_bytes()).unwrap();
        assert_eq!(
            config,
            Config {
                side: Side::Origin,
                marker_header: "x-bridged".into(),
                marker_secret: SECRET.into(),
                max_frame_bytes: 1024,
                serve_browsers: true,
                deadline_grace_ms: 20,
                max_trailer_bytes: 4096,
            }
        );
    }

    #[test]
    fn errors_name_the_field() {
        let cases = [
            (
                r#"{"side":"middle","marker_secret":"0123456789abcdef"}"#,
                "side",
            ),
            (r#"{"side":"edge"}"#, "marker_secret"),
            (
                r#"{"side":"edge","marker_secret":"short"}"#,
                "marker_secret",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","colour":1}"#,
                "colour",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","marker_header":"X-Up"}"#,
                "marker_header",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","marker_header":"te"}"#,
                "marker_header",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","max_frame_bytes":0}"#,
                "max_frame_bytes",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","serve_browsers":true}"#,
                "serve_browsers",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcde\n"}"#,
                "marker_secret",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","deadline_grace_ms":0}"#,
                "deadline_grace_ms",
            ),
            (
                r#"{"side":"edge","marker_secret":"0123456789abcdef","max_trailer_bytes":10}"#,
                "max_trailer_bytes",
            ),
            ("not json", "invalid configuration"),
        ];
        for (json, field) in cases {
            let error = Config::from_json(json.as_bytes()).unwrap_err();
            assert!(error.contains(field), "{json}: {error}");
        }
    }
}
