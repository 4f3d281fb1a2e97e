//! gRPC length-prefixed frames, shared by native gRPC and gRPC-web:
//!
//! ```text
//! +-------+-------------------+-----------------+
//! | flags | length (u32, BE)  | payload         |
//! | 1 B   | 4 B               | `length` bytes  |
//! +-------+-------------------+-----------------+
//! flags: 0x00 message, 0x01 compressed message,
//!        0x80 trailers (gRPC-web only), 0x81 compressed trailers
//! ```
//!
//! Two decoders share [`FrameHeader::parse`]: [`FrameDecoder`] yields whole
//! frames (peers and tests), [`FrameScanner`] is what the proxy runs: it
//! forwards message bytes as zero-copy slices the moment they arrive and
//! only gathers the trailer frame, so a large message never sits in memory.

use bytes::{Buf, BufMut, Bytes, BytesMut};

use super::error::ErrorKind;

/// Length of the frame prefix: one flag byte and a big-endian u32.
pub const HEADER_LEN: usize = 5;
/// Flag bit: the payload is compressed with the stream's `grpc-encoding`.
pub const FLAG_COMPRESSED: u8 = 0x01;
/// Flag bit: the payload is a gRPC-web trailer block, not a message.
pub const FLAG_TRAILERS: u8 = 0x80;

/// A validated frame prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    flags: u8,
    length: u32,
}

impl FrameHeader {
    /// A message frame prefix.
    pub fn message(compressed: bool, length: u32) -> Self {
        Self {
            flags: if compressed { FLAG_COMPRESSED } else { 0 },
            length,
        }
    }

    /// A trailer frame prefix.
    pub fn trailers(compressed: bool, length: u32) -> Self {
        Self {
            flags: FLAG_TRAILERS | Self::message(compressed, 0).flags,
            length,
        }
    }

    /// Parses a prefix, rejecting unknown flags and lengths above `limit`
    /// before the caller allocates anything for the payload.
    pub fn parse(prefix: [u8; HEADER_LEN], limit: u32) -> Result<Self, ErrorKind> {
        let [flags, length @ ..] = prefix;
        if flags & !(FLAG_TRAILERS | FLAG_COMPRESSED) != 0 {
            return Err(ErrorKind::UnknownFrameFlag(flags));
        }
        let length = u32::from_be_bytes(length);
        if length > limit {
            return Err(ErrorKind::FrameTooLarge { length, limit });
        }
        Ok(Self { flags, length })
    }

    pub fn is_trailers(self) -> bool {
        self.flags & FLAG_TRAILERS != 0
    }

    pub fn is_compressed(self) -> bool {
        self.flags & FLAG_COMPRESSED != 0
    }

    pub fn length(self) -> u32 {
        self.length
    }

    pub fn to_bytes(self) -> [u8; HEADER_LEN] {
        let [a, b, c, d] = self.length.to_be_bytes();
        [self.flags, a, b, c, d]
    }
}

/// A whole frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub header: FrameHeader,
    pub payload: Bytes,
}

/// Appends one frame. Payloads over 4 GiB cannot be framed and are refused.
pub fn encode_frame(
    compressed: bool,
    trailers: bool,
    payload: &[u8],
    dst: &mut BytesMut,
) -> Result<(), ErrorKind> {
    let length = u32::try_from(payload.len()).map_err(|_| ErrorKind::FrameTooLarge {
        length: u32::MAX,
        limit: u32::MAX,
    })?;
    let header = if trailers {
        FrameHeader::trailers(compressed, length)
    } else {
        FrameHeader::message(compressed, length)
    };
    dst.reserve(HEADER_LEN + payload.len());
    dst.put_slice(&header.to_bytes());
    dst.put_slice(payload);
    Ok(())
}

/// Decodes whole frames from a growing buffer, like tokio-util's
/// length-delimited codec: `Ok(None)` means "need more bytes".
#[derive(Debug)]
pub struct FrameDecoder {
    limit: u32,
    head: Option<FrameHeader>,
}

impl FrameDecoder {
    pub fn new(limit: u32) -> Self {
        Self { limit, head: None }
    }

