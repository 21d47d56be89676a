//! What a failed ingest leaves behind: a discarded one nothing, an interrupted one its
//! partial, which gc sweeps once nobody writes it and it has been left alone long
//! enough. Lock files can go while waited on; `oci-layout` is read with suspicion.

use std::fs::{self, File};
use std::path::PathBuf;
use std::sync::mpsc;
use std::thread;
use std::time::{Duration, SystemTime};

use stowage_store::{sha256_of, Digest, FileLock, Store, StoreError};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

/// The files in the store's `ingest/`, by name.
fn ingest_files(store: &Store) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(store.root().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// The three files an ingest of `digest` may keep.
fn files_of(store: &Store, digest: &Digest) -> Vec<PathBuf> {
    ["partial", "json", "lock"]
        .iter()
        .map(|ext| {
            store
                .root()
                .join("ingest")
                .join(format!("sha256-{}.{ext}", digest.digest()))
        })
        .collect()
}

fn bytes_of(paths: &[PathBuf]) -> u64 {
    paths.iter().map(|p| fs::metadata(p).unwrap().len()).sum()
}

fn age(paths: &[PathBuf], by: Duration) {
    let then = SystemTime::now() - by;
    for path in paths {
        File::options()
            .write(true)
            .open(path)
            .unwrap()
            .set_modified(then)
            .unwrap();
    }
}

/// Starts an ingest of `bytes`, writes the first half and leaves it, as an
/// interrupted pull does.
fn interrupted(store: &Store, bytes: &[u8]) -> Digest {
    let digest = sha256_of(bytes);
    let ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.write_at(0, &bytes[..bytes.len() / 2]).unwrap();
    drop(ingest);
    digest
}

#[test]
fn a_waiter_on_a_removed_lock_file_locks_the_file_the_path_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("x.lock");
    let held = FileLock::exclusive(&path).unwrap();
    let (locked_tx, locked_rx) = mpsc::channel();
    let (release_tx, release_rx) = mpsc::channel::<()>();
    let waiter = {
        let path = path.clone();
        thread::spawn(move || {
            let lock = FileLock::exclusive(&path).unwrap();
            locked_tx.send(()).unwrap();
            release_rx.recv().unwrap();
            drop(lock);
        })
    };
    thread::sleep(Duration::from_millis(200)); // the waiter is blocked in flock
    assert!(locked_rx.try_recv().is_err(), "the waiter got a held lock");
    fs::remove_file(&path).unwrap();
    drop(held);
    locked_rx.recv_timeout(Duration::from_secs(10)).unwrap();
    assert!(
        path.exists(),
        "the waiter holds a lock on a file no path names, so it excludes nobody"
    );
    assert!(FileLock::try_exclusive(&path).unwrap().is_none());
    release_tx.send(()).unwrap();
    waiter.join().unwrap();
    assert!(FileLock::try_exclusive(&path).unwrap().is_some());
}

#[test]
fn a_discarded_ingest_leaves_nothing_in_ingest() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(64 << 10, 1);
    let digest = sha256_of(&bytes);

    // The wrong bytes: a mismatch.
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.copy_from(&data(64 << 10, 2)[..]).unwrap();
    assert!(matches!(ingest.commit(), Err(StoreError::Mismatch { .. })));
    assert_eq!(
        ingest_files(&store),
        Vec::<String>::new(),
        "after a mismatch"
    );

    // A source longer than promised.
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    let longer = [&bytes[..], b"x"].concat();
    assert!(matches!(
        ingest.copy_from(&longer[..]),
        Err(StoreError::TooLong { .. })
    ));
    assert!(matches!(ingest.commit(), Err(StoreError::TooLong { .. })));
    assert_eq!(
        ingest_files(&store),
        Vec::<String>::new(),
        "after a long source"
    );

    // Aborted half way.
    let ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.write_at(0, &bytes[..100]).unwrap();
    ingest.abort().unwrap();
    assert_eq!(ingest_files(&store), Vec::<String>::new(), "after an abort");

    // And the blob still goes in.
    store.put_as(&digest, &bytes).unwrap();
    assert!(store.has(&digest));
    assert_eq!(ingest_files(&store), Vec::<String>::new(), "after a commit");
}

