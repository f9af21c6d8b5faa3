//! The engine's one door to threads, locks, condition variables, atomics and the clock.
//!
//! Every other file of the engine takes these from here (clippy's `disallowed_types` and
//! `disallowed_methods` in `clippy.toml` refuse `parking_lot`, `std::sync`'s locks and atomics,
//! `std::thread` and `std::time::Instant` elsewhere in `src/engine`), so that one switch changes
//! what they are:
//!
//! - by default: `parking_lot`'s locks, `std`'s atomics and threads, the monotonic clock;
//! - with the `shuttle` feature: the `shuttle` crate's, so that a test runs the engine's real
//!   threads (writers, the flusher, the background loop) under a scheduler that picks which
//!   thread runs at every lock, atomic and wait, explores random schedules and replays a failing
//!   one from its seed (`tests/engine_schedules.rs`).
//!
//! Shuttle does not model time. Under it a timed wait lets the lock go, gives the other threads
//! a turn and then times out, and the clock is a virtual one that moves on by what timed waits
//! and sleeps asked for: timers (the flusher's seal delay, the background tick, the sync
//! interval, idle markers) fire as the schedule decides, and a seed replays exactly.
//!
//! The API is `parking_lot`'s (locks hand out guards, not `Result`s; `Condvar::wait` takes the
//! guard by `&mut`), which the engine was written against. The wrappers are thin: each method is
//! one call of the type underneath.

#![allow(clippy::disallowed_types, clippy::disallowed_methods)]

use std::io;
use std::time::Duration;

pub use std::sync::Arc;

#[cfg(not(feature = "shuttle"))]
use std::sync::atomic as atomic_impl;

#[cfg(feature = "shuttle")]
use shuttle::sync::atomic as atomic_impl;

pub use std::sync::atomic::Ordering;

macro_rules! atomic {
    ($name:ident, $t:ty) => {
        #[derive(Default)]
        pub struct $name(atomic_impl::$name);

        #[allow(dead_code)] // the facade offers the whole API whether or not the engine uses it
        impl $name {
            pub fn new(value: $t) -> $name {
                $name(atomic_impl::$name::new(value))
            }
            pub fn load(&self, order: Ordering) -> $t {
                self.0.load(order)
            }
            pub fn store(&self, value: $t, order: Ordering) {
                self.0.store(value, order)
            }
            pub fn swap(&self, value: $t, order: Ordering) -> $t {
                self.0.swap(value, order)
            }
            pub fn fetch_add(&self, value: $t, order: Ordering) -> $t {
                self.0.fetch_add(value, order)
            }
            pub fn fetch_sub(&self, value: $t, order: Ordering) -> $t {
                self.0.fetch_sub(value, order)
            }
            pub fn fetch_max(&self, value: $t, order: Ordering) -> $t {
                self.0.fetch_max(value, order)
            }
            pub fn fetch_update<F: FnMut($t) -> Option<$t>>(
                &self,
                set: Ordering,
                fetch: Ordering,
                f: F,
            ) -> Result<$t, $t> {
                self.0.fetch_update(set, fetch, f)
            }
        }
    };
}

atomic!(AtomicU64, u64);
atomic!(AtomicI64, i64);

#[derive(Default)]
pub struct AtomicBool(atomic_impl::AtomicBool);

#[allow(dead_code)]
impl AtomicBool {
    pub fn new(value: bool) -> AtomicBool {
        AtomicBool(atomic_impl::AtomicBool::new(value))
    }
    pub fn load(&self, order: Ordering) -> bool {
        self.0.load(order)
    }
    pub fn store(&self, value: bool, order: Ordering) {
        self.0.store(value, order)
    }
    pub fn swap(&self, value: bool, order: Ordering) -> bool {
        self.0.swap(value, order)
    }
}

#[cfg(not(feature = "shuttle"))]
mod imp {
    use std::io;
    use std::time::Duration;

    pub use parking_lot::{MutexGuard, RwLockReadGuard, RwLockWriteGuard, WaitTimeoutResult};
    pub use std::thread::JoinHandle;

    pub type MutexImpl<T> = parking_lot::Mutex<T>;
    pub type RwLockImpl<T> = parking_lot::RwLock<T>;
    pub type CondvarImpl = parking_lot::Condvar;

