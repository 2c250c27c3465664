//! A pool of plugin instances: a caller takes one, uses it alone, and gives
//! it back; callers wait while every instance is in use. The LLM backends
//! (calls in flight), the evaluator (slots) and the memory strategy are
//! shared between islands through pools.

use std::sync::{Condvar, Mutex, MutexGuard, PoisonError};

/// Instances that one caller at a time uses each.
pub struct Pool<T> {
    free: Mutex<Vec<T>>,
    returned: Condvar,
    size: usize,
}

impl<T> Pool<T> {
    /// A pool of these instances.
    pub fn new(items: Vec<T>) -> Pool<T> {
        let size = items.len();
        Pool { free: Mutex::new(items), returned: Condvar::new(), size }
    }

    /// How many instances the pool holds.
    pub fn size(&self) -> usize {
        self.size
    }

    fn lock(&self) -> MutexGuard<'_, Vec<T>> {
        self.free.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `f` on a free instance, waiting for one; the instance goes back
    /// to the pool afterwards (also when `f` panics).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> R {
        let item = {
            let mut free = self.lock();
            loop {
                if let Some(item) = free.pop() {
                    break item;
                }
                free = self.returned.wait(free).unwrap_or_else(PoisonError::into_inner);
            }
        };
        struct Back<'p, T> {
            pool: &'p Pool<T>,
            item: Option<T>,
        }
        impl<T> Drop for Back<'_, T> {
            fn drop(&mut self) {
                if let Some(item) = self.item.take() {
                    self.pool.lock().push(item);
                    self.pool.returned.notify_one();
                }
            }
        }
        let mut back = Back { pool: self, item: Some(item) };
        let item = back.item.as_mut().expect("just taken");
        f(item)
    }
}

#[cfg(test)]
mod tests {
    use super::Pool;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn never_more_callers_than_instances_and_every_instance_comes_back() {
        let pool = Pool::new(vec![0u32, 0u32]);
        let (busy, peak) = (AtomicUsize::new(0), AtomicUsize::new(0));
        std::thread::scope(|s| {
            for _ in 0..6 {
                s.spawn(|| {
                    for _ in 0..20 {
                        pool.with(|n| {
                            let now = busy.fetch_add(1, Ordering::SeqCst) + 1;
                            peak.fetch_max(now, Ordering::SeqCst);
                            *n += 1;
                            std::thread::yield_now();
                            busy.fetch_sub(1, Ordering::SeqCst);
                        })
                    }
                });
            }
        });
        assert_eq!(peak.load(Ordering::SeqCst), 2);
        let total: u32 = pool.with(|a| pool.with(|b| *a + *b));
        assert_eq!(total, 120);
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| pool.with(|_| panic!("boom"))));
        assert!(caught.is_err());
        assert_eq!(pool.with(|_| 1) + pool.with(|_| 1), 2, "the instance came back after the panic");
    }
}
