//! Every loader against files in the real formats: Debian's Fashion-MNIST
//! release, and small files written here in the IDX, CIFAR binary, MATLAB v5,
//! PNG/JPEG folder and CelebA list formats; plus the bad inputs each must
//! reject with an error naming the file.

use std::io::Write;
use std::path::Path;

use nas_datasets::idx::encode_idx;
use nas_datasets::mat::{encode_mat, MatData, MatVar, MX_DOUBLE, MX_UINT8};
use nas_datasets::{create_loader, PreparedDataset};
use nas_plugin_api::{DatasetManifest, ErrorCode, HostContext, PluginError, PrepareRequest};
use serde_json::json;

fn ctx(data: &Path) -> HostContext {
    HostContext { data_dir: Some(data.to_path_buf()), threads: Some(2), ..Default::default() }
}

fn prepare(id: &str, config: serde_json::Value, data: &Path, cache: &Path) -> Result<DatasetManifest, PluginError> {
    let mut loader = create_loader(id, &config, &ctx(data))?;
    loader.prepare(&PrepareRequest { cache_dir: cache.to_path_buf(), force: false })
}

fn gz(bytes: &[u8]) -> Vec<u8> {
    let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    e.write_all(bytes).expect("gzip to memory");
    e.finish().expect("gzip to memory")
}

fn assert_err(result: Result<DatasetManifest, PluginError>, code: ErrorCode, names: &str) -> String {
    let err = result.expect_err("bad input must be an error");
    assert_eq!(err.code, code, "{err}");
    assert!(err.message.contains(names), "the error names `{names}`: {err}");
    err.message
}

// --- Fashion-MNIST, the real release -----------------------------------------

const DEBIAN: &str = "/usr/share/datasets/fashion-mnist";

#[test]
fn fashion_mnist_from_debian_prepares_reopens_and_is_reused() {
    if !Path::new(DEBIAN).join("train-images-idx3-ubyte.gz").is_file() {
        eprintln!("skipped: Debian's dataset-fashion-mnist package is not installed ({DEBIAN})");
        return;
    }
    let data = tempfile::tempdir().expect("tempdir");
    let cache = data.path().join("prepared/fashion-mnist");
    let mut loader = create_loader("data.fashion-mnist", &json!({}), &ctx(data.path())).expect("creates");
    let desc = loader.describe().expect("describes");
    assert_eq!(desc.raw_dir, Path::new(DEBIAN), "Debian's copy is the default");
    assert_eq!(desc.sources.len(), 4);
    let m = loader.prepare(&PrepareRequest { cache_dir: cache.clone(), force: false }).expect("prepares");
    assert_eq!(m.input_shape, [1, 28, 28]);
    assert_eq!(m.num_classes, 10);
    assert_eq!(m.class_names[9], "Ankle boot");
    assert_eq!(m.splits["train"].count, 60_000);
    assert_eq!(m.splits["test"].count, 10_000);
    assert_eq!(m.sources.len(), 4);
    // The published statistics of Fashion-MNIST's train split.
    assert!((m.mean[0] - 0.2860).abs() < 1e-3, "mean {}", m.mean[0]);
    assert!((m.std[0] - 0.3530).abs() < 1e-3, "std {}", m.std[0]);

    let ds = PreparedDataset::open(&cache).expect("opens");
    let train = ds.split("train").expect("train split");
    assert_eq!(train.images().len(), 60_000 * 784);
    let mut counts = [0usize; 10];
    for l in train.labels() {
        counts[l as usize] += 1;
    }
    assert_eq!(counts, [6000; 10], "Fashion-MNIST is balanced");
    assert!(train.image(59_999).is_some() && train.image(60_000).is_none());
    let test = ds.split("test").expect("test split");
    assert_eq!(test.label(0), Some(9), "the first test image is an ankle boot");

    // A second prepare reuses the cache: same manifest, files untouched.
    let written = std::fs::metadata(cache.join("train.safetensors")).and_then(|m| m.modified()).expect("mtime");
    let again = loader.prepare(&PrepareRequest { cache_dir: cache.clone(), force: false }).expect("reuses");
    assert_eq!(again, m);
    let after = std::fs::metadata(cache.join("train.safetensors")).and_then(|m| m.modified()).expect("mtime");
    assert_eq!(written, after, "a valid cache is not rewritten");
}

