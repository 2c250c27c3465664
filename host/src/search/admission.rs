//! Memory admission control for evaluations sharing one device.
//!
//! With several evaluation slots, candidates train side by side on one GPU
//! (which the LLM server may share too). An evaluation is admitted only while
//! the expected peaks of the evaluations in flight, its own included, fit
//! the budget (`[evaluator] memory_budget_mb`: the device's memory less what
//! the LLM server and anything else on it keeps). One evaluation is always
//! admitted when none is in flight, however large, so a run never stalls.
//!
//! **Expected peak.** A candidate's peak is not known before it trains; the
//! controller expects the largest peak among the last [`WINDOW`] candidates
//! measured in this run (the evaluator's `peak_memory_bytes`), plus a
//! [`MARGIN`]. Before any candidate has been measured it expects
//! `[evaluator] memory_estimate_mb`, else the evaluator's `memory_limit_mb`
//! setting (the most a candidate may take), else the budget shared evenly
//! between the slots.
//!
//! **Crowding.** The controller also knows whether an evaluation had company:
//! it is *crowded* when another evaluation was in flight at any moment of its
//! own. An evaluation that ran out of memory while crowded is run again
//! [`Admission::alone`] — no other evaluation starts until it ends — and the
//! search records the crowded attempt as a retry, not as the candidate's
//! failure; one that runs out of memory alone is the candidate's failure.
//!
//! Admission changes only when evaluations run, never what they return, so
//! records stay independent of timing (a retry note is a timing fact, like
//! `eval_seconds`).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Measured peaks the expectation looks back on.
pub const WINDOW: usize = 16;
/// Headroom on the expected peak (a candidate is rarely the same size as
/// the largest recent one; the margin keeps a slightly larger one admitted
/// beside others from running out).
pub const MARGIN: f64 = 1.25;

const MB: u64 = 1 << 20;

#[derive(Debug, Default)]
struct State {
    /// Tickets in flight: expected MB, and whether it had company.
    in_flight: BTreeMap<u64, (u64, bool)>,
    next: u64,
    /// Evaluations waiting to run alone: nothing else is admitted meanwhile.
    alone_waiting: usize,
    /// An evaluation is running alone.
    alone: bool,
    /// The latest measured peaks, MB.
    peaks: VecDeque<u64>,
}

/// The admission controller of one search's evaluations.
#[derive(Debug)]
pub struct Admission {
    budget_mb: Option<u64>,
    default_mb: u64,
    state: Mutex<State>,
    changed: Condvar,
}

/// An admitted evaluation; leaving scope releases its share.
#[derive(Debug)]
pub struct Ticket<'a> {
    admission: &'a Admission,
    id: u64,
}

impl Admission {
    /// A controller with this budget (`None`: evaluations are admitted as
    /// slots free up; crowding is still tracked) expecting `default_mb` of a
    /// candidate until one has been measured.
    pub fn new(budget_mb: Option<u64>, default_mb: u64) -> Admission {
        Admission { budget_mb, default_mb, state: Mutex::new(State::default()), changed: Condvar::new() }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes a candidate's measured peak into the expectation.
    pub fn observe(&self, peak_bytes: u64) {
        let mut st = self.lock();
        st.peaks.push_back(peak_bytes.div_ceil(MB));
        while st.peaks.len() > WINDOW {
            st.peaks.pop_front();
        }
    }

    /// The peak expected of the next candidate, MB.
    pub fn expected_mb(&self) -> u64 {
        Self::expect(&self.lock(), self.default_mb)
    }

    fn expect(st: &State, default_mb: u64) -> u64 {
        match st.peaks.iter().max() {
            Some(&max) => (max as f64 * MARGIN).ceil() as u64,
            None => default_mb,
        }
    }

    /// Waits until an evaluation fits beside those in flight, and admits it.
    pub fn admit(&self) -> Ticket<'_> {
        let mut st = self.lock();
        loop {
            let want = Self::expect(&st, self.default_mb);
            let used: u64 = st.in_flight.values().map(|(mb, _)| mb).sum();
            let fits = st.in_flight.is_empty() || self.budget_mb.is_none_or(|b| used + want <= b);
            if !st.alone && st.alone_waiting == 0 && fits {
                return self.enter(&mut st, want);
            }
            st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
    }

    /// Waits until no evaluation is in flight, and admits one that runs
    /// alone: nothing else is admitted until its ticket is dropped.
    pub fn alone(&self) -> Ticket<'_> {
        let mut st = self.lock();
        st.alone_waiting += 1;
        while st.alone || !st.in_flight.is_empty() {
            st = self.changed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.alone_waiting -= 1;
        st.alone = true;
        let want = Self::expect(&st, self.default_mb);
        self.enter(&mut st, want)
    }

    fn enter(&self, st: &mut State, want: u64) -> Ticket<'_> {
        let company = !st.in_flight.is_empty();
        for (_, crowded) in st.in_flight.values_mut() {
            *crowded = true;
        }
        let id = st.next;
        st.next += 1;
        st.in_flight.insert(id, (want, company));
        Ticket { admission: self, id }
    }

