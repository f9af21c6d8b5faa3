//! One operation, one batch: a metadata operation gathers its changes (inode records, directory
//! entry lists, purges, xattrs, a raised inode high-water mark) in a [`Txn`], and [`Fs::commit`]
//! writes them as ONE engine batch, so that a crash keeps all of the operation or none of it.
//! Only once the batch is written does the in-memory state follow (node table, group map), so a
//! failed write leaves memory as the store is.

use std::collections::{BTreeMap, BTreeSet};

use super::keys::{DirEntry, InodeRecord};
use super::{FileKind, Fs, FsError, FsResult, INODE_RESERVE_BLOCK, State, TOMBSTONE_GROUP, keys};
use crate::engine::{GroupId, Mutation, ROOT_GROUP};

/// The changes of one operation, turned into one engine batch by [`Txn::into_batch`].
#[derive(Default)]
pub(super) struct Txn {
    /// Mutations that go first (purges, range deletes).
    pub(super) pre: Vec<Mutation>,
    /// Dirent lists changed: (parent, hash) -> (group, entries). The group is set at commit.
    dirents: BTreeMap<(u64, u64), (GroupId, Vec<DirEntry>)>,
    /// Inode records changed (their `group` is set at commit).
    pub(super) inodes: BTreeMap<u64, InodeRecord>,
    /// The records of `inodes` as they were before this operation (for the group accounting).
    pub(super) loaded: BTreeMap<u64, InodeRecord>,
    /// Inodes this operation creates.
    pub(super) created: BTreeSet<u64>,
    /// Inodes purged by this batch (their record is deleted, not rewritten).
    pub(super) purged: BTreeSet<u64>,
    /// Mutations that go last (data, symlink targets, xattrs, metadata).
    pub(super) post: Vec<Mutation>,
    /// Inode allocation: (next_ino, ino_limit) after commit.
    alloc: Option<(u64, u64)>,
}

impl Txn {
    fn into_batch(self) -> Vec<Mutation> {
        let mut batch = self.pre;
        for ((parent, hash), (group, entries)) in self.dirents {
            let key = keys::dirent_key(parent, hash);
            if entries.is_empty() {
                batch.push(Mutation::delete(TOMBSTONE_GROUP, key));
            } else {
                batch.push(Mutation::put(group, key, keys::encode_dirents(&entries)));
            }
        }
        for (ino, rec) in self.inodes {
            if !self.purged.contains(&ino) {
                batch.push(Mutation::put(rec.group, keys::inode_key(ino), rec.encode()));
            }
        }
        batch.extend(self.post);
        batch
    }
}

