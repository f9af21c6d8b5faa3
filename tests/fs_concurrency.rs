//! The `Fs` core shared by several threads (as the multi-threaded FUSE session does): creates,
//! writes, reads and deletes in parallel directories never lose or mix data, and link counts
//! and listings come out exact. Method: 4 threads, each with its own directory and files, plus
//! one shared directory that all of them create in and delete from.

mod fs_common;

use std::sync::Arc;

use fs_common::*;
use logstorfs::fs::ROOT_INO;

#[test]
fn parallel_writers_do_not_interfere() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Arc::new(open(dir.path()));
    let shared = fs.mkdir(ROOT_INO, b"shared", 0o755, 0, CALLER).unwrap().ino;
    let threads: Vec<_> = (0..4u64)
        .map(|t| {
            let fs = fs.clone();
            std::thread::spawn(move || {
                let d = fs
                    .mkdir(ROOT_INO, format!("t{t}").as_bytes(), 0o755, 0, CALLER)
                    .unwrap()
                    .ino;
                for i in 0..40u64 {
                    let data = pattern(10_000 + (i as usize) * 777, t * 1000 + i);
                    let ino = make_file(&fs, d, &format!("f{i}"), &data);
                    assert_eq!(read_all(&fs, ino), data);
                    make_file(&fs, shared, &format!("s{t}-{i}"), b"x");
                    if i % 2 == 0 {
                        fs.unlink(shared, format!("s{t}-{i}").as_bytes()).unwrap();
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(list(&fs, shared).len(), 4 * 20);
    assert_eq!(fs.getattr(ROOT_INO).unwrap().nlink, 2 + 5);
    for t in 0..4u64 {
        let d = resolve(&fs, &format!("t{t}")).unwrap();
        assert_eq!(list(&fs, d).len(), 40);
        let f = resolve(&fs, &format!("t{t}/f7")).unwrap();
        assert_eq!(read_all(&fs, f), pattern(10_000 + 7 * 777, t * 1000 + 7));
    }
}