    /// How many evaluations are in flight.
    pub fn in_flight(&self) -> usize {
        self.lock().in_flight.len()
    }
}

impl Ticket<'_> {
    /// Whether another evaluation was in flight at any moment of this one
    /// so far.
    pub fn crowded(&self) -> bool {
        self.admission.lock().in_flight.get(&self.id).is_some_and(|(_, c)| *c)
    }
}

impl Drop for Ticket<'_> {
    fn drop(&mut self) {
        let mut st = self.admission.lock();
        st.in_flight.remove(&self.id);
        if st.in_flight.is_empty() {
            st.alone = false;
        }
        self.admission.changed.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn evaluations_in_flight_never_exceed_the_budget_but_one_always_runs() {
        let adm = Admission::new(Some(100), 30);
        let (used, peak) = (AtomicU64::new(0), AtomicU64::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..5 {
                        let t = adm.admit();
                        let now = used.fetch_add(30, Ordering::SeqCst) + 30;
                        peak.fetch_max(now, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(2));
                        used.fetch_sub(30, Ordering::SeqCst);
                        drop(t);
                    }
                });
            }
        });
        let peak = peak.load(Ordering::SeqCst);
        assert!(peak <= 90, "three of 30 MB fit 100 MB, four do not ({peak} MB at once)");
        assert!(peak >= 60, "several ran at once ({peak} MB)");
        // A measured peak larger than the budget: one at a time, never none.
        adm.observe(300 * MB);
        assert_eq!(adm.expected_mb(), 375);
        let first = adm.admit();
        assert!(!first.crowded());
        let waited = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let t = adm.admit();
                waited.store(1, Ordering::SeqCst);
                drop(t);
            });
            std::thread::sleep(Duration::from_millis(50));
            assert_eq!(waited.load(Ordering::SeqCst), 0, "a second one does not fit beside the first");
            drop(first);
        });
        assert_eq!(waited.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn crowding_is_seen_by_both_neighbours_and_an_alone_ticket_keeps_others_out() {
        let adm = Admission::new(None, 10);
        let a = adm.admit();
        assert!(!a.crowded());
        let b = adm.admit();
        assert!(a.crowded() && b.crowded(), "a later neighbour crowds the earlier one too");
        drop(b);
        drop(a);
        let c = adm.admit();
        assert!(!c.crowded(), "alone after the others ended");
        let entered = AtomicUsize::new(0);
        std::thread::scope(|s| {
            s.spawn(|| {
                let t = adm.alone();
                entered.fetch_add(1, Ordering::SeqCst);
                assert!(!t.crowded());
                std::thread::sleep(Duration::from_millis(80));
                entered.fetch_add(10, Ordering::SeqCst);
            });
            std::thread::sleep(Duration::from_millis(30));
            assert_eq!(entered.load(Ordering::SeqCst), 0, "alone waits for the one in flight");
            drop(c);
            std::thread::sleep(Duration::from_millis(30));
            let d = adm.admit();
            assert_eq!(entered.load(Ordering::SeqCst), 11, "nothing is admitted beside an alone evaluation");
            assert!(!d.crowded());
        });
        assert_eq!(adm.in_flight(), 0);
    }
}
