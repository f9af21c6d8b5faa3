//! The object tier against a real S3 gateway (never a mock): create-only PUTs and their
//! read-back, reads, listings, deletes, and the errors a mount must explain (bad credentials, a
//! missing bucket, an endpoint that does not answer).
//!
//! The gateway comes from the standard environment (`AWS_ENDPOINT`, `AWS_ACCESS_KEY_ID`,
//! `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`, `AWS_ALLOW_HTTP`) and the bucket from
//! `LOGSTORFS_S3_BUCKET`, as `scripts/ceph.sh up` prints them:
//!
//! ```text
//! eval "$(scripts/ceph.sh up)"; cargo test --release --features s3 --test object_s3; scripts/ceph.sh down
//! ```
//!
//! Built only with the `s3` feature; without `AWS_ENDPOINT` every test fails.
//! Every test works under a prefix of its own, unique to the run, so runs never share names.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use logstorfs::object::s3::{S3Options, S3Storage};
use logstorfs::object::{Bytes, ErrorKind, ObjectError, ObjectStorage, PutOutcome, S3Config};

/// The gateway's settings. A run without a gateway fails: these tests are built only with the
/// `s3` feature, which asks for them (`scripts/object_s3.sh` starts a gateway first).
fn gateway_vars() -> BTreeMap<String, String> {
    let vars: BTreeMap<String, String> = std::env::vars()
        .filter(|(k, _)| k.starts_with("AWS_"))
        .collect();
    assert!(
        vars.contains_key("AWS_ENDPOINT"),
        "AWS_ENDPOINT is not set: start a gateway first (eval \"$(scripts/ceph.sh up)\"), or run \
         scripts/object_s3.sh"
    );
    vars
}

fn bucket() -> String {
    std::env::var("LOGSTORFS_S3_BUCKET").unwrap_or_else(|_| "logstorfs-test".into())
}

/// A prefix no other test and no other run uses.
fn unique_prefix(test: &str) -> String {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos();
    format!("object-s3-tests/{}-{}/{test}", std::process::id(), nanos)
}

/// Short retries: the error tests should fail in a second, not after the default 30 s.
fn quick() -> S3Options {
    S3Options {
        max_retries: 1,
        retry_timeout: Duration::from_secs(5),
        request_timeout: Duration::from_secs(30),
        connect_timeout: Duration::from_secs(2),
        put_attempts: 3,
    }
}

fn storage_with(vars: &BTreeMap<String, String>, url: &str, options: S3Options) -> S3Storage {
    let config = S3Config::from_vars(url, vars).expect("config");
    S3Storage::new(&config, options).expect("client")
}

/// The test's own storage, under a prefix of its own, and the gateway's settings.
fn storage(test: &str) -> (S3Storage, BTreeMap<String, String>) {
    let vars = gateway_vars();
    let url = format!("s3://{}/{}", bucket(), unique_prefix(test));
    let s = storage_with(&vars, &url, S3Options::default());
    s.check()
        .unwrap_or_else(|e| panic!("the gateway is not usable: {e}"));
    (s, vars)
}

fn cleanup(s: &S3Storage) {
    for o in s.list("").expect("list for cleanup") {
        s.delete(&o.name).expect("delete for cleanup");
    }
    assert_eq!(s.list("").unwrap(), vec![], "objects left after cleanup");
}

fn kind_of<T: std::fmt::Debug>(r: Result<T, ObjectError>) -> (ErrorKind, String) {
    let e = r.expect_err("expected an error");
    eprintln!("as expected: {e}");
    (e.kind, e.to_string())
}