impl Fs {
    pub(super) fn txn_inode<'t>(
        &self,
        st: &State,
        txn: &'t mut Txn,
        ino: u64,
    ) -> FsResult<&'t mut InodeRecord> {
        if !txn.inodes.contains_key(&ino) {
            let rec = self.load(st, ino)?;
            txn.loaded.insert(ino, rec.clone());
            txn.inodes.insert(ino, rec);
        }
        Ok(txn.inodes.get_mut(&ino).expect("inserted above"))
    }

    pub(super) fn txn_dirents<'t>(
        &self,
        txn: &'t mut Txn,
        parent: u64,
        name: &[u8],
    ) -> FsResult<&'t mut Vec<DirEntry>> {
        let hash = keys::name_hash(name);
        if let std::collections::btree_map::Entry::Vacant(e) = txn.dirents.entry((parent, hash)) {
            let list = self.read_dirents(parent, hash)?;
            e.insert((ROOT_GROUP, list));
        }
        Ok(&mut txn
            .dirents
            .get_mut(&(parent, hash))
            .expect("inserted above")
            .1)
    }

    pub(super) fn add_entry(&self, txn: &mut Txn, parent: u64, entry: DirEntry) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, &entry.name)?;
        if list.len() >= keys::MAX_ENTRIES_PER_HASH {
            // Hundreds of names sharing one 56-bit hash: treat as a full directory.
            return Err(FsError::Engine(crate::engine::EngineError::NoSpace));
        }
        list.push(entry);
        Ok(())
    }

    pub(super) fn remove_entry(&self, txn: &mut Txn, parent: u64, name: &[u8]) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, name)?;
        let before = list.len();
        list.retain(|e| e.name != name);
        if list.len() == before {
            return Err(FsError::NotFound);
        }
        Ok(())
    }

    pub(super) fn set_entry(
        &self,
        txn: &mut Txn,
        parent: u64,
        name: &[u8],
        ino: u64,
        kind: FileKind,
    ) -> FsResult<()> {
        let list = self.txn_dirents(txn, parent, name)?;
        let e = list
            .iter_mut()
            .find(|e| e.name == name)
            .ok_or(FsError::NotFound)?;
        e.ino = ino;
        e.kind = kind;
        Ok(())
    }

    pub(super) fn alloc_ino(st: &State, txn: &mut Txn) -> u64 {
        let (next, limit) = txn.alloc.unwrap_or((st.next_ino, st.ino_limit));
        let ino = next;
        let mut limit = limit;
        if ino >= limit {
            limit = ino + INODE_RESERVE_BLOCK;
            // IMPORTANT: the raised mark is in the same batch as the inode that needs it, so a
            // crash can never leave an inode numbered at or above the persisted mark.
            txn.post.push(Mutation::put(
                ROOT_GROUP,
                keys::meta_key(keys::META_INODE_HIGH_WATER),
                keys::encode_u64(limit),
            ));
        }
        txn.alloc = Some((ino + 1, limit));
        ino
    }

    /// Writes `txn` as one batch and, once it is applied, updates the in-memory state: the
    /// node table, and the group map's directories and byte counts (which may then split or
    /// merge a group).
    pub(super) fn commit(&self, st: &mut State, mut txn: Txn) -> FsResult<()> {
        // Records go to their current groups (a directory's entries to its own group).
        for (&(parent, _), (group, _)) in txn.dirents.iter_mut() {
            *group = st.dir_group(parent);
        }
        for (&ino, rec) in txn.inodes.iter_mut() {
            rec.group = st.record_group(ino, rec);
        }
        for &ino in &txn.purged {
            if st.groups.read().root_group(ino).is_some() {
                txn.post
                    .push(Mutation::delete(TOMBSTONE_GROUP, keys::group_root_key(ino)));
            }
        }
        let alloc = txn.alloc;
        let purged = std::mem::take(&mut txn.purged);
        let loaded = std::mem::take(&mut txn.loaded);
        let created = std::mem::take(&mut txn.created);
        let inodes: Vec<(u64, InodeRecord)> =
            txn.inodes.iter().map(|(k, v)| (*k, v.clone())).collect();
        txn.purged = purged.clone();
        let batch = txn.into_batch();
        if !batch.is_empty() {
            self.store(&batch)?;
        }
        if let Some((next, limit)) = alloc {
            st.next_ino = next;
            st.ino_limit = limit;
        }
        let mut touched = Vec::new();
        for (ino, rec) in &inodes {
            let old = loaded.get(ino);
            if old.is_none() && !created.contains(ino) {
                debug_assert!(false, "inode {ino} changed without txn_inode");
                continue;
            }
            let new = (!purged.contains(ino)).then_some(rec);
            Self::account(st, *ino, old, new);
            if let Some(r) = new {
                touched.push(if r.kind == FileKind::Directory {
                    *ino
                } else {
                    r.parent
                });
            }
            if let Some(o) = old {
                touched.push(o.parent);
            }
        }
        self.regroup(st, &touched);
        for (ino, rec) in inodes {
            if let Some(node) = st.nodes.get_mut(&ino) {
                node.rec = rec;
                if node.rec.nlink == 0 {
                    if purged.contains(&ino) {
                        node.gone = true;
                    } else {
                        node.orphan = true;
                    }
                }
            }
        }
        Ok(())
    }
}