// --- IDX ---------------------------------------------------------------------

/// Writes a tiny MNIST-style release (4 train, 2 test images of 3x2) into `dir`.
fn write_idx_release(dir: &Path, gzip: bool) {
    std::fs::create_dir_all(dir).expect("mkdir");
    let files: [(&str, Vec<u8>); 4] = [
        ("train-images-idx3-ubyte", encode_idx(&[4, 3, 2], &(0..24).collect::<Vec<u8>>())),
        ("train-labels-idx1-ubyte", encode_idx(&[4], &[0, 1, 2, 9])),
        ("t10k-images-idx3-ubyte", encode_idx(&[2, 3, 2], &[255; 12])),
        ("t10k-labels-idx1-ubyte", encode_idx(&[2], &[3, 4])),
    ];
    for (name, bytes) in files {
        if gzip {
            std::fs::write(dir.join(format!("{name}.gz")), gz(&bytes)).expect("write");
        } else {
            std::fs::write(dir.join(name), bytes).expect("write");
        }
    }
}

#[test]
fn a_cache_carried_to_a_machine_without_the_release_is_reused_and_one_with_another_release_is_not() {
    let here = tempfile::tempdir().expect("tempdir");
    write_idx_release(&here.path().join("raw/mnist"), true);
    let cache = here.path().join("cache");
    let made = prepare("data.mnist", json!({}), here.path(), &cache).expect("prepares");

    // Another machine: the cache copied, no release files in its data directory.
    let there = tempfile::tempdir().expect("tempdir");
    let carried = there.path().join("cache");
    std::fs::create_dir_all(&carried).expect("mkdir");
    for entry in std::fs::read_dir(&cache).expect("cache") {
        let entry = entry.expect("entry");
        std::fs::copy(entry.path(), carried.join(entry.file_name())).expect("copy");
    }
    let reused = prepare("data.mnist", json!({}), there.path(), &carried).expect("the carried cache is reused");
    assert_eq!(reused, made);

    // With a release in the new raw directory, the cache is made again from it.
    let other = there.path().join("raw/mnist");
    std::fs::create_dir_all(&other).expect("mkdir");
    let files: [(&str, Vec<u8>); 4] = [
        ("train-images-idx3-ubyte", encode_idx(&[4, 3, 2], &[7; 24])),
        ("train-labels-idx1-ubyte", encode_idx(&[4], &[1, 1, 1, 1])),
        ("t10k-images-idx3-ubyte", encode_idx(&[2, 3, 2], &[7; 12])),
        ("t10k-labels-idx1-ubyte", encode_idx(&[2], &[1, 1])),
    ];
    for (name, bytes) in files {
        std::fs::write(other.join(format!("{name}.gz")), gz(&bytes)).expect("write");
    }
    let remade = prepare("data.mnist", json!({}), there.path(), &carried).expect("prepares again");
    assert_ne!(remade.sources, made.sources, "read from the release there");
    let ds = PreparedDataset::open(&carried).expect("opens");
    assert_eq!(ds.split("train").expect("train").labels(), vec![1, 1, 1, 1]);
}

#[test]
fn idx_release_gzipped_or_raw_prepares_to_the_same_tensors() {
    for gzip in [true, false] {
        let data = tempfile::tempdir().expect("tempdir");
        write_idx_release(&data.path().join("raw/mnist"), gzip);
        let cache = data.path().join("cache");
        let m = prepare("data.mnist", json!({}), data.path(), &cache).expect("prepares");
        assert_eq!(m.input_shape, [1, 3, 2]);
        let ds = PreparedDataset::open(&cache).expect("opens");
        let train = ds.split("train").expect("train");
        assert_eq!(train.labels(), vec![0, 1, 2, 9]);
        assert_eq!(train.image(1).expect("image 1"), &[6, 7, 8, 9, 10, 11]);
        assert_eq!(ds.split("test").expect("test").images(), &[255; 12]);
        let expected_mean = (0..24).map(|v| v as f64 / 255.0).sum::<f64>() / 24.0;
        assert!((m.mean[0] as f64 - expected_mean).abs() < 1e-6);
    }
}

