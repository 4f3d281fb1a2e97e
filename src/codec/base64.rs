//! Streaming base64 for `application/grpc-web-text`.
//!
//! Decoding works in whole 4-character blocks and carries fewer than four
//! characters between chunks. Padding may end any block: gRPC-web text
//! bodies are often concatenations of separately padded segments
//! (`AAAAAAJBQg==AAAAAAJBQg==`), so a buffer is never decoded in one call
//! across a padded block. Encoding carries fewer than three bytes and pads
//! only when told a frame ended, so each frame is its own padded segment.
//!
//! The bulk of each run goes through `base64-simd` (AVX2/SSE4.1 natively,
//! SIMD128 in the module); the lenient scalar engine takes only the short
//! final block of a segment, and re-reads a run that failed to say where.

use base64::DecodeError;
use base64::Engine;
use base64::alphabet;
use base64::engine::DecodePaddingMode;
use base64::engine::general_purpose::{GeneralPurpose, GeneralPurposeConfig};

use super::error::ErrorKind;

/// Accepts non-zero trailing bits (some encoders leave them) and either
/// padded or unpadded final blocks.
const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_allow_trailing_bits(true)
        .with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

const BLOCK: usize = 4;

/// Decodes a base64 stream chunk by chunk.
#[derive(Debug, Default)]
pub struct Base64Decoder {
    carry: [u8; BLOCK],
    carried: usize,
    /// Offset in the encoded stream of the first carried character.
    offset: u64,
}

impl Base64Decoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Decodes as much of `input` as forms whole blocks, appending to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorKind> {
        if self.carried > 0 {
            let take = (BLOCK - self.carried).min(input.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&input[..take]);
            self.carried += take;
            input = &input[take..];
            if self.carried < BLOCK {
                return Ok(());
            }
            let block = self.carry;
            self.decode_blocks(&block, out)?;
            self.carried = 0;
        }
        let whole = input.len() - input.len() % BLOCK;
        let (blocks, rest) = input.split_at(whole);
        self.decode_blocks(blocks, out)?;
        self.carry[..rest.len()].copy_from_slice(rest);
        self.carried = rest.len();
        Ok(())
    }

    /// Ends the stream. An unpadded final group of two or three characters
    /// is accepted; a single dangling character is not.
    pub fn finish(&mut self, out: &mut Vec<u8>) -> Result<(), ErrorKind> {
        match self.carried {
            0 => Ok(()),
            1 => Err(ErrorKind::TruncatedBase64 {
                offset: self.offset,
            }),
            n => {
                let tail = self.carry;
                self.carried = 0;
                self.decode_run(&tail[..n], out)
            }
        }
    }

    /// Decodes whole blocks, one padded segment per call.
    fn decode_blocks(&mut self, mut blocks: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorKind> {
        while !blocks.is_empty() {
            let segment_end = match memchr::memchr(b'=', blocks) {
                Some(pad) => (pad / BLOCK + 1) * BLOCK,
                None => blocks.len(),
            };
            let (segment, rest) = blocks.split_at(segment_end);
            // Unpadded whole blocks in bulk; a padded last block, whose
            // trailing bits may be non-zero, by the lenient engine.
            let bulk = match segment.last() {
                Some(b'=') => segment.len() - BLOCK,
                _ => segment.len(),
            };
            let (whole, last) = segment.split_at(bulk);
            if base64_simd::STANDARD.decode_append(whole, out).is_err() {
                return self.decode_run(whole, out);
            }
            self.offset += whole.len() as u64;
            self.decode_run(last, out)?;
            blocks = rest;
        }
        Ok(())
    }

    /// Decodes a short or invalid run with the lenient scalar engine, which
    /// also names the offset of what is wrong.
    fn decode_run(&mut self, run: &[u8], out: &mut Vec<u8>) -> Result<(), ErrorKind> {
        let at = |index: usize| ErrorKind::InvalidBase64 {
            offset: self.offset + index as u64,
        };
        LENIENT.decode_vec(run, out).map_err(|error| match error {
            DecodeError::InvalidByte(index, _) => at(index),
            DecodeError::InvalidLastSymbol { offset, .. } => at(offset),
            DecodeError::InvalidLength(_) | DecodeError::InvalidPadding => {
                at(run.iter().position(|&b| b == b'=').unwrap_or(0))
            }
        })?;
        self.offset += run.len() as u64;
        Ok(())
    }
}

/// Encodes a byte stream chunk by chunk, padding only at [`Self::end_segment`].
#[derive(Debug, Default)]
pub struct Base64Encoder {
    carry: [u8; 3],
    carried: usize,
}

impl Base64Encoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Encodes what forms whole 3-byte groups, appending ASCII to `out`.
    pub fn push(&mut self, mut input: &[u8], out: &mut Vec<u8>) {
        if self.carried > 0 {
            let take = (3 - self.carried).min(input.len());
            self.carry[self.carried..self.carried + take].copy_from_slice(&input[..take]);
            self.carried += take;
            input = &input[take..];
            if self.carried < 3 {
                return;
            }
            let group = self.carry;
            encode_into(&group, out);
            self.carried = 0;
        }
        let whole = input.len() - input.len() % 3;
        encode_into(&input[..whole], out);
        self.carry[..input.len() - whole].copy_from_slice(&input[whole..]);
        self.carried = input.len() - whole;
    }

    /// Flushes the carried bytes with padding: a segment boundary.
    pub fn end_segment(&mut self, out: &mut Vec<u8>) {
        let tail = self.carry;
        encode_into(&tail[..self.carried], out);
        self.carried = 0;
    }
}

