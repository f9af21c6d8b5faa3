//! A bucket in memory, for the model tests of the tiers above the door: the same create-only
//! rules as [`super::s3::S3Storage`] (a second create of a name with other bytes is refused, the
//! same bytes are [`PutOutcome::AlreadyThere`]), and faults a test turns on: the bucket
//! unreachable, a PUT whose reply is lost after the object was stored, or PUTs of some names
//! refused (a writer killed before it made them).

use std::collections::BTreeMap;
use std::ops::Range;

use parking_lot::Mutex;

use super::{Bytes, ErrorKind, ObjectError, ObjectInfo, ObjectStorage, PutOutcome, judge_existing};

#[derive(Default)]
pub struct MemoryObjects {
    state: Mutex<State>,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Bytes>,
    unreachable: bool,
    /// PUTs still to come whose object is stored but whose reply is lost.
    replies_to_lose: u32,
    /// PUTs of names under this prefix fail without storing anything.
    refused_prefix: Option<String>,
    puts: u64,
    gets: u64,
}

impl MemoryObjects {
    pub fn new() -> MemoryObjects {
        MemoryObjects::default()
    }

    /// While set, every request fails with [`ErrorKind::Unreachable`].
    pub fn set_unreachable(&self, down: bool) {
        self.state.lock().unreachable = down;
    }

    /// The next `n` PUTs store their object and then fail as if the reply never came.
    pub fn lose_replies(&self, n: u32) {
        self.state.lock().replies_to_lose = n;
    }

    /// While set, a PUT of a name under `prefix` fails as unreachable and stores nothing (the
    /// writer was killed before it); other requests go on.
    pub fn refuse_puts_under(&self, prefix: Option<&str>) {
        self.state.lock().refused_prefix = prefix.map(str::to_string);
    }

    /// Every object's name.
    pub fn names(&self) -> Vec<String> {
        self.state.lock().objects.keys().cloned().collect()
    }

    /// (PUT requests, GET requests) so far.
    pub fn requests(&self) -> (u64, u64) {
        let st = self.state.lock();
        (st.puts, st.gets)
    }

    fn reachable(st: &State, op: &'static str, name: &str) -> Result<(), ObjectError> {
        if st.unreachable {
            return Err(ObjectError::new(
                ErrorKind::Unreachable,
                op,
                name,
                "the bucket is down (test)",
            ));
        }
        Ok(())
    }
}

impl ObjectStorage for MemoryObjects {
    fn put_new(&self, name: &str, bytes: Bytes) -> Result<PutOutcome, ObjectError> {
        let mut st = self.state.lock();
        Self::reachable(&st, "put", name)?;
        if st
            .refused_prefix
            .as_deref()
            .is_some_and(|p| name.starts_with(p))
        {
            return Err(ObjectError::new(
                ErrorKind::Unreachable,
                "put",
                name,
                "the writer died before this PUT (test)",
            ));
        }
        st.puts += 1;
        if let Some(there) = st.objects.get(name) {
            return judge_existing(name, &bytes, there);
        }
        st.objects.insert(name.to_string(), bytes);
        if st.replies_to_lose > 0 {
            st.replies_to_lose -= 1;
            return Err(ObjectError::new(
                ErrorKind::Unreachable,
                "put",
                name,
                "the reply was lost (test)",
            ));
        }
        Ok(PutOutcome::Created)
    }

    fn get(&self, name: &str) -> Result<Bytes, ObjectError> {
        let mut st = self.state.lock();
        Self::reachable(&st, "get", name)?;
        st.gets += 1;
        st.objects
            .get(name)
            .cloned()
            .ok_or_else(|| ObjectError::new(ErrorKind::NotFound, "get", name, "no such object"))
    }

    fn get_range(&self, name: &str, range: Range<u64>) -> Result<Bytes, ObjectError> {
        let whole = self.get(name)?;
        let end = (range.end as usize).min(whole.len());
        let start = (range.start as usize).min(end);
        Ok(whole.slice(start..end))
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>, ObjectError> {
        let st = self.state.lock();
        Self::reachable(&st, "list", prefix)?;
        Ok(st
            .objects
            .range(prefix.to_string()..)
            .take_while(|(n, _)| n.starts_with(prefix))
            .map(|(n, b)| ObjectInfo {
                name: n.clone(),
                size: b.len() as u64,
            })
            .collect())
    }

    fn delete(&self, name: &str) -> Result<(), ObjectError> {
        let mut st = self.state.lock();
        Self::reachable(&st, "delete", name)?;
        st.objects.remove(name);
        Ok(())
    }
}
