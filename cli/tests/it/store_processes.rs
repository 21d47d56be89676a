//! The store under real processes: a SIGKILL mid-ingest, four processes racing for one
//! blob, `stowage verify` on a flipped byte, and peak memory while ingesting 1 GiB.

use std::io::Write;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use sha2::{Digest as _, Sha256};

const BIN: &str = env!("CARGO_BIN_EXE_stowage");
const MIB: u64 = 1 << 20;

/// Deterministic pseudo-random bytes, produced a block at a time so a gigabyte never
/// sits in the test's memory either.
struct Stream {
    state: u64,
}

impl Stream {
    fn new(seed: u64) -> Self {
        Self { state: seed | 1 }
    }

    fn fill(&mut self, buf: &mut [u8]) {
        for chunk in buf.chunks_mut(8) {
            self.state ^= self.state << 13;
            self.state ^= self.state >> 7;
            self.state ^= self.state << 17;
            chunk.copy_from_slice(&self.state.to_le_bytes()[..chunk.len()]);
        }
    }

    /// Calls `sink` with `len` bytes in 1 MiB blocks.
    fn each_block(seed: u64, len: u64, mut sink: impl FnMut(&[u8])) {
        let mut stream = Self::new(seed);
        let mut buf = vec![0u8; MIB as usize];
        let mut left = len;
        while left > 0 {
            let n = left.min(MIB) as usize;
            stream.fill(&mut buf[..n]);
            sink(&buf[..n]);
            left -= n as u64;
        }
    }

    fn digest(seed: u64, len: u64) -> String {
        let mut hasher = Sha256::new();
        Self::each_block(seed, len, |b| hasher.update(b));
        format!("sha256:{:x}", hasher.finalize())
    }

    fn write_file(seed: u64, len: u64, path: &Path) {
        let mut file = std::io::BufWriter::new(std::fs::File::create(path).unwrap());
        Self::each_block(seed, len, |b| file.write_all(b).unwrap());
        file.flush().unwrap();
    }
}

fn stowage(store: &Path) -> Command {
    let mut cmd = Command::new(BIN);
    cmd.arg("--store").arg(store).arg("--json");
    cmd
}

fn ingest_cmd(store: &Path, digest: &str, size: u64) -> Command {
    let mut cmd = stowage(store);
    cmd.args(["ingest", "--digest", digest, "--size", &size.to_string()]);
    cmd
}

fn json_of(stdout: &[u8]) -> serde_json::Value {
    serde_json::from_slice(stdout)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(stdout)))
}

fn partial_len(store: &Path) -> u64 {
    std::fs::read_dir(store.join("ingest"))
        .map(|dir| {
            dir.filter_map(Result::ok)
                .filter(|e| e.path().extension().is_some_and(|x| x == "partial"))
                .map(|e| e.metadata().unwrap().len())
                .sum()
        })
        .unwrap_or(0)
}

fn blob_count(store: &Path) -> usize {
    std::fs::read_dir(store.join("blobs/sha256"))
        .unwrap()
        .count()
}

#[test]
fn sigkill_mid_ingest_then_resume_ends_with_one_verified_blob() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let size = 64 * MIB;
    let cut = 40 * MIB;
    let digest = Stream::digest(7, size);

    let mut child = ingest_cmd(&store, &digest, size)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let mut sent = 0;
    Stream::each_block(7, cut, |b| {
        stdin.write_all(b).unwrap();
        sent += b.len() as u64;
    });
    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_len(&store) < cut {
        assert!(
            Instant::now() < deadline,
            "the child never wrote {cut} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL, while it waits for more input
    child.wait().unwrap();
    drop(stdin);
    assert_eq!(sent, cut);
    assert_eq!(blob_count(&store), 0, "nothing visible after the kill");

    let mut child = ingest_cmd(&store, &digest, size)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        Stream::each_block(7, size, |b| {
            let _ = stdin.write_all(b);
        });
    });
    let output = child.wait_with_output().unwrap();
    feeder.join().unwrap();
    assert!(output.status.success(), "second run failed");
    let summary = json_of(&output.stdout);
    assert_eq!(summary["status"], "committed");
    assert_eq!(
        summary["resumed_from"], cut,
        "did not continue the partial ingest"
    );
    assert_eq!(summary["written"], size - cut);
    assert_eq!(blob_count(&store), 1);
    assert_eq!(partial_len(&store), 0, "partial data left behind");
    let verify = stowage(&store).arg("verify").output().unwrap();
    assert!(verify.status.success());
    assert_eq!(json_of(&verify.stdout)["checked"], 1);
}