#[test]
fn idx_bad_inputs_are_errors_naming_the_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let raw = data.path().join("raw/mnist");
    let cache = data.path().join("cache");
    let images = raw.join("train-images-idx3-ubyte.gz");
    let good = encode_idx(&[4, 3, 2], &(0..24).collect::<Vec<u8>>());

    write_idx_release(&raw, true);
    let full = gz(&good);
    std::fs::write(&images, &full[..full.len() / 2]).expect("write");
    assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-images-idx3-ubyte.gz");

    std::fs::write(&images, gz(&good[..good.len() - 5])).expect("write");
    let msg = assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-images");
    assert!(msg.contains("truncated"), "{msg}");

    let mut long = good.clone();
    long.extend([1, 2, 3]);
    std::fs::write(&images, gz(&long)).expect("write");
    let msg = assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-images");
    assert!(msg.contains("wrong size"), "{msg}");

    std::fs::write(&images, gz(b"\x12\x34\x08\x03 not an idx file at all")).expect("write");
    let msg = assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-images");
    assert!(msg.contains("magic"), "{msg}");

    std::fs::write(&images, b"\x1f\x8b\x08\x00garbage that is not deflate").expect("write");
    assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-images");

    // Label count differs from image count.
    write_idx_release(&raw, true);
    std::fs::write(raw.join("train-labels-idx1-ubyte.gz"), gz(&encode_idx(&[3], &[0, 1, 2]))).expect("write");
    assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-labels");

    // A label outside 0..10.
    std::fs::write(raw.join("train-labels-idx1-ubyte.gz"), gz(&encode_idx(&[4], &[0, 1, 2, 10]))).expect("write");
    assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::Corrupt, "train-labels");

    // A missing split.
    write_idx_release(&raw, true);
    std::fs::remove_file(raw.join("t10k-images-idx3-ubyte.gz")).expect("rm");
    let msg = assert_err(prepare("data.mnist", json!({}), data.path(), &cache), ErrorCode::NotFound, "t10k-images");
    assert!(msg.contains("nas data fetch mnist"), "{msg}");
    assert!(!cache.join("manifest.json").exists(), "nothing half-written is left as a cache");
}

#[test]
fn cache_is_rebuilt_when_settings_change_or_forced() {
    let data = tempfile::tempdir().expect("tempdir");
    let other = data.path().join("elsewhere");
    write_idx_release(&data.path().join("raw/mnist"), true);
    write_idx_release(&other, false);
    let cache = data.path().join("cache");
    let a = prepare("data.mnist", json!({}), data.path(), &cache).expect("prepares");
    let b = prepare("data.mnist", json!({ "root": other }), data.path(), &cache).expect("prepares again");
    assert_ne!(a.sources, b.sources, "other settings, other sources: the cache was rebuilt");
    let mut loader = create_loader("data.mnist", &json!({}), &ctx(data.path())).expect("creates");
    let c = loader.prepare(&PrepareRequest { cache_dir: cache.clone(), force: true }).expect("forced");
    assert_eq!(c.sources, a.sources);
    // A damaged split file makes the cache invalid, and it is rebuilt.
    std::fs::write(cache.join("train.safetensors"), b"junk").expect("damage");
    assert!(PreparedDataset::open(&cache).is_err());
    prepare("data.mnist", json!({}), data.path(), &cache).expect("rebuilds");
    PreparedDataset::open(&cache).expect("valid again");
}

// --- CIFAR -------------------------------------------------------------------

fn cifar_record(labels: &[u8], fill: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072).map(|i| fill.wrapping_add((i / 1024) as u8)));
    r
}

fn write_cifar10(dir: &Path) {
    let bin = dir.join("cifar-10-batches-bin");
    std::fs::create_dir_all(&bin).expect("mkdir");
    for b in 1..=5u8 {
        let batch: Vec<u8> = (0..3u8).flat_map(|i| cifar_record(&[(b + i) % 10], b * 10 + i)).collect();
        std::fs::write(bin.join(format!("data_batch_{b}.bin")), batch).expect("write");
    }
    std::fs::write(bin.join("test_batch.bin"), [cifar_record(&[7], 200), cifar_record(&[3], 100)].concat())
        .expect("write");
}

