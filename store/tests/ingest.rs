//! Ingest: nothing unverified becomes visible, partial ingests resume, positional
//! writes assemble one blob.

use std::io::Read;
use std::str::FromStr;

use stowage_store::{sha256_of, Digest, Hasher, Store, StoreError};

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| {
            (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed as u32) as u8
        })
        .collect()
}

fn blob_files(store: &Store) -> usize {
    store.stored_blobs().unwrap().len()
}

#[test]
fn commit_makes_a_verified_blob_visible() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(3 << 20, 1);
    let digest = sha256_of(&bytes);
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    assert!(!store.has(&digest), "visible before commit");
    ingest.copy_from(&bytes[..]).unwrap();
    let committed = ingest.commit().unwrap();
    assert_eq!(committed.digest, digest);
    assert!(store.has(&digest));
    let mut back = Vec::new();
    store
        .open_blob(&digest)
        .unwrap()
        .read_to_end(&mut back)
        .unwrap();
    assert_eq!(back, bytes);
    assert!(store.ingest(&digest, bytes.len() as u64).unwrap().is_none());
}

#[test]
fn wrong_digest_never_lands_and_names_both() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(100_000, 2);
    let claimed = sha256_of(b"something else");
    let mut ingest = store.ingest(&claimed, bytes.len() as u64).unwrap().unwrap();
    ingest.copy_from(&bytes[..]).unwrap();
    let err = ingest.commit().unwrap_err();
    let msg = err.to_string();
    assert!(msg.contains(&claimed.to_string()), "{msg}");
    assert!(msg.contains(&sha256_of(&bytes).to_string()), "{msg}");
    assert!(msg.contains("100000 bytes"), "{msg}");
    assert!(matches!(err, StoreError::Mismatch { .. }));
    assert_eq!(blob_files(&store), 0);
    assert_eq!(store.usage().unwrap().ingests, 0, "mismatched data kept");
}

#[test]
fn short_and_long_streams_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(50_000, 3);
    let digest = sha256_of(&bytes);

    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.copy_from(&bytes[..20_000]).unwrap();
    let msg = ingest.commit().unwrap_err().to_string();
    assert!(
        msg.contains("expected") && msg.contains("50000 bytes"),
        "{msg}"
    );
    assert!(msg.contains("20000 bytes"), "{msg}");
    assert_eq!(blob_files(&store), 0);

    // The short prefix is kept and resumed; an over-long source is cut and refused.
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    assert_eq!(ingest.offset(), 20_000);
    let mut longer = bytes[20_000..].to_vec();
    longer.extend_from_slice(&[0u8; 10]);
    let err = ingest.copy_from(&longer[..]).unwrap_err();
    assert!(matches!(err, StoreError::TooLong { .. }), "{err}");
    assert!(err.to_string().contains("50001"), "{err}");
    assert!(ingest.commit().is_err());
    assert_eq!(blob_files(&store), 0);
}

#[test]
fn resume_rehashes_the_prefix_from_disk() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(4 << 20, 4);
    let digest = sha256_of(&bytes);
    let size = bytes.len() as u64;

    let mut ingest = store.ingest(&digest, size).unwrap().unwrap();
    ingest.copy_from(&bytes[..1 << 20]).unwrap();
    drop(ingest);
    let ingest = store.ingest(&digest, size).unwrap().unwrap();
    assert_eq!(ingest.offset(), 1 << 20);
    drop(ingest);

    // Corrupt the partial on disk: the resumed ingest must not trust it.
    let partial = std::fs::read_dir(dir.path().join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.extension().is_some_and(|e| e == "partial"))
        .unwrap();
    let mut on_disk = std::fs::read(&partial).unwrap();
    on_disk[1000] ^= 0xff;
    std::fs::write(&partial, on_disk).unwrap();

    let mut ingest = store.ingest(&digest, size).unwrap().unwrap();
    ingest.copy_from(&bytes[1 << 20..]).unwrap();
    let err = ingest.commit().unwrap_err();
    assert!(matches!(err, StoreError::Mismatch { .. }), "{err}");
    assert!(!store.has(&digest));

    // After the mismatch the partial is gone and a clean run succeeds.
    let mut ingest = store.ingest(&digest, size).unwrap().unwrap();
    assert_eq!(ingest.offset(), 0);
    ingest.copy_from(&bytes[..]).unwrap();
    ingest.commit().unwrap();
}

