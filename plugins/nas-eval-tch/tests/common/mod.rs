//! Test helpers: prepared datasets in the real format (manifest.json +
//! safetensors), made from Debian's Fashion-MNIST IDX files or synthesised.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use nas_plugin_api::{DatasetManifest, SplitManifest, PREPARED_FORMAT_VERSION};
use safetensors::tensor::TensorView;
use safetensors::Dtype;

/// Where Debian's `dataset-fashion-mnist` package puts the files.
pub const FASHION_MNIST_DIR: &str = "/usr/share/datasets/fashion-mnist";

fn read_gz(path: &Path) -> Vec<u8> {
    let f = std::fs::File::open(path)
        .unwrap_or_else(|e| panic!("{}: {e} (install Debian's `dataset-fashion-mnist` package)", path.display()));
    let mut out = Vec::new();
    flate2::read::GzDecoder::new(f).read_to_end(&mut out).expect("valid gzip");
    out
}

fn be32(b: &[u8], at: usize) -> usize {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]]) as usize
}

/// Reads an IDX image/label pair, keeping the first `max` examples.
pub fn read_idx(images: &Path, labels: &Path, max: usize) -> (Vec<u8>, Vec<i64>, [usize; 3]) {
    let im = read_gz(images);
    let lb = read_gz(labels);
    assert_eq!(be32(&im, 0), 0x0803, "{}: not IDX images", images.display());
    assert_eq!(be32(&lb, 0), 0x0801, "{}: not IDX labels", labels.display());
    let n = be32(&im, 4).min(be32(&lb, 4)).min(max);
    let (h, w) = (be32(&im, 8), be32(&im, 12));
    let pixels = im[16..16 + n * h * w].to_vec();
    let labels = lb[8..8 + n].iter().map(|&l| i64::from(l)).collect();
    (pixels, labels, [1, h, w])
}

/// Writes one split file.
pub fn write_split(path: &Path, images: &[u8], labels: &[i64], shape: [usize; 3]) {
    let n = labels.len();
    let label_bytes: Vec<u8> = labels.iter().flat_map(|l| l.to_le_bytes()).collect();
    let tensors = vec![
        ("images", TensorView::new(Dtype::U8, vec![n, shape[0], shape[1], shape[2]], images).expect("images view")),
        ("labels", TensorView::new(Dtype::I64, vec![n], &label_bytes).expect("labels view")),
    ];
    safetensors::serialize_to_file(tensors, None, path).expect("write safetensors");
}

fn mean_std(images: &[u8], shape: [usize; 3]) -> (Vec<f32>, Vec<f32>) {
    let plane = shape[1] * shape[2];
    let per = shape[0] * plane;
    let n = images.len() / per;
    let mut mean = Vec::new();
    let mut std = Vec::new();
    for c in 0..shape[0] {
        let (mut s, mut s2, mut k) = (0f64, 0f64, 0f64);
        for i in 0..n {
            for &p in &images[i * per + c * plane..i * per + (c + 1) * plane] {
                let v = f64::from(p) / 255.0;
                s += v;
                s2 += v * v;
                k += 1.0;
            }
        }
        let m = s / k;
        mean.push(m as f32);
        std.push(((s2 / k - m * m).max(1e-8)).sqrt() as f32);
    }
    (mean, std)
}

/// Writes a prepared dataset directory.
pub fn write_prepared(
    dir: &Path,
    name: &str,
    shape: [usize; 3],
    num_classes: usize,
    train: (&[u8], &[i64]),
    test: (&[u8], &[i64]),
) {
    std::fs::create_dir_all(dir).expect("create dataset dir");
    write_split(&dir.join("train.safetensors"), train.0, train.1, shape);
    write_split(&dir.join("test.safetensors"), test.0, test.1, shape);
    let (mean, std) = mean_std(train.0, shape);
    let mut splits = BTreeMap::new();
    splits.insert("train".to_string(), SplitManifest { file: "train.safetensors".into(), count: train.1.len() });
    splits.insert("test".to_string(), SplitManifest { file: "test.safetensors".into(), count: test.1.len() });
    let manifest = DatasetManifest {
        format_version: PREPARED_FORMAT_VERSION,
        name: name.into(),
        family: if shape[0] == 1 { "mnist".into() } else { "cifar".into() },
        input_shape: shape,
        num_classes,
        class_names: Vec::new(),
        mean,
        std,
        splits,
        sources: Vec::new(),
        extra: BTreeMap::new(),
    };
    manifest.save(dir).expect("write manifest");
}

/// A prepared Fashion-MNIST subset (the first `n_train` / `n_test` examples of
/// the real release) in `dir`.
pub fn fashion_mnist(dir: &Path, n_train: usize, n_test: usize) -> PathBuf {
    let src = Path::new(FASHION_MNIST_DIR);
    let (tr_x, tr_y, shape) =
        read_idx(&src.join("train-images-idx3-ubyte.gz"), &src.join("train-labels-idx1-ubyte.gz"), n_train);
    let (te_x, te_y, _) =
        read_idx(&src.join("t10k-images-idx3-ubyte.gz"), &src.join("t10k-labels-idx1-ubyte.gz"), n_test);
    write_prepared(dir, "fashion-mnist", shape, 10, (&tr_x, &tr_y), (&te_x, &te_y));
    dir.to_path_buf()
}

/// A small synthetic 3×32×32 dataset whose class is the dominant colour
/// channel (learnable, so accuracy is meaningful), for the CIFAR path
/// (crop + flip + per-channel normalisation).
pub fn synthetic_cifar(dir: &Path, n_train: usize, n_test: usize) -> PathBuf {
    let make = |n: usize, seed: u64| {
        let mut state = seed;
        let mut next = move || {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            (state >> 33) as u32
        };
        let mut px = vec![0u8; n * 3 * 32 * 32];
        let mut labels = Vec::with_capacity(n);
        for i in 0..n {
            let class = (next() % 3) as usize;
            labels.push(class as i64);
            for c in 0..3 {
                for p in 0..1024 {
                    let base = if c == class { 150 } else { 60 };
                    px[i * 3072 + c * 1024 + p] = (base + next() % 80) as u8;
                }
            }
        }
        (px, labels)
    };
    let (a, b) = make(n_train, 1);
    let (c, d) = make(n_test, 2);
    write_prepared(dir, "synthetic-cifar", [3, 32, 32], 3, (&a, &b), (&c, &d));
    dir.to_path_buf()
}