#[test]
fn cifar10_binary_batches_from_the_folder_and_from_the_tarball() {
    let data = tempfile::tempdir().expect("tempdir");
    let raw = data.path().join("raw/cifar10");
    write_cifar10(&raw);
    let m = prepare("data.cifar10", json!({}), data.path(), &data.path().join("c1")).expect("prepares");
    assert_eq!((m.splits["train"].count, m.splits["test"].count), (15, 2));
    assert_eq!(m.class_names[0], "airplane");
    let ds = PreparedDataset::open(&data.path().join("c1")).expect("opens");
    let test = ds.split("test").expect("test");
    assert_eq!(test.labels(), vec![7, 3]);
    let img = test.image(0).expect("image");
    assert_eq!((img[0], img[1024], img[2048]), (200, 201, 202), "planes R, G, B");

    // The same from cifar-10-binary.tar.gz, without the extracted folder.
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.append_dir_all("cifar-10-batches-bin", raw.join("cifar-10-batches-bin")).expect("tar");
    let tgz = tar.into_inner().expect("tar").finish().expect("gz");
    let raw2 = data.path().join("tarball");
    std::fs::create_dir_all(&raw2).expect("mkdir");
    std::fs::write(raw2.join("cifar-10-binary.tar.gz"), &tgz).expect("write");
    let m2 = prepare("data.cifar10", json!({ "root": raw2 }), data.path(), &data.path().join("c2")).expect("tarball");
    assert_eq!(m2.mean, m.mean);
    assert_eq!(m2.sources.len(), 1);
    let ds2 = PreparedDataset::open(&data.path().join("c2")).expect("opens");
    assert_eq!(ds2.split("train").expect("t").images(), ds.split("train").expect("t").images());

    // A truncated batch names the file; a tarball missing a batch names it too.
    std::fs::write(raw.join("cifar-10-batches-bin/data_batch_3.bin"), vec![1u8; 3073 + 100]).expect("write");
    let msg = assert_err(
        prepare("data.cifar10", json!({}), data.path(), &data.path().join("c3")),
        ErrorCode::Corrupt,
        "data_batch_3.bin",
    );
    assert!(msg.contains("truncated"), "{msg}");
    std::fs::write(raw2.join("cifar-10-binary.tar.gz"), &tgz[..tgz.len() / 3]).expect("cut");
    assert_err(
        prepare("data.cifar10", json!({ "root": raw2 }), data.path(), &data.path().join("c4")),
        ErrorCode::Corrupt,
        "cifar-10-binary.tar.gz",
    );
}

#[test]
fn cifar100_fine_and_coarse_labels() {
    let data = tempfile::tempdir().expect("tempdir");
    let bin = data.path().join("raw/cifar100/cifar-100-binary");
    std::fs::create_dir_all(&bin).expect("mkdir");
    std::fs::write(bin.join("train.bin"), [cifar_record(&[4, 30], 1), cifar_record(&[19, 99], 2)].concat()).expect("w");
    std::fs::write(bin.join("test.bin"), cifar_record(&[0, 0], 3)).expect("w");
    let fine = prepare("data.cifar100", json!({}), data.path(), &data.path().join("f")).expect("fine");
    assert_eq!(fine.num_classes, 100);
    assert_eq!(fine.class_names[30], "dolphin");
    let labels = PreparedDataset::open(&data.path().join("f")).expect("open").split("train").expect("t").labels();
    assert_eq!(labels, vec![30, 99]);
    let coarse = prepare("data.cifar100", json!({ "label_mode": "coarse" }), data.path(), &data.path().join("c"))
        .expect("coarse");
    assert_eq!(coarse.num_classes, 20);
    let labels = PreparedDataset::open(&data.path().join("c")).expect("open").split("train").expect("t").labels();
    assert_eq!(labels, vec![4, 19]);
    let err =
        create_loader("data.cifar100", &json!({ "label_mode": "medium" }), &ctx(data.path())).err().expect("bad mode");
    assert_eq!(err.code, ErrorCode::InvalidConfig);
    std::fs::write(bin.join("test.bin"), cifar_record(&[0, 100], 3)).expect("w");
    assert_err(
        prepare("data.cifar100", json!({}), data.path(), &data.path().join("x")),
        ErrorCode::Corrupt,
        "test.bin",
    );
}

// --- SVHN --------------------------------------------------------------------

