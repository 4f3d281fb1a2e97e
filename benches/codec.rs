//! Codec throughput (`make bench-codec`): frame scanning, trailer blocks
//! and streaming base64, natively and compiled to wasm32-wasip1 (run under
//! Node's WASI, which is V8, the engine Envoy runs the module in).
//! Results: docs/benchmarks.md.

use std::hint::black_box;

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use grpc_web_bridge::codec::{
    Base64Decoder, Base64Encoder, FrameScanner, Metadata, decode_trailer_block,
    encode_trailer_block,
};

const MIB: usize = 1 << 20;
/// Envoy hands a body over in chunks of about this size.
const CHUNK: usize = 16 << 10;

/// `count` message frames of `size` bytes each.
fn frames(size: usize, count: usize) -> Vec<u8> {
    let mut body = Vec::with_capacity((size + 5) * count);
    for i in 0..count {
        body.push(0);
        body.extend_from_slice(&(size as u32).to_be_bytes());
        body.extend((0..size).map(|j| (i + j) as u8));
    }
    body
}

fn frame_scan(c: &mut Criterion) {
    let mut group = c.benchmark_group("frame_scan");
    for (label, size, count) in [("64B", 64, MIB / 69), ("64KiB", 64 << 10, 16)] {
        let body = Bytes::from(frames(size, count));
        group.throughput(Throughput::Bytes(body.len() as u64));
        group.bench_with_input(BenchmarkId::from_parameter(label), &body, |b, body| {
            let mut pieces = Vec::new();
            b.iter(|| {
                let mut scanner = FrameScanner::new(u32::MAX);
                let mut at = 0;
                while at < body.len() {
                    let end = (at + CHUNK).min(body.len());
                    pieces.clear();
                    let result = scanner.push(body.slice(at..end), &mut pieces);
                    black_box((&result, &pieces));
                    at = end;
                }
                scanner.finish()
            })
        });
    }
    group.finish();
}

fn trailer_block(c: &mut Criterion) {
    let mut fields = Metadata::default();
    fields.push("grpc-status", "13");
    fields.push("grpc-message", "the%20server%20failed");
    fields.push("x-request-id", "5f0a2b1c-93d4-4e6f-8a7b-0c1d2e3f4a5b");
    fields.push("x-trace-bin", "CrxVAQq8VQEKvFUBCrxVAQq8VQEKvFUBCrxVAQ");
    let Ok(block) = encode_trailer_block(&fields) else {
        unreachable!("the fields above are valid")
    };
    let mut group = c.benchmark_group("trailer_block");
    group.throughput(Throughput::Bytes(block.len() as u64));
    group.bench_function("decode", |b| {
        b.iter(|| decode_trailer_block(black_box(&block)))
    });
    group.bench_function("encode", |b| {
        b.iter(|| encode_trailer_block(black_box(&fields)))
    });
    group.finish();
}

fn base64(c: &mut Criterion) {
    let binary: Vec<u8> = (0..MIB).map(|i| (i * 7 + i / 251) as u8).collect();
    let mut text = Vec::new();
    let mut encoder = Base64Encoder::new();
    encoder.push(&binary, &mut text);
    encoder.end_segment(&mut text);

    let mut group = c.benchmark_group("base64");
    group.throughput(Throughput::Bytes(MIB as u64));
    let mut out = Vec::with_capacity(text.len());
    group.bench_function("encode_1MiB", |b| {
        b.iter(|| {
            out.clear();
            let mut encoder = Base64Encoder::new();
            for chunk in binary.chunks(CHUNK) {
                encoder.push(chunk, &mut out);
            }
            encoder.end_segment(&mut out);
            black_box(out.len())
        })
    });
    group.bench_function("decode_1MiB", |b| {
        b.iter(|| {
            out.clear();
            let mut decoder = Base64Decoder::new();
            for chunk in text.chunks(CHUNK) {
                let result = decoder.push(chunk, &mut out);
                black_box(&result);
            }
            decoder.finish(&mut out)
        })
    });
    group.finish();
}

criterion_group!(benches, frame_scan, trailer_block, base64);
criterion_main!(benches);
