//! The conformance kit (`nas-plugin-test-support`) against every built-in
//! plugin, natively, through the same door the host drives them by
//! (`Registry::with_builtins()`); no wasm toolchain needed.
//!
//! - memory strategies: the whole kit;
//! - LLM backends over HTTP: the kit against the loopback chat server;
//!   `llm.local`: the backend checks on the real Qwen2.5-Coder-0.5B model
//!   (fetched and verified into `NAS_TEST_MODELS_DIR`, else the default
//!   models directory; `NAS_SKIP_MODEL_TESTS=1` skips it);
//! - dataset loaders: each on a small release in its real format written
//!   here, and without its release;
//! - evaluators: a slice of the real Fashion-MNIST (Debian's
//!   `dataset-fashion-mnist`), on the CPU;
//! - fine-tuners: a fixture that writes a dummy adapter
//!   (`tests/fixtures/nas-fixture-tune`), and every built-in `tune.*` on the
//!   real 0.5B model.
//!
//! A new built-in is picked up by the test of its role; one of a role this
//! module does not know does not compile (`role_test`), and a dataset loader
//! or evaluator without settings here fails, naming what to add.

use std::path::{Path, PathBuf};

use nas_datasets::idx::encode_idx;
use nas_datasets::mat::{encode_mat, MatData, MatVar, MX_DOUBLE, MX_UINT8};
use nas_host::registry::{Origin, Registered, Registry};
use nas_llm_test_server::TestServer;
use nas_plugin_api::ffi::NativeLibrary;
use nas_plugin_api::{DatasetRef, HostContext, ModelRef, PluginInstance, PluginKind};
use nas_plugin_test_support::{
    check_dataset, check_dataset_missing_release, check_evaluator, check_fine_tuner, check_llm, check_llm_backend,
    check_memory, LlmBackendOptions, Report,
};
use nas_tests::{eval_worker_bin, venv_python};
use serde_json::{json, Value};

/// The test of this module that runs the kit on plugins of `kind`. A new
/// role does not compile until it has one.
fn role_test(kind: PluginKind) -> &'static str {
    match kind {
        PluginKind::Llm => "llm_backends_*",
        PluginKind::Dataset => "dataset_loaders_pass_the_kit_on_small_releases_in_their_real_formats",
        PluginKind::Evaluator => "evaluators_pass_the_kit_on_a_slice_of_the_real_fashion_mnist",
        PluginKind::Memory => "memory_strategies_pass_the_kit",
        PluginKind::Tune => "fine_tuners_pass_the_kit",
        PluginKind::Unknown => panic!("a built-in of an unknown kind"),
    }
}

fn builtins(kind: PluginKind) -> Vec<Registered> {
    let registry = Registry::with_builtins().expect("the built-ins register");
    registry.plugins().iter().filter(|p| p.origin == Origin::Builtin && p.info.kind == kind).cloned().collect()
}

fn builtin(id: &str) -> Registered {
    let kind = PluginKind::from_id(id).expect("a known prefix");
    builtins(kind).into_iter().find(|p| p.info.id == id).unwrap_or_else(|| panic!("{id} is built in"))
}

fn create(plugin: &Registered, settings: &Value, ctx: &HostContext) -> PluginInstance {
    plugin.create(settings, ctx).unwrap_or_else(|e| panic!("{} creates with {settings}: {e}", plugin.info.id))
}

/// Prints every report and fails naming each plugin that did not pass.
fn assert_all_passed(reports: &[(String, Report)]) {
    let mut failed = Vec::new();
    for (id, report) in reports {
        eprintln!("{id}:\n{report}");
        if !report.all_passed() {
            failed.push(format!("{id}:\n{report}"));
        }
    }
    assert!(failed.is_empty(), "conformance failures:\n{}", failed.join("\n"));
}

