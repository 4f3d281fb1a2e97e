//! Content-type classification. A content type is parsed into an
//! enum once and every rewrite renders from it, so the subtype (`+proto`,
//! `+json`, ...) survives and no string-prefix rewrite can turn
//! `grpc-web-text` into nonsense.

/// The wire protocol a gRPC-family content type names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// `application/grpc`: HTTP/2 with real trailers.
    Grpc,
    /// `application/grpc-web`: trailers in a 0x80 frame, binary body.
    GrpcWeb,
    /// `application/grpc-web-text`: the gRPC-web body, base64-encoded.
    GrpcWebText,
}

impl Protocol {
    fn media_type(self) -> &'static str {
        match self {
            Protocol::Grpc => "application/grpc",
            Protocol::GrpcWeb => "application/grpc-web",
            Protocol::GrpcWebText => "application/grpc-web-text",
        }
    }

    pub fn is_web(self) -> bool {
        self != Protocol::Grpc
    }
}

/// A classified gRPC-family content type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContentType {
    pub protocol: Protocol,
    /// The message format after `+` (lowercased), e.g. `proto` or `json`.
    pub subtype: Option<String>,
}

impl ContentType {
    /// Classifies a content-type value; `None` if it is not gRPC or gRPC-web.
    /// Letter case and parameters (`; charset=...`) are tolerated.
    pub fn parse(value: &[u8]) -> Option<Self> {
        let value = std::str::from_utf8(value).ok()?;
        let essence = value.split(';').next()?.trim().to_ascii_lowercase();
        let (base, subtype) = match essence.split_once('+') {
            Some((_, "")) => return None,
            Some((base, subtype)) => (base, Some(subtype.to_string())),
            None => (essence.as_str(), None),
        };
        let protocol = [Protocol::Grpc, Protocol::GrpcWeb, Protocol::GrpcWebText]
            .into_iter()
            .find(|p| p.media_type() == base)?;
        Some(Self { protocol, subtype })
    }

    /// The same message format carried by another protocol.
    pub fn with_protocol(&self, protocol: Protocol) -> Self {
        Self {
            protocol,
            subtype: self.subtype.clone(),
        }
    }

    /// The header value: `application/grpc-web+proto` and the like.
    pub fn render(&self) -> String {
        match &self.subtype {
            Some(subtype) => format!("{}+{subtype}", self.protocol.media_type()),
            None => self.protocol.media_type().to_string(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn classify(value: &str) -> Option<(Protocol, Option<&str>)> {
        ContentType::parse(value.as_bytes()).map(|ct| (ct.protocol, ct.subtype.map(|s| &*s.leak())))
    }

    #[test]
    fn classifies_each_protocol_with_and_without_subtype() {
        use Protocol::*;
        let cases = [
            ("application/grpc", Some((Grpc, None))),
            ("application/grpc+proto", Some((Grpc, Some("proto")))),
            ("application/grpc+json", Some((Grpc, Some("json")))),
            ("application/grpc-web", Some((GrpcWeb, None))),
            ("application/grpc-web+proto", Some((GrpcWeb, Some("proto")))),
            (
                "application/grpc-web+thrift",
                Some((GrpcWeb, Some("thrift"))),
            ),
            ("application/grpc-web-text", Some((GrpcWebText, None))),
            (
                "application/grpc-web-text+proto",
                Some((GrpcWebText, Some("proto"))),
            ),
        ];
        for (value, expected) in cases {
            assert_eq!(classify(value), expected, "{value}");
        }
    }

    #[test]
    fn tolerates_case_parameters_and_whitespace() {
        use Protocol::*;
        assert_eq!(
            classify("Application/GRPC-Web+Proto"),
            Some((GrpcWeb, Some("proto")))
        );
        assert_eq!(
            classify(" application/grpc-web-text ; charset=utf-8"),
            Some((GrpcWebText, None))
        );
        assert_eq!(classify("application/grpc;foo=bar"), Some((Grpc, None)));
    }

    #[test]
    fn rejects_non_grpc_and_near_misses() {
        for value in [
            "application/json",
            "text/html",
            "application/grpc-webtext",
            "application/grpc-text",
            "application/grpcweb",
            "application/grpc+",
            "",
        ] {
            assert_eq!(classify(value), None, "{value}");
        }
        assert_eq!(ContentType::parse(&[0xff, 0xfe]), None);
    }

    #[test]
    fn rewriting_keeps_the_subtype_and_never_mangles_text() {
        let text = ContentType::parse(b"application/grpc-web-text+proto").unwrap();
        assert_eq!(
            text.with_protocol(Protocol::Grpc).render(),
            "application/grpc+proto"
        );
        let native = ContentType::parse(b"application/grpc+json").unwrap();
        assert_eq!(
            native.with_protocol(Protocol::GrpcWeb).render(),
            "application/grpc-web+json"
        );
        assert_eq!(
            native.with_protocol(Protocol::GrpcWebText).render(),
            "application/grpc-web-text+json"
        );
        let plain = ContentType::parse(b"application/grpc-web-text").unwrap();
        assert_eq!(
            plain.with_protocol(Protocol::GrpcWeb).render(),
            "application/grpc-web"
        );
    }
}
