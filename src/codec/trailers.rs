//! The gRPC-web trailer block: the payload of the 0x80 frame, an HTTP/1-style
//! header block (`name:value\r\n` per line).
//!
//! Writing is strict (lowercase names, no space, one line per value); reading
//! is as lenient as is safe (any name case, optional whitespace around the
//! value, a final line without CRLF) and as strict as it must be (CR, LF, NUL
//! and pseudo-headers are rejected: a block that crossed untrusted proxies
//! must not inject headers).

use bytes::{BufMut, Bytes, BytesMut};

use super::error::ErrorKind;

/// An ordered list of header fields: names lowercase, values as raw bytes,
/// duplicates kept in order (`-bin` values stay base64 text, untouched).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Metadata(pub Vec<(String, Vec<u8>)>);

impl Metadata {
    /// The first value of `name` (lowercase).
    pub fn get(&self, name: &str) -> Option<&[u8]> {
        self.0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_slice())
    }

    pub fn push(&mut self, name: &str, value: impl Into<Vec<u8>>) {
        self.0.push((name.to_ascii_lowercase(), value.into()));
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.0.iter().map(|(n, v)| (n.as_str(), v.as_slice()))
    }
}

/// RFC 9110 `tchar`: what a field name may hold.
fn is_token_byte(byte: u8) -> bool {
    byte.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&byte)
}

fn is_forbidden_in_value(byte: u8) -> bool {
    matches!(byte, b'\r' | b'\n' | b'\0')
}