/// Where the real models are: `NAS_TEST_MODELS_DIR`, else the default
/// models directory (the suite's setup fetches the 0.5B model there).
fn models_dir() -> PathBuf {
    std::env::var_os("NAS_TEST_MODELS_DIR").map(PathBuf::from).unwrap_or_else(nas_llm_local::default_models_dir)
}

fn skip_model_tests() -> bool {
    let skip = std::env::var_os("NAS_SKIP_MODEL_TESTS").is_some();
    if skip {
        eprintln!("\n*** SKIPPED: NAS_SKIP_MODEL_TESTS is set: the real-model conformance checks did not run ***\n");
    }
    skip
}

#[test]
fn every_builtin_kind_has_a_conformance_test() {
    let registry = Registry::with_builtins().expect("the built-ins register");
    assert!(registry.plugins().len() >= 19, "{:?}", registry.plugins());
    for p in registry.plugins() {
        assert!(!role_test(p.info.kind).is_empty(), "{}", p.info.id);
    }
    for kind in PluginKind::ALL {
        assert!(!role_test(kind).is_empty());
    }
}

#[test]
fn memory_strategies_pass_the_kit() {
    let plugins = builtins(PluginKind::Memory);
    assert!(plugins.iter().any(|p| p.info.id == "memory.window"), "{plugins:?}");
    let reports: Vec<(String, Report)> = plugins
        .iter()
        .map(|p| {
            let PluginInstance::Memory(mut m) = create(p, &Value::Null, &HostContext::default()) else {
                panic!("{} is not a memory strategy", p.info.id)
            };
            (p.info.id.clone(), check_memory(m.as_mut()))
        })
        .collect();
    assert_all_passed(&reports);
}

#[test]
fn llm_backends_over_http_pass_the_kit_against_the_loopback_server() {
    std::env::set_var("NAS_CONFORMANCE_KEY", "sk-conformance-5");
    let plugins: Vec<Registered> = builtins(PluginKind::Llm).into_iter().filter(|p| p.info.id != "llm.local").collect();
    assert!(plugins.len() >= 4, "{plugins:?}");
    let mut reports = Vec::new();
    for p in &plugins {
        let server = TestServer::start();
        let settings = json!({
            "base_url": server.base_url(),
            "model": "m",
            "api_key_env": "NAS_CONFORMANCE_KEY",
            "max_retries": 0,
        });
        let PluginInstance::Llm(mut llm) = create(p, &settings, &HostContext::default()) else {
            panic!("{} is not an llm backend", p.info.id)
        };
        reports.push((p.info.id.clone(), check_llm(llm.as_mut(), &server, Some("Bearer sk-conformance-5"))));
        reports.push((p.info.id.clone(), check_llm_backend(llm.as_mut(), &LlmBackendOptions::default())));
        assert!(
            server.requests().iter().all(|r| r.body["model"] == "m" || r.body.is_null()),
            "{}: the model setting reaches the server",
            p.info.id
        );
    }
    assert_all_passed(&reports);
}

#[test]
fn llm_local_passes_the_backend_checks_on_the_real_small_model() {
    if skip_model_tests() {
        return;
    }
    let local = builtin("llm.local");
    let ctx = HostContext { models_dir: Some(models_dir()), threads: Some(2), ..Default::default() };
    let settings = json!({"model": "qwen2.5-coder-0.5b", "context_tokens": 1024, "seed": 43});
    let PluginInstance::Llm(mut llm) = create(&local, &settings, &ctx) else { panic!("llm.local is an llm backend") };
    let report = check_llm_backend(llm.as_mut(), &LlmBackendOptions { context_tokens: Some(1024) });
    assert_all_passed(&[("llm.local".into(), report)]);
}

// --- dataset loaders ---------------------------------------------------------

fn write(path: &Path, bytes: impl AsRef<[u8]>) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    std::fs::write(path, bytes).expect("write");
}

fn png(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save(path).expect("png");
}

