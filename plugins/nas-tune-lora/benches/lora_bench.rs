//! LoRA training throughput of `tune.lora`'s trainer (tokens/s, seconds per
//! step) on this machine's CPU, for the 0.5B and 1.5B Qwen2.5-Coder GGUF files
//! `llm.local` serves; appends a section to `docs/results/lora-bench.md`.
//!
//! `cargo bench -p nas-tune-lora --bench lora_bench [-- extra lora_bench.py options]`
//!
//! Runs `bench/lora_bench.sh` (the real trainer in the project's virtualenv;
//! needs `scripts/setup.sh` done and `target/release/nas` to fetch a missing
//! model). The GPU form is `scripts/device-lora-bench.sh`.

use std::path::Path;
use std::process::Command;

fn main() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR"));
    // `cargo bench` appends `--bench` to the arguments.
    let extra: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let status = Command::new("bash").arg(here.join("bench/lora_bench.sh")).args(&extra).status();
    match status {
        Ok(s) if s.success() => {}
        Ok(s) => {
            eprintln!("bench/lora_bench.sh ended with {s}");
            std::process::exit(s.code().unwrap_or(1));
        }
        Err(e) => {
            eprintln!("cannot run bash: {e}");
            std::process::exit(1);
        }
    }
}
