//! The HTTP listener: routes, clean shutdown on SIGTERM and SIGINT, the header read timeout and
//! the connection limit. No AWS is needed: the endpoint points at a closed loopback port.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use crate::support::{free_port, http, Daemon};

fn config(extra_server: &str) -> String {
    format!(
        "[aws]\nregion = \"us-east-1\"\nendpoint_url = \"http://127.0.0.1:{}\"\n\
         [server]\nlisten = \"{{listen}}\"\n{extra_server}\n\
         [poll]\nmetadata_every = \"1s\"\n[state]\npath = \"{{state}}\"\n\
         [[secret]]\nname = \"A\"\nid = \"svc/a\"\n",
        free_port()
    )
}

#[tokio::test]
async fn routes_answer_and_refuse_properly() {
    let d = Daemon::start(&config("")).await;
    assert_eq!(d.get("/healthz").await, (200, "ok\n".to_string()));
    let (status, body) = d.get("/readyz").await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("metadata poller"), "{body}");
    let (status, _) = d.get("/nope").await;
    assert_eq!(status, 404);
    let (status, headers, _) = http("POST", &d.url("/metrics"), &[], None).await;
    assert_eq!(status, 405);
    assert!(headers
        .iter()
        .any(|(k, v)| k == "allow" && v.contains("GET")));
    let (status, body) = d.get("/secrets").await;
    assert_eq!(status, 200);
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert!(v["secrets"].is_array());
    // Poll failures against the closed port are counted by kind.
    d.wait_for("a network error", Duration::from_secs(30), |s| {
        s.get(
            "keywarden_poll_errors_total",
            &[("source", "metadata"), ("kind", "network")],
        )
        .unwrap_or(0.0)
            >= 1.0
    })
    .await;
}

#[tokio::test]
async fn sigterm_stops_within_seconds_even_with_idle_clients() {
    let mut d = Daemon::start(&config("")).await;
    // An idle keep-alive client must not hold the shutdown.
    let mut idle = TcpStream::connect(d.addr).unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let _ = idle.read(&mut buf).unwrap();
    let (status, took) = d.stop_with("TERM", Duration::from_secs(10));
    let status = status.expect("keywarden exited");
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(5), "took {took:?}");
    assert!(d.log().contains("keywarden stopped."), "{}", d.log());
}

#[tokio::test]
async fn sigint_stops_cleanly() {
    let mut d = Daemon::start(&config("")).await;
    let (status, took) = d.stop_with("INT", Duration::from_secs(10));
    assert!(status.expect("keywarden exited").success());
    assert!(took < Duration::from_secs(5), "took {took:?}");
}

#[tokio::test]
async fn slow_headers_are_cut_off() {
    let d = Daemon::start(&config("header_timeout = \"1s\"\n")).await;
    let mut slow = TcpStream::connect(d.addr).unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    let started = Instant::now();
    let mut buf = Vec::new();
    // The server closes the connection (possibly after a 408) once the timeout passes.
    let _ = slow.read_to_end(&mut buf);
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "took {took:?}"
    );
    let text = String::from_utf8_lossy(&buf);
    assert!(
        text.is_empty() || text.starts_with("HTTP/1.1 408"),
        "{text}"
    );
    // The daemon still serves others.
    assert_eq!(d.get("/healthz").await.0, 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_limit_queues_the_excess() {
    let d = Daemon::start(&config("max_connections = 2\nheader_timeout = \"30s\"\n")).await;
    // Two keep-alive connections hold both permits.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut c = TcpStream::connect(d.addr).unwrap();
        c.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .unwrap();
        let mut buf = [0u8; 256];
        assert!(c.read(&mut buf).unwrap() > 0);
        held.push(c);
    }
    // A third one is accepted by the kernel but not served.
    let mut third = TcpStream::connect(d.addr).unwrap();
    third
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    third
        .write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        .unwrap();
    let mut buf = [0u8; 256];
    let t0 = Instant::now();
    let early = third.read(&mut buf);
    assert!(
        early.is_err(),
        "served beyond the limit after {:?}: {:?}",
        t0.elapsed(),
        early.map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
    );
    // Releasing one permit lets it through.
    drop(held.pop());
    third
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let n = third.read(&mut buf).unwrap();
    assert!(String::from_utf8_lossy(&buf[..n]).starts_with("HTTP/1.1 200"));
}