fn jpg(path: &Path, w: u32, h: u32, rgb: [u8; 3]) {
    std::fs::create_dir_all(path.parent().expect("a parent")).expect("mkdir");
    image::RgbImage::from_pixel(w, h, image::Rgb(rgb)).save_with_format(path, image::ImageFormat::Jpeg).expect("jpg");
}

/// An IDX release of `n` train and `n / 2` test 28×28 images, labels 0–9.
fn idx_release(root: &Path, n: usize) {
    for (prefix, count) in [("train", n), ("t10k", n / 2)] {
        let pixels: Vec<u8> = (0..count * 784).map(|i| (i * 7 % 256) as u8).collect();
        let labels: Vec<u8> = (0..count).map(|i| (i % 10) as u8).collect();
        write(&root.join(format!("{prefix}-images-idx3-ubyte")), encode_idx(&[count, 28, 28], &pixels));
        write(&root.join(format!("{prefix}-labels-idx1-ubyte")), encode_idx(&[count], &labels));
    }
}

/// A CIFAR binary record: the label bytes, then 3×32×32 pixels.
fn cifar_record(labels: &[u8], fill: u8) -> Vec<u8> {
    let mut r = labels.to_vec();
    r.extend((0..3072).map(|i| fill.wrapping_add((i / 1024) as u8)));
    r
}

/// SVHN's MATLAB v5 file of `labels.len()` 32×32×3 images (label 10 is the digit 0).
fn svhn_mat(labels: &[f64]) -> Vec<u8> {
    let n = labels.len();
    let x: Vec<u8> = (0..32 * 32 * 3 * n).map(|i| (i % 251) as u8).collect();
    encode_mat(
        &[
            MatVar { name: "X", dims: vec![32, 32, 3, n], class: MX_UINT8, data: MatData::U8(x) },
            MatVar { name: "y", dims: vec![n, 1], class: MX_DOUBLE, data: MatData::F64(labels.to_vec()) },
        ],
        true,
    )
}

/// Writes a small release of the loader `id` under `root`, in the real
/// format it reads, and returns the settings that point the loader at it.
fn small_release(id: &str, root: &Path) -> Value {
    match id {
        "data.fashion-mnist" | "data.mnist" => idx_release(root, 20),
        "data.cifar10" => {
            let bin = root.join("cifar-10-batches-bin");
            for b in 1..=5u8 {
                let batch: Vec<u8> = (0..2u8).flat_map(|i| cifar_record(&[(b + i) % 10], b * 10 + i)).collect();
                write(&bin.join(format!("data_batch_{b}.bin")), batch);
            }
            write(&bin.join("test_batch.bin"), [cifar_record(&[7], 200), cifar_record(&[3], 100)].concat());
        }
        "data.cifar100" => {
            let bin = root.join("cifar-100-binary");
            write(&bin.join("train.bin"), [cifar_record(&[4, 30], 1), cifar_record(&[19, 99], 2)].concat());
            write(&bin.join("test.bin"), [cifar_record(&[0, 0], 3), cifar_record(&[1, 1], 4)].concat());
        }
        "data.svhn" => {
            write(&root.join("train_32x32.mat"), svhn_mat(&[10.0, 1.0, 5.0]));
            write(&root.join("test_32x32.mat"), svhn_mat(&[2.0, 10.0]));
        }
        "data.imagenette" => {
            let dir = root.join(nas_datasets::folder::IMAGENETTE_DIR);
            for (i, (wnid, _)) in nas_datasets::folder::IMAGENETTE_CLASSES.iter().enumerate() {
                let c = (i * 25) as u8;
                png(&dir.join("train").join(wnid).join(format!("{wnid}_1.JPEG")), 24, 20, [c, 100, 200]);
                jpg(&dir.join("val").join(wnid).join(format!("{wnid}_2.JPEG")), 20, 24, [200, c, 100]);
            }
            return json!({"root": root, "image_size": 16});
        }
        "data.image-folder" => {
            png(&root.join("train/cat/a.png"), 20, 10, [255, 0, 0]);
            jpg(&root.join("train/cat/b.jpg"), 12, 12, [250, 0, 0]);
            png(&root.join("train/dog/a.png"), 10, 30, [0, 0, 255]);
            png(&root.join("test/cat/c.png"), 16, 16, [255, 0, 0]);
            png(&root.join("test/dog/d.png"), 16, 16, [0, 0, 255]);
            return json!({"root": root, "image_size": 8});
        }
        "data.celeba" => {
            for i in 1..=4u8 {
                jpg(&root.join(format!("img_align_celeba/00000{i}.jpg")), 178, 218, [i * 60, 100, 100]);
            }
            write(
                &root.join("list_attr_celeba.txt"),
                "4\n5_o_Clock_Shadow Smiling Male\n\
                 000001.jpg -1  1 -1\n000002.jpg -1 -1  1\n000003.jpg  1  1  1\n000004.jpg -1 -1 -1\n",
            );
            write(&root.join("list_eval_partition.txt"), "000001.jpg 0\n000002.jpg 0\n000003.jpg 1\n000004.jpg 2\n");
            return json!({"root": root, "image_size": 16});
        }
        other => panic!("no small release is written for the built-in loader `{other}`: add one to small_release"),
    }
    json!({"root": root})
}

