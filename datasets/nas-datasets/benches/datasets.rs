//! Benchmark of the prepared cache, on the real Fashion-MNIST release
//! (Debian's `dataset-fashion-mnist`): preparing it (70,000 images, target
//! <= 2 s on 2 cores) and opening the prepared cache (target <= 0.2 s).
//! Writes `docs/results/datasets-bench.md`.
//!
//! Run: `cargo bench -p nas-datasets --bench datasets`

use std::path::Path;
use std::time::{Duration, Instant};

use nas_datasets::{create_loader, PreparedDataset};
use nas_plugin_api::{HostContext, PrepareRequest};

const DEBIAN: &str = "/usr/share/datasets/fashion-mnist";

fn stats(mut v: Vec<Duration>) -> (f64, f64, f64) {
    v.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    (ms(v[0]), ms(v[v.len() / 2]), ms(v[v.len() - 1]))
}

fn main() {
    if !Path::new(DEBIAN).join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!("Debian's dataset-fashion-mnist is not installed ({DEBIAN}); nothing to measure");
        return;
    }
    let scratch = tempfile::tempdir().expect("tempdir");
    let cache = scratch.path().join("prepared/fashion-mnist");
    let ctx = HostContext { data_dir: Some(scratch.path().to_path_buf()), ..Default::default() };
    let threads = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);

    let mut prepare = Vec::new();
    for _ in 0..5 {
        let mut loader = create_loader("data.fashion-mnist", &serde_json::json!({}), &ctx).expect("creates");
        let t = Instant::now();
        loader.prepare(&PrepareRequest { cache_dir: cache.clone(), force: true }).expect("prepares");
        prepare.push(t.elapsed());
    }
    let mut reuse = Vec::new();
    for _ in 0..10 {
        let mut loader = create_loader("data.fashion-mnist", &serde_json::json!({}), &ctx).expect("creates");
        let t = Instant::now();
        loader.prepare(&PrepareRequest { cache_dir: cache.clone(), force: false }).expect("reuses");
        reuse.push(t.elapsed());
    }
    let mut open = Vec::new();
    let mut scan = Vec::new();
    let mut checksum = 0u64;
    for _ in 0..20 {
        let t = Instant::now();
        let ds = PreparedDataset::open(&cache).expect("opens");
        open.push(t.elapsed());
        let t = Instant::now();
        let train = ds.split("train").expect("train");
        checksum = checksum.wrapping_add(train.images().iter().map(|&b| u64::from(b)).sum::<u64>());
        checksum = checksum.wrapping_add(train.labels().iter().map(|&l| l as u64).sum::<u64>());
        scan.push(t.elapsed());
    }
    std::hint::black_box(checksum);
    let size: u64 = std::fs::read_dir(&cache)
        .expect("cache dir")
        .flatten()
        .filter_map(|e| e.metadata().ok())
        .map(|m| m.len())
        .sum();

    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let load = load.split_whitespace().next().unwrap_or("?");
    let (p0, p1, p2) = stats(prepare);
    let (r0, r1, r2) = stats(reuse);
    let (o0, o1, o2) = stats(open);
    let (s0, s1, s2) = stats(scan);
    let verdict = |ms: f64, limit: f64| if ms <= limit { "met" } else { "NOT met" };
    let report = format!(
        "# Dataset cache benchmark\n\n\
         Written by `cargo bench -p nas-datasets --bench datasets` (release build). Data: the real Fashion-MNIST \
         release from Debian's `dataset-fashion-mnist` (70,000 28x28 images, gzipped IDX). \
         Machine: {threads} CPU threads available, 1-minute load average {load} when the run ended (other builds \
         may share the machine: read figures as upper bounds).\n\n\
         | what | runs | min ms | median ms | max ms | target |\n|---|---|---|---|---|---|\n\
         | prepare (gunzip, sha256 of the 4 files, parse, stats, write safetensors, atomic rename) | 5 | {p0:.1} | {p1:.1} | {p2:.1} | <= 2000 ms: {} |\n\
         | prepare again with a valid cache (reuse check) | 10 | {r0:.2} | {r1:.2} | {r2:.2} | |\n\
         | open the prepared cache (`PreparedDataset::open`: manifest, mmap, header checks) | 20 | {o0:.3} | {o1:.3} | {o2:.3} | <= 200 ms: {} |\n\
         | read every train pixel and label through the map (page cache warm) | 20 | {s0:.1} | {s1:.1} | {s2:.1} | |\n\n\
         Prepared cache size: {:.1} MB (`train.safetensors`, `test.safetensors`, `manifest.json`).\n",
        verdict(p1, 2000.0),
        verdict(o1, 200.0),
        size as f64 / 1e6,
    );
    let out = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/results/datasets-bench.md");
    std::fs::create_dir_all(out.parent().expect("docs/results")).expect("mkdir docs/results");
    std::fs::write(&out, &report).expect("writes the report");
    print!("{report}");
}