/// `n` images of 32x32x3 in MATLAB column-major order; image i, channel c,
/// row r, column k holds (i*7 + c*3 + r + 2k) mod 256.
fn svhn_mat(n: usize, labels: &[f64], compress: bool) -> Vec<u8> {
    let mut x = vec![0u8; 32 * 32 * 3 * n];
    for i in 0..n {
        for c in 0..3 {
            for k in 0..32 {
                for r in 0..32 {
                    x[r + 32 * k + 1024 * c + 3072 * i] = ((i * 7 + c * 3 + r + 2 * k) % 256) as u8;
                }
            }
        }
    }
    encode_mat(
        &[
            MatVar { name: "X", dims: vec![32, 32, 3, n], class: MX_UINT8, data: MatData::U8(x) },
            MatVar { name: "y", dims: vec![n, 1], class: MX_DOUBLE, data: MatData::F64(labels.to_vec()) },
        ],
        compress,
    )
}

#[test]
fn svhn_mat_files_compressed_or_not() {
    for compress in [true, false] {
        let data = tempfile::tempdir().expect("tempdir");
        let raw = data.path().join("raw/svhn");
        std::fs::create_dir_all(&raw).expect("mkdir");
        std::fs::write(raw.join("train_32x32.mat"), svhn_mat(3, &[10.0, 1.0, 5.0], compress)).expect("w");
        std::fs::write(raw.join("test_32x32.mat"), svhn_mat(2, &[2.0, 10.0], compress)).expect("w");
        let cache = data.path().join("cache");
        let m = prepare("data.svhn", json!({}), data.path(), &cache).expect("prepares");
        assert_eq!(m.input_shape, [3, 32, 32]);
        let ds = PreparedDataset::open(&cache).expect("opens");
        let train = ds.split("train").expect("train");
        assert_eq!(train.labels(), vec![0, 1, 5], "label 10 is the digit 0");
        let img = train.image(2).expect("image 2");
        // channel 1, row 4, column 5 of image 2: (14 + 3 + 4 + 10) = 31
        assert_eq!(img[1024 + 4 * 32 + 5], 31);
        assert_eq!(ds.split("test").expect("test").labels(), vec![2, 0]);
    }
}

#[test]
fn svhn_bad_inputs_are_errors_naming_the_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let raw = data.path().join("raw/svhn");
    std::fs::create_dir_all(&raw).expect("mkdir");
    let cache = data.path().join("cache");
    std::fs::write(raw.join("train_32x32.mat"), svhn_mat(3, &[10.0, 1.0, 5.0], true)).expect("w");
    assert_err(prepare("data.svhn", json!({}), data.path(), &cache), ErrorCode::NotFound, "test_32x32.mat");
    let good = svhn_mat(2, &[2.0, 10.0], false);
    std::fs::write(raw.join("test_32x32.mat"), &good[..good.len() - 900]).expect("w");
    assert_err(prepare("data.svhn", json!({}), data.path(), &cache), ErrorCode::Corrupt, "test_32x32.mat");
    std::fs::write(raw.join("test_32x32.mat"), vec![b'x'; 400]).expect("w");
    let msg = assert_err(prepare("data.svhn", json!({}), data.path(), &cache), ErrorCode::Corrupt, "test_32x32.mat");
    assert!(msg.contains("magic"), "{msg}");
    std::fs::write(raw.join("test_32x32.mat"), svhn_mat(2, &[2.0, 11.0], true)).expect("w");
    assert_err(prepare("data.svhn", json!({}), data.path(), &cache), ErrorCode::Corrupt, "test_32x32.mat");
    std::fs::write(raw.join("test_32x32.mat"), svhn_mat(2, &[2.0], true)).expect("w");
    assert_err(prepare("data.svhn", json!({}), data.path(), &cache), ErrorCode::Corrupt, "test_32x32.mat");
}

// --- image folders, ImageNette, CelebA --------------------------------------

fn write_png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).expect("png");
}

fn write_jpg(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save_with_format(path, image::ImageFormat::Jpeg).expect("jpg");
}

fn write_folder(root: &Path, test: &str) {
    write_png(&root.join("train/cat/a.png"), 20, 10, [255, 0, 0]);
    write_jpg(&root.join("train/cat/b.JPG"), 12, 12, [250, 0, 0]);
    write_png(&root.join("train/dog/a.png"), 10, 30, [0, 0, 255]);
    write_png(&root.join(format!("{test}/dog/c.png")), 16, 16, [0, 0, 255]);
    write_png(&root.join(format!("{test}/cat/d.png")), 16, 16, [255, 0, 0]);
    std::fs::write(root.join("train/cat/notes.txt"), "not an image, ignored").expect("w");
}

