//! One layer's uncompressed tar, decoded on a thread of its own: the blob is read
//! from the store (which checks its digest as it reaches the end), decompressed,
//! hashed for its diff_id, and handed over in chunks through a bounded channel, so
//! the next layers decode while this one is applied and memory stays bounded.

use std::io::{self, Read};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender};

use crate::oci::layers::Compression;
use crate::store::{Descriptor, Digest, Hasher, Store};

/// Bytes per chunk handed from the decoder to the applier.
const CHUNK: usize = 256 << 10;
/// Chunks a decoder may run ahead of the applier (4 MiB per layer in flight).
const AHEAD: usize = 16;

enum Message {
    Data(Vec<u8>),
    /// The layer's end: its diff_id, or why it could not be read to the end.
    End(io::Result<Digest>),
}

/// The applier's side: the uncompressed tar as a reader.
pub(super) struct LayerStream {
    rx: Receiver<Message>,
    chunk: Vec<u8>,
    pos: usize,
    diff_id: Option<Digest>,
    bytes: u64,
}

/// Starts decoding `layer` on a thread of `scope`; returns the stream it feeds.
pub(super) fn spawn<'scope, 'env: 'scope>(
    scope: &'scope std::thread::Scope<'scope, 'env>,
    store: &'env Store,
    layer: Descriptor,
    compression: Compression,
) -> LayerStream {
    let (tx, rx) = sync_channel(AHEAD);
    scope.spawn(move || {
        let end = decode(store, &layer, compression, &tx);
        // The applier may have stopped early (an error of its own): nothing to tell.
        let _ = tx.send(Message::End(end));
    });
    LayerStream {
        rx,
        chunk: Vec::new(),
        pos: 0,
        diff_id: None,
        bytes: 0,
    }
}

fn decode(
    store: &Store,
    layer: &Descriptor,
    compression: Compression,
    tx: &SyncSender<Message>,
) -> io::Result<Digest> {
    let blob = store.open_blob(layer.digest()).map_err(io::Error::other)?;
    let mut decoder = compression.decoder(blob)?;
    let mut hasher = Hasher::sha256();
    loop {
        let mut chunk = vec![0u8; CHUNK];
        let mut filled = 0;
        while filled < CHUNK {
            match decoder.read(&mut chunk[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if filled == 0 {
            // Every decoder reads its input to the end (gzip and zstd take further
            // members and frames), so the blob reader has checked the digest by now.
            return Ok(hasher.finish());
        }
        chunk.truncate(filled);
        hasher.update(&chunk);
        if tx.send(Message::Data(chunk)).is_err() {
            return Err(io::Error::other("the applier stopped reading"));
        }
    }
}

impl LayerStream {
    /// Reads what the tar reader left (the end-of-archive blocks, padding) and returns
    /// the layer's diff_id and uncompressed size.
    pub fn finish(mut self) -> io::Result<(Digest, u64)> {
        io::copy(&mut self, &mut io::sink())?;
        let diff_id = self
            .diff_id
            .take()
            .ok_or_else(|| io::Error::other("the layer's decoder stopped"))?;
        Ok((diff_id, self.bytes))
    }
}

impl Read for LayerStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.chunk.len() {
            if self.diff_id.is_some() {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Message::Data(chunk)) => {
                    self.chunk = chunk;
                    self.pos = 0;
                }
                Ok(Message::End(Ok(diff_id))) => {
                    self.diff_id = Some(diff_id);
                    return Ok(0);
                }
                Ok(Message::End(Err(e))) => return Err(e),
                Err(_) => return Err(io::Error::other("the layer's decoder stopped")),
            }
        }
        let n = buf.len().min(self.chunk.len() - self.pos);
        buf[..n].copy_from_slice(&self.chunk[self.pos..self.pos + n]);
        self.pos += n;
        self.bytes += n as u64;
        Ok(n)
    }
}
