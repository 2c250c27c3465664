//! `nas eval-job DIR` (hidden): one evaluation job on a Slurm node.

use crate::cli::EvalJobArgs;
use crate::commands::{Failure, UsageContext};

/// Runs `nas eval-job`: exit 0 once the result (or the probe's answer) is
/// written, whatever it says; 1 when nothing could be written.
pub fn run(args: &EvalJobArgs) -> Result<(), Failure> {
    let summary = if args.probe {
        crate::executor::node::run_probe(&args.dir)
    } else {
        crate::executor::node::run_job(&args.dir)
    }
    .run_failed()?;
    println!("{summary}");
    Ok(())
}
