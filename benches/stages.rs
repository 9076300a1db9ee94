//! Criterion benchmarks of the data core's non-tokenizer stages, which must
//! stay cheap next to tokenization: JSON field extraction, the dedup/split
//! content hash, and shard writing. Run with `cargo bench --bench stages`.

use std::hint::black_box;

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tokenmill::clean::content_hash;
use tokenmill::input::reader::extract_text;
use tokenmill::shard::{Dtype, SplitWriter};

fn sample_lines() -> Vec<String> {
    let para = "tokenmill turns raw text into training tokens. 数据处理要快，也要准确。\n";
    (0..2000)
        .map(|i| {
            let text = para.repeat(1 + i % 20);
            serde_json::json!({"id": i, "meta": {"url": "https://example.org", "lang": "zh"}, "text": text})
                .to_string()
        })
        .collect()
}

fn bench_stages(c: &mut Criterion) {
    let lines = sample_lines();
    let bytes: usize = lines.iter().map(String::len).sum();
    let field = vec!["text".to_owned()];
    let mut g = c.benchmark_group("stages");
    g.throughput(Throughput::Bytes(bytes as u64));
    g.bench_function("extract_text", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(extract_text(l, &field));
            }
        })
    });
    g.bench_function("content_hash", |b| {
        b.iter(|| {
            for l in &lines {
                black_box(content_hash(l));
            }
        })
    });
    let ids: Vec<u32> = (0..bytes as u32 / 4).map(|i| i % 60_000).collect();
    g.throughput(Throughput::Bytes(ids.len() as u64 * 2));
    g.bench_function("write_uint16_shard", |b| {
        b.iter(|| {
            let dir = tempfile::tempdir().expect("temp dir");
            let mut w = SplitWriter::new(dir.path(), "train", Dtype::U16, 1 << 30);
            for chunk in ids.chunks(500) {
                w.write_doc(chunk).expect("write");
            }
            black_box(w.finish().expect("finish"));
        })
    });
    g.finish();
}

criterion_group!(benches, bench_stages);
criterion_main!(benches);