#[test]
fn put_new_get_range_list_delete() {
    let (s, _) = storage("basic");
    let a = Bytes::from(b"segment zero".to_vec());
    let big: Vec<u8> = (0..3_000_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
    assert_eq!(
        s.put_new("seg/000000", a.clone()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.put_new("seg/000001", Bytes::from(big.clone())).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.put_new("seg/000100", Bytes::new()).unwrap(),
        PutOutcome::Created,
        "an empty object"
    );
    assert_eq!(
        s.put_new("manifest/000001", Bytes::from_static(b"m"))
            .unwrap(),
        PutOutcome::Created
    );

    assert_eq!(s.get("seg/000000").unwrap(), a);
    assert_eq!(&s.get("seg/000001").unwrap()[..], &big[..]);
    assert!(s.get("seg/000100").unwrap().is_empty());
    assert_eq!(
        &s.get_range("seg/000001", 1_000_000..1_000_123).unwrap()[..],
        &big[1_000_000..1_000_123]
    );
    assert_eq!(
        &s.get_range("seg/000000", 8..1000).unwrap()[..],
        b"zero",
        "a range past the end is cut there"
    );

    let names = |v: Vec<logstorfs::object::ObjectInfo>| {
        v.into_iter().map(|o| (o.name, o.size)).collect::<Vec<_>>()
    };
    assert_eq!(
        names(s.list("seg/").unwrap()),
        vec![
            ("seg/000000".into(), 12),
            ("seg/000001".into(), 3_000_000),
            ("seg/000100".into(), 0)
        ]
    );
    assert_eq!(
        names(s.list("seg/0000").unwrap()),
        vec![("seg/000000".into(), 12), ("seg/000001".into(), 3_000_000)],
        "a prefix need not end at a '/'"
    );
    assert_eq!(s.list("").unwrap().len(), 4);
    assert_eq!(s.list("nothing/").unwrap(), vec![]);

    s.delete("seg/000000").unwrap();
    let (kind, msg) = kind_of(s.get("seg/000000"));
    assert_eq!(kind, ErrorKind::NotFound, "{msg}");
    assert!(
        msg.contains("seg/000000"),
        "the message names the object: {msg}"
    );
    s.delete("seg/000000")
        .expect("deleting an absent object succeeds");
    assert_eq!(names(s.list("seg/").unwrap()).len(), 2);
    cleanup(&s);
}

#[test]
fn create_only_refuses_a_different_body() {
    let (s, _) = storage("fence");
    assert_eq!(
        s.put_new("manifest/000007", Bytes::from_static(b"writer one"))
            .unwrap(),
        PutOutcome::Created
    );
    let (kind, msg) = kind_of(s.put_new("manifest/000007", Bytes::from_static(b"writer two!")));
    assert_eq!(kind, ErrorKind::AlreadyExists, "{msg}");
    assert!(msg.contains("another writer created it"), "{msg}");
    assert_eq!(
        &s.get("manifest/000007").unwrap()[..],
        b"writer one",
        "the first writer's object is untouched"
    );
    // Same length, other bytes: the comparison is of contents, not sizes.
    let (kind, msg) = kind_of(s.put_new("manifest/000007", Bytes::from_static(b"writer uno")));
    assert_eq!(kind, ErrorKind::AlreadyExists, "{msg}");
    cleanup(&s);
}

#[test]
fn a_repeated_put_of_the_same_bytes_succeeds() {
    // What a retry after a lost reply meets: the object is there, with our bytes.
    let (s, _) = storage("retry");
    let body = Bytes::from(vec![0x5a; 100_000]);
    assert_eq!(
        s.put_new("log/000001", body.clone()).unwrap(),
        PutOutcome::Created
    );
    assert_eq!(
        s.put_new("log/000001", body.clone()).unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(s.get("log/000001").unwrap(), body);
    cleanup(&s);
}

#[test]
fn many_threads_share_one_storage() {
    let (s, _) = storage("threads");
    let s = Arc::new(s);
    let threads: Vec<_> = (0..8)
        .map(|t| {
            let s = Arc::clone(&s);
            std::thread::spawn(move || {
                for i in 0..5 {
                    let name = format!("t{t}/{i}");
                    let body = Bytes::from(format!("thread {t} object {i}").repeat(100));
                    assert_eq!(s.put_new(&name, body.clone()).unwrap(), PutOutcome::Created);
                    assert_eq!(s.get(&name).unwrap(), body);
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    assert_eq!(s.list("").unwrap().len(), 40);
    cleanup(&s);
}

#[test]
fn names_and_sizes_are_checked_before_sending() {
    let (s, _) = storage("names");
    for bad in ["", "/abs", "a//b", "a/../b", "trailing/"] {
        let (kind, msg) = kind_of(s.put_new(bad, Bytes::from_static(b"x")));
        assert_eq!(kind, ErrorKind::Other, "{bad:?}: {msg}");
        assert!(msg.contains("invalid object name"), "{bad:?}: {msg}");
    }
    let too_big = Bytes::from(vec![0u8; logstorfs::object::MAX_OBJECT_BYTES + 1]);
    let (kind, msg) = kind_of(s.put_new("big", too_big));
    assert_eq!(kind, ErrorKind::Other, "{msg}");
    assert!(
        msg.contains("more than one create-only PUT may carry"),
        "{msg}"
    );
    assert_eq!(s.list("").unwrap(), vec![], "nothing was sent");
}

#[test]
fn bad_credentials_are_an_auth_error_that_says_so() {
    let vars = gateway_vars();
    let url = format!("s3://{}/{}", bucket(), unique_prefix("auth"));
    let mut wrong_secret = vars.clone();
    wrong_secret.insert("AWS_SECRET_ACCESS_KEY".into(), "not-the-secret".into());
    let mut wrong_key = vars.clone();
    wrong_key.insert("AWS_ACCESS_KEY_ID".into(), "NOSUCHKEY0000000000".into());
    for (what, v) in [("wrong secret", &wrong_secret), ("unknown key", &wrong_key)] {
        let s = storage_with(v, &url, quick());
        let (kind, msg) = kind_of(s.check());
        assert_eq!(kind, ErrorKind::Auth, "{what}: {msg}");
        assert!(
            msg.contains("refused the credentials") && msg.contains("AWS_SECRET_ACCESS_KEY"),
            "{what}: {msg}"
        );
        let (kind, msg) = kind_of(s.put_new("x", Bytes::from_static(b"x")));
        assert_eq!(kind, ErrorKind::Auth, "{what}: {msg}");
        let (kind, msg) = kind_of(s.get("x"));
        assert_eq!(kind, ErrorKind::Auth, "{what}: {msg}");
    }
    let s = storage_with(&vars, &url, quick());
    assert_eq!(s.list("").unwrap(), vec![], "a refused PUT wrote nothing");
}

#[test]
fn a_missing_bucket_is_named_as_such() {
    let vars = gateway_vars();
    let url = format!("s3://logstorfs-no-such-bucket-{}/p", std::process::id());
    let s = storage_with(&vars, &url, quick());
    for (op, r) in [
        ("check", s.check().map(|_| ())),
        ("put", s.put_new("x", Bytes::from_static(b"x")).map(|_| ())),
        ("get", s.get("x").map(|_| ())),
        ("list", s.list("").map(|_| ())),
    ] {
        let (kind, msg) = kind_of(r);
        assert_eq!(kind, ErrorKind::NoBucket, "{op}: {msg}");
        assert!(
            msg.contains("no such bucket") && msg.contains("logstorfs-no-such-bucket"),
            "{op}: {msg}"
        );
    }
}

#[test]
fn an_endpoint_that_does_not_answer_is_unreachable() {
    let mut vars = gateway_vars();
    // A port that was free a moment ago: nothing listens there.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    vars.insert("AWS_ENDPOINT".into(), format!("http://127.0.0.1:{port}"));
    vars.insert("AWS_ALLOW_HTTP".into(), "true".into());
    let s = storage_with(&vars, &format!("s3://{}/p", bucket()), quick());
    let (kind, msg) = kind_of(s.check());
    assert_eq!(kind, ErrorKind::Unreachable, "{msg}");
    assert!(msg.contains("AWS_ENDPOINT"), "{msg}");
    let (kind, msg) = kind_of(s.put_new("x", Bytes::from_static(b"x")));
    assert_eq!(kind, ErrorKind::Unreachable, "{msg}");
}

/// `faultproxy` between the client and the gateway, killed when dropped.
struct Proxy {
    child: Child,
    addr: String,
    /// Its lines on stderr so far (one a fault), each also passed on to the test's stderr.
    said: Arc<Mutex<Vec<String>>>,
}

impl Proxy {
    fn start(to: &str, args: &[&str]) -> Proxy {
        let mut child = Command::new(env!("CARGO_BIN_EXE_faultproxy"))
            .arg("--to")
            .arg(to)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start faultproxy");
        let said = Arc::new(Mutex::new(Vec::new()));
        let stderr = child.stderr.take().unwrap();
        std::thread::spawn({
            let said = Arc::clone(&said);
            move || {
                for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                    eprintln!("{line}");
                    said.lock().unwrap().push(line);
                }
            }
        });
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let addr = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("faultproxy said {line:?}"));
        Proxy {
            addr: addr.to_string(),
            child,
            said,
        }
    }

    /// Whether one of its lines so far contains `what`.
    fn said(&self, what: &str) -> bool {
        self.said.lock().unwrap().iter().any(|l| l.contains(what))
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_lost_put_reply_is_recovered_by_the_read_back() {
    let mut vars = gateway_vars();
    let endpoint = vars["AWS_ENDPOINT"].clone();
    let to = endpoint
        .strip_prefix("http://")
        .expect("the proxy speaks plain HTTP: an http:// endpoint");
    let to = to.trim_end_matches('/');
    // The gateway's reply to the first request (the PUT) never reaches the client: the proxy
    // closes the connection when the reply starts.
    let proxy = Proxy::start(to, &["--drop-replies", "1"]);
    vars.insert("AWS_ENDPOINT".into(), format!("http://{}", proxy.addr));
    let url = format!("s3://{}/{}", bucket(), unique_prefix("lost-reply"));
    let s = storage_with(&vars, &url, quick());
    let body = Bytes::from(b"log bytes whose PUT reply was lost".repeat(1000));
    let outcome = s
        .put_new("log/000042", body.clone())
        .expect("put_new through a lost reply");
    assert_eq!(
        outcome,
        PutOutcome::AlreadyThere,
        "the first PUT landed, its reply was lost; the retry met 412 and the read-back found our bytes"
    );
    assert_eq!(s.get("log/000042").unwrap(), body);
    // Another writer's body under the same name is still refused after such a retry.
    let (kind, msg) = kind_of(s.put_new("log/000042", Bytes::from_static(b"other")));
    assert_eq!(kind, ErrorKind::AlreadyExists, "{msg}");
    cleanup(&s);
}

#[test]
fn a_put_reply_cut_by_a_reset_is_retried_by_put_new_itself() {
    let mut vars = gateway_vars();
    let endpoint = vars["AWS_ENDPOINT"].clone();
    let to = endpoint
        .strip_prefix("http://")
        .expect("the proxy speaks plain HTTP")
        .trim_end_matches('/')
        .to_string();
    let url = format!("s3://{}/{}", bucket(), unique_prefix("reset-reply"));
    let body = Bytes::from(b"a manifest whose PUT reply was cut".repeat(100));

    // A reset in the middle of the reply: the client does not repeat a PUT after that (it may
    // have been done), so with a single attempt the caller hears Unreachable...
    let proxy = Proxy::start(&to, &["--reset-replies", "1"]);
    vars.insert("AWS_ENDPOINT".into(), format!("http://{}", proxy.addr));
    let one_attempt = S3Options {
        put_attempts: 1,
        ..quick()
    };
    let (kind, msg) =
        kind_of(storage_with(&vars, &url, one_attempt).put_new("manifest/000001", body.clone()));
    assert_eq!(kind, ErrorKind::Unreachable, "{msg}");
    drop(proxy);

    // ...although the object was made; put_new's own next attempt meets 412 and reads it back.
    let proxy = Proxy::start(&to, &["--reset-replies", "1"]);
    vars.insert("AWS_ENDPOINT".into(), format!("http://{}", proxy.addr));
    let s = storage_with(&vars, &url, quick());
    assert_eq!(
        s.put_new("manifest/000001", body.clone()).unwrap(),
        PutOutcome::AlreadyThere
    );
    assert_eq!(
        s.put_new("manifest/000002", body.clone()).unwrap(),
        PutOutcome::Created,
        "the proxy resets one reply only"
    );
    assert_eq!(s.get("manifest/000002").unwrap(), body);
    cleanup(&s);
}

// ---- The mirror (src/mirror) against the gateway ----

mod mirror_on_the_gateway {
    use std::collections::BTreeMap;
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    use std::path::{Path, PathBuf};
    use std::process::{Command, Output};
    use std::sync::Arc;

    use logstorfs::engine::storage::SimRng;
    use logstorfs::engine::{Engine, EngineOptions, Mutation};
    use logstorfs::mirror::{self, Mirror, Round};
    use logstorfs::object::ObjectStorage;

    use super::{bucket, cleanup, storage, storage_with, unique_prefix};

    const BIN: &str = env!("CARGO_BIN_EXE_logstorfs");

    fn options() -> EngineOptions {
        EngineOptions {
            capacity_bytes: 16 << 20,
            segment_size_bytes: 256 << 10,
            segments_per_file: 16,
            create_if_missing: true,
            sync_interval: None,
            separator_threshold_segments: 2,
            ..Default::default()
        }
    }

    fn contents(engine: &Engine) -> BTreeMap<Vec<u8>, Vec<u8>> {
        engine
            .scan(b"", None, usize::MAX)
            .unwrap()
            .into_iter()
            .collect()
    }

    #[test]
    fn mirror_rounds_restore_exactly_from_the_gateway() {
        let (s3, _) = storage("mirror-rounds");
        let s3: Arc<dyn ObjectStorage> = Arc::new(s3);
        let dir = tempfile::tempdir().unwrap();
        let engine = Engine::open(&dir.path().join("store"), &options()).unwrap();
        let mirror = Mirror::attach(s3.clone(), 1, None).unwrap();
        let mut rng = SimRng::new(21);
        let mut state = BTreeMap::new();
        let mut first = None;
        for step in 0..400u64 {
            let n = rng.below(60);
            let mut v = format!("{step}").into_bytes();
            v.resize(if n.is_multiple_of(7) { 30_000 } else { 200 }, step as u8);
            state.insert(format!("k{n}").into_bytes(), v.clone());
            engine
                .write(&[Mutation::put(1 + (n % 3) as u32, format!("k{n}"), v)])
                .unwrap();
            if step % 50 == 49
                && let Round::Published(m) = mirror.round(&engine).unwrap()
            {
                first.get_or_insert((m, state.clone()));
            }
        }
        let last = loop {
            if let Round::Published(m) = mirror.round(&engine).unwrap() {
                break m;
            }
        };
        engine.close().unwrap();
        let (first, at_first) = first.expect("a round published");
        for (m, expected) in [(first, at_first), (last, state)] {
            let into = dir.path().join(format!("restored-{m}"));
            mirror::restore(s3.as_ref(), Some(m), &into, &mut |_, _| {}).unwrap();
            let e = Engine::open(&into, &options()).unwrap();
            assert!(
                contents(&e) == expected,
                "manifest {m} restores another store"
            );
            e.close().unwrap();
        }
        let (puts, bytes) = (mirror.stats().objects_put, mirror.stats().bytes_put);
        assert!(puts > 3 && bytes > 0, "{puts} objects, {bytes} bytes");
        let s3_listed = s3.list("").unwrap();
        assert!(s3_listed.iter().any(|o| o.name.starts_with("manifest/")));
        for o in s3_listed {
            s3.delete(&o.name).unwrap();
        }
    }

    fn run(args: &[&str], env: &[(&str, &str)]) -> Output {
        Command::new(BIN)
            .args(args)
            .envs(env.iter().copied())
            .output()
            .expect("run logstorfs")
    }

    #[track_caller]
    fn ok(args: &[&str]) {
        let mut out = run(args, &[]);
        // An unmount that meets EBUSY while `umount` finds no process holding the mount (it
        // names any it finds) met a holder gone a moment later: most likely a child that
        // another test thread was starting, which until it execs holds a copy of every
        // descriptor this process had open, this test's files under its mount among them (seen
        // about once in 5 runs of this file). That is the tests' threads, not the mount: the
        // unmount is tried again.
        for _ in 0..50 {
            let err = String::from_utf8_lossy(&out.stderr);
            if args[0] != "umount"
                || out.status.success()
                || !err.contains("Device or resource busy")
                || err.contains("in use by")
            {
                break;
            }
            eprintln!("{args:?} again: {}", err.trim());
            std::thread::sleep(std::time::Duration::from_millis(100));
            out = run(args, &[]);
        }
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn s(p: &Path) -> &str {
        p.to_str().unwrap()
    }

    /// Each file under `root`: its mode and bytes (a symlink: its target).
    fn files(root: &Path) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
        let mut out = BTreeMap::new();
        let mut stack = vec![root.to_path_buf()];
        while let Some(dir) = stack.pop() {
            for e in std::fs::read_dir(&dir).unwrap() {
                let p = e.unwrap().path();
                let m = std::fs::symlink_metadata(&p).unwrap();
                let bytes = if m.is_file() {
                    std::fs::read(&p).unwrap()
                } else if m.is_symlink() {
                    std::fs::read_link(&p)
                        .unwrap()
                        .into_os_string()
                        .into_encoded_bytes()
                } else {
                    stack.push(p.clone());
                    Vec::new()
                };
                out.insert(
                    p.strip_prefix(root).unwrap().to_path_buf(),
                    (m.mode(), bytes),
                );
            }
        }
        out
    }

    /// What a mirror test starts from: a bucket prefix of its own (`url`, reached directly
    /// through `s3`) and a temporary directory (`root`) for the store and the mount point.
    /// Fields drop in order: the mount point is unmounted before the directory is removed.
    struct Scratch {
        _guard: Mounted,
        vars: BTreeMap<String, String>,
        url: String,
        s3: logstorfs::object::s3::S3Storage,
        root: PathBuf,
        store: PathBuf,
        mnt: PathBuf,
        _dir: tempfile::TempDir,
    }

    fn scratch(test: &str) -> Scratch {
        let (_, vars) = storage(test);
        let url = format!("s3://{}/{}", bucket(), unique_prefix(test));
        let s3 = storage_with(&vars, &url, Default::default());
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().canonicalize().unwrap();
        let (store, mnt) = (root.join("store"), root.join("mnt"));
        std::fs::create_dir(&mnt).unwrap();
        Scratch {
            _guard: Mounted(mnt.clone()),
            vars,
            url,
            s3,
            root,
            store,
            mnt,
            _dir: dir,
        }
    }

    struct Mounted(PathBuf);

    impl Drop for Mounted {
        fn drop(&mut self) {
            let info = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
            if info.lines().any(|l| l.split(' ').nth(4) == self.0.to_str()) {
                let _ = Command::new("fusermount3").arg("-uz").arg(&self.0).status();
            }
        }
    }

    #[test]
    fn a_mounted_store_is_mounted_on_another_machine_from_the_bucket_alone() {
        let at = scratch("mirror-mount");
        let (url, s3, root, store, mnt) = (&at.url, &at.s3, &at.root, &at.store, &at.mnt);
        let mount = [
            "mount",
            "--daemon",
            "--create",
            "--size",
            "64M",
            "--remote",
            url,
            "--remote-lag",
            "1",
            s(store),
            s(mnt),
        ];
        ok(&mount);
        std::fs::create_dir_all(mnt.join("a/b")).unwrap();
        for i in 0..40u32 {
            let len = [0usize, 100, 4096, 70_000][i as usize % 4] + i as usize;
            let data: Vec<u8> = (0..len).map(|j| (j as u32 * 7 + i) as u8).collect();
            let p = mnt
                .join(if i % 2 == 0 { "a" } else { "a/b" })
                .join(format!("f{i}"));
            std::fs::write(&p, &data).unwrap();
            std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o600 + i % 8)).unwrap();
        }
        std::os::unix::fs::symlink("a/f2", mnt.join("link")).unwrap();
        std::fs::remove_file(mnt.join("a/f4")).unwrap();
        let expected = files(mnt);
        ok(&["umount", s(mnt)]);
        let manifests = mirror::manifests(s3).unwrap();
        assert!(!manifests.is_empty(), "the unmount left no manifest");
        // `stats` on the store: the mirror's requests, and nothing left in the upload queue.
        let out = run(&["stats", "--json", s(store)], &[]);
        let json: serde_json::Value = serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("stats --json: {e}: {out:?}"));
        let remote = &json["remote"];
        let (objects_put, puts) = (&remote["objects_put"], &remote["requests"]["puts"]);
        assert!(
            objects_put
                .as_u64()
                .is_some_and(|n| n >= manifests.len() as u64)
                && puts.as_u64() >= objects_put.as_u64()
                && remote["requests"]["lists"].as_u64() > Some(0)
                && remote["queued_bytes"].as_u64() == Some(0),
            "{remote}"
        );

        // Another machine: the store is gone; only the bucket is left.
        std::fs::remove_dir_all(store).unwrap();
        let store2 = root.join("elsewhere");
        ok(&["mount", "--daemon", "--remote", url, s(&store2), s(mnt)]);
        let got = files(mnt);
        ok(&["umount", s(mnt)]);
        assert_eq!(
            got.len(),
            expected.len(),
            "{:?}",
            got.keys().collect::<Vec<_>>()
        );
        for (path, want) in &expected {
            assert!(
                got.get(path) == Some(want),
                "{} differs after the restore",
                path.display()
            );
        }
        cleanup(s3);
    }

    /// `format --remote` publishes the new store's first manifest, so that `mount --remote`
    /// takes the prefix as this store's own; a prefix that holds a store is refused before
    /// anything is written.
    #[test]
    fn format_remote_starts_a_new_prefix_and_never_one_that_holds_a_store() {
        let at = scratch("mirror-format");
        let (url, s3, root, store, mnt) = (&at.url, &at.s3, &at.root, &at.store, &at.mnt);
        let out = run(&["format", "--size", "64M", "--remote", url, s(store)], &[]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("mirrored to"),
            "{}",
            String::from_utf8_lossy(&out.stdout)
        );
        let first = mirror::newest_manifest(s3)
            .unwrap()
            .expect("format published a manifest");
        // The formatted store mounts as the prefix's writer (no --take-over) and goes on.
        ok(&["mount", "--daemon", "--remote", url, s(store), s(mnt)]);
        std::fs::write(mnt.join("after-format"), b"kept").unwrap();
        ok(&["umount", s(mnt)]);
        let newest = mirror::newest_manifest(s3).unwrap().unwrap();
        assert!(newest.number > first.number && newest.writer == first.writer);
        // A prefix that holds a store: refused, and nothing created.
        let other = root.join("other");
        let out = run(&["format", "--remote", url, s(&other)], &[]);
        assert_eq!(out.status.code(), Some(1), "{out:?}");
        assert!(
            String::from_utf8_lossy(&out.stderr).contains("already holds a store"),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            !other.exists(),
            "a refused format created {}",
            other.display()
        );
        assert_eq!(
            mirror::newest_manifest(s3).unwrap().unwrap().number,
            newest.number
        );
        // And the bucket alone gives the file back.
        std::fs::remove_dir_all(store).unwrap();
        ok(&[
            "mount",
            "--daemon",
            "--remote",
            url,
            s(&root.join("again")),
            s(mnt),
        ]);
        let back = std::fs::read(mnt.join("after-format"));
        ok(&["umount", s(mnt)]);
        assert_eq!(back.unwrap(), b"kept");
        cleanup(s3);
    }

    fn file_bytes(i: usize) -> Vec<u8> {
        (0..1000 + (i * 997) % 20_000)
            .map(|j| (i * 31 + j) as u8)
            .collect()
    }

    #[test]
    fn after_kill_9_mid_upload_the_bucket_mounts_as_a_prefix_of_the_writes() {
        let at = scratch("mirror-kill");
        let (url, s3, root, store, mnt) = (&at.url, &at.s3, &at.root, &at.store, &at.mnt);
        ok(&[
            "mount",
            "--daemon",
            "--create",
            "--size",
            "64M",
            "--remote",
            url,
            "--remote-lag",
            "1",
            s(store),
            s(mnt),
        ]);
        let write = |i: usize| write_fsynced(mnt, i);
        // Files 0..20 fsynced, then until the bucket holds them (by LSN: counting manifests
        // from a look at the bucket races with a round publishing just before the look).
        for i in 0..20 {
            write(i).unwrap();
        }
        at.wait_for_the_bucket();
        // More files while rounds upload, and kill -9 in the middle of it.
        let pid: i32 = std::fs::read_to_string(store.join("mounted"))
            .unwrap()
            .lines()
            .nth(1)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let written = std::thread::scope(|sc| {
            let writer = sc.spawn(|| (20..).take_while(|&i| write(i).is_ok()).count());
            std::thread::sleep(std::time::Duration::from_millis(2500));
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), nix::sys::signal::SIGKILL)
                .unwrap();
            writer.join().unwrap()
        });
        let _ = Command::new("fusermount3").arg("-uz").arg(mnt).status();

        let store2 = root.join("elsewhere");
        ok(&["mount", "--daemon", "--remote", url, s(&store2), s(mnt)]);
        let got = files(mnt);
        ok(&["umount", s(mnt)]);
        let mut n = 0;
        while got.contains_key(Path::new(&format!("f{n:05}"))) {
            n += 1;
        }
        assert!(
            n >= 20,
            "files fsynced before a later round published are missing: {n}"
        );
        assert!(
            n <= 20 + written + 1,
            "{n} files restored, {written} written after the first 20"
        );
        for (path, (_, bytes)) in &got {
            let i: usize = path.to_str().unwrap()[1..].parse().unwrap();
            let want = file_bytes(i);
            if i + 1 < n {
                assert!(*bytes == want, "{} differs", path.display());
            } else {
                // The newest file may be cut anywhere: a prefix of its bytes.
                assert!(
                    i < n && want.starts_with(bytes),
                    "{} is not a prefix",
                    path.display()
                );
            }
        }
        eprintln!("{n} files restored of {}", 20 + written);
        cleanup(s3);
    }

    /// File `f{i:05}` of `dir`, written with [`file_bytes`] and fsynced.
    fn write_fsynced(dir: &Path, i: usize) -> std::io::Result<()> {
        let f = std::fs::File::create(dir.join(format!("f{i:05}")))?;
        std::io::Write::write_all(&mut &f, &file_bytes(i))?;
        f.sync_all()
    }

    /// Files `range` of `dir` written and fsynced by another thread, all without an error. A
    /// writer that waits for the bucket fails the test after 2 minutes instead of hanging it.
    fn write_fsynced_or_fail(dir: &Path, mut range: std::ops::Range<usize>) {
        let (dir, what) = (dir.to_path_buf(), format!("files {range:?}"));
        let writer = std::thread::spawn(move || {
            range.try_for_each(|i| write_fsynced(&dir, i).map_err(|e| format!("f{i:05}: {e}")))
        });
        let hang_guard = std::time::Instant::now();
        while !writer.is_finished() {
            assert!(
                hang_guard.elapsed().as_secs() < 120,
                "{what} not written and fsynced in 2 minutes: the writer waits for the bucket"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        writer.join().unwrap().unwrap_or_else(|e| panic!("{e}"));
    }

    /// Files `f00000` to `f{n-1:05}` hold their [`file_bytes`], and nothing else is there.
    fn assert_files_up_to(got: &BTreeMap<PathBuf, (u32, Vec<u8>)>, n: usize) {
        assert_eq!(got.len(), n, "{:?}", got.keys().collect::<Vec<_>>());
        for i in 0..n {
            let path = PathBuf::from(format!("f{i:05}"));
            let bytes = got.get(&path).map(|(_, b)| b);
            assert!(
                bytes == Some(&file_bytes(i)),
                "{} differs or is missing",
                path.display()
            );
        }
    }

    /// A new store mounted with `--remote` (and `extra` mount arguments), its daemon reaching
    /// the gateway through a `faultproxy`; a test faults that path by dropping the proxy or by
    /// starting another at its address (`listen`).
    struct ProxiedMount {
        at: Scratch,
        /// The gateway's `host:port`, and the proxy's address in front of it.
        gateway: String,
        listen: String,
    }

    impl std::ops::Deref for ProxiedMount {
        type Target = Scratch;
        fn deref(&self) -> &Scratch {
            &self.at
        }
    }

    fn proxied_mount(test: &str, extra: &[&str]) -> (ProxiedMount, super::Proxy) {
        let at = scratch(test);
        let gateway = at.vars["AWS_ENDPOINT"]
            .trim_start_matches("http://")
            .trim_end_matches('/')
            .to_string();
        let proxy = super::Proxy::start(&gateway, &[]);
        let listen = proxy.addr.clone();
        let mut args = vec![
            "mount", "--daemon", "--create", "--size", "64M", "--remote", &at.url,
        ];
        args.extend_from_slice(extra);
        args.extend([s(&at.store), s(&at.mnt)]);
        let endpoint = format!("http://{listen}");
        let out = run(&args, &[("AWS_ENDPOINT", endpoint.as_str())]);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let m = ProxiedMount {
            at,
            gateway,
            listen,
        };
        (m, proxy)
    }

    impl Scratch {
        /// The bucket's newest manifest, read directly from the gateway (0: none yet).
        fn newest(&self) -> u64 {
            mirror::manifests(&self.s3)
                .unwrap()
                .last()
                .copied()
                .unwrap_or(0)
        }

        /// The store's durable LSN and the LSN the bucket's newest image holds, as `logstorfs
        /// stats --json` shows them (its "remote" section: the daemon's record of its rounds).
        fn lsns(&self) -> (u64, u64) {
            let out = run(&["stats", "--json", s(&self.mnt)], &[]);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            let durable = v["durable_lsn"].as_u64().expect("durable_lsn");
            (durable, v["remote"]["bucket_lsn"].as_u64().unwrap_or(0))
        }

        /// The bucket's LSN from the record `stats` shows (`STORE/remote.json`), read without
        /// starting a process for each look.
        fn bucket_lsn(&self) -> u64 {
            let json = std::fs::read(self.store.join("remote.json")).unwrap_or_default();
            serde_json::from_slice::<serde_json::Value>(&json).unwrap_or_default()["bucket_lsn"]
                .as_u64()
                .unwrap_or(0)
        }

        /// Waits until the bucket's newest image holds everything durable in the store now.
        fn wait_for_the_bucket(&self) {
            let (durable, _) = self.lsns();
            let hang_guard = std::time::Instant::now();
            while self.bucket_lsn() < durable {
                assert!(
                    hang_guard.elapsed().as_secs() < 180,
                    "the bucket has not caught up with LSN {durable} for 3 minutes: it holds {}",
                    self.bucket_lsn()
                );
                std::thread::sleep(std::time::Duration::from_millis(100));
            }
        }

        /// The files of the bucket's newest image, restored into a new directory and mounted
        /// read-only there (while the daemon goes on).
        fn restored_files(&self, name: &str) -> BTreeMap<PathBuf, (u32, Vec<u8>)> {
            let (store2, mnt2) = (self.root.join(name), self.root.join(format!("{name}-mnt")));
            std::fs::create_dir(&mnt2).unwrap();
            let _guard2 = Mounted(mnt2.clone());
            ok(&[
                "mount",
                "--daemon",
                "-o",
                "ro",
                "--remote",
                &self.url,
                s(&store2),
                s(&mnt2),
            ]);
            let got = files(&mnt2);
            ok(&["umount", s(&mnt2)]);
            got
        }
    }

    #[test]
    fn writes_go_on_while_the_gateway_is_down_and_the_mirror_catches_up() {
        // The daemon reaches the gateway through a proxy; stopping the proxy is the outage.
        let (m, proxy) = proxied_mount("mirror-outage", &["--remote-lag", "1"]);
        let write = |i: usize| write_fsynced(&m.mnt, i).unwrap();
        (0..10).for_each(write);
        drop(proxy);
        // Down: every write and fsync still returns (the daemon's writers never wait for the
        // bucket), while rounds fail and are retried.
        (10..200).for_each(write);
        std::thread::sleep(std::time::Duration::from_secs(3));
        (200..210).for_each(write);
        let _proxy = super::Proxy::start(&m.gateway, &["--listen", &m.listen]);
        // Caught up means by LSN, not by a count of manifests: a round that took its image
        // during the outage may publish that stale image as the gateway returns (and before or
        // after a look at the bucket), and the round after it is the last one with anything new.
        m.wait_for_the_bucket();
        // What the bucket holds now, with the daemon still mounted: a store of all 210 files.
        let got = m.restored_files("elsewhere");
        ok(&["umount", s(&m.mnt)]);
        assert_files_up_to(&got, 210);
        cleanup(&m.s3);
    }

    #[test]
    fn a_round_stalled_mid_put_holds_up_no_writer_without_remote_sync() {
        let (m, proxy) = proxied_mount("mirror-stall", &["--remote-lag", "1"]);
        // The rounds go up through the proxy as it is.
        for i in 0..5 {
            write_fsynced(&m.mnt, i).unwrap();
        }
        m.wait_for_the_bucket();
        // A gateway so slow that each chunk of a request waits 10 minutes at the proxy: a PUT
        // outlasts the client's request timeout, and no round can publish while it is there.
        drop(proxy);
        let slow =
            super::Proxy::start(&m.gateway, &["--listen", &m.listen, "--delay-ms", "600000"]);
        write_fsynced_or_fail(&m.mnt, 5..6);
        let hang_guard = std::time::Instant::now();
        while !slow.said("holding the request \"PUT ") {
            assert!(
                hang_guard.elapsed().as_secs() < 120,
                "no round sent a PUT through the slow proxy for 2 minutes"
            );
            std::thread::sleep(std::time::Duration::from_millis(50));
        }
        // A round is stalled in the middle of a PUT: the bucket's newest manifest is fixed
        // until the delay is gone. Writers and their fsyncs go on all the same.
        let stalled_at = m.newest();
        let (durable_at_stall, bucket_at_stall) = m.lsns();
        write_fsynced_or_fail(&m.mnt, 6..206);
        let (durable, bucket) = m.lsns();
        assert_eq!(
            m.newest(),
            stalled_at,
            "a manifest was published through the stalled proxy: the test proves nothing"
        );
        assert!(
            durable > durable_at_stall && bucket == bucket_at_stall,
            "the files must be durable locally and not in the bucket: the store's LSN went \
             {durable_at_stall} -> {durable}, the bucket's {bucket_at_stall} -> {bucket}"
        );
        // The delay gone, the bucket catches up; its image holds every file.
        drop(slow);
        let _proxy = super::Proxy::start(&m.gateway, &["--listen", &m.listen]);
        m.wait_for_the_bucket();
        let got = m.restored_files("elsewhere");
        ok(&["umount", s(&m.mnt)]);
        assert_files_up_to(&got, 206);
        cleanup(&m.s3);
    }

    #[test]
    fn one_writer_per_prefix_a_fenced_store_is_refused_until_it_takes_over() {
        let at = scratch("mirror-fence");
        let (url, s3, root, mnt) = (&at.url, &at.s3, &at.root, &at.mnt);
        let (a, b, c) = (root.join("a"), root.join("b"), root.join("c"));
        let writer = || mirror::newest_manifest(s3).unwrap().unwrap().writer;
        // A mirrors; B is restored from the bucket and writes: B's first manifest fences A.
        ok(&[
            "mount",
            "--daemon",
            "--create",
            "--size",
            "64M",
            "--remote",
            url,
            s(&a),
            s(mnt),
        ]);
        std::fs::write(mnt.join("from-a"), b"a").unwrap();
        ok(&["umount", s(mnt)]);
        let writer_a = writer();
        ok(&["mount", "--daemon", "--remote", url, s(&b), s(mnt)]);
        assert_eq!(std::fs::read(mnt.join("from-a")).unwrap(), b"a");
        std::fs::write(mnt.join("from-b"), b"b").unwrap();
        ok(&["umount", s(mnt)]);
        assert_ne!(writer(), writer_a, "B published under its own writer");
        // A again: refused, nothing mounted; with --take-over it is the writer again.
        let out = run(&["mount", "--daemon", "--remote", url, s(&a), s(mnt)], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("fenced"), "{err}");
        ok(&[
            "mount",
            "--daemon",
            "--remote",
            url,
            "--take-over",
            s(&a),
            s(mnt),
        ]);
        let stats = String::from_utf8(run(&["stats", s(mnt)], &[]).stdout).unwrap();
        assert!(stats.contains(&format!("mirror: {url}")), "{stats}");
        std::fs::write(mnt.join("from-a-again"), b"a2").unwrap();
        ok(&["umount", s(mnt)]);
        assert_eq!(writer(), writer_a);
        // A store that never mirrored there is refused: the prefix holds another store.
        ok(&["format", "--size", "64M", s(&c)]);
        let out = run(&["mount", "--daemon", "--remote", url, s(&c), s(mnt)], &[]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("already holds another store"), "{err}");
        // B, fenced in turn, may still be mounted without --remote to copy its files out.
        ok(&["mount", "--daemon", s(&b), s(mnt)]);
        assert_eq!(std::fs::read(mnt.join("from-b")).unwrap(), b"b");
        std::fs::write(mnt.join("only-in-b"), b"b2").unwrap();
        ok(&["umount", s(mnt)]);
        // --discard-local: B is moved aside whole, and the bucket's image takes its place.
        let out = run(
            &[
                "mount",
                "--daemon",
                "--remote",
                url,
                "--discard-local",
                s(&b),
                s(mnt),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{err}");
        assert!(mnt.join("from-a-again").exists() && !mnt.join("only-in-b").exists());
        // It says what the bucket's image lacks: B's own files, which A's image never had.
        assert!(
            err.contains("2 paths of") && err.contains("  /from-b\n  /only-in-b\n"),
            "{err}"
        );
        ok(&["umount", s(mnt)]);
        let kept = std::fs::read_dir(root)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .find(|p| p.to_str().unwrap().contains("b.discarded-"))
            .unwrap_or_else(|| panic!("the discarded store was not kept: {err}"));
        ok(&["mount", "--daemon", s(&kept), s(mnt)]);
        assert_eq!(std::fs::read(mnt.join("only-in-b")).unwrap(), b"b2");
        ok(&["umount", s(mnt)]);
        cleanup(s3);
    }

    #[test]
    fn an_older_image_mounts_read_only_and_fsck_checks_the_bucket() {
        let at = scratch("mirror-older");
        let (url, s3, root, store, mnt) = (&at.url, &at.s3, &at.root, &at.store, &at.mnt);
        let newest = || mirror::manifests(s3).unwrap().last().copied().unwrap();
        ok(&[
            "mount",
            "--daemon",
            "--create",
            "--size",
            "64M",
            "--remote",
            url,
            s(store),
            s(mnt),
        ]);
        std::fs::write(mnt.join("doc"), b"version 1").unwrap();
        std::fs::write(mnt.join("gone"), b"deleted later").unwrap();
        ok(&["umount", s(mnt)]);
        let first = newest();
        ok(&["mount", "--daemon", "--remote", url, s(store), s(mnt)]);
        std::fs::write(mnt.join("doc"), b"version 2").unwrap();
        std::fs::remove_file(mnt.join("gone")).unwrap();
        ok(&["umount", s(mnt)]);
        assert!(newest() > first);

        let out = run(&["fsck", "--remote", url], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(0), "{text}");
        assert!(text.contains("clean"), "{text}");

        let older = root.join("older");
        let n = first.to_string();
        let out = run(
            &[
                "mount",
                "--remote",
                url,
                "--manifest",
                &n,
                s(&older),
                s(mnt),
            ],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("-o ro") && !older.exists(), "{err}");
        ok(&[
            "mount",
            "--daemon",
            "-o",
            "ro",
            "--remote",
            url,
            "--manifest",
            &n,
            s(&older),
            s(mnt),
        ]);
        assert_eq!(std::fs::read(mnt.join("doc")).unwrap(), b"version 1");
        assert_eq!(std::fs::read(mnt.join("gone")).unwrap(), b"deleted later");
        ok(&["umount", s(mnt)]);

        // An object the newest manifest names goes missing: fsck says so, exit 4.
        let m = mirror::read_manifest(s3, newest()).unwrap();
        s3.delete(&m.pieces[0].object()).unwrap();
        let out = run(&["fsck", "--remote", url], &[]);
        let text = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{text}");
        assert!(text.contains("problem:"), "{text}");
        cleanup(s3);
    }

    #[test]
    fn with_remote_sync_an_fsync_returns_once_the_bucket_holds_it_or_fails_with_eio() {
        // No periodic rounds in this test's time: only fsyncs make them.
        let (m, proxy) = proxied_mount(
            "mirror-sync",
            &[
                "--remote-lag",
                "3600",
                "--remote-sync",
                "--remote-sync-timeout",
                "3",
            ],
        );
        let (url, s3, root, mnt) = (&m.url, &m.s3, &m.root, &m.mnt);
        let (gateway, listen) = (&m.gateway, &m.listen);
        let fsynced = |name: &str, data: &[u8]| -> std::io::Result<()> {
            let f = std::fs::File::create(mnt.join(name))?;
            std::io::Write::write_all(&mut &f, data)?;
            f.sync_all()
        };
        fsynced("one", b"in the bucket once fsync returned").unwrap();
        // Without waiting: the bucket, restored elsewhere, already holds it.
        let (store2, mnt2) = (root.join("elsewhere"), root.join("mnt2"));
        std::fs::create_dir(&mnt2).unwrap();
        let _guard2 = Mounted(mnt2.clone());
        ok(&[
            "mount",
            "--daemon",
            "-o",
            "ro",
            "--remote",
            url,
            s(&store2),
            s(&mnt2),
        ]);
        assert_eq!(
            std::fs::read(mnt2.join("one")).unwrap(),
            b"in the bucket once fsync returned"
        );
        ok(&["umount", s(&mnt2)]);
        // The bucket down: fsync fails with EIO once the timeout passed; the data is still
        // durable locally and readable.
        drop(proxy);
        let err = fsynced("two", b"local only").unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
        assert_eq!(std::fs::read(mnt.join("two")).unwrap(), b"local only");
        let _proxy = super::Proxy::start(gateway, &["--listen", listen]);
        fsynced("three", b"after the outage").unwrap();
        ok(&["umount", s(mnt)]);
        let (store3, mnt3) = (root.join("third"), mnt2.clone());
        ok(&[
            "mount",
            "--daemon",
            "-o",
            "ro",
            "--remote",
            url,
            s(&store3),
            s(&mnt3),
        ]);
        assert_eq!(std::fs::read(mnt3.join("two")).unwrap(), b"local only");
        assert_eq!(
            std::fs::read(mnt3.join("three")).unwrap(),
            b"after the outage"
        );
        ok(&["umount", s(&mnt3)]);
        cleanup(s3);
    }

    #[test]
    fn a_mount_with_bad_credentials_says_so_and_writes_nothing() {
        let at = scratch("mirror-bad-keys");
        let (url, store, mnt) = (&at.url, &at.store, &at.mnt);
        let out = run(
            &["mount", "--create", "--remote", url, s(store), s(mnt)],
            &[("AWS_SECRET_ACCESS_KEY", "not-the-key")],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("credentials"), "{err}");
        assert!(!store.exists(), "a refused mount created the store");
        let out = run(
            &["mount", s(store), s(mnt), "-o", &format!("remote={url}")],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("holds none to restore"), "{err}");
        assert!(!store.exists(), "a refused mount created the store");
        let missing = format!("s3://no-such-bucket-{}/p", std::process::id());
        let out = run(
            &["mount", "--create", "--remote", &missing, s(store), s(mnt)],
            &[],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("no such bucket"), "{err}");
        assert!(!store.exists(), "a refused mount created the store");
    }
}
