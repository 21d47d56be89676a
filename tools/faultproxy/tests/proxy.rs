//! The proxy against a real `docker-registry`: faithful forwarding, the log, and
//! each fault. Timing assertions are lower bounds only (a loaded machine is slower,
//! never faster).

mod support;

use std::net::TcpStream;
use std::thread;
use std::time::{Duration, Instant};

use stowage_faultproxy::{Faults, Proxy};
use support::client::{get, request, Session};
use support::registry::{pattern, push_blob, split_url, Registry};

/// A registry holding one blob of `len` bytes in repository `t`, and a proxy to it.
fn setup(len: usize, faults: Faults) -> (Registry, Proxy, Vec<u8>, String) {
    let registry = Registry::start();
    let data = pattern(len);
    let (digest, _, _) = push_blob(&registry.addr(), "t", &data);
    let proxy = Proxy::start(&registry.addr(), faults);
    (registry, proxy, data, format!("/v2/t/blobs/{digest}"))
}

#[test]
fn forwards_and_counts_every_request() {
    let (_registry, proxy, data, blob) = setup(1 << 20, Faults::default());
    let addr = proxy.addr();
    assert_eq!(get(&addr, "/v2/", None).status, 200);
    let whole = get(&addr, &blob, None);
    assert_eq!((whole.status, whole.body == data), (200, true));
    let head = request(&addr, "HEAD", &blob, &[], Vec::new());
    assert_eq!(head.status, 200);
    assert_eq!(head.header("content-length"), Some("1048576"));
    let missing = get(&addr, "/v2/t/manifests/latest", None);
    assert_eq!(missing.status, 404);

    let log = proxy.log();
    let summary: Vec<_> = log
        .iter()
        .map(|r| {
            (
                r.method.as_str(),
                r.path.as_str(),
                r.status,
                r.is_blob_get(),
            )
        })
        .collect();
    assert_eq!(
        summary,
        [
            ("GET", "/v2/", 200, false),
            ("GET", blob.as_str(), 200, true),
            ("HEAD", blob.as_str(), 200, false),
            ("GET", "/v2/t/manifests/latest", 404, false),
        ]
    );
    assert_eq!(log[1].body_bytes, 1 << 20);
    assert_eq!(log[2].body_bytes, 0, "HEAD has no body");
    assert_eq!(log[3].body_bytes, missing.body.len() as u64);
    assert_eq!(proxy.blob_gets().len(), 1);
    assert_eq!(proxy.blob_bytes(), 1 << 20);
    let connections: Vec<u64> = log.iter().map(|r| r.connection).collect();
    assert_eq!(connections, [1, 2, 3, 4], "one connection per request here");

    proxy.reset_log();
    assert!(proxy.log().is_empty());
}

#[test]
fn keep_alive_reuses_one_connection() {
    let (_registry, proxy, data, blob) = setup(300_000, Faults::default());
    let mut session = Session::connect(&proxy.addr()).unwrap();
    for _ in 0..3 {
        let reply = session.request("GET", &blob, &[], Vec::new());
        assert_eq!(
            (reply.status, reply.body == data),
            (200, true),
            "{:?}",
            reply.error
        );
    }
    let other = get(&proxy.addr(), &blob, None);
    assert_eq!(other.status, 200);
    let ids: Vec<u64> = proxy.log().iter().map(|r| r.connection).collect();
    assert_eq!(ids, [1, 1, 1, 2]);
}

#[test]
fn ranges_pass_through_and_are_logged() {
    let (_registry, proxy, data, blob) = setup(100_000, Faults::default());
    let addr = proxy.addr();
    let part = get(&addr, &blob, Some("bytes=1000-1999"));
    assert_eq!(part.status, 206);
    assert_eq!(part.header("content-range"), Some("bytes 1000-1999/100000"));
    assert_eq!(part.body, data[1000..2000]);
    let tail = get(&addr, &blob, Some("bytes=99000-"));
    assert_eq!(tail.status, 206, "open-ended ranges are served");
    assert_eq!(
        tail.header("content-range"),
        Some("bytes 99000-99999/100000")
    );
    assert_eq!(tail.body, data[99000..]);
    let log = proxy.log();
    assert_eq!(log[0].range.as_deref(), Some("bytes=1000-1999"));
    assert_eq!(log[1].range.as_deref(), Some("bytes=99000-"));
    assert_eq!(proxy.blob_bytes(), 2000);
}