    /// Takes the next whole frame off the front of `buf`, zero-copy.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, ErrorKind> {
        let header = match self.head {
            Some(header) => header,
            None => {
                let Some(prefix) = buf.get(..HEADER_LEN) else {
                    return Ok(None);
                };
                let mut bytes = [0; HEADER_LEN];
                bytes.copy_from_slice(prefix);
                let header = FrameHeader::parse(bytes, self.limit)?;
                buf.advance(HEADER_LEN);
                buf.reserve(header.length as usize);
                self.head = Some(header);
                header
            }
        };
        if buf.len() < header.length as usize {
            return Ok(None);
        }
        self.head = None;
        let payload = buf.split_to(header.length as usize).freeze();
        Ok(Some(Frame { header, payload }))
    }

    /// Called at end of stream with what is left in `buf`: anything there is
    /// a truncated frame.
    pub fn finish(&self, buf: &BytesMut) -> Result<(), ErrorKind> {
        let missing = match self.head {
            Some(header) => u64::from(header.length) - buf.len() as u64,
            None if buf.is_empty() => return Ok(()),
            None => (HEADER_LEN - buf.len().min(HEADER_LEN)) as u64,
        };
        Err(ErrorKind::TruncatedFrame { missing })
    }
}

/// What the scanner found in a chunk, in stream order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Piece {
    /// Message-frame bytes (prefix and payload) to forward unchanged.
    Message(Bytes),
    /// The message frame whose bytes were just emitted is complete.
    MessageEnd,
    /// A whole trailer frame's payload.
    Trailers { compressed: bool, block: Bytes },
}

#[derive(Debug)]
enum Scan {
    /// Reading a prefix (`have` bytes so far). A message prefix is forwarded
    /// as it arrives; a trailer prefix is held, as the trailer frame is
    /// never forwarded.
    Prefix {
        bytes: [u8; HEADER_LEN],
        have: usize,
    },
    /// Inside a message payload with this many bytes to go.
    Message { remaining: u32 },
    /// Gathering a trailer frame's payload (bounded by the limit).
    Trailers {
        compressed: bool,
        remaining: u32,
        block: BytesMut,
    },
    /// The trailer frame has been seen; nothing may follow.
    Ended,
}

/// Walks a stream of frames chunk by chunk, whatever the chunk boundaries.
/// Message bytes leave in the order they came, so a chunk holding no part
/// of a trailer frame comes out unchanged.
#[derive(Debug)]
pub struct FrameScanner {
    limit: u32,
    /// The largest trailer frame gathered: a trailer block is held whole,
    /// so it is bounded by the trailer limit, not the message limit.
    trailer_limit: u32,
    scan: Scan,
}

impl FrameScanner {
    pub fn new(limit: u32) -> Self {
        Self {
            limit,
            trailer_limit: limit,
            scan: Scan::Prefix {
                bytes: [0; HEADER_LEN],
                have: 0,
            },
        }
    }

    /// Refuses trailer frames longer than `limit` (before any of their
    /// payload is gathered).
    pub fn with_trailer_limit(mut self, limit: u32) -> Self {
        self.trailer_limit = limit.min(self.limit);
        self
    }

    /// Scans one chunk, appending what it found to `out`.
    pub fn push(&mut self, mut chunk: Bytes, out: &mut Vec<Piece>) -> Result<(), ErrorKind> {
        while !chunk.is_empty() {
            match &mut self.scan {
                Scan::Prefix { bytes, have } => {
                    let take = (HEADER_LEN - *have).min(chunk.len());
                    bytes[*have..*have + take].copy_from_slice(&chunk[..take]);
                    if *have == 0 {
                        // Reject a bad flag byte before forwarding anything.
                        FrameHeader::parse([bytes[0], 0, 0, 0, 0], self.limit)?;
                    }
                    *have += take;
                    let trailers = bytes[0] & FLAG_TRAILERS != 0;
                    let prefix = chunk.split_to(take);
                    if !trailers {
                        out.push(Piece::Message(prefix));
                    }
                    if *have < HEADER_LEN {
                        continue;
                    }
                    let header = FrameHeader::parse(*bytes, self.limit)?;
                    if trailers {
                        if header.length() > self.trailer_limit {
                            return Err(ErrorKind::TrailersTooLarge {
                                size: header.length() as usize,
                                limit: self.trailer_limit,
                            });
                        }
                        self.scan = Scan::Trailers {
                            compressed: header.is_compressed(),
                            remaining: header.length(),
                            block: BytesMut::with_capacity(header.length() as usize),
                        };
                        self.complete_trailers(out);
                    } else {
                        self.advance_message(header.length(), out);
                    }
                }
                Scan::Message { remaining } => {
                    let take = (*remaining as usize).min(chunk.len());
                    out.push(Piece::Message(chunk.split_to(take)));
                    let left = *remaining - take as u32;
                    self.advance_message(left, out);
                }
                Scan::Trailers {
                    remaining, block, ..
                } => {
                    let take = (*remaining as usize).min(chunk.len());
                    block.put_slice(&chunk.split_to(take));
                    *remaining -= take as u32;
                    self.complete_trailers(out);
                }
                Scan::Ended => return Err(ErrorKind::DataAfterTrailers),
            }
        }
        Ok(())
    }

