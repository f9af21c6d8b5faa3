//! Builds and times the mount workload's store without FUSE (issue 7: mount time).
//!
//! `cargo run --release --example mount_store -- build STORE [FILES] [DIRS] [THREADS]` creates
//! FILES files of 100 B in DIRS directories under the root, THREADS creators taking directories
//! round-robin (as `scripts/bench.sh`'s `fill`), then closes the store cleanly.
//! `... -- open STORE [defer]` times `Engine::open` and `Fs::with_options` (RUST_LOG=info for the
//! phases inside them) and closes again.
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use logstorfs::engine::{Engine, EngineOptions};
use logstorfs::fs::{Caller, Fs, FsOptions, ROOT_INO};

const CALLER: Caller = Caller { uid: 0, gid: 0 };

fn options() -> EngineOptions {
    EngineOptions {
        capacity_bytes: 4 << 30,
        create_if_missing: true,
        tombstone_prefix_lengths: logstorfs::fs::keys::TOMBSTONE_PREFIX_LENGTHS.to_vec(),
        ..Default::default()
    }
}

fn main() {
    env_logger::init();
    let args: Vec<String> = std::env::args().collect();
    let store = PathBuf::from(&args[2]);
    let arg = |i: usize, d: u64| args.get(i).map_or(d, |s| s.parse().expect("number"));
    match args[1].as_str() {
        "build" => {
            let (files, dirs, threads) = (arg(3, 330_000), arg(4, 330), arg(5, 4));
            std::fs::create_dir_all(&store).unwrap();
            let fs = Arc::new(Fs::new(Engine::open(&store, &options()).unwrap()).unwrap());
            let t = Instant::now();
            let workers: Vec<_> = (0..threads)
                .map(|k| {
                    let fs = fs.clone();
                    std::thread::spawn(move || {
                        let buf = vec![b'x'; 100];
                        for j in (k..dirs).step_by(threads as usize) {
                            let d = fs
                                .mkdir(ROOT_INO, format!("d{j:04}").as_bytes(), 0o755, 0, CALLER)
                                .unwrap()
                                .ino;
                            for i in (j..files).step_by(dirs as usize) {
                                let (a, fh) = fs
                                    .create(d, format!("f{i:07}").as_bytes(), 0o644, 0, CALLER)
                                    .unwrap();
                                fs.write(a.ino, 0, &buf).unwrap();
                                fs.release(a.ino, fh).unwrap();
                                fs.forget(a.ino, 1);
                            }
                        }
                    })
                })
                .collect();
            for w in workers {
                w.join().unwrap();
            }
            fs.fsync().unwrap();
            let n = fs.engine().stats().index_entries;
            eprintln!(
                "built {files} files in {:.1} s, {n} index entries",
                t.elapsed().as_secs_f64()
            );
            Arc::try_unwrap(fs).ok().unwrap().close().unwrap();
        }
        "open" => {
            let t = Instant::now();
            let engine = Engine::open(&store, &options()).unwrap();
            let t_engine = t.elapsed();
            let defer = args.get(3).is_some_and(|a| a == "defer");
            let options = FsOptions {
                defer_group_map: defer,
                ..FsOptions::default()
            };
            let fs = Fs::with_options(engine, options).unwrap();
            let t_fs = t.elapsed() - t_engine;
            eprintln!(
                "Engine::open {:.3} s, Fs::with_options {:.3} s, total {:.3} s ({} records)",
                t_engine.as_secs_f64(),
                t_fs.as_secs_f64(),
                (t_engine + t_fs).as_secs_f64(),
                fs.engine().stats().index_entries
            );
            if defer {
                let t = Instant::now();
                fs.rebuild_group_map().unwrap();
                eprintln!(
                    "deferred group map rebuild {:.3} s",
                    t.elapsed().as_secs_f64()
                );
            }
            let t = Instant::now();
            fs.close().unwrap();
            eprintln!("close {:.3} s", t.elapsed().as_secs_f64());
        }
        other => panic!("unknown command {other}"),
    }
}
