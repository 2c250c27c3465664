//! What the search optimises (`[search] objective`): first-epoch accuracy
//! (the paper's), accuracy within deployment limits, or accuracy minus
//! weighted costs; and how the limits read in the prompts.

use nas_plugin_api::text::thousands;
use nas_plugin_api::{Budget, CandidateFailure, EvalReport, FailureKind};

use crate::config::{Limits, Objective, Weights};
use crate::records::Outcome;

const MIB: f64 = 1024.0 * 1024.0;
const GIB: f64 = 1024.0 * MIB;

/// The objective of a search.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct ObjectiveFn {
    /// Which objective.
    pub kind: Objective,
    /// `[search.limits]`.
    pub limits: Limits,
    /// `[search.weights]`.
    pub weights: Weights,
}

impl ObjectiveFn {
    /// The value the search ranks a trained candidate by: its accuracy, or
    /// under `weighted`, its accuracy minus its costs (a metric the
    /// evaluator did not report costs nothing).
    pub fn score(&self, r: &EvalReport) -> f64 {
        match self.kind {
            Objective::Accuracy | Objective::Constrained => r.accuracy,
            Objective::Weighted => {
                let w = &self.weights;
                r.accuracy
                    - w.per_million_params * r.params.map_or(0.0, |p| p as f64 / 1e6)
                    - w.per_gflop * r.flops.map_or(0.0, |f| f as f64 / 1e9)
                    - w.per_latency_ms * r.latency_ms.unwrap_or(0.0)
                    - w.per_memory_gb * r.peak_memory_bytes.map_or(0.0, |b| b as f64 / GIB)
            }
        }
    }

    /// The limits a report breaks, each as a sentence.
    pub fn violations(&self, r: &EvalReport) -> Vec<String> {
        let l = &self.limits;
        let mut out = Budget { max_params: l.max_params, max_flops: l.max_flops }.broken_by(r.params, r.flops);
        if let (Some(max), Some(ms)) = (l.max_latency_ms, r.latency_ms) {
            if ms > max {
                out.push(format!("{ms:.2} ms latency at batch 1, over the limit of {max:.2} ms"));
            }
        }
        if let (Some(max), Some(b)) = (l.max_memory_mb, r.peak_memory_bytes) {
            let mb = b as f64 / MIB;
            if mb > max {
                out.push(format!("{mb:.0} MiB peak memory in training, over the limit of {max:.0} MiB"));
            }
        }
        out
    }

    /// What the evaluator checks before training: under `constrained`, the
    /// parameter and FLOP limits (a network over one would be judged a
    /// `constraint` failure after its epoch anyway); nothing otherwise.
    pub fn budget(&self) -> Budget {
        if self.kind != Objective::Constrained {
            return Budget::default();
        }
        Budget { max_params: self.limits.max_params, max_flops: self.limits.max_flops }
    }

    /// Under `constrained`, a trained candidate over a limit becomes a
    /// `constraint` failure; its report is returned beside it, so the
    /// record keeps what was measured.
    pub fn judge(&self, outcome: Outcome) -> (Outcome, Option<EvalReport>) {
        let Outcome::Ok { report } = &outcome else { return (outcome, None) };
        if self.kind != Objective::Constrained {
            return (outcome, None);
        }
        let broken = self.violations(report);
        if broken.is_empty() {
            return (outcome, None);
        }
        let message = format!(
            "it trained to {:.2}% but breaks the search's limits: {}",
            report.accuracy * 100.0,
            broken.join("; ")
        );
        let report = report.clone();
        (
            Outcome::Failed { failure: CandidateFailure::new("objective", FailureKind::Constraint, message) },
            Some(report),
        )
    }

    /// What a design costs against the parameter and FLOP limits, as the
    /// prompts state it ("8.2 of the 200.0 MFLOPs per example allowed");
    /// `None` without such a limit or a measurement.
    pub fn cost_text(&self, params: Option<u64>, flops: Option<u64>) -> Option<String> {
        let l = &self.limits;
        let mut parts = Vec::new();
        if let (Some(max), Some(f)) = (l.max_flops, flops) {
            parts.push(format!("{:.1} of the {:.1} MFLOPs per example allowed", f as f64 / 1e6, max as f64 / 1e6));
        }
        if let (Some(max), Some(p)) = (l.max_params, params) {
            parts.push(format!("{} of the {} parameters allowed", thousands(p), thousands(max)));
        }
        (!parts.is_empty()).then(|| format!("it costs {}", parts.join(" and ")))
    }

    /// The limits as the prompts state them.
    pub fn limits_text(&self) -> Vec<String> {
        let l = &self.limits;
        let mut out = Vec::new();
        if let Some(p) = l.max_params {
            out.push(format!("at most {} trainable parameters", thousands(p)));
        }
        if let Some(f) = l.max_flops {
            out.push(format!("at most {:.1} MFLOPs per example", f as f64 / 1e6));
        }
        if let Some(ms) = l.max_latency_ms {
            out.push(format!("at most {ms:.2} ms inference latency for one example"));
        }
        if let Some(mb) = l.max_memory_mb {
            out.push(format!("at most {mb:.0} MiB peak memory while training"));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report(accuracy: f64, params: u64) -> EvalReport {
        EvalReport { accuracy, params: Some(params), latency_ms: Some(2.0), ..Default::default() }
    }

    #[test]
    fn constrained_turns_an_over_limit_candidate_into_a_typed_failure_and_keeps_its_report() {
        let o = ObjectiveFn {
            kind: Objective::Constrained,
            limits: Limits { max_params: Some(1_000_000), ..Default::default() },
            weights: Weights::default(),
        };
        let (judged, kept) = o.judge(Outcome::Ok { report: report(0.9, 2_500_000) });
        let Outcome::Failed { failure } = judged else { panic!("not a failure") };
        assert_eq!(failure.kind, FailureKind::Constraint);
        assert!(failure.message.contains("2,500,000 parameters, over the limit of 1,000,000"), "{}", failure.message);
        assert_eq!(kept.map(|r| r.params), Some(Some(2_500_000)));
        let (fine, none) = o.judge(Outcome::Ok { report: report(0.8, 500_000) });
        assert!(matches!(fine, Outcome::Ok { .. }) && none.is_none());
        assert_eq!(o.limits_text(), vec!["at most 1,000,000 trainable parameters".to_string()]);
        // The evaluator is asked to check it before training; under the
        // paper's objective the limits are only stated.
        assert_eq!(o.budget(), Budget { max_params: Some(1_000_000), max_flops: None });
        assert!(ObjectiveFn { kind: Objective::Accuracy, ..o }.budget().is_empty());
        assert_eq!(
            o.cost_text(Some(421_642), Some(8_200_000)).as_deref(),
            Some("it costs 421,642 of the 1,000,000 parameters allowed")
        );
        assert_eq!(o.cost_text(None, Some(8_200_000)), None, "no limit on FLOPs, and parameters not measured");
    }

    #[test]
    fn weighted_subtracts_costs_and_accuracy_alone_does_not() {
        let mut o = ObjectiveFn { kind: Objective::Accuracy, limits: Limits::default(), weights: Weights::default() };
        o.weights.per_million_params = 0.01;
        o.weights.per_latency_ms = 0.005;
        assert_eq!(o.score(&report(0.9, 2_000_000)), 0.9);
        o.kind = Objective::Weighted;
        assert!((o.score(&report(0.9, 2_000_000)) - (0.9 - 0.02 - 0.01)).abs() < 1e-12);
    }
}