/// Strips SP and HTAB (HTTP's OWS) from both ends, and nothing else: a CR
/// or LF at the edge of a value must still be seen and rejected.
fn trim_optional_whitespace(mut value: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = value {
        value = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = value {
        value = rest;
    }
    value
}

/// Checks one field for the rules both directions share; `line` is 1-based.
fn check_field(name: &[u8], value: &[u8], line: usize) -> Result<(), ErrorKind> {
    if name.first() == Some(&b':') {
        return Err(ErrorKind::PseudoHeaderInTrailers { line });
    }
    if name.is_empty() {
        return Err(ErrorKind::MalformedTrailerLine { line });
    }
    if !name.iter().all(|&b| is_token_byte(b)) {
        return Err(ErrorKind::InvalidTrailerName { line });
    }
    if value.iter().any(|&b| is_forbidden_in_value(b)) {
        return Err(ErrorKind::InvalidTrailerValue { line });
    }
    Ok(())
}

/// Writes a trailer block: `name:value\r\n` per field, names lowercased.
pub fn encode_trailer_block(fields: &Metadata) -> Result<Bytes, ErrorKind> {
    let size = fields.iter().map(|(n, v)| n.len() + v.len() + 3).sum();
    let mut out = BytesMut::with_capacity(size);
    for (index, (name, value)) in fields.iter().enumerate() {
        check_field(name.as_bytes(), value, index + 1)?;
        out.extend(name.bytes().map(|b| b.to_ascii_lowercase()));
        out.put_u8(b':');
        out.put_slice(value);
        out.put_slice(b"\r\n");
    }
    Ok(out.freeze())
}

/// Reads a trailer block.
pub fn decode_trailer_block(block: &[u8]) -> Result<Metadata, ErrorKind> {
    let mut fields = Metadata::default();
    let mut rest = block;
    let mut line_no = 0;
    while !rest.is_empty() {
        line_no += 1;
        let (line, next) = match memchr::memmem::find(rest, b"\r\n") {
            Some(end) => (&rest[..end], &rest[end + 2..]),
            None => (rest, &[][..]),
        };
        rest = next;
        if line.is_empty() {
            continue;
        }
        if line[0] == b':' {
            return Err(ErrorKind::PseudoHeaderInTrailers { line: line_no });
        }
        let colon = line
            .iter()
            .position(|&b| b == b':')
            .ok_or(ErrorKind::MalformedTrailerLine { line: line_no })?;
        let name = &line[..colon];
        let value = trim_optional_whitespace(&line[colon + 1..]);
        check_field(name, value, line_no)?;
        let name = String::from_utf8_lossy(name).to_ascii_lowercase();
        fields.0.push((name, value.to_vec()));
    }
    Ok(fields)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_support::chunkings;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn fields(pairs: &[(&str, &str)]) -> Metadata {
        Metadata(
            pairs
                .iter()
                .map(|(n, v)| (n.to_string(), v.as_bytes().to_vec()))
                .collect(),
        )
    }

    #[test]
    fn writes_lowercase_names_without_space_one_line_per_value() {
        let block = encode_trailer_block(&fields(&[
            ("Grpc-Status", "0"),
            ("x-dup", "a"),
            ("x-dup", "b"),
        ]))
        .unwrap();
        assert_eq!(&block[..], b"grpc-status:0\r\nx-dup:a\r\nx-dup:b\r\n");
    }

    #[test]
    fn writing_refuses_cr_lf_nul_and_pseudo_headers() {
        for (name, value, error) in [
            (
                "x-a",
                "1\r\nx-evil: 1",
                ErrorKind::InvalidTrailerValue { line: 1 },
            ),
            ("x-a", "nul\0", ErrorKind::InvalidTrailerValue { line: 1 }),
            ("x\na", "1", ErrorKind::InvalidTrailerName { line: 1 }),
            (
                ":status",
                "200",
                ErrorKind::PseudoHeaderInTrailers { line: 1 },
            ),
        ] {
            assert_eq!(encode_trailer_block(&fields(&[(name, value)])), Err(error));
        }
    }

    #[test]
    fn reads_names_case_insensitively() {
        let read = decode_trailer_block(b"GRPC-Status:0\r\nGrpc-Message:ok\r\n").unwrap();
        assert_eq!(
            read,
            fields(&[("grpc-status", "0"), ("grpc-message", "ok")])
        );
        assert_eq!(read.get("grpc-status"), Some(&b"0"[..]));
    }

    #[test]
    fn reads_optional_whitespace_around_the_value() {
        let read = decode_trailer_block(b"grpc-status: 0\r\ngrpc-message:\t hi \r\n").unwrap();
        assert_eq!(
            read,
            fields(&[("grpc-status", "0"), ("grpc-message", "hi")])
        );
    }

    #[test]
    fn splits_at_the_first_colon_only() {
        let read = decode_trailer_block(b"x-url:http://a:1/b\r\n").unwrap();
        assert_eq!(read, fields(&[("x-url", "http://a:1/b")]));
    }

    #[test]
    fn keeps_duplicate_names_in_order() {
        let read = decode_trailer_block(b"x-dup:1\r\nX-Dup:2\r\nx-dup:3\r\n").unwrap();
        assert_eq!(
            read,
            fields(&[("x-dup", "1"), ("x-dup", "2"), ("x-dup", "3")])
        );
    }

    #[test]
    fn accepts_a_last_line_without_crlf() {
        let read = decode_trailer_block(b"grpc-status:0\r\ngrpc-message:done").unwrap();
        assert_eq!(
            read,
            fields(&[("grpc-status", "0"), ("grpc-message", "done")])
        );
    }

    #[test]
    fn empty_block_is_empty_metadata() {
        assert_eq!(decode_trailer_block(b""), Ok(Metadata::default()));
    }

    #[test]
    fn passes_bin_values_through_verbatim() {
        let read = decode_trailer_block(b"x-grpc-test-echo-trailing-bin:q6ur\r\n").unwrap();
        assert_eq!(
            read.get("x-grpc-test-echo-trailing-bin"),
            Some(&b"q6ur"[..])
        );
    }

    #[test]
    fn rejects_header_injection_and_pseudo_headers() {
        let cases: [(&[u8], ErrorKind); 8] = [
            (
                b"x-a:1\rx-b:2\r\n",
                ErrorKind::InvalidTrailerValue { line: 1 },
            ),
            (
                b"x-a:1\nx-b:2\r\n",
                ErrorKind::InvalidTrailerValue { line: 1 },
            ),
            (b"x-a:\n1\r\n", ErrorKind::InvalidTrailerValue { line: 1 }),
            (
                b"grpc-status:0\r\nx-a:nul\0\r\n",
                ErrorKind::InvalidTrailerValue { line: 2 },
            ),
            (b"x\0a:1\r\n", ErrorKind::InvalidTrailerName { line: 1 }),
            (b"x a:1\r\n", ErrorKind::InvalidTrailerName { line: 1 }),
            (
                b":status:200\r\n",
                ErrorKind::PseudoHeaderInTrailers { line: 1 },
            ),
            (
                b"grpc-status:0\r",
                ErrorKind::InvalidTrailerValue { line: 1 },
            ),
        ];
        for (block, error) in cases {
            assert_eq!(
                decode_trailer_block(block),
                Err(error),
                "{:?}",
                String::from_utf8_lossy(block)
            );
        }
    }

    #[test]
    fn rejects_lines_without_a_name_and_colon() {
        assert_eq!(
            decode_trailer_block(b"grpc-status:0\r\nno colon here\r\n"),
            Err(ErrorKind::MalformedTrailerLine { line: 2 })
        );
        assert_eq!(
            decode_trailer_block(b" :x\r\n"),
            Err(ErrorKind::InvalidTrailerName { line: 1 })
        );
    }

    #[test]
    fn round_trips_what_it_writes() {
        let original = fields(&[
            ("grpc-status", "13"),
            ("grpc-message", "a%20b"),
            ("k-bin", "AAE="),
        ]);
        assert_eq!(
            decode_trailer_block(&encode_trailer_block(&original).unwrap()),
            Ok(original)
        );
    }

    #[test]
    fn block_split_anywhere_inside_a_frame_decodes_the_same() {
        // The trailer block itself is only parsed once whole; what matters is
        // that the frame scanner reassembles it from any split.
        use crate::codec::frame::{FrameScanner, Piece, encode_frame};
        let mut frame = BytesMut::new();
        encode_frame(
            false,
            true,
            b"grpc-status:0\r\nx-dup:a\r\nx-dup:b",
            &mut frame,
        )
        .unwrap();
        for chunks in chunkings(&frame) {
            let mut scanner = FrameScanner::new(64);
            let mut pieces = Vec::new();
            for chunk in &chunks {
                scanner
                    .push(Bytes::copy_from_slice(chunk), &mut pieces)
                    .unwrap();
            }
            let [Piece::Trailers { block, .. }] = pieces.as_slice() else {
                panic!("expected one trailer frame, got {pieces:?}");
            };
            assert_eq!(
                decode_trailer_block(block).unwrap(),
                fields(&[("grpc-status", "0"), ("x-dup", "a"), ("x-dup", "b")])
            );
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn arbitrary_blocks_never_panic_and_never_yield_cr_lf_nul(block in proptest::collection::vec(any::<u8>(), 0..80)) {
                if let Ok(read) = decode_trailer_block(&block) {
                    for (name, value) in read.iter() {
                        prop_assert!(!name.is_empty() && !name.starts_with(':'));
                        prop_assert!(!value.iter().any(|b| matches!(b, b'\r' | b'\n' | 0)));
                    }
                }
            }
        }
    }
}