#[test]
fn four_processes_ingesting_one_blob_write_it_once() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let source = dir.path().join("blob");
    let size = 100 * MIB;
    Stream::write_file(11, size, &source);
    let digest = Stream::digest(11, size);

    let children: Vec<Child> = (0..4)
        .map(|_| {
            ingest_cmd(&store, &digest, size)
                .arg(&source)
                .stdout(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let summaries: Vec<serde_json::Value> = children
        .into_iter()
        .map(|c| {
            let output = c.wait_with_output().unwrap();
            assert!(output.status.success(), "an ingest failed");
            json_of(&output.stdout)
        })
        .collect();
    let committed = summaries
        .iter()
        .filter(|s| s["status"] == "committed")
        .count();
    let written: u64 = summaries
        .iter()
        .map(|s| s["written"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 1, "{summaries:?}");
    assert_eq!(written, size, "bytes written across all processes");
    assert_eq!(blob_count(&store), 1);
    let on_disk = std::fs::read(store.join("blobs/sha256").join(&digest[7..])).unwrap();
    assert_eq!(format!("sha256:{:x}", Sha256::digest(&on_disk)), digest);
}

#[test]
fn verify_names_a_blob_with_one_flipped_byte_and_quarantines_it() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let mut digests = Vec::new();
    for seed in 1..=3 {
        let source = dir.path().join(format!("blob{seed}"));
        Stream::write_file(seed, MIB + seed, &source);
        let digest = Stream::digest(seed, MIB + seed);
        let status = ingest_cmd(&store, &digest, MIB + seed)
            .arg(&source)
            .stdout(Stdio::null())
            .status()
            .unwrap();
        assert!(status.success());
        digests.push(digest);
    }
    let victim = store.join("blobs/sha256").join(&digests[1][7..]);
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[12345] ^= 0x01;
    std::fs::write(&victim, bytes).unwrap();

    let output = Command::new(BIN)
        .arg("--store")
        .arg(&store)
        .arg("verify")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(!output.status.success(), "verify passed a corrupt store");
    assert!(
        stdout.contains(&format!("corrupt {}", digests[1])),
        "{stdout}"
    );
    assert!(
        !stdout.contains(&digests[0]) && !stdout.contains(&digests[2]),
        "{stdout}"
    );
    assert!(!victim.exists(), "the corrupt blob is still under blobs/");
    assert!(store
        .join("stowage/quarantine")
        .join(format!("sha256-{}", &digests[1][7..]))
        .exists());
    let again = stowage(&store).arg("verify").output().unwrap();
    assert!(
        again.status.success(),
        "the quarantined blob is still reported"
    );
}

#[test]
fn ingesting_one_gib_keeps_peak_memory_under_64_mib() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let size = 1024 * MIB;
    let digest = Stream::digest(3, size);
    let mut child = ingest_cmd(&store, &digest, size)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let feeder = std::thread::spawn(move || {
        Stream::each_block(3, size, |b| stdin.write_all(b).unwrap());
    });
    // The child's own high-water mark, sampled until it exits. (wait4's ru_maxrss is
    // no use here: a child spawned with vfork semantics inherits the test process's
    // peak at exec.)
    let status_path = format!("/proc/{}/status", child.id());
    let mut peak_kib = 0u64;
    let status = loop {
        if let Ok(text) = std::fs::read_to_string(&status_path) {
            if let Some(kib) = text
                .lines()
                .find_map(|l| l.strip_prefix("VmHWM:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            {
                peak_kib = peak_kib.max(kib);
            }
        }
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    feeder.join().unwrap();
    assert!(status.success(), "ingest failed");
    eprintln!("peak RSS while ingesting 1 GiB: {peak_kib} KiB");
    assert!(peak_kib > 0, "never sampled the child's memory");
    assert!(peak_kib < 64 * 1024, "peak RSS {peak_kib} KiB");
    assert_eq!(
        std::fs::metadata(store.join("blobs/sha256").join(&digest[7..]))
            .unwrap()
            .len(),
        size
    );
}

#[test]
fn gc_sweeps_a_killed_ingests_partial_but_never_one_whose_lock_is_held() {
    let dir = tempfile::tempdir().unwrap();
    let store = dir.path().join("store");
    let size = 8 * MIB;
    let sent = 3 * MIB;
    let digest = Stream::digest(9, size);
    let gc = |older_than: &str| {
        let output = stowage(&store)
            .args(["gc", "--partials-older-than", older_than])
            .output()
            .unwrap();
        assert!(output.status.success(), "gc failed");
        json_of(&output.stdout)
    };

    // An `ingest` killed part way: its partial, sidecar and lock stay behind.
    let mut child = ingest_cmd(&store, &digest, size)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    Stream::each_block(9, sent, |b| stdin.write_all(b).unwrap());
    let deadline = Instant::now() + Duration::from_secs(60);
    while partial_len(&store) < sent {
        assert!(
            Instant::now() < deadline,
            "the child never wrote {sent} bytes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    drop(stdin);

    // A writer outside any lease (another tool on the store) holds its lock.
    let hex = digest.trim_start_matches("sha256:");
    let lock = std::fs::File::open(store.join(format!("ingest/sha256-{hex}.lock"))).unwrap();
    lock.lock().unwrap();
    let report = gc("0");
    assert_eq!(report["partials_removed"], 0, "{report}");
    assert_eq!(
        partial_len(&store),
        sent,
        "gc touched a partial being written"
    );
    drop(lock);

    // Idle now, but fresh: the default keeps it for a resume; 0 sweeps it.
    let report = gc("3600");
    assert_eq!(report["partials_removed"], 0, "{report}");
    let report = gc("0");
    assert_eq!(report["partials_removed"], 1, "{report}");
    let freed = report["partial_bytes_freed"].as_u64().unwrap();
    assert!((sent..sent + 4096).contains(&freed), "{report}");
    let left: Vec<_> = std::fs::read_dir(store.join("ingest"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "left in ingest/: {left:?}");
}
