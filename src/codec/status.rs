//! gRPC status codes, the HTTP status → grpc-status mapping, and the
//! percent-encoding that `grpc-message` uses on the wire.

use percent_encoding::{AsciiSet, CONTROLS, percent_decode, utf8_percent_encode};

/// The canonical gRPC status codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum Code {
    Ok = 0,
    Cancelled = 1,
    Unknown = 2,
    InvalidArgument = 3,
    DeadlineExceeded = 4,
    NotFound = 5,
    AlreadyExists = 6,
    PermissionDenied = 7,
    ResourceExhausted = 8,
    FailedPrecondition = 9,
    Aborted = 10,
    OutOfRange = 11,
    Unimplemented = 12,
    Internal = 13,
    Unavailable = 14,
    DataLoss = 15,
    Unauthenticated = 16,
}

impl Code {
    /// The decimal form used as the `grpc-status` value.
    pub fn as_header_value(self) -> String {
        (self as u8).to_string()
    }

    /// Maps a non-gRPC (or non-200) HTTP response status to the gRPC status a
    /// client must see, as grpc/doc/http-grpc-status-mapping.md specifies.
    pub fn from_http_status(status: u16) -> Code {
        match status {
            400 => Code::Internal,
            401 => Code::Unauthenticated,
            403 => Code::PermissionDenied,
            404 => Code::Unimplemented,
            429 | 502..=504 => Code::Unavailable,
            _ => Code::Unknown,
        }
    }
}

/// The reason phrase of the statuses a proxy between the sides writes
/// itself (RFC 9110 §15), for error messages: Envoy keeps no reason phrase
/// from HTTP/1.1.
pub fn http_reason(status: u16) -> Option<&'static str> {
    Some(match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        411 => "Length Required",
        413 => "Content Too Large",
        414 => "URI Too Long",
        415 => "Unsupported Media Type",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        505 => "HTTP Version Not Supported",
        _ => return None,
    })
}

/// Whether a `grpc-status` value is one canonical code, 0 to 16, in plain
/// decimal (`"abc"`, `"007"`, `"17"` and `"0,13"` are not).
pub fn is_valid_status(value: &[u8]) -> bool {
    match value {
        [digit] => digit.is_ascii_digit(),
        [b'1', digit] => (b'0'..=b'6').contains(digit),
        _ => false,
    }
}

/// Parses a `grpc-timeout` value (1 to 8 digits and a unit: H, M, S, m, u,
/// n) into milliseconds, rounding up so a deadline is never cut short.
pub fn parse_grpc_timeout(value: &[u8]) -> Option<u64> {
    let (&unit, digits) = value.split_last()?;
    if digits.is_empty() || digits.len() > 8 || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let amount: u64 = std::str::from_utf8(digits).ok()?.parse().ok()?;
    let nanos_per_unit: u64 = match unit {
        b'H' => 3_600_000_000_000,
        b'M' => 60_000_000_000,
        b'S' => 1_000_000_000,
        b'm' => 1_000_000,
        b'u' => 1_000,
        b'n' => 1,
        _ => return None,
    };
    Some((amount * nanos_per_unit).div_ceil(1_000_000))
}

/// Bytes that `grpc-message` must percent-encode: everything outside
/// printable ASCII, and `%` itself (PROTOCOL-HTTP2.md, "Status-Message").
const GRPC_MESSAGE_ESCAPES: &AsciiSet = &CONTROLS.add(b'%');

/// Percent-encodes a status message for the `grpc-message` header or trailer.
/// Non-ASCII characters are encoded as their UTF-8 bytes.
pub fn encode_grpc_message(message: &str) -> String {
    utf8_percent_encode(message, GRPC_MESSAGE_ESCAPES).to_string()
}

/// Decodes a `grpc-message` value. Malformed escapes are kept literally, as
/// the spec asks receivers to do, so decoding never fails.
pub fn decode_grpc_message(value: &[u8]) -> Vec<u8> {
    percent_decode(value).collect()
}

#[cfg(test)]
mod status_value_tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn only_canonical_codes_are_valid_statuses() {
        for code in 0..=16 {
            assert!(is_valid_status(code.to_string().as_bytes()), "{code}");
        }
        for bad in [
            "",
            "17",
            "20",
            "007",
            "01",
            "abc",
            "0,13",
            " 0",
            "0 ",
            "-1",
            "99999999999999999999",
        ] {
            assert!(!is_valid_status(bad.as_bytes()), "{bad:?}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    #[test]
    fn http_status_maps_per_grpc_mapping_doc() {
        let cases = [
            (400, Code::Internal),
            (401, Code::Unauthenticated),
            (403, Code::PermissionDenied),
            (404, Code::Unimplemented),
            (429, Code::Unavailable),
            (502, Code::Unavailable),
            (503, Code::Unavailable),
            (504, Code::Unavailable),
            (500, Code::Unknown),
            (301, Code::Unknown),
            (418, Code::Unknown),
        ];
        for (http, grpc) in cases {
            assert_eq!(Code::from_http_status(http), grpc, "HTTP {http}");
        }
    }

    #[test]
    fn status_code_renders_as_decimal() {
        assert_eq!(Code::Ok.as_header_value(), "0");
        assert_eq!(Code::Unauthenticated.as_header_value(), "16");
    }

    #[test]
    fn grpc_message_escapes_percent_controls_and_non_ascii() {
        let message = "\t\ntest with whitespace\r\nand Unicode BMP ☺ and non-BMP 😈\t\n";
        let encoded = encode_grpc_message(message);
        assert_eq!(
            encoded,
            "%09%0Atest with whitespace%0D%0Aand Unicode BMP %E2%98%BA and non-BMP %F0%9F%98%88%09%0A"
        );
        assert_eq!(encode_grpc_message("100% done"), "100%25 done");
        assert_eq!(decode_grpc_message(encoded.as_bytes()), message.as_bytes());
    }

    #[test]
    fn grpc_timeout_parses_every_unit_and_rounds_up() {
        assert_eq!(parse_grpc_timeout(b"1H"), Some(3_600_000));
        assert_eq!(parse_grpc_timeout(b"2M"), Some(120_000));
        assert_eq!(parse_grpc_timeout(b"3S"), Some(3_000));
        assert_eq!(parse_grpc_timeout(b"4m"), Some(4));
        assert_eq!(parse_grpc_timeout(b"1500u"), Some(2));
        assert_eq!(parse_grpc_timeout(b"1n"), Some(1));
        assert_eq!(parse_grpc_timeout(b"99999999S"), Some(99_999_999_000));
    }

    #[test]
    fn grpc_timeout_rejects_malformed_values() {
        for value in [&b""[..], b"S", b"123456789S", b"10x", b"-1S", b"1.5S"] {
            assert_eq!(parse_grpc_timeout(value), None, "{value:?}");
        }
    }

    #[test]
    fn grpc_message_decoding_keeps_malformed_escapes() {
        assert_eq!(decode_grpc_message(b"50%"), b"50%");
        assert_eq!(decode_grpc_message(b"%zz%41"), b"%zzA");
    }
}
