//! `logstorfs format` and `logstorfs resize`, and the checks of a store directory and a mount
//! point that every command makes before it writes anything.

use std::path::{Path, PathBuf};

use clap::Args;

use super::options::parse_capacity;
use super::{DAEMON_LOG_FILE, MOUNTED_FILE, open_error};
use crate::engine::store_dir;
use crate::engine::{Engine, EngineError, EngineOptions};
use crate::fs::{Fs, FsOptions};

/// The capacity of a store created without `--size`.
pub const DEFAULT_CAPACITY: &str = "1G";

#[derive(Args, Debug)]
pub struct FormatArgs {
    /// Capacity of the new store, from 16M to 16T (e.g. 512M, 1G, 10G).
    #[arg(long, value_name = "SIZE", default_value = DEFAULT_CAPACITY, value_parser = parse_capacity)]
    pub size: u64,
    /// Replace an existing (unmounted) store: everything in it is lost.
    #[arg(long)]
    pub force: bool,
    /// Start mirroring the new store to this bucket prefix, which must hold no store: its
    /// first manifest is published before format returns (then `mount --remote` goes on).
    #[arg(long, value_name = "s3://BUCKET/PREFIX")]
    pub remote: Option<String>,
    /// With --remote: the S3 credentials file (else the AWS_* environment).
    #[arg(long, value_name = "FILE", requires = "remote")]
    pub credentials: Option<PathBuf>,
    /// The store directory: missing, empty, or (with --force) holding a store.
    pub store: PathBuf,
}

#[derive(Args, Debug)]
pub struct ResizeArgs {
    /// The new capacity, larger than the store's now (a store only grows).
    #[arg(long, value_name = "SIZE", value_parser = parse_capacity)]
    pub size: u64,
    /// The store directory (unmounted).
    pub store: PathBuf,
}

/// Files a store directory may hold besides the engine's: the daemon's own.
fn is_daemon_file(name: &str) -> bool {
    name == MOUNTED_FILE
        || name == super::remote::REMOTE_FILE
        || name == format!("{}.tmp", super::remote::REMOTE_FILE)
        || name == DAEMON_LOG_FILE
        || name.starts_with(&format!("{DAEMON_LOG_FILE}."))
}

/// What is at the store path.
#[derive(Debug, PartialEq, Eq)]
pub enum StoreDir {
    /// Nothing: a store can be created there (its nearest existing ancestor is a directory).
    Missing,
    /// A directory holding nothing but what a store's creation leaves before its superblock.
    Empty,
    /// A directory holding a store.
    Store,
}

/// Looks at `store` without writing: refused if it is not a directory, or holds no store and
/// something else than what a store's creation leaves before its superblock.
pub fn inspect_store_dir(store: &Path) -> Result<StoreDir, String> {
    let shown = store.display();
    match std::fs::metadata(store) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let mut at = store;
            while let Some(parent) = at.parent().filter(|p| !p.as_os_str().is_empty()) {
                match std::fs::metadata(parent) {
                    Ok(m) if m.is_dir() => return Ok(StoreDir::Missing),
                    Ok(_) => {
                        return Err(format!(
                            "store {shown}: {} is not a directory",
                            parent.display()
                        ));
                    }
                    Err(_) => at = parent,
                }
            }
            Ok(StoreDir::Missing)
        }
        Err(e) => Err(format!("store {shown}: {e}")),
        Ok(m) if !m.is_dir() => Err(format!("store {shown} is not a directory")),
        // Files beside a store's own harm nothing (a log, a copy taken by hand).
        Ok(_) if store_dir::holds_store(store) => Ok(StoreDir::Store),
        Ok(_) => {
            let entries = std::fs::read_dir(store).map_err(|e| format!("store {shown}: {e}"))?;
            let mut others = Vec::new();
            for entry in entries {
                let entry = entry.map_err(|e| format!("store {shown}: {e}"))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                if !store_dir::is_store_file(&name) && !is_daemon_file(&name) {
                    others.push(name);
                }
            }
            if !others.is_empty() {
                others.sort();
                let more = if others.len() > 3 { ", ..." } else { "" };
                others.truncate(3);
                return Err(format!(
                    "{shown} holds files that are not a logstorfs store's ({}{more}): a store \
                     needs a directory of its own",
                    others.join(", ")
                ));
            }
            Ok(StoreDir::Empty)
        }
    }
}

/// The absolute form of `path` with every existing part resolved (symlinks, `..`), for
/// comparing a store path that may not exist yet with a mount point.
pub fn resolved(path: &Path) -> Result<PathBuf, String> {
    let abs = std::path::absolute(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            out.extend(rest.iter().rev());
            return Ok(out);
        }
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent;
            }
            _ => return Ok(abs),
        }
    }
}