#[test]
fn parallel_ranges_reassemble_the_blob() {
    let (_registry, proxy, data, blob) = setup(4 << 20, Faults::default());
    let chunk = data.len() / 16;
    let parts: Vec<Vec<u8>> = thread::scope(|s| {
        let handles: Vec<_> = (0..16)
            .map(|i| {
                let (addr, blob) = (proxy.addr(), blob.clone());
                s.spawn(move || {
                    let range = format!("bytes={}-{}", i * chunk, (i + 1) * chunk - 1);
                    let reply = get(&addr, &blob, Some(&range));
                    assert_eq!(reply.status, 206, "{:?}", reply.error);
                    reply.body
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert_eq!(parts.concat(), data);
    assert_eq!(proxy.blob_gets().len(), 16);
}

#[test]
fn uploads_go_through_the_proxy() {
    let registry = Registry::start();
    let proxy = Proxy::start(&registry.addr(), Faults::default());
    let data = pattern(3 << 20);
    // push_blob checks that the registry's Location was rewritten to the proxy.
    let (digest, post, put) = push_blob(&proxy.addr(), "up", &data);
    assert!(post
        .header("location")
        .unwrap()
        .starts_with(&format!("http://{}/", proxy.addr())));
    assert!(put
        .header("location")
        .unwrap()
        .starts_with(&format!("http://{}/", proxy.addr())));
    let direct = get(&registry.addr(), &format!("/v2/up/blobs/{digest}"), None);
    assert_eq!((direct.status, direct.body == data), (200, true));
    let methods: Vec<_> = proxy.log().iter().map(|r| r.method.clone()).collect();
    assert_eq!(methods, ["POST", "PUT"]);

    // The chunked upload skopeo and containerd do: POST, PATCH with a chunked body
    // (and `Expect: 100-continue`, as curl sends), then an empty PUT with the digest.
    let addr = proxy.addr();
    let data = pattern(2 << 20);
    let digest = support::registry::digest(&data);
    let post = request(&addr, "POST", "/v2/chunked/blobs/uploads/", &[], Vec::new());
    let (_, path) = split_url(post.header("location").unwrap());
    let chunked = [
        ("transfer-encoding", "chunked"),
        ("expect", "100-continue"),
        ("content-type", "application/octet-stream"),
    ];
    let patch = request(&addr, "PATCH", path, &chunked, data.clone());
    assert_eq!(patch.status, 202, "{patch:?}");
    assert_eq!(patch.header("range"), Some("0-2097151"));
    let (host, path) = split_url(patch.header("location").unwrap());
    assert_eq!(host, addr);
    let put = request(
        &addr,
        "PUT",
        &format!("{path}&digest={digest}"),
        &[],
        Vec::new(),
    );
    assert_eq!(put.status, 201, "{put:?}");
    let direct = get(
        &registry.addr(),
        &format!("/v2/chunked/blobs/{digest}"),
        None,
    );
    assert!(direct.body == data);
}

#[test]
fn cut_aborts_the_connection_mid_body_for_the_first_responses() {
    let faults = Faults {
        cut_blob_after: Some(100_000),
        cuts: 2,
        ..Faults::default()
    };
    let (_registry, proxy, data, blob) = setup(1 << 20, faults);
    let addr = proxy.addr();
    // A body no longer than the cut point is left alone and uses up no cut.
    let short = get(&addr, &blob, Some("bytes=0-99999"));
    assert_eq!(
        (short.status, short.body.len(), short.error),
        (206, 100_000, None)
    );
    for _ in 0..2 {
        let cut = get(&addr, &blob, None);
        assert_eq!(cut.status, 200);
        assert_eq!(cut.body.len(), 100_000, "exactly the bytes before the cut");
        assert_eq!(cut.body, data[..100_000]);
        assert!(cut.error.is_some(), "the client sees the connection die");
    }
    let whole = get(&addr, &blob, None);
    assert_eq!((whole.body == data, whole.error), (true, None));
    let sent: Vec<u64> = proxy.blob_gets().iter().map(|r| r.body_bytes).collect();
    assert_eq!(sent, [100_000, 100_000, 100_000, 1 << 20]);

    // A resumed range is cut at its own byte count, not the blob offset.
    proxy.set_faults(Faults {
        cut_blob_after: Some(10),
        ..Faults::default()
    });
    let resumed = get(&addr, &blob, Some("bytes=100000-"));
    assert_eq!((resumed.status, resumed.body.len()), (206, 10));
    assert_eq!(resumed.body, data[100_000..100_010]);
}

#[test]
fn corrupt_flips_one_bit_at_the_blob_offset() {
    let faults = Faults {
        corrupt_blob_at: Some(5000),
        ..Faults::default()
    };
    let (_registry, proxy, data, blob) = setup(200_000, faults);
    let addr = proxy.addr();
    let diff = |body: &[u8], base: usize| -> Vec<(usize, u8)> {
        body.iter()
            .zip(&data[base..])
            .enumerate()
            .filter(|(_, (a, b))| a != b)
            .map(|(i, (a, b))| (base + i, a ^ b))
            .collect()
    };
    let whole = get(&addr, &blob, None);
    assert_eq!(whole.body.len(), data.len());
    assert_eq!(diff(&whole.body, 0), [(5000, 1)]);
    let part = get(&addr, &blob, Some("bytes=4000-5999"));
    assert_eq!(part.status, 206);
    assert_eq!(diff(&part.body, 4000), [(5000, 1)]);
    let after = get(&addr, &blob, Some("bytes=6000-"));
    assert_eq!(
        diff(&after.body, 6000),
        [],
        "a range past the offset is clean"
    );
    assert_eq!(whole.body.len(), data.len());

    // Counted corruption: only the first response is bad, so a retry heals.
    proxy.set_faults(Faults {
        corrupt_blob_at: Some(0),
        corruptions: 1,
        ..Faults::default()
    });
    assert_eq!(diff(&get(&addr, &blob, None).body, 0), [(0, 1)]);
    assert_eq!(diff(&get(&addr, &blob, None).body, 0), []);
}

#[test]
fn ignore_range_makes_the_registry_send_everything() {
    let faults = Faults {
        ignore_range: true,
        ..Faults::default()
    };
    let (_registry, proxy, data, blob) = setup(50_000, faults);
    let reply = get(&proxy.addr(), &blob, Some("bytes=100-199"));
    // The registry answers ranges with 206 (see above), so a 200 means it saw none.
    assert_eq!(reply.status, 200);
    assert_eq!(reply.header("content-range"), None);
    assert_eq!(reply.body, data);
    let log = proxy.log();
    assert_eq!(log[0].range.as_deref(), Some("bytes=100-199"));
    assert_eq!(log[0].body_bytes, 50_000);
}

#[test]
fn too_many_requests_then_success() {
    let faults = Faults {
        too_many_requests: 2,
        retry_after: Some(3),
        ..Faults::default()
    };
    let (_registry, proxy, data, blob) = setup(1000, faults);
    let addr = proxy.addr();
    assert_eq!(
        get(&addr, "/v2/", None).status,
        200,
        "only blob GETs are refused"
    );
    for _ in 0..2 {
        let reply = get(&addr, &blob, None);
        assert_eq!(reply.status, 429);
        assert_eq!(reply.header("retry-after"), Some("3"));
        let body = String::from_utf8(reply.body).unwrap();
        assert!(body.contains(r#""code":"TOOMANYREQUESTS""#), "{body}");
    }
    let ok = get(&addr, &blob, None);
    assert_eq!((ok.status, ok.body == data), (200, true));
    let statuses: Vec<u16> = proxy.blob_gets().iter().map(|r| r.status).collect();
    assert_eq!(statuses, [429, 429, 200]);
}

#[test]
fn always_503_refuses_every_blob_get_only() {
    let faults = Faults {
        always_503: true,
        ..Faults::default()
    };
    let (_registry, proxy, _data, blob) = setup(1000, faults);
    let addr = proxy.addr();
    for _ in 0..3 {
        let reply = get(&addr, &blob, None);
        assert_eq!(reply.status, 503);
        assert_eq!(
            reply.header("content-type"),
            Some("application/json; charset=utf-8")
        );
        let body = String::from_utf8(reply.body).unwrap();
        assert!(
            body.starts_with(r#"{"errors":[{"code":"UNAVAILABLE""#),
            "{body}"
        );
    }
    assert_eq!(request(&addr, "HEAD", &blob, &[], Vec::new()).status, 200);
    assert_eq!(get(&addr, "/v2/", None).status, 200);
    proxy.set_faults(Faults::default());
    assert_eq!(get(&addr, &blob, None).status, 200);
}

#[test]
fn pacing_caps_each_connection() {
    let faults = Faults {
        rate: Some(20_000_000),
        ..Faults::default()
    };
    let (_registry, proxy, data, blob) = setup(10_000_000, faults);
    let start = Instant::now();
    let reply = get(&proxy.addr(), &blob, None);
    let elapsed = start.elapsed();
    assert!(reply.body == data, "{:?}", reply.error);
    // 10 MB at 20 MB/s is 0.5 s; the bucket's head start is one 200 kB slice.
    assert!(elapsed >= Duration::from_millis(450), "took {elapsed:?}");
}

#[test]
fn delay_is_added_to_every_request() {
    let faults = Faults {
        delay: Duration::from_millis(150),
        ..Faults::default()
    };
    let (_registry, proxy, _data, _blob) = setup(10, faults);
    let start = Instant::now();
    assert_eq!(get(&proxy.addr(), "/v2/", None).status, 200);
    assert_eq!(get(&proxy.addr(), "/v2/", None).status, 200);
    assert!(
        start.elapsed() >= Duration::from_millis(300),
        "{:?}",
        start.elapsed()
    );
}

#[test]
fn unreachable_upstream_is_a_502() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .unwrap();
    let proxy = Proxy::start(&port.to_string(), Faults::default());
    let reply = get(&proxy.addr(), "/v2/", None);
    assert_eq!(reply.status, 502);
    assert_eq!(proxy.log()[0].status, 502);
}

#[test]
fn drop_closes_the_port_and_the_connections() {
    let registry = Registry::start();
    let proxy = Proxy::start(&registry.addr(), Faults::default());
    let addr = proxy.addr();
    let mut session = Session::connect(&addr).unwrap();
    assert_eq!(session.request("GET", "/v2/", &[], Vec::new()).status, 200);
    drop(proxy);
    assert!(
        TcpStream::connect(&addr).is_err(),
        "nothing listens any more"
    );
    let after = session.request("GET", "/v2/", &[], Vec::new());
    assert_eq!(after.status, 0, "the kept-alive connection was closed too");
    assert!(after.error.is_some());
}
