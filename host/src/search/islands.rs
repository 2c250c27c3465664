//! Islands: N chains of the method run side by side, each with its own
//! memory and best, sharing the novelty archive, and passing their best
//! design along a ring every `migration_interval` iterations.
//!
//! What keeps a run with several candidates in flight exact under resume and
//! replay is that nothing depends on timing:
//!
//! - **numbering**: island `i`'s `k`-th iteration is iteration
//!   `t = (k - 1) · N + i + 1` of the run, whatever finishes first; with one
//!   island, `t = k`;
//! - **the archive** ([`OrderedArchive`]): candidate `t` is compared with the
//!   evaluated candidates of iterations before `t` only, once each of them is
//!   known, so a candidate's twin is the same in every run;
//! - **migration** ([`Migrations`]): after its `e·M`-th iteration island `i`
//!   publishes its best and takes island `i - 1`'s best as published at the
//!   same epoch (a strictly better one becomes its best).

use std::collections::BTreeMap;
use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use super::novelty::Signature;

/// Island and local iteration number of a run's iteration `t` (1-based).
pub fn locate(t: u64, islands: u64) -> (u64, u64) {
    let n = islands.max(1);
    ((t - 1) % n, (t - 1) / n + 1)
}

/// A run's iteration number of island `island`'s `k`-th iteration.
pub fn iteration(island: u64, k: u64, islands: u64) -> u64 {
    (k - 1) * islands.max(1) + island + 1
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What became of an iteration's candidate in the archive.
#[derive(Debug, Clone)]
enum Entry {
    /// It was evaluated: later candidates are compared with it.
    Evaluated(Signature),
    /// No code, a duplicate, or an iteration that will not run.
    Nothing,
}

/// The novelty archive shared by the islands, in iteration order.
#[derive(Debug, Default)]
pub struct OrderedArchive {
    entries: Mutex<BTreeMap<u64, Entry>>,
    changed: Condvar,
}

/// The archive's answer for a candidate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Screen {
    /// Evaluate it.
    Novel,
    /// A near-duplicate of this iteration's candidate, with this similarity.
    Duplicate(u64, f64),
    /// The run is stopping; nothing was decided.
    Stopped,
}

impl OrderedArchive {
    /// Records what a committed iteration left in the archive (on resume).
    pub fn restore(&self, t: u64, evaluated: Option<Signature>) {
        lock(&self.entries).insert(t, evaluated.map_or(Entry::Nothing, Entry::Evaluated));
    }

    /// Marks iterations that will not run (an island that stopped), so later
    /// candidates do not wait for them.
    pub fn skip(&self, t: u64) {
        lock(&self.entries).entry(t).or_insert(Entry::Nothing);
        self.changed.notify_all();
    }

    /// Waits until every iteration before `t` is known; `None` when
    /// `stopping` turns true first.
    fn known_before<'a>(&'a self, t: u64, stopping: &dyn Fn() -> bool) -> Option<MutexGuard<'a, BTreeMap<u64, Entry>>> {
        let mut entries = lock(&self.entries);
        loop {
            let known = entries.range(..t).count() as u64;
            if known + 1 >= t {
                return Some(entries);
            }
            if stopping() {
                return None;
            }
            entries = self
                .changed
                .wait_timeout(entries, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }

    /// The most similar evaluated design before `t` at or above `threshold`.
    fn twin(entries: &BTreeMap<u64, Entry>, t: u64, sig: &Signature, threshold: f64) -> Option<(u64, f64)> {
        entries
            .range(..t)
            .filter_map(|(i, e)| match e {
                Entry::Evaluated(s) => Some((*i, s.similarity(sig))),
                Entry::Nothing => None,
            })
            .filter(|(_, sim)| *sim >= threshold)
            .max_by(|a, b| a.1.total_cmp(&b.1).then(b.0.cmp(&a.0)))
    }

    /// What [`screen`](Self::screen) would answer for candidate `t`, without
    /// recording it: the generator is asked again before a near-duplicate is
    /// decided.
    pub fn probe(&self, t: u64, sig: &Signature, threshold: f64, stopping: &dyn Fn() -> bool) -> Screen {
        let Some(entries) = self.known_before(t, stopping) else {
            return Screen::Stopped;
        };
        match Self::twin(&entries, t, sig, threshold) {
            Some((of, sim)) => Screen::Duplicate(of, sim),
            None => Screen::Novel,
        }
    }

    /// Decides candidate `t`: waits until every iteration before `t` is
    /// known, compares `sig` with the evaluated ones (when `filter`), and
    /// records the answer. `sig` is `None` when the candidate has no code.
    /// Returns [`Screen::Stopped`] when `stopping` turns true while waiting.
    pub fn screen(
        &self,
        t: u64,
        sig: Option<Signature>,
        threshold: f64,
        filter: bool,
        stopping: &dyn Fn() -> bool,
    ) -> Screen {
        let Some(mut entries) = self.known_before(t, stopping) else {
            return Screen::Stopped;
        };
        let Some(sig) = sig else {
            entries.insert(t, Entry::Nothing);
            self.changed.notify_all();
            return Screen::Novel;
        };
        let twin = if filter { Self::twin(&entries, t, &sig, threshold) } else { None };
        let screen = match twin {
            Some((of, sim)) => {
                entries.insert(t, Entry::Nothing);
                Screen::Duplicate(of, sim)
            }
            None => {
                entries.insert(t, Entry::Evaluated(sig));
                Screen::Novel
            }
        };
        self.changed.notify_all();
        screen
    }
}

