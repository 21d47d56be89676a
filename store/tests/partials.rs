//! What a failed ingest leaves behind: a discarded one nothing. Lock files can go
//! while waited on.

use std::fs;
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use stowage_store::{sha256_of, FileLock, Store, StoreError};

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
