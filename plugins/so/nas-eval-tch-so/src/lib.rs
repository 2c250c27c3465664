//! The `eval.tch-one-epoch` evaluator of `nas-eval-tch`, exported as a plugin
//! library: `nas --plugin target/release/libnas_eval_tch.so`. The training
//! worker `nas-eval-worker` is a separate binary (crate
//! `nas-eval-tch-worker`), found by the `worker_path` setting,
//! `NAS_EVAL_WORKER`, or next to the executable.
nas_plugin_api::export_root_module!(nas_eval_tch_lib::library);
