//! The requests made through one [`ObjectStorage`], counted for `stats`: a wrapper around any
//! storage, so that the figures mean the same over a real gateway and over the model tests'
//! bucket in memory.
//!
//! A call counts once, whatever it cost on the wire: a PUT retried after a lost reply, or the
//! read-back of a refused one (`ObjectStorage::put_new`), is one `put`. A call that failed
//! counts too: it was still a request to pay for.

use std::ops::Range;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use super::{Bytes, ObjectError, ObjectInfo, ObjectStorage, PutOutcome};

/// Requests made so far, by kind, and the bytes they moved.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RequestCounts {
    pub puts: u64,
    /// `get` and `get_range` calls.
    pub gets: u64,
    pub lists: u64,
    pub deletes: u64,
    /// Bytes sent by PUTs that succeeded.
    pub bytes_put: u64,
    /// Bytes received by GETs that succeeded.
    pub bytes_got: u64,
}

/// An [`ObjectStorage`] that counts what goes through it ([`Counted::counts`]).
pub struct Counted {
    inner: Arc<dyn ObjectStorage>,
    puts: AtomicU64,
    gets: AtomicU64,
    lists: AtomicU64,
    deletes: AtomicU64,
    bytes_put: AtomicU64,
    bytes_got: AtomicU64,
}

impl Counted {
    pub fn new(inner: Arc<dyn ObjectStorage>) -> Counted {
        Counted {
            inner,
            puts: AtomicU64::new(0),
            gets: AtomicU64::new(0),
            lists: AtomicU64::new(0),
            deletes: AtomicU64::new(0),
            bytes_put: AtomicU64::new(0),
            bytes_got: AtomicU64::new(0),
        }
    }

    pub fn counts(&self) -> RequestCounts {
        let get = |c: &AtomicU64| c.load(Ordering::Relaxed);
        RequestCounts {
            puts: get(&self.puts),
            gets: get(&self.gets),
            lists: get(&self.lists),
            deletes: get(&self.deletes),
            bytes_put: get(&self.bytes_put),
            bytes_got: get(&self.bytes_got),
        }
    }

    fn got(&self, got: Result<Bytes, ObjectError>) -> Result<Bytes, ObjectError> {
        self.gets.fetch_add(1, Ordering::Relaxed);
        if let Ok(bytes) = &got {
            self.bytes_got
                .fetch_add(bytes.len() as u64, Ordering::Relaxed);
        }
        got
    }
}

impl ObjectStorage for Counted {
    fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome, ObjectError> {
        self.puts.fetch_add(1, Ordering::Relaxed);
        let len = bytes.len() as u64;
        let put = self.inner.put_new(name, bytes);
        if put.is_ok() {
            self.bytes_put.fetch_add(len, Ordering::Relaxed);
        }
        put
    }

    fn get(&self, name: &str) -> Result<Bytes, ObjectError> {
        self.got(self.inner.get(name))
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        self.got(self.inner.get_range(name, range))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        self.lists.fetch_add(1, Ordering::Relaxed);
        self.inner.list(prefix)
    }

    fn delete(&self, name: &str) -> Result<(), ObjectError> {
        self.deletes.fetch_add(1, Ordering::Relaxed);
        self.inner.delete(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::object::memory::MemoryObjects;

    #[test]
    fn every_call_counts_once_with_the_bytes_it_moved() {
        let bucket = Arc::new(MemoryObjects::new());
        let counted = Counted::new(bucket.clone());
        counted.put_new("a", Bytes::from_static(b"12345")).unwrap();
        counted.put_new("b", Bytes::from_static(b"678")).unwrap();
        // The same bytes again: a retried PUT, which succeeds and is one more request.
        counted.put_new("b", Bytes::from_static(b"678")).unwrap();
        assert_eq!(counted.get("a").unwrap().len(), 5);
        assert_eq!(counted.get_range("a", 1..3).unwrap().len(), 2);
        assert!(counted.get("absent").is_err());
        assert_eq!(counted.list("").unwrap().len(), 2);
        counted.delete("a").unwrap();
        bucket.set_unreachable(true);
        assert!(counted.put_new("c", Bytes::from_static(b"9")).is_err());
        assert_eq!(
            counted.counts(),
            RequestCounts {
                puts: 4,
                gets: 3,
                lists: 1,
                deletes: 1,
                bytes_put: 11,
                bytes_got: 7,
            }
        );
    }
}