/// Writes a blob of four parts out of order, resumes after a drop and finishes it
/// from two threads at once; `part` is each part's size.
fn positional_round_trip(part: usize) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(4 * part, 5);
    let digest = sha256_of(&bytes);
    let size = bytes.len() as u64;
    let at = |i: usize| (i * part) as u64;

    let ingest = store.ingest(&digest, size).unwrap().unwrap();
    ingest.write_at(at(2), &bytes[2 * part..3 * part]).unwrap();
    ingest.write_at(0, &bytes[..part]).unwrap();
    assert!(matches!(
        ingest.write_at(at(2) + 5, &bytes[..10]),
        Err(StoreError::Overlap { .. })
    ));
    ingest.sync().unwrap();
    drop(ingest);

    let ingest = store.ingest(&digest, size).unwrap().unwrap();
    assert_eq!(ingest.missing(), vec![at(1)..at(2), at(3)..size]);
    // Written from two threads at once.
    std::thread::scope(|s| {
        s.spawn(|| ingest.write_at(at(3), &bytes[3 * part..]).unwrap());
        s.spawn(|| ingest.write_at(at(1), &bytes[part..2 * part]).unwrap());
    });
    assert!(ingest.missing().is_empty());
    ingest.commit().unwrap();
    assert!(store.has(&digest));
}

#[test]
fn positional_writes_out_of_order_resume_only_the_holes() {
    // 4 MiB: hashed inline by the writers.
    positional_round_trip(1 << 20);
}

#[test]
fn a_big_blob_hashed_on_its_own_thread_resumes_only_the_holes_too() {
    // 12 MiB: hashed by a thread of its own.
    positional_round_trip(3 << 20);
}

#[test]
fn a_big_blob_with_one_wrong_byte_is_refused_by_its_hash_thread() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mut bytes = data(12 << 20, 9);
    let digest = sha256_of(&bytes);
    bytes[7 << 20] ^= 1;
    let ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    for (i, chunk) in bytes.chunks(1 << 20).enumerate().rev() {
        ingest.write_at((i << 20) as u64, chunk).unwrap();
    }
    let err = ingest.commit().unwrap_err();
    assert!(
        matches!(&err, StoreError::Mismatch { expected_digest, actual_size, .. }
            if *expected_digest == digest && *actual_size == bytes.len() as u64),
        "{err}"
    );
    assert!(!store.has(&digest));
}

#[test]
fn sha512_digests_are_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let bytes = data(10_000, 6);
    let mut hasher =
        Hasher::new(&Digest::from_str(&format!("sha512:{}", "0".repeat(128))).unwrap()).unwrap();
    hasher.update(&bytes);
    let digest = hasher.finish();
    assert!(digest.to_string().starts_with("sha512:"));
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.copy_from(&bytes[..]).unwrap();
    ingest.commit().unwrap();
    assert!(dir
        .path()
        .join("blobs/sha512")
        .join(digest.digest())
        .is_file());
    assert!(store.verify(None).unwrap().is_clean());
}

#[test]
fn a_non_layout_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("notes.txt"), "mine").unwrap();
    let err = Store::open(dir.path()).unwrap_err();
    assert!(err.to_string().contains("not an OCI image layout"), "{err}");
}

#[test]
fn a_sequential_source_resumes_over_a_partial_left_by_ranged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    let mib = 1usize << 20;
    let bytes = data(4 * mib, 7);
    let digest = sha256_of(&bytes);
    let ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    ingest.write_at(0, &bytes[..mib]).unwrap();
    ingest
        .write_at(2 * mib as u64, &bytes[2 * mib..3 * mib])
        .unwrap();
    ingest.sync().unwrap();
    drop(ingest);
    // A source read from the offset fills only the holes, skipping what is there.
    let mut ingest = store.ingest(&digest, bytes.len() as u64).unwrap().unwrap();
    let offset = ingest.offset() as usize;
    assert_eq!(offset, mib);
    let written = ingest.copy_from(&bytes[offset..]).unwrap();
    assert_eq!(written, 2 * mib as u64);
    ingest.commit().unwrap();
    assert!(store.has(&digest));
}