#[test]
fn dataset_loaders_pass_the_kit_on_small_releases_in_their_real_formats() {
    let plugins = builtins(PluginKind::Dataset);
    assert!(plugins.len() >= 8, "{plugins:?}");
    let tmp = tempfile::tempdir().expect("tempdir");
    let ctx = HostContext { data_dir: Some(tmp.path().join("data")), threads: Some(2), ..Default::default() };
    let mut reports = Vec::new();
    for p in &plugins {
        let name = p.info.id.trim_start_matches("data.");
        let settings = small_release(&p.info.id, &tmp.path().join("releases").join(name));
        let PluginInstance::Dataset(mut loader) = create(p, &settings, &ctx) else {
            panic!("{} is not a dataset loader", p.info.id)
        };
        reports.push((p.info.id.clone(), check_dataset(loader.as_mut(), &tmp.path().join("prepared").join(name))));

        let empty = tmp.path().join("empty").join(name);
        std::fs::create_dir_all(&empty).expect("mkdir");
        let mut without = settings.clone();
        without["root"] = json!(empty);
        let PluginInstance::Dataset(mut loader) = create(p, &without, &ctx) else { unreachable!("same plugin") };
        let cache = tmp.path().join("prepared-without").join(name);
        reports.push((
            format!("{} without its release", p.info.id),
            check_dataset_missing_release(loader.as_mut(), &cache),
        ));
    }
    assert_all_passed(&reports);
}

// --- evaluators ----------------------------------------------------------------

const DEBIAN_FASHION_MNIST: &str = "/usr/share/datasets/fashion-mnist";

/// The real Fashion-MNIST, prepared once per target directory from Debian's
/// `dataset-fashion-mnist` by the built-in loader.
fn fashion_mnist() -> DatasetRef {
    assert!(
        Path::new(DEBIAN_FASHION_MNIST).join("train-images-idx3-ubyte.gz").is_file(),
        "the evaluator checks need Debian's dataset-fashion-mnist ({DEBIAN_FASHION_MNIST}); scripts/setup.sh installs it"
    );
    let loader = builtin("data.fashion-mnist");
    let data = Path::new(env!("CARGO_TARGET_TMPDIR")).join("conformance");
    let dir = data.join("prepared/fashion-mnist");
    std::fs::create_dir_all(&dir).expect("mkdir");
    let ctx = HostContext { data_dir: Some(data), threads: Some(2), ..Default::default() };
    let PluginInstance::Dataset(mut d) = create(&loader, &json!({}), &ctx) else { panic!("a dataset loader") };
    let m = d.prepare(&nas_plugin_api::PrepareRequest { cache_dir: dir.clone(), force: false }).expect("prepares");
    assert_eq!(m.splits["train"].count, 60_000, "the real release");
    DatasetRef { dir, name: m.name }
}