/// The migration exchange: each island's best as it stood at the end of
/// each epoch, before it took a migrant.
#[derive(Debug)]
pub struct Migrations<B> {
    published: Mutex<BTreeMap<(u64, u64), Option<B>>>,
    stopped: Mutex<BTreeMap<u64, u64>>,
    changed: Condvar,
}

impl<B: Clone> Default for Migrations<B> {
    fn default() -> Self {
        Migrations {
            published: Mutex::new(BTreeMap::new()),
            stopped: Mutex::new(BTreeMap::new()),
            changed: Condvar::new(),
        }
    }
}

impl<B: Clone> Migrations<B> {
    /// Publishes island `island`'s best at the end of epoch `epoch`.
    pub fn publish(&self, epoch: u64, island: u64, best: Option<B>) {
        lock(&self.published).insert((epoch, island), best);
        self.changed.notify_all();
    }

    /// Says island `island` ran its last iteration in epoch `last_epoch`:
    /// it publishes nothing later.
    pub fn stop(&self, island: u64, last_epoch: u64) {
        lock(&self.stopped).insert(island, last_epoch);
        self.changed.notify_all();
    }

    /// Island `from`'s best published at `epoch`, waiting for it; `None`
    /// when that island stopped before the epoch's end, or the run is
    /// stopping.
    pub fn take(&self, epoch: u64, from: u64, stopping: &dyn Fn() -> bool) -> Option<B> {
        let mut published = lock(&self.published);
        loop {
            if let Some(best) = published.get(&(epoch, from)) {
                return best.clone();
            }
            if lock(&self.stopped).get(&from).is_some_and(|last| *last < epoch) || stopping() {
                return None;
            }
            published = self
                .changed
                .wait_timeout(published, Duration::from_millis(200))
                .unwrap_or_else(PoisonError::into_inner)
                .0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::novelty::signature;

    #[test]
    fn numbering_interleaves_islands_and_is_the_identity_for_one() {
        assert_eq!(iteration(0, 5, 1), 5);
        assert_eq!(locate(5, 1), (0, 5));
        for t in 1..=40 {
            let (i, k) = locate(t, 4);
            assert_eq!(iteration(i, k, 4), t);
        }
        assert_eq!(locate(6, 4), (1, 2));
    }

    #[test]
    fn a_candidate_waits_for_every_earlier_one_and_sees_only_those() {
        let archive = OrderedArchive::default();
        let code = "class Net:\n    def forward(self, x):\n        return self.layers(x) + self.skip(x) * 2\n";
        let never = || false;
        std::thread::scope(|s| {
            // Iteration 3 is decided before 1 and 2 are known: it must wait.
            let late = s.spawn(|| archive.screen(3, Some(signature(code)), 0.9, true, &never));
            std::thread::sleep(Duration::from_millis(50));
            assert!(!late.is_finished(), "iteration 3 did not wait for 1 and 2");
            archive.skip(1);
            std::thread::sleep(Duration::from_millis(20));
            assert!(!late.is_finished(), "iteration 3 did not wait for 2");
            assert_eq!(archive.screen(2, Some(signature(code)), 0.9, true, &never), Screen::Novel);
            assert_eq!(late.join().expect("joins"), Screen::Duplicate(2, 1.0));
        });
        // A later duplicate of 2 points at 2, never at a later twin.
        assert!(matches!(archive.screen(4, Some(signature(code)), 0.9, true, &never), Screen::Duplicate(2, _)));
        assert_eq!(archive.screen(6, None, 0.9, true, &|| true), Screen::Stopped);
    }

    #[test]
    fn a_migrant_is_what_the_neighbour_published_at_that_epoch() {
        let m: Migrations<u32> = Migrations::default();
        m.publish(1, 0, Some(7));
        m.publish(2, 0, Some(9));
        assert_eq!(m.take(1, 0, &|| false), Some(7));
        m.stop(1, 0);
        assert_eq!(m.take(1, 1, &|| false), None, "island 1 stopped before epoch 1 ended");
    }
}
