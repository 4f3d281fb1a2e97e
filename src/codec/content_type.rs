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

/// What a request's content-type claims, for deciding between converting,
/// refusing and leaving it alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A valid gRPC or gRPC-web content type.
    Grpc(ContentType),
    /// Starts like a gRPC content type (`application/grpc...`) but is none:
    /// an empty or invalid subtype, or an unknown protocol. Refused, never
    /// passed on half-understood.
    Malformed,
    /// Not gRPC at all: left alone.
    Other,
}

impl ContentType {
    /// Classifies a content-type value. Letter case and parameters
    /// (`; charset=...`, each value a token or a quoted string, RFC 9110
    /// §5.6.6) are tolerated, as the gRPC specs allow; the subtype must be
    /// an HTTP token, and a parameter list that is not one makes the value
    /// malformed.
    pub fn classify(value: &[u8]) -> Claim {
        const FAMILY: &[u8] = b"application/grpc";
        let split = value.iter().position(|&b| b == b';').unwrap_or(value.len());
        let (essence, parameters) = value.split_at(split);
        let essence = essence.trim_ascii();
        if essence.len() < FAMILY.len() || !essence[..FAMILY.len()].eq_ignore_ascii_case(FAMILY) {
            return Claim::Other;
        }
        if !is_parameter_list(parameters) {
            return Claim::Malformed;
        }
        // Compared in place: only a subtype is copied (every call reads one).
        let (base, subtype) = match essence.iter().position(|&b| b == b'+') {
            Some(at) => (&essence[..at], Some(&essence[at + 1..])),
            None => (essence, None),
        };
        let subtype = match subtype {
            Some(subtype) if !is_token(subtype) => return Claim::Malformed,
            // A token is ASCII.
            Some(subtype) => Some(String::from_utf8_lossy(subtype).to_ascii_lowercase()),
            None => None,
        };
        match [Protocol::Grpc, Protocol::GrpcWeb, Protocol::GrpcWebText]
            .into_iter()
            .find(|p| p.media_type().as_bytes().eq_ignore_ascii_case(base))
        {
            Some(protocol) => Claim::Grpc(Self { protocol, subtype }),
            None => Claim::Malformed,
        }
    }

    /// A valid gRPC or gRPC-web content type; `None` for anything else.
    pub fn parse(value: &[u8]) -> Option<Self> {
        match Self::classify(value) {
            Claim::Grpc(content_type) => Some(content_type),
            Claim::Malformed | Claim::Other => None,
        }
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

/// A codec subtype: an HTTP token (RFC 9110 `tchar`s) without `+`, which
/// would start another suffix.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b) && b != b'+')
}

fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// What follows a media type, as RFC 9110 §5.6.6 has it:
/// `*( OWS ";" OWS [ token "=" ( token / quoted-string ) ] )`.
fn is_parameter_list(mut rest: &[u8]) -> bool {
    let ows = |s: &[u8]| s.iter().take_while(|&&b| b == b' ' || b == b'\t').count();
    let token = |s: &[u8]| s.iter().take_while(|&&b| is_tchar(b)).count();
    loop {
        rest = &rest[ows(rest)..];
        let Some(after) = rest.strip_prefix(b";") else {
            return rest.is_empty();
        };
        rest = &after[ows(after)..];
        if rest.is_empty() || rest[0] == b';' {
            continue;
        }
        let name = token(rest);
        if name == 0 || rest.get(name) != Some(&b'=') {
            return false;
        }
        rest = &rest[name + 1..];
        let value = match rest.first() {
            Some(b'"') => quoted_string_len(rest),
            _ => Some(token(rest)).filter(|&n| n > 0),
        };
        let Some(value) = value else {
            return false;
        };
        rest = &rest[value..];
    }
}

/// The length of the quoted string `s` starts with (RFC 9110 §5.6.4: qdtext
/// and quoted-pairs between DQUOTEs), or `None` if it is not one.
fn quoted_string_len(s: &[u8]) -> Option<usize> {
    let mut at = 1;
    loop {
        match *s.get(at)? {
            b'"' => return Some(at + 1),
            b'\\' => match *s.get(at + 1)? {
                b'\t' | b' '..=b'~' | 0x80.. => at += 2,
                _ => return None,
            },
            b'\t' | b' ' | b'!' | b'#'..=b'[' | b']'..=b'~' | 0x80.. => at += 1,
            _ => return None,
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

    /// RFC 9110 parameters: a token or a quoted string (with quoted-pairs)
    /// as the value, empty parameters between semicolons, whitespace around
    /// them. Anything else is not a parameter list.
    #[test]
    fn parameters_are_parsed_as_rfc_9110_has_them() {
        for value in [
            r#"application/grpc-web+proto; charset="x\"y"; a=b"#,
            r#"application/grpc; a="semi;colon"; b="""#,
            "application/grpc;",
            "application/grpc ; ; a=b ;",
            "application/grpc;\ta=b",
            "application/grpc; a=\"tab\\\tand \\\\ pairs\"",
        ] {
            assert!(
                matches!(ContentType::classify(value.as_bytes()), Claim::Grpc(_)),
                "{value}"
            );
        }
        for value in [
            "application/grpc; a",
            "application/grpc; =b",
            "application/grpc; a=",
            "application/grpc; a=b c",
            "application/grpc; a b=c",
            r#"application/grpc; a="unterminated"#,
            r#"application/grpc; a="bad\"#,
            "application/grpc; a=\"nul\0\"",
            "application/grpc; a=b; c=\"x\ny\"",
        ] {
            assert_eq!(
                ContentType::classify(value.as_bytes()),
                Claim::Malformed,
                "{value:?}"
            );
        }
    }

    #[test]
    fn leaves_other_content_types_alone() {
        for value in [
            "application/json",
            "text/html",
            "application/grp",
            "",
            "grpc",
        ] {
            assert_eq!(
                ContentType::classify(value.as_bytes()),
                Claim::Other,
                "{value}"
            );
        }
        assert_eq!(ContentType::classify(&[0xff, 0xfe]), Claim::Other);
    }

    #[test]
    fn near_misses_of_the_grpc_family_are_malformed_not_other() {
        let mut values = vec![
            "application/grpc-webtext",
            "application/grpc-text",
            "application/grpcweb",
            "application/grpc+",
            "application/grpc-web+",
            "application/grpc+pro to",
            "application/grpc+a/b",
            "application/grpc+json+x",
            "Application/GRPC-Foo",
        ]
        .into_iter()
        .map(|v| v.as_bytes().to_vec())
        .collect::<Vec<_>>();
        values.push(b"application/grpc+\xff".to_vec());
        values.push([b"application/grpc+".as_slice(), &[0xc3, 0xa9]].concat());
        for value in values {
            assert_eq!(
                ContentType::classify(&value),
                Claim::Malformed,
                "{}",
                String::from_utf8_lossy(&value)
            );
            assert_eq!(ContentType::parse(&value), None);
        }
    }

    #[test]
    fn any_token_subtype_is_valid() {
        for subtype in ["json", "thrift", "x-custom.v1", "a_b~c"] {
            let value = format!("application/grpc+{subtype}; charset=utf-8");
            assert_eq!(
                classify(&value),
                Some((Protocol::Grpc, Some(subtype))),
                "{value}"
            );
        }
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