    pub fn lock<T: ?Sized>(m: &parking_lot::Mutex<T>) -> MutexGuard<'_, T> {
        m.lock()
    }
    #[cfg(test)]
    pub fn try_lock<T: ?Sized>(m: &parking_lot::Mutex<T>) -> Option<MutexGuard<'_, T>> {
        m.try_lock()
    }
    pub fn read<T: ?Sized>(l: &parking_lot::RwLock<T>) -> RwLockReadGuard<'_, T> {
        l.read()
    }
    pub fn write<T: ?Sized>(l: &parking_lot::RwLock<T>) -> RwLockWriteGuard<'_, T> {
        l.write()
    }
    pub fn wait<T: ?Sized>(c: &parking_lot::Condvar, guard: &mut MutexGuard<'_, T>) {
        c.wait(guard)
    }
    pub fn wait_for<T: ?Sized>(
        c: &parking_lot::Condvar,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        c.wait_for(guard, timeout)
    }

    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Instant(std::time::Instant);

    impl Instant {
        pub fn now() -> Instant {
            Instant(std::time::Instant::now())
        }
        pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
            self.0.saturating_duration_since(earlier.0)
        }
    }

    pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        std::thread::Builder::new().name(name.to_string()).spawn(f)
    }

    pub fn sleep(duration: Duration) {
        std::thread::sleep(duration)
    }
}

#[cfg(feature = "shuttle")]
mod imp {
    use std::io;
    use std::ops::{Deref, DerefMut};
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::time::Duration;

    pub use shuttle::sync::{RwLockReadGuard, RwLockWriteGuard};
    pub use shuttle::thread::JoinHandle;

    pub type MutexImpl<T> = shuttle::sync::Mutex<T>;
    pub type RwLockImpl<T> = shuttle::sync::RwLock<T>;
    pub type CondvarImpl = shuttle::sync::Condvar;

    shuttle::lazy_static! {
        /// Virtual nanoseconds since this execution began: one clock per execution, so that
        /// tests running side by side do not move each other's clocks.
        static ref CLOCK: AtomicU64 = AtomicU64::new(0);
    }

    fn advance(duration: Duration) {
        CLOCK.fetch_add(duration.as_nanos() as u64, Ordering::SeqCst);
    }

    /// Holds a shuttle guard that a wait can take out and put back (shuttle's `Condvar` takes
    /// guards by value, `parking_lot`'s by `&mut`).
    pub struct MutexGuard<'a, T: ?Sized> {
        mutex: &'a shuttle::sync::Mutex<T>,
        guard: Option<shuttle::sync::MutexGuard<'a, T>>,
    }

    impl<T: ?Sized> Deref for MutexGuard<'_, T> {
        type Target = T;
        fn deref(&self) -> &T {
            self.guard.as_ref().expect("a wait holds the guard")
        }
    }

    impl<T: ?Sized> DerefMut for MutexGuard<'_, T> {
        fn deref_mut(&mut self) -> &mut T {
            self.guard.as_mut().expect("a wait holds the guard")
        }
    }

    pub fn lock<T: ?Sized>(m: &shuttle::sync::Mutex<T>) -> MutexGuard<'_, T> {
        MutexGuard {
            mutex: m,
            guard: Some(m.lock().unwrap_or_else(|e| e.into_inner())),
        }
    }
    #[cfg(test)]
    pub fn try_lock<T: ?Sized>(m: &shuttle::sync::Mutex<T>) -> Option<MutexGuard<'_, T>> {
        let guard = m.try_lock().ok()?;
        Some(MutexGuard {
            mutex: m,
            guard: Some(guard),
        })
    }
    pub fn read<T: ?Sized>(l: &shuttle::sync::RwLock<T>) -> RwLockReadGuard<'_, T> {
        l.read().unwrap_or_else(|e| e.into_inner())
    }
    pub fn write<T: ?Sized>(l: &shuttle::sync::RwLock<T>) -> RwLockWriteGuard<'_, T> {
        l.write().unwrap_or_else(|e| e.into_inner())
    }
    pub fn wait<T>(c: &shuttle::sync::Condvar, guard: &mut MutexGuard<'_, T>) {
        let held = guard.guard.take().expect("a wait holds the guard");
        guard.guard = Some(c.wait(held).unwrap_or_else(|e| e.into_inner()));
    }

    pub struct WaitTimeoutResult(bool);

    impl WaitTimeoutResult {
        pub fn timed_out(&self) -> bool {
            self.0
        }
    }

    /// Shuttle's own timed waits never time out, so a wait that only its timer would end
    /// would block for good: here the lock is let go, the other threads get a turn, the clock
    /// moves on by `timeout`, and the wait times out. Callers re-check their condition in a
    /// loop, as they must anyway (a notification may come just before the wait).
    pub fn wait_for<T: ?Sized>(
        _c: &shuttle::sync::Condvar,
        guard: &mut MutexGuard<'_, T>,
        timeout: Duration,
    ) -> WaitTimeoutResult {
        drop(guard.guard.take().expect("a wait holds the guard"));
        advance(timeout);
        shuttle::thread::yield_now();
        guard.guard = Some(guard.mutex.lock().unwrap_or_else(|e| e.into_inner()));
        WaitTimeoutResult(true)
    }

    /// A point of the virtual clock.
    #[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
    pub struct Instant(u64);

    impl Instant {
        pub fn now() -> Instant {
            Instant(CLOCK.load(Ordering::SeqCst))
        }
        pub fn saturating_duration_since(&self, earlier: Instant) -> Duration {
            Duration::from_nanos(self.0.saturating_sub(earlier.0))
        }
    }

    pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        shuttle::thread::Builder::new()
            .name(name.to_string())
            .spawn(f)
    }

    pub fn sleep(duration: Duration) {
        advance(duration);
        shuttle::thread::yield_now();
    }

    pub fn yield_now() {
        shuttle::thread::yield_now();
    }
}