    /// Advances over up to `len` bytes of the current message's payload
    /// without looking at them, and returns how many: 0 unless inside a
    /// message payload. The bytes of a large message that only pass through
    /// need not be read at all; finishing the payload ends the message.
    pub fn skip_payload(&mut self, len: usize) -> usize {
        let Scan::Message { remaining } = self.scan else {
            return 0;
        };
        let take = (remaining as usize).min(len);
        let left = remaining - take as u32;
        self.scan = match left {
            0 => Scan::Prefix {
                bytes: [0; HEADER_LEN],
                have: 0,
            },
            _ => Scan::Message { remaining: left },
        };
        take
    }

    /// The payload bytes still to come of the message frame under way, once
    /// its prefix is whole (`None` between frames or inside a prefix).
    pub fn message_remaining(&self) -> Option<u32> {
        match self.scan {
            Scan::Message { remaining } => Some(remaining),
            _ => None,
        }
    }

    /// Whether the bytes so far end exactly where a frame ended.
    pub fn at_frame_boundary(&self) -> bool {
        matches!(self.scan, Scan::Prefix { have: 0, .. } | Scan::Ended)
    }

    /// Called at end of stream: a partly received frame is an error.
    pub fn finish(&self) -> Result<(), ErrorKind> {
        let missing = match &self.scan {
            Scan::Prefix { have: 0, .. } | Scan::Ended => return Ok(()),
            Scan::Prefix { have, .. } => (HEADER_LEN - have) as u64,
            Scan::Message { remaining } | Scan::Trailers { remaining, .. } => u64::from(*remaining),
        };
        Err(ErrorKind::TruncatedFrame { missing })
    }

    fn advance_message(&mut self, remaining: u32, out: &mut Vec<Piece>) {
        if remaining == 0 {
            out.push(Piece::MessageEnd);
            self.scan = Scan::Prefix {
                bytes: [0; HEADER_LEN],
                have: 0,
            };
        } else {
            self.scan = Scan::Message { remaining };
        }
    }

