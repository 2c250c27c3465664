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
//!   same epoch (a strictly better one becomes its best), with the networks
//!   that island knew to be trained then: those an island refuses before
//!   their epoch change only at its migrations.

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
///
/// Each evaluated candidate is kept as the generator wrote it; one that
/// repairs changed before training (`[search] repair`) is also kept as it
/// trained, for the later candidates of its own island: a small generator
/// shown the repaired best often writes it out again, which differs from the
/// answer that was screened by the repaired lines and would otherwise train
/// the same network twice. Another island's repaired designs are not
/// compared with, as whether they are known yet depends on timing.
#[derive(Debug)]
pub struct OrderedArchive {
    entries: Mutex<BTreeMap<u64, Entry>>,
    trained: Mutex<BTreeMap<u64, Signature>>,
    islands: u64,
    changed: Condvar,
}

impl Default for OrderedArchive {
    fn default() -> Self {
        OrderedArchive::new(1)
    }
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
    /// An empty archive of a run with `islands` islands.
    pub fn new(islands: u64) -> Self {
        OrderedArchive {
            entries: Mutex::default(),
            trained: Mutex::default(),
            islands: islands.max(1),
            changed: Condvar::new(),
        }
    }

    /// Records what a committed iteration left in the archive (on resume):
    /// the answer's signature, and the trained design's when repairs changed
    /// it.
    pub fn restore(&self, t: u64, evaluated: Option<Signature>, trained: Option<Signature>) {
        lock(&self.entries).insert(t, evaluated.map_or(Entry::Nothing, Entry::Evaluated));
        if let Some(sig) = trained {
            lock(&self.trained).insert(t, sig);
        }
    }

    /// Records the design candidate `t` trained as, when repairs changed it
    /// after it was screened.
    pub fn trained(&self, t: u64, sig: Signature) {
        lock(&self.trained).insert(t, sig);
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

    /// The most similar evaluated design before `t` at or above `threshold`
    /// (as written, or as trained for `t`'s own island).
    fn twin(&self, entries: &BTreeMap<u64, Entry>, t: u64, sig: &Signature, threshold: f64) -> Option<(u64, f64)> {
        let trained = lock(&self.trained);
        let island = locate(t, self.islands).0;
        entries
            .range(..t)
            .filter_map(|(i, e)| match e {
                Entry::Evaluated(s) => {
                    let as_trained = trained
                        .get(i)
                        .filter(|_| locate(*i, self.islands).0 == island)
                        .map_or(0.0, |tr| tr.similarity(sig));
                    Some((*i, s.similarity(sig).max(as_trained)))
                }
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
        match self.twin(&entries, t, sig, threshold) {
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
        let twin = if filter { self.twin(&entries, t, &sig, threshold) } else { None };
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
    fn a_design_written_as_an_earlier_one_trained_after_repairs_is_its_twin_on_its_own_island() {
        let answer = "class Net:\n    def __init__(self):\n        self.conv = nn.Conv2d(1, 32, 3, padding=1)\n        self.pool = nn.MaxPool2d(2)\n        self.fc = nn.Linear(32 * 28 * 28, 10)\n    def forward(self, x):\n        return self.fc(self.pool(self.conv(x)).flatten(1))\n";
        let repaired = answer.replace("32 * 28 * 28", "6272");
        let never = || false;
        assert!(signature(answer).similarity(&signature(&repaired)) < 0.95, "the repaired line is a real difference");
        // One chain: iteration 1 trained as repaired; 2 writes the repaired
        // design out again.
        let one = OrderedArchive::new(1);
        assert_eq!(one.screen(1, Some(signature(answer)), 0.95, true, &never), Screen::Novel);
        assert_eq!(one.probe(2, &signature(&repaired), 0.95, &never), Screen::Novel, "not known as trained yet");
        one.trained(1, signature(&repaired));
        assert_eq!(one.probe(2, &signature(&repaired), 0.95, &never), Screen::Duplicate(1, 1.0));
        assert_eq!(one.screen(2, Some(signature(&repaired)), 0.95, true, &never), Screen::Duplicate(1, 1.0));
        // Restored from the records, the same.
        let resumed = OrderedArchive::new(1);
        resumed.restore(1, Some(signature(answer)), Some(signature(&repaired)));
        assert_eq!(resumed.probe(2, &signature(&repaired), 0.95, &never), Screen::Duplicate(1, 1.0));
        // Two islands: 1 is island 0's, 2 island 1's, 3 island 0's again.
        let two = OrderedArchive::new(2);
        assert_eq!(two.screen(1, Some(signature(answer)), 0.95, true, &never), Screen::Novel);
        two.trained(1, signature(&repaired));
        assert_eq!(two.screen(2, Some(signature(&repaired)), 0.95, true, &never), Screen::Novel, "another island's");
        // Island 0's 3 finds its own 1 as trained (and 2 as written): the
        // earliest twin.
        assert_eq!(two.probe(3, &signature(&repaired), 0.95, &never), Screen::Duplicate(1, 1.0));
        let other = OrderedArchive::new(2);
        other.restore(1, Some(signature(answer)), Some(signature(&repaired)));
        other.restore(2, None, None);
        assert_eq!(other.probe(3, &signature(&repaired), 0.95, &never), Screen::Duplicate(1, 1.0), "its own island's");
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