fn new_store_options(capacity_bytes: u64) -> EngineOptions {
    EngineOptions {
        capacity_bytes,
        create_if_missing: true,
        sync_interval: None,
        // As the mount opens it, so that the checkpoint this close writes is the mount's to load
        // (a checkpoint of other prefix lengths is stale to it: a warning and a scan).
        tombstone_prefix_lengths: crate::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        ..Default::default()
    }
}

/// The segment size of a new store of `size` bytes.
pub fn new_store_segment_size(size: u64) -> u64 {
    new_store_options(size).segment_size_bytes as u64
}

/// The capacity a new store of `size` bytes gets (whole segments).
pub fn new_store_capacity(size: u64) -> u64 {
    store_dir::rounded_capacity(size, new_store_options(size).segment_size_bytes)
}

pub fn format_cmd(args: &FormatArgs) -> Result<(), String> {
    let store = &args.store;
    // The bucket is checked before anything is written, as the store directory is.
    let bucket = match &args.remote {
        Some(url) => {
            let size = new_store_capacity(args.size);
            super::remote::check_mirrorable(size, new_store_segment_size(args.size), url)?;
            Some(super::remote::new_prefix(url, args.credentials.as_deref())?)
        }
        None => None,
    };
    match inspect_store_dir(store)? {
        StoreDir::Missing | StoreDir::Empty => {}
        StoreDir::Store if !args.force => {
            return Err(format!(
                "{} already holds a logstorfs store: give --force to replace it (everything in \
                 it is lost)",
                store.display()
            ));
        }
        StoreDir::Store => {
            // Whether a daemon has it open is the lock's to say: held while the files go, so
            // that nothing is removed from a store in use.
            let _locked = crate::engine::storage::FileStorage::open(store, false).map_err(|e| {
                match e.kind() {
                    std::io::ErrorKind::WouldBlock => format!(
                        "store {} is in use (mounted?): {e}; unmount it first",
                        store.display()
                    ),
                    _ => format!("store {}: {e}", store.display()),
                }
            })?;
            remove_store_files(store)?;
        }
    }
    let engine =
        Engine::open(store, &new_store_options(args.size)).map_err(|e| open_error(store, &e))?;
    let capacity = engine.stats().capacity_bytes;
    // The filesystem's root directory is made now, so that even a read-only mount (which
    // writes nothing) finds a complete filesystem.
    let fs = Fs::with_options(engine, FsOptions::default())
        .map_err(|e| format!("creating the root directory in {}: {e}", store.display()))?;
    let published = match &bucket {
        Some((remote, objects)) => Some(super::remote::publish_first(
            fs.engine(),
            objects.clone(),
            remote,
            store,
        )?),
        None => None,
    };
    fs.close()
        .map_err(|e| format!("closing the new store: {e}"))?;
    println!(
        "created a store of {} MiB in {}",
        capacity >> 20,
        store.display()
    );
    if let (Some((remote, _)), Some(n)) = (&bucket, published) {
        println!("mirrored to {} (manifest {n})", remote.url);
    }
    Ok(())
}

/// Removes the engine's files from the store directory `store` (not the daemon's log).
fn remove_store_files(store: &Path) -> Result<(), String> {
    let entries =
        std::fs::read_dir(store).map_err(|e| format!("store {}: {e}", store.display()))?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        // The mirror's record goes too: a new store is not the writer of the old one's bucket.
        if store_dir::is_store_file(&name)
            || name == MOUNTED_FILE
            || name == super::remote::REMOTE_FILE
        {
            std::fs::remove_file(entry.path())
                .map_err(|e| format!("removing {}: {e}", entry.path().display()))?;
        }
    }
    Ok(())
}

pub fn resize_cmd(args: &ResizeArgs) -> Result<(), String> {
    let store = &args.store;
    if inspect_store_dir(store)? != StoreDir::Store {
        return Err(format!("{} holds no logstorfs store", store.display()));
    }
    let g = store_dir::grow(store, args.size).map_err(|e| match e {
        EngineError::Locked(e) => format!(
            "store {} is in use (mounted?): {e}; resize grows only an unmounted store",
            store.display()
        ),
        EngineError::Limit(msg) => format!("store {}: {msg}", store.display()),
        e => format!("cannot resize store {}: {e}", store.display()),
    })?;
    println!(
        "store {} grew from {} MiB to {} MiB (the next mount rebuilds its index by a scan)",
        store.display(),
        g.old_capacity >> 20,
        g.new_capacity >> 20
    );
    Ok(())
}