    fn complete_trailers(&mut self, out: &mut Vec<Piece>) {
        if let Scan::Trailers {
            compressed,
            remaining: 0,
            block,
        } = &mut self.scan
        {
            out.push(Piece::Trailers {
                compressed: *compressed,
                block: block.split().freeze(),
            });
            self.scan = Scan::Ended;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::codec::test_support::chunkings;
    #[cfg(target_arch = "wasm32")]
    use wasm_bindgen_test::wasm_bindgen_test as test;

    const LIMIT: u32 = 1024;

    #[rustfmt::skip]
    const TWO_MESSAGES_AND_TRAILERS: &[u8] = &[
        0x00, 0, 0, 0, 3, b'a', b'b', b'c',   // message "abc"
        0x01, 0, 0, 0, 0,                     // empty compressed message
        0x80, 0, 0, 0, 15,                    // trailers: "grpc-status:0\r\n"
        b'g', b'r', b'p', b'c', b'-', b's', b't', b'a', b't', b'u', b's', b':', b'0', b'\r', b'\n',
    ];

    /// What a scan produced, with message bytes joined so that results from
    /// different chunkings compare equal.
    #[derive(Debug, Clone, PartialEq, Default)]
    struct Scanned {
        messages: Vec<Vec<u8>>,
        trailers: Vec<(bool, Vec<u8>)>,
    }

    #[test]
    fn a_trailer_frame_over_its_limit_is_refused_at_its_prefix() {
        let mut scanner = FrameScanner::new(LIMIT).with_trailer_limit(14);
        let mut pieces = Vec::new();
        // The 15-byte block's prefix alone is enough to refuse it.
        assert_eq!(
            scanner.push(
                Bytes::from_static(&TWO_MESSAGES_AND_TRAILERS[..18]),
                &mut pieces
            ),
            Err(ErrorKind::TrailersTooLarge {
                size: 15,
                limit: 14
            })
        );
        // Messages are bounded by the message limit only, and the remaining
        // payload of the one under way is known.
        let mut scanner = FrameScanner::new(LIMIT).with_trailer_limit(14);
        assert_eq!(
            scanner.push(Bytes::from_static(&[0, 0, 0, 2, 0, 7]), &mut pieces),
            Ok(())
        );
        assert_eq!(scanner.message_remaining(), Some(511));
    }

    #[test]
    fn skipping_a_payload_ends_the_message_where_reading_would() {
        let mut scanner = FrameScanner::new(LIMIT);
        let mut pieces = Vec::new();
        // The prefix of a 10-byte message, then its payload skipped in parts.
        assert_eq!(
            scanner.push(Bytes::from_static(&[0, 0, 0, 0, 10, b'x']), &mut pieces),
            Ok(())
        );
        assert!(!scanner.at_frame_boundary());
        assert_eq!(scanner.skip_payload(4), 4);
        assert!(!scanner.at_frame_boundary());
        // Only what is left of the payload is skipped.
        assert_eq!(scanner.skip_payload(100), 5);
        assert!(scanner.at_frame_boundary());
        assert_eq!(scanner.finish(), Ok(()));
        // Between frames there is no payload to skip: prefixes must be read.
        assert_eq!(scanner.skip_payload(100), 0);
        pieces.clear();
        assert_eq!(
            scanner.push(Bytes::from_static(&[0, 0, 0]), &mut pieces),
            Ok(())
        );
        assert_eq!(scanner.skip_payload(100), 0);
        assert_eq!(
            scanner.finish(),
            Err(ErrorKind::TruncatedFrame { missing: 2 })
        );
    }

    fn scan(chunks: &[&[u8]]) -> Result<Scanned, ErrorKind> {
        let mut scanner = FrameScanner::new(LIMIT);
        let mut pieces = Vec::new();
        for chunk in chunks {
            scanner.push(Bytes::copy_from_slice(chunk), &mut pieces)?;
        }
        scanner.finish()?;
        let mut scanned = Scanned::default();
        let mut current = Vec::new();
        for piece in pieces {
            match piece {
                Piece::Message(bytes) => current.extend_from_slice(&bytes),
                Piece::MessageEnd => scanned.messages.push(std::mem::take(&mut current)),
                Piece::Trailers { compressed, block } => {
                    scanned.trailers.push((compressed, block.to_vec()))
                }
            }
        }
        assert!(current.is_empty(), "message bytes without a MessageEnd");
        Ok(scanned)
    }

    fn decode_all(chunks: &[&[u8]]) -> Result<Vec<Frame>, ErrorKind> {
        let mut decoder = FrameDecoder::new(LIMIT);
        let mut buf = BytesMut::new();
        let mut frames = Vec::new();
        for chunk in chunks {
            buf.extend_from_slice(chunk);
            while let Some(frame) = decoder.decode(&mut buf)? {
                frames.push(frame);
            }
        }
        decoder.finish(&buf)?;
        Ok(frames)
    }

    #[test]
    fn header_round_trips_all_four_flag_values() {
        for (flags, trailers, compressed) in [
            (0x00, false, false),
            (0x01, false, true),
            (0x80, true, false),
            (0x81, true, true),
        ] {
            let header = FrameHeader::parse([flags, 0, 0, 1, 0], LIMIT).unwrap();
            assert_eq!(header.is_trailers(), trailers, "flags {flags:#04x}");
            assert_eq!(header.is_compressed(), compressed, "flags {flags:#04x}");
            assert_eq!(header.length(), 256);
            assert_eq!(header.to_bytes(), [flags, 0, 0, 1, 0]);
        }
    }

    #[test]
    fn unknown_flags_are_rejected() {
        for flags in [0x02, 0x40, 0x82, 0xff] {
            assert_eq!(
                FrameHeader::parse([flags, 0, 0, 0, 0], LIMIT),
                Err(ErrorKind::UnknownFrameFlag(flags))
            );
        }
    }

    #[test]
    fn length_over_limit_is_rejected_before_any_payload_arrives() {
        // A 4 GiB announcement with no payload: rejected on the prefix alone.
        const PREFIX: [u8; 5] = [0x00, 0xff, 0xff, 0xff, 0xff];
        let prefix = PREFIX;
        let expected = ErrorKind::FrameTooLarge {
            length: u32::MAX,
            limit: LIMIT,
        };
        assert_eq!(
            FrameDecoder::new(LIMIT).decode(&mut BytesMut::from(&prefix[..])),
            Err(expected.clone())
        );
        let mut scanner = FrameScanner::new(LIMIT);
        assert_eq!(
            scanner.push(Bytes::from_static(&PREFIX), &mut Vec::new()),
            Err(expected)
        );
        // Exactly at the limit is fine.
        let at_limit = FrameHeader::parse([0, 0, 0, 4, 0], LIMIT).unwrap();
        assert_eq!(at_limit.length(), LIMIT);
    }

    #[test]
    fn trailer_frame_over_limit_is_rejected() {
        let mut scanner = FrameScanner::new(LIMIT);
        let result = scanner.push(Bytes::from_static(&[0x80, 0, 0, 4, 1]), &mut Vec::new());
        assert_eq!(
            result,
            Err(ErrorKind::FrameTooLarge {
                length: LIMIT + 1,
                limit: LIMIT
            })
        );
    }

    #[test]
    fn decoder_yields_whole_frames_under_every_chunking() {
        for chunks in chunkings(TWO_MESSAGES_AND_TRAILERS) {
            let frames = decode_all(&chunks).unwrap();
            assert_eq!(frames.len(), 3, "chunks {chunks:?}");
            assert_eq!(&frames[0].payload[..], b"abc");
            assert!(frames[1].header.is_compressed() && frames[1].payload.is_empty());
            assert!(frames[2].header.is_trailers());
            assert_eq!(&frames[2].payload[..], b"grpc-status:0\r\n");
        }
    }

    #[test]
    fn decoder_reports_need_more_bytes_as_none_not_error() {
        let mut decoder = FrameDecoder::new(LIMIT);
        let mut buf = BytesMut::from(&[0x00, 0, 0][..]);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(&[0, 2, b'h']);
        assert_eq!(decoder.decode(&mut buf), Ok(None));
        buf.extend_from_slice(b"i");
        assert_eq!(
            decoder.decode(&mut buf).unwrap().unwrap().payload,
            Bytes::from_static(b"hi")
        );
    }

    #[test]
    fn scanner_gives_the_same_result_under_every_chunking() {
        let expected = Scanned {
            messages: vec![b"\x00\x00\x00\x00\x03abc".to_vec(), vec![0x01, 0, 0, 0, 0]],
            trailers: vec![(false, b"grpc-status:0\r\n".to_vec())],
        };
        for chunks in chunkings(TWO_MESSAGES_AND_TRAILERS) {
            assert_eq!(scan(&chunks), Ok(expected.clone()), "chunks {chunks:?}");
        }
    }

    #[test]
    fn scanner_forwards_message_bytes_before_the_message_is_complete() {
        let mut scanner = FrameScanner::new(LIMIT);
        let mut pieces = Vec::new();
        scanner
            .push(Bytes::from_static(&[0x00, 0, 0]), &mut pieces)
            .unwrap();
        scanner
            .push(Bytes::from_static(&[0, 4, b'a', b'b']), &mut pieces)
            .unwrap();
        let forwarded: Vec<u8> = pieces
            .iter()
            .flat_map(|p| match p {
                Piece::Message(bytes) => bytes.to_vec(),
                other => panic!("unexpected {other:?}"),
            })
            .collect();
        assert_eq!(forwarded, [0, 0, 0, 0, 4, b'a', b'b']);
        pieces.clear();
        scanner
            .push(Bytes::from_static(b"cd"), &mut pieces)
            .unwrap();
        assert_eq!(
            pieces,
            vec![Piece::Message(Bytes::from_static(b"cd")), Piece::MessageEnd]
        );
    }

    #[test]
    fn scanner_never_forwards_any_byte_of_a_trailer_frame() {
        for chunks in chunkings(&TWO_MESSAGES_AND_TRAILERS[13..]) {
            let mut scanner = FrameScanner::new(LIMIT);
            let mut pieces = Vec::new();
            for chunk in &chunks {
                scanner
                    .push(Bytes::copy_from_slice(chunk), &mut pieces)
                    .unwrap();
            }
            assert!(
                matches!(pieces.as_slice(), [Piece::Trailers { .. }]),
                "{pieces:?}"
            );
        }
    }

    #[test]
    fn unknown_flag_is_rejected_on_the_first_byte() {
        let mut scanner = FrameScanner::new(LIMIT);
        let mut pieces = Vec::new();
        assert_eq!(
            scanner.push(Bytes::from_static(&[0x02]), &mut pieces),
            Err(ErrorKind::UnknownFrameFlag(0x02))
        );
        assert!(pieces.is_empty());
    }

    #[test]
    fn trailer_frame_sharing_a_chunk_with_the_last_message_is_separated() {
        let scanned = scan(&[TWO_MESSAGES_AND_TRAILERS]).unwrap();
        assert_eq!(scanned.messages.len(), 2);
        assert_eq!(scanned.trailers.len(), 1);
    }

    #[test]
    fn compressed_trailer_frame_0x81_is_accepted() {
        let scanned = scan(&[&[0x81, 0, 0, 0, 2, 0xde, 0xad]]).unwrap();
        assert_eq!(scanned.trailers, vec![(true, vec![0xde, 0xad])]);
    }

    #[test]
    fn empty_trailer_frame_is_a_trailer_frame() {
        let scanned = scan(&[&[0x80, 0, 0, 0, 0]]).unwrap();
        assert_eq!(scanned.trailers, vec![(false, vec![])]);
    }

    #[test]
    fn data_after_trailer_frame_is_rejected() {
        let mut input = TWO_MESSAGES_AND_TRAILERS.to_vec();
        input.push(0x00);
        assert_eq!(scan(&[&input]), Err(ErrorKind::DataAfterTrailers));
    }

    #[test]
    fn stream_ending_inside_a_frame_is_truncated() {
        assert_eq!(
            scan(&[&[0x00, 0, 0]]),
            Err(ErrorKind::TruncatedFrame { missing: 2 })
        );
        assert_eq!(
            scan(&[&[0x00, 0, 0, 0, 5, b'a']]),
            Err(ErrorKind::TruncatedFrame { missing: 4 })
        );
        assert_eq!(
            scan(&[&[0x80, 0, 0, 0, 3]]),
            Err(ErrorKind::TruncatedFrame { missing: 3 })
        );
        assert_eq!(
            decode_all(&[&[0x00, 0, 0, 0, 5, b'a']]),
            Err(ErrorKind::TruncatedFrame { missing: 4 })
        );
        assert_eq!(
            decode_all(&[&[0x00]]),
            Err(ErrorKind::TruncatedFrame { missing: 4 })
        );
    }

    #[test]
    fn encoder_writes_prefix_and_payload() {
        let mut out = BytesMut::new();
        encode_frame(false, false, b"abc", &mut out).unwrap();
        encode_frame(true, true, b"x", &mut out).unwrap();
        assert_eq!(&out[..], b"\x00\x00\x00\x00\x03abc\x81\x00\x00\x00\x01x");
    }

    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use super::*;
        use crate::codec::test_support::cut_at;
        use proptest::prelude::*;

        fn frames() -> impl Strategy<Value = Vec<u8>> {
            let message = (any::<bool>(), proptest::collection::vec(any::<u8>(), 0..40));
            (
                proptest::collection::vec(message, 0..6),
                proptest::option::of(proptest::collection::vec(any::<u8>(), 0..40)),
            )
                .prop_map(|(messages, trailers)| {
                    let mut out = BytesMut::new();
                    for (compressed, payload) in messages {
                        encode_frame(compressed, false, &payload, &mut out).unwrap();
                    }
                    if let Some(block) = trailers {
                        encode_frame(false, true, &block, &mut out).unwrap();
                    }
                    out.to_vec()
                })
        }

        proptest! {
            #[test]
            fn any_chunking_scans_and_decodes_like_one_shot(
                input in frames(),
                cuts in proptest::collection::vec(any::<usize>(), 0..8),
            ) {
                let chunks = cut_at(&input, &cuts);
                prop_assert_eq!(scan(&chunks), scan(&[&input]));
                prop_assert_eq!(decode_all(&chunks), decode_all(&[&input]));
            }

            #[test]
            fn arbitrary_bytes_never_panic_the_scanner(
                input in proptest::collection::vec(any::<u8>(), 0..64),
                cuts in proptest::collection::vec(any::<usize>(), 0..4),
            ) {
                let _ = scan(&cut_at(&input, &cuts));
            }
        }
    }
}