#[test]
fn gc_sweeps_partials_nobody_writes_once_left_alone_long_enough() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let idle = interrupted(&store, &data(1 << 20, 1));
    let idle_files = files_of(&store, &idle);
    let idle_bytes = bytes_of(&idle_files);
    assert!(idle_bytes > 512 << 10, "{idle_bytes}");

    // Another one whose writer is still at it (another process's `ingest`, say).
    let busy_bytes = data(1 << 20, 2);
    let busy = sha256_of(&busy_bytes);
    let writer = store
        .ingest(&busy, busy_bytes.len() as u64)
        .unwrap()
        .unwrap();
    writer.write_at(0, &busy_bytes[..1000]).unwrap();
    age(&files_of(&store, &busy), Duration::from_secs(7200));

    // Fresh: kept by the default threshold (an interrupted pull retried resumes).
    let report = store.gc(&[], false).unwrap();
    assert_eq!(report.partials_removed, 0);
    assert!(idle_files.iter().all(|p| p.exists()));

    // A dry run counts it and removes nothing.
    let dry = store.gc_with(&[], true, Duration::ZERO).unwrap();
    assert_eq!(
        (dry.partials_removed, dry.partial_bytes_freed),
        (1, idle_bytes)
    );
    assert!(idle_files.iter().all(|p| p.exists()));

    // Zero: every idle partial, never one whose lock is held.
    let report = store.gc_with(&[], false, Duration::ZERO).unwrap();
    assert_eq!(
        (report.partials_removed, report.partial_bytes_freed),
        (1, idle_bytes)
    );
    assert!(
        idle_files.iter().all(|p| !p.exists()),
        "{:?}",
        ingest_files(&store)
    );
    assert!(files_of(&store, &busy).iter().all(|p| p.exists()));
    writer.write_at(1000, &busy_bytes[1000..]).unwrap();
    writer.commit().unwrap();
    assert!(store.has(&busy));

    // Left alone for two hours, its writer gone: swept by the default threshold. So is
    // an empty lock file an older stowage left after a refused import.
    let stale = interrupted(&store, &data(300 << 10, 3));
    let stale_files = files_of(&store, &stale);
    let stale_bytes = bytes_of(&stale_files);
    let lonely = store
        .root()
        .join("ingest")
        .join(format!("sha256-{}.lock", "ab".repeat(32)));
    File::create(&lonely).unwrap();
    age(&stale_files, Duration::from_secs(7200));
    age(&[lonely], Duration::from_secs(7200));
    let report = store.gc(&[], false).unwrap();
    assert_eq!(
        (report.partials_removed, report.partial_bytes_freed),
        (2, stale_bytes)
    );
    assert_eq!(ingest_files(&store), Vec::<String>::new());
    store.verify(None).unwrap();
}

#[test]
fn a_symlinked_oci_layout_is_refused_without_reading_it() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret.json");
    fs::write(&secret, r#"{"imageLayoutVersion":"SECRET-TOKEN-123"}"#).unwrap();
    let root = dir.path().join("store");
    fs::create_dir(&root).unwrap();
    std::os::unix::fs::symlink(&secret, root.join("oci-layout")).unwrap();
    let message = Store::open(&root).unwrap_err().to_string();
    assert!(!message.contains("SECRET"), "{message}");
    assert!(
        message.contains(&root.join("oci-layout").display().to_string())
            && message.contains("symbolic link"),
        "{message}"
    );
}

#[test]
fn a_malformed_oci_layout_is_shown_as_a_short_escaped_excerpt() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("string", format!("\"\x1b[31m{}\"", "A".repeat(3000))),
        (
            "version",
            format!("{{\"imageLayoutVersion\":\"9.\x1b]{}\"}}", "B".repeat(3000)),
        ),
    ] {
        let root = dir.path().join(name);
        fs::create_dir(&root).unwrap();
        fs::write(root.join("oci-layout"), content).unwrap();
        let message = Store::open(&root).unwrap_err().to_string();
        assert!(message.len() < 300, "{} bytes: {message}", message.len());
        assert!(!message.contains('\x1b'), "{message:?}");
        assert!(message.contains("\\u{1b}"), "{message}");
    }
    // Not a regular file: refused without blocking on it.
    let root = dir.path().join("fifo");
    fs::create_dir(&root).unwrap();
    let fifo = root.join("oci-layout");
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());
    let message = Store::open(&root).unwrap_err().to_string();
    assert!(message.contains("not a regular file"), "{message}");
}