#[test]
fn image_folder_resizes_crops_and_names_classes() {
    let data = tempfile::tempdir().expect("tempdir");
    let root = data.path().join("pets");
    write_folder(&root, "test");
    let cache = data.path().join("cache");
    let m = prepare("data.image-folder", json!({ "root": root, "image_size": 8, "name": "pets" }), data.path(), &cache)
        .expect("prepares");
    assert_eq!(m.name, "pets");
    assert_eq!(m.input_shape, [3, 8, 8]);
    assert_eq!(m.class_names, vec!["cat", "dog"]);
    let ds = PreparedDataset::open(&cache).expect("opens");
    let train = ds.split("train").expect("train");
    assert_eq!(train.labels(), vec![0, 0, 1]);
    let dog = train.image(2).expect("dog");
    assert_eq!((dog[0], dog[64], dog[128]), (0, 0, 255), "blue, as planes R, G, B");
    assert!(train.image(1).expect("jpeg cat")[0] > 200, "the JPEG decodes red");
    assert_eq!(ds.split("test").expect("test").labels(), vec![0, 1]);
    assert!(m.mean[0] > 0.5 && m.mean[1] < 0.05);
}

#[test]
fn image_folder_bad_inputs_name_the_folder_or_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let root = data.path().join("pets");
    write_folder(&root, "test");
    let cfg = json!({ "root": root, "image_size": 8 });
    let cache = data.path().join("cache");

    std::fs::create_dir_all(root.join("train/empty")).expect("mkdir");
    let msg =
        assert_err(prepare("data.image-folder", cfg.clone(), data.path(), &cache), ErrorCode::Corrupt, "train/empty");
    assert!(msg.contains("empty class folder"), "{msg}");
    std::fs::remove_dir(root.join("train/empty")).expect("rm");

    std::fs::write(root.join("train/dog/broken.png"), b"\x89PNG\r\n\x1a\n not really").expect("w");
    let msg =
        assert_err(prepare("data.image-folder", cfg.clone(), data.path(), &cache), ErrorCode::Corrupt, "broken.png");
    assert!(msg.contains("unreadable image"), "{msg}");
    std::fs::remove_file(root.join("train/dog/broken.png")).expect("rm");

    write_png(&root.join("test/bird/e.png"), 8, 8, [1, 2, 3]);
    assert_err(prepare("data.image-folder", cfg.clone(), data.path(), &cache), ErrorCode::Corrupt, "test/bird");
    std::fs::remove_dir_all(root.join("test")).expect("rm");
    assert_err(prepare("data.image-folder", cfg.clone(), data.path(), &cache), ErrorCode::NotFound, "test");

    let err = create_loader("data.image-folder", &json!({ "root": root, "imagesize": 8 }), &ctx(data.path()))
        .err()
        .expect("unknown key");
    assert!(err.message.contains("imagesize"), "{err}");
}

#[test]
fn imagenette_release_layout_and_tarball() {
    let data = tempfile::tempdir().expect("tempdir");
    let staging = data.path().join("staging/imagenette2-160");
    write_png(&staging.join("train/n01440764/n01440764_1.JPEG"), 213, 160, [10, 200, 10]);
    write_jpg(&staging.join("train/n03888605/n03888605_1.JPEG"), 160, 240, [200, 10, 10]);
    write_png(&staging.join("val/n01440764/v1.JPEG"), 160, 160, [10, 200, 10]);
    write_png(&staging.join("val/n03888605/v2.JPEG"), 160, 160, [200, 10, 10]);
    let mut tar = tar::Builder::new(flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast()));
    tar.append_dir_all("imagenette2-160", &staging).expect("tar");
    let raw = data.path().join("raw/imagenette");
    std::fs::create_dir_all(&raw).expect("mkdir");
    std::fs::write(raw.join("imagenette2-160.tgz"), tar.into_inner().expect("tar").finish().expect("gz")).expect("w");
    let cache = data.path().join("cache");
    let m = prepare("data.imagenette", json!({ "image_size": 32 }), data.path(), &cache).expect("unpacks, prepares");
    assert!(raw.join("imagenette2-160/train").is_dir(), "the archive was unpacked in place");
    assert_eq!(m.class_names, vec!["tench", "parachute"]);
    assert_eq!(m.input_shape, [3, 32, 32]);
    assert_eq!((m.splits["train"].count, m.splits["test"].count), (2, 2));
    let mut loader = create_loader("data.imagenette", &json!({}), &ctx(data.path())).expect("creates");
    assert_eq!(loader.describe().expect("describes").input_shape, Some([3, 160, 160]), "160 by default");
}