pub use imp::{Instant, JoinHandle, MutexGuard, RwLockReadGuard, RwLockWriteGuard};

impl Instant {
    pub fn elapsed(&self) -> Duration {
        Instant::now().saturating_duration_since(*self)
    }
}

impl std::ops::Sub for Instant {
    type Output = Duration;
    fn sub(self, earlier: Instant) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

#[derive(Default)]
pub struct Mutex<T: ?Sized>(imp::MutexImpl<T>);

impl<T> Mutex<T> {
    pub fn new(value: T) -> Mutex<T> {
        Mutex(imp::MutexImpl::new(value))
    }
}

impl<T: ?Sized> Mutex<T> {
    pub fn lock(&self) -> MutexGuard<'_, T> {
        imp::lock(&self.0)
    }

    /// The lock if nobody holds it: for tests that check who holds a lock at a given step.
    #[cfg(test)]
    pub fn try_lock(&self) -> Option<MutexGuard<'_, T>> {
        imp::try_lock(&self.0)
    }
}

#[derive(Default)]
pub struct RwLock<T: ?Sized>(imp::RwLockImpl<T>);

impl<T> RwLock<T> {
    pub fn new(value: T) -> RwLock<T> {
        RwLock(imp::RwLockImpl::new(value))
    }
}

impl<T: ?Sized> RwLock<T> {
    pub fn read(&self) -> RwLockReadGuard<'_, T> {
        imp::read(&self.0)
    }
    pub fn write(&self) -> RwLockWriteGuard<'_, T> {
        imp::write(&self.0)
    }
}

#[derive(Default)]
pub struct Condvar(imp::CondvarImpl);

impl Condvar {
    pub fn new() -> Condvar {
        Condvar(imp::CondvarImpl::new())
    }
    pub fn notify_one(&self) {
        self.0.notify_one();
    }
    pub fn notify_all(&self) {
        self.0.notify_all();
    }
    pub fn wait<T>(&self, guard: &mut MutexGuard<'_, T>) {
        imp::wait(&self.0, guard)
    }
    /// Waits for a notification or `timeout`; returns whether it timed out.
    pub fn wait_for<T>(&self, guard: &mut MutexGuard<'_, T>, timeout: Duration) -> bool {
        imp::wait_for(&self.0, guard, timeout).timed_out()
    }
}

/// Starts a named engine thread.
pub fn spawn<F, T>(name: &str, f: F) -> io::Result<JoinHandle<T>>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    imp::spawn(name, f)
}

/// Lets the scheduler run another thread (schedule tests widen a race window with it).
#[cfg(feature = "shuttle")]
pub fn yield_now() {
    imp::yield_now()
}

/// Between two steps whose order matters to other threads: under the scheduler, the others get
/// a few turns here, so that schedules meet what may fall between the steps; otherwise nothing.
pub fn between_steps() {
    #[cfg(feature = "shuttle")]
    for _ in 0..8 {
        imp::yield_now();
    }
}

/// Sleeps (injected delays in tests; waiting out a lock holder).
pub fn sleep(duration: Duration) {
    imp::sleep(duration)
}