fn encode_into(input: &[u8], out: &mut Vec<u8>) {
    base64_simd::STANDARD.encode_append(input, out);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_support::chunkings;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    fn decode(chunks: &[&[u8]]) -> Result<Vec<u8>, ErrorKind> {
        let mut decoder = Base64Decoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            decoder.push(chunk, &mut out)?;
        }
        decoder.finish(&mut out)?;
        Ok(out)
    }

    fn encode(chunks: &[&[u8]], segment_ends: bool) -> Vec<u8> {
        let mut encoder = Base64Encoder::new();
        let mut out = Vec::new();
        for chunk in chunks {
            encoder.push(chunk, &mut out);
            if segment_ends {
                encoder.end_segment(&mut out);
            }
        }
        encoder.end_segment(&mut out);
        out
    }

    #[test]
    fn decodes_one_frame_under_every_chunking() {
        // "AAAAAAJBQg==" is the frame 00 00000002 "AB".
        for chunks in chunkings(b"AAAAAAJBQg==") {
            assert_eq!(
                decode(&chunks),
                Ok(b"\x00\x00\x00\x00\x02AB".to_vec()),
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn decodes_concatenated_padded_segments_under_every_chunking() {
        let frame = b"\x00\x00\x00\x00\x02AB".repeat(2);
        for chunks in chunkings(b"AAAAAAJBQg==AAAAAAJBQg==") {
            assert_eq!(decode(&chunks), Ok(frame.clone()), "{chunks:?}");
        }
        // One- and two-character padding mixed.
        assert_eq!(decode(&[b"YQ==YWI=YWJj"]), Ok(b"aababc".to_vec()));
    }

    #[test]
    fn accepts_an_unpadded_final_group() {
        assert_eq!(decode(&[b"YWI"]), Ok(b"ab".to_vec()));
        assert_eq!(decode(&[b"YW", b"I"]), Ok(b"ab".to_vec()));
    }

    #[test]
    fn invalid_character_error_names_its_offset_in_the_stream() {
        assert_eq!(
            decode(&[b"AAAA", b"AA*A"]),
            Err(ErrorKind::InvalidBase64 { offset: 6 })
        );
        assert_eq!(
            decode(&[b"AA", b"AAA!"]),
            Err(ErrorKind::InvalidBase64 { offset: 5 })
        );
        for chunks in chunkings(b"YWJjZGVm\nZw==") {
            assert_eq!(
                decode(&chunks),
                Err(ErrorKind::InvalidBase64 { offset: 8 }),
                "{chunks:?}"
            );
        }
    }

    #[test]
    fn padding_in_the_middle_of_a_block_is_invalid() {
        assert!(matches!(
            decode(&[b"A=AA"]),
            Err(ErrorKind::InvalidBase64 { .. })
        ));
        assert!(matches!(
            decode(&[b"A==="]),
            Err(ErrorKind::InvalidBase64 { .. })
        ));
    }

    #[test]
    fn single_dangling_character_is_truncated() {
        assert_eq!(
            decode(&[b"AAAAA"]),
            Err(ErrorKind::TruncatedBase64 { offset: 4 })
        );
    }

    #[test]
    fn encoder_pads_only_at_segment_ends() {
        // Chunks "a", "bc", "d" without segment ends encode like "abcd".
        assert_eq!(encode(&[b"a", b"bc", b"d"], false), b"YWJjZA==");
        // With a segment end after each chunk, each is padded on its own.
        assert_eq!(encode(&[b"a", b"bc", b"d"], true), b"YQ==YmM=ZA==");
    }

    #[test]
    fn encoded_segments_decode_back_under_every_chunking() {
        let encoded = encode(
            &[
                b"\x00\x00\x00\x00\x01x",
                b"\x80\x00\x00\x00\x0fgrpc-status:0\r\n",
            ],
            true,
        );
        let expected = b"\x00\x00\x00\x00\x01x\x80\x00\x00\x00\x0fgrpc-status:0\r\n".to_vec();
        for chunks in chunkings(&encoded) {
            assert_eq!(decode(&chunks), Ok(expected.clone()));
        }
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use crate::codec::test_support::cut_at;
        use base64::engine::general_purpose::STANDARD;
        use proptest::prelude::*;

        proptest! {
            #[test]
            fn any_chunking_of_padded_segments_round_trips(
                segments in proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..20), 0..5),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let plain: Vec<u8> = segments.concat();
                let pieces: Vec<&[u8]> = segments.iter().map(Vec::as_slice).collect();
                let encoded = encode(&pieces, true);
                prop_assert_eq!(decode(&cut_at(&encoded, &cuts)), Ok(plain));
            }

            #[test]
            fn encoder_chunking_does_not_change_the_output(
                input in proptest::collection::vec(any::<u8>(), 0..60),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                prop_assert_eq!(encode(&cut_at(&input, &cuts), false), STANDARD.encode(&input).into_bytes());
            }

            #[test]
            fn arbitrary_text_never_panics(input in proptest::collection::vec(any::<u8>(), 0..40)) {
                let _ = decode(&[&input]);
            }
        }
    }
}