/// Settings that keep a built-in evaluator to a few seconds per candidate.
fn small_evaluation(id: &str) -> Value {
    match id {
        "eval.tch-one-epoch" => json!({
            "device": "cpu",
            "max_train_examples": 512,
            "max_test_examples": 256,
            "cpu_threads": 2,
            "memory_limit_mb": 3072,
            "max_processes": 64,
            "time_limit_s": 120,
            "python": venv_python(),
            "worker_path": eval_worker_bin(),
        }),
        other => {
            panic!("no small-evaluation settings for the built-in evaluator `{other}`: add them to small_evaluation")
        }
    }
}

#[test]
fn evaluators_pass_the_kit_on_a_slice_of_the_real_fashion_mnist() {
    let plugins = builtins(PluginKind::Evaluator);
    assert!(plugins.iter().any(|p| p.info.id == "eval.tch-one-epoch"), "{plugins:?}");
    let dataset = fashion_mnist();
    let scratch = tempfile::tempdir().expect("tempdir");
    let ctx = HostContext { scratch_dir: Some(scratch.path().to_path_buf()), threads: Some(2), ..Default::default() };
    let reports: Vec<(String, Report)> = plugins
        .iter()
        .map(|p| {
            let PluginInstance::Evaluator(mut ev) = create(p, &small_evaluation(&p.info.id), &ctx) else {
                panic!("{} is not an evaluator", p.info.id)
            };
            (p.info.id.clone(), check_evaluator(ev.as_mut(), &dataset))
        })
        .collect();
    assert_all_passed(&reports);
}

// --- fine-tuners -----------------------------------------------------------------

#[test]
fn fine_tuners_pass_the_kit() {
    let tmp = tempfile::tempdir().expect("tempdir");
    let mut reports = Vec::new();

    // The fixture, through the same door as the built-ins; its base is never read.
    let lib = NativeLibrary::from_ref(nas_fixture_tune::library());
    let info = lib.plugins().expect("lists").into_iter().find(|p| p.id == nas_fixture_tune::ID).expect("listed");
    assert_eq!(info.kind, PluginKind::Tune);
    let Ok(PluginInstance::Tune(mut fixture)) = lib.create(&info, &Value::Null, &HostContext::default()) else {
        panic!("the fixture creates a fine-tuner")
    };
    let base = tmp.path().join("base.gguf");
    std::fs::write(&base, "not a model").expect("write");
    let base = ModelRef { name: "fixture-base".into(), path: base, sha256: Some("ab".repeat(32)) };
    reports.push((info.id.clone(), check_fine_tuner(fixture.as_mut(), &base, &tmp.path().join("fixture"))));

    // Every built-in fine-tuner, on the real 0.5B model.
    let plugins = builtins(PluginKind::Tune);
    if !plugins.is_empty() && !skip_model_tests() {
        let model = nas_llm_local::find_model("qwen2.5-coder-0.5b").expect("in the catalogue");
        let path = nas_llm_local::fetch_model(model.name, &models_dir(), &nas_llm_local::FetchOptions::default())
            .expect("the 0.5B model can be fetched and verified");
        let base = ModelRef { name: model.name.into(), path, sha256: Some(model.sha256.into()) };
        let ctx = HostContext {
            models_dir: Some(models_dir()),
            scratch_dir: Some(tmp.path().join("scratch")),
            threads: Some(2),
            ..Default::default()
        };
        for p in &plugins {
            let PluginInstance::Tune(mut tuner) = create(p, &Value::Null, &ctx) else {
                panic!("{} is not a fine-tuner", p.info.id)
            };
            reports.push((p.info.id.clone(), check_fine_tuner(tuner.as_mut(), &base, &tmp.path().join(&p.info.id))));
        }
    }
    assert_all_passed(&reports);
}
