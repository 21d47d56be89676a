//! A registry that lies, written here on `std::net`: each request head goes to a
//! closure that says what to answer, and bodies can be dripped byte by byte or sent
//! without end, so the client's bounds (sizes, time, memory) can be tested against
//! what no real registry would do.

use std::io::Write;
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use super::http_head::{read_head, RequestHead};

/// What to send after the head.
pub enum Body {
    Bytes(Vec<u8>),
    /// `byte` once every `every`, for ever (until the client leaves).
    Drip {
        byte: u8,
        every: Duration,
    },
    /// `prefix`, then `filler` repeated without end.
    Endless {
        prefix: Vec<u8>,
        filler: u8,
    },
}

pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Body,
}

impl Reply {
    pub fn json(status: u16, body: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("Content-Type".into(), "application/json".into())],
            body: Body::Bytes(serde_json::to_vec(body).unwrap()),
        }
    }

    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }
}

type Handler = dyn Fn(&RequestHead) -> Reply + Send + Sync;

/// The server; dropping it stops accepting (connections in flight end with the test).
pub struct Hostile {
    addr: SocketAddr,
    stop: Arc<AtomicBool>,
}

impl Hostile {
    pub fn start(handler: impl Fn(&RequestHead) -> Reply + Send + Sync + 'static) -> Self {
        Self::start_on(Ipv4Addr::LOCALHOST, handler)
    }

    pub fn start_on(
        ip: Ipv4Addr,
        handler: impl Fn(&RequestHead) -> Reply + Send + Sync + 'static,
    ) -> Self {
        let listener = TcpListener::bind((ip, 0)).unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let handler: Arc<Handler> = Arc::new(handler);
        {
            let stop = stop.clone();
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let (handler, stop) = (handler.clone(), stop.clone());
                            thread::spawn(move || serve(stream, &*handler, &stop));
                        }
                        Err(_) => thread::sleep(Duration::from_millis(5)),
                    }
                }
            });
        }
        Self { addr, stop }
    }

    pub fn addr(&self) -> String {
        self.addr.to_string()
    }
}

impl Drop for Hostile {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(mut stream: TcpStream, handler: &Handler, stop: &AtomicBool) {
    stream.set_nonblocking(false).unwrap();
    // A TLS ClientHello (a client probing for https) is closed on, as a plain HTTP
    // server's TLS-less port would fail it.
    let mut first = [0u8; 1];
    if stream
        .peek(&mut first)
        .map_or(true, |n| n == 0 || first[0] == 0x16)
    {
        return;
    }
    while let Ok(Some(head)) = read_head(&mut stream) {
        let reply = handler(&head);
        let reason = match reply.status {
            200 => "OK",
            401 => "Unauthorized",
            404 => "Not Found",
            _ => "Whatever",
        };
        let mut head_text = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
        for (name, value) in &reply.headers {
            head_text.push_str(&format!("{name}: {value}\r\n"));
        }
        let has_length = reply
            .headers
            .iter()
            .any(|(n, _)| n.eq_ignore_ascii_case("content-length"));
        match &reply.body {
            Body::Bytes(bytes) if !has_length => {
                head_text.push_str(&format!("Content-Length: {}\r\n", bytes.len()))
            }
            _ => {}
        }
        head_text.push_str("\r\n");
        if stream.write_all(head_text.as_bytes()).is_err() {
            return;
        }
        let sent = match reply.body {
            Body::Bytes(bytes) => stream.write_all(&bytes).is_ok(),
            Body::Drip { byte, every } => loop {
                if stop.load(Ordering::Relaxed) || stream.write_all(&[byte]).is_err() {
                    return;
                }
                thread::sleep(every);
            },
            Body::Endless { prefix, filler } => {
                let block = vec![filler; 64 << 10];
                if stream.write_all(&prefix).is_err() {
                    return;
                }
                while !stop.load(Ordering::Relaxed) && stream.write_all(&block).is_ok() {}
                return;
            }
        };
        if !sent {
            return;
        }
    }
}