#[test]
fn celeba_uses_the_chosen_attribute_as_a_binary_label() {
    let data = tempfile::tempdir().expect("tempdir");
    let raw = data.path().join("raw/celeba");
    let names = ["000001.jpg", "000002.jpg", "000003.jpg", "000004.jpg"];
    for (i, n) in names.iter().enumerate() {
        write_jpg(&raw.join("img_align_celeba").join(n), 178, 218, [i as u8 * 60, 100, 100]);
    }
    let attrs = "4\n5_o_Clock_Shadow Smiling Male\n\
                 000001.jpg -1  1 -1\n000002.jpg -1 -1  1\n000003.jpg  1  1  1\n000004.jpg -1 -1 -1\n";
    std::fs::write(raw.join("list_attr_celeba.txt"), attrs).expect("w");
    std::fs::write(raw.join("list_eval_partition.txt"), "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n")
        .expect("w");
    let cache = data.path().join("smiling");
    let m = prepare("data.celeba", json!({ "image_size": 16 }), data.path(), &cache).expect("prepares");
    assert_eq!(m.class_names, vec!["not Smiling", "Smiling"]);
    assert_eq!(m.extra["attribute"], json!("Smiling"));
    let ds = PreparedDataset::open(&cache).expect("opens");
    assert_eq!(ds.split("train").expect("train").labels(), vec![1, 0]);
    assert_eq!(ds.split("val").expect("val").labels(), vec![1]);
    assert_eq!(ds.split("test").expect("test").labels(), vec![0]);
    let male =
        prepare("data.celeba", json!({ "attribute": "Male", "image_size": 16 }), data.path(), &data.path().join("m"))
            .expect("prepares");
    assert_eq!(male.class_names[1], "Male");
    let msg = assert_err(
        prepare("data.celeba", json!({ "attribute": "Hat" }), data.path(), &data.path().join("h")),
        ErrorCode::Corrupt,
        "list_attr_celeba.txt",
    );
    assert!(msg.contains("Smiling"), "the error lists the attributes: {msg}");
    std::fs::remove_file(raw.join("img_align_celeba/000002.jpg")).expect("rm");
    assert_err(
        prepare("data.celeba", json!({}), data.path(), &data.path().join("x")),
        ErrorCode::NotFound,
        "000002.jpg",
    );
}

// --- the plugin library ------------------------------------------------------

#[test]
fn the_library_offers_every_loader_and_each_describes_itself() {
    let lib = nas_plugin_api::ffi::NativeLibrary::from_ref(nas_datasets::library());
    let ids: Vec<String> = lib.plugins().expect("lists").into_iter().map(|p| p.id).collect();
    let expected = [
        "data.fashion-mnist",
        "data.mnist",
        "data.cifar10",
        "data.cifar100",
        "data.svhn",
        "data.imagenette",
        "data.image-folder",
        "data.celeba",
    ];
    assert_eq!(ids, expected);
    let data = tempfile::tempdir().expect("tempdir");
    for id in expected {
        let mut loader = create_loader(id, &json!({}), &ctx(data.path())).expect("creates with defaults");
        let d = loader.describe().expect("describes");
        assert_eq!(format!("data.{}", d.name), id);
        for s in &d.sources {
            if let Some(sha) = &s.sha256 {
                assert_eq!(sha.len(), 64, "{id}: {}", s.name);
            }
        }
        let err = create_loader(id, &json!({ "no_such_key": 1 }), &ctx(data.path())).err().expect("strict settings");
        assert_eq!(err.code, ErrorCode::InvalidConfig);
    }
    let err = create_loader("data.mnist", &json!({}), &HostContext::default()).err().expect("no data dir, no root");
    assert!(err.message.contains("root"), "{err}");
}

// --- CIFAR, the python-pickle release ---------------------------------------

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");

/// A pickle as Python 2's cPickle wrote the original CIFAR batches: `str`
/// keys and the array's bytes as BINSTRING.
fn py2_cifar_pickle(labels: &[u8], fill: u8) -> Vec<u8> {
    let mut p = vec![0x80, 2, b'}', b'('];
    let s = |p: &mut Vec<u8>, t: &str| {
        p.push(b'U');
        p.push(t.len() as u8);
        p.extend(t.as_bytes());
    };
    s(&mut p, "data");
    p.extend(b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85");
    s(&mut p, "b");
    p.extend(b"\x87R(K\x01");
    p.extend([b'K', labels.len() as u8, b'M', 0x00, 0x0c, 0x86]);
    p.extend(b"cnumpy\ndtype\n");
    s(&mut p, "u1");
    p.extend(b"K\x00K\x01\x87R(K\x03");
    s(&mut p, "|");
    p.extend(b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb\x89T");
    p.extend(((labels.len() * 3072) as u32).to_le_bytes());
    p.extend(std::iter::repeat_n(fill, labels.len() * 3072));
    p.extend(b"tb");
    s(&mut p, "labels");
    p.extend(b"](");
    for &l in labels {
        p.extend([b'K', l]);
    }
    p.extend(b"eu.");
    p
}

#[test]
fn cifar_python_pickles_written_by_numpy_and_by_python2_parse() {
    use nas_datasets::cifar::parse_pickled_batch;
    for proto in [2, 4] {
        let bytes = std::fs::read(format!("{FIXTURES}/cifar10-batch-protocol{proto}.pickle")).expect("fixture");
        let split = parse_pickled_batch(&bytes, "labels", 10).expect("parses");
        assert_eq!(split.labels, vec![3, 0, 9]);
        assert_eq!((split.images[3072 + 2048], split.images[2 * 3072]), (12, 20), "protocol {proto}");
    }
    let c100 = std::fs::read(format!("{FIXTURES}/cifar100-batch-protocol2.pickle")).expect("fixture");
    assert_eq!(parse_pickled_batch(&c100, "fine_labels", 100).expect("fine").labels, vec![99, 5, 0]);
    assert_eq!(parse_pickled_batch(&c100, "coarse_labels", 20).expect("coarse").labels, vec![19, 2, 4]);
    let py2 = parse_pickled_batch(&py2_cifar_pickle(&[1, 2], 77), "labels", 10).expect("python 2 layout");
    assert_eq!(py2.labels, vec![1, 2]);
    assert!(py2.images.iter().all(|&b| b == 77));
    assert!(parse_pickled_batch(&c100, "fine_labels", 50).is_err(), "label 99 is out of range for 50 classes");
    let bytes = std::fs::read(format!("{FIXTURES}/cifar10-batch-protocol4.pickle")).expect("fixture");
    assert!(parse_pickled_batch(&bytes[..bytes.len() / 2], "labels", 10).is_err());
}

#[test]
fn cifar10_python_release_prepares_and_bad_batches_name_the_file() {
    let data = tempfile::tempdir().expect("tempdir");
    let py = data.path().join("raw/cifar10/cifar-10-batches-py");
    std::fs::create_dir_all(&py).expect("mkdir");
    for b in 1..=5 {
        std::fs::write(py.join(format!("data_batch_{b}")), py2_cifar_pickle(&[b, b + 1], b * 20)).expect("w");
    }
    std::fs::copy(format!("{FIXTURES}/cifar10-batch-protocol2.pickle"), py.join("test_batch")).expect("copy");
    let m = prepare("data.cifar10", json!({}), data.path(), &data.path().join("c")).expect("prepares");
    assert_eq!((m.splits["train"].count, m.splits["test"].count), (10, 3));
    let ds = PreparedDataset::open(&data.path().join("c")).expect("opens");
    assert_eq!(ds.split("train").expect("train").labels(), vec![1, 2, 2, 3, 3, 4, 4, 5, 5, 6]);
    assert_eq!(ds.split("test").expect("test").labels(), vec![3, 0, 9]);

    std::fs::write(py.join("data_batch_4"), b"\x80\x02}q\x00(U\x04data\xf0garbage").expect("w");
    assert_err(
        prepare("data.cifar10", json!({}), data.path(), &data.path().join("d")),
        ErrorCode::Corrupt,
        "data_batch_4",
    );
}
