//! Parse + classify + count of CloudTrail records on one core (SPEC §4 hot path).
//!
//! Two modes:
//! - `KEYWARDEN_ACCESS_INPUT=FILE cargo bench --bench access_parse`: criterion measures the
//!   counting of every line of FILE held in memory (throughput in records/s).
//! - `KEYWARDEN_ACCESS_STREAM=FILE cargo bench --bench access_parse`: one pass that streams FILE
//!   line by line, then prints `events/s` and the peak resident memory (VmHWM), for
//!   `benches/access_compare.sh`, which runs `benches/access_parse.py` on the same file. With
//!   `KEYWARDEN_ACCESS_COUNTS=OUT` it also writes every counter to OUT, which the script diffs
//!   against the Python reference's.
//!
//! Without either variable it generates a small input itself.
//!
//! The counting is the daemon's: `cloudtrail::parse`, eventSource filter, `SecretIndex` lookup
//! (name, full or partial ARN), event label and outcome, one counter per (secret, event,
//! outcome) in `cloudtrail::AccessCounts`, plus the count of skipped records.

use std::hint::black_box;
use std::io::BufRead;
use std::time::Instant;

use criterion::{Criterion, Throughput};
use keywarden::cloudtrail::{self, AccessCounts, SecretIndex};

/// Counts by (secret index, event label, outcome), and skipped records.
#[derive(Default)]
struct Counts {
    by_key: AccessCounts,
    skipped: u64,
    records: u64,
}

fn index() -> SecretIndex {
    let mut index = SecretIndex::new();
    for i in 0..20 {
        let name = format!("svc/secret-{i:02}");
        let arn = format!("arn:aws:secretsmanager:us-east-1:123456789012:secret:{name}-AbC{i:03}");
        index.add(&format!("SECRET_{i:02}"), &name, Some(&arn));
    }
    index
}

#[inline]
fn count_line(line: &str, index: &SecretIndex, c: &mut Counts) {
    c.records += 1;
    // Borrowed in place: a Record is a few hundred bytes, not worth a copy per line.
    let parsed = cloudtrail::parse(line);
    let r = match &parsed {
        Ok(r) => r,
        Err(_) => {
            c.skipped += 1;
            return;
        }
    };
    if r.event_source != cloudtrail::SECRETS_MANAGER {
        return;
    }
    let outcome = r.outcome();
    for id in r.secret_ids() {
        if let Some(i) = index.resolve_index(id) {
            c.by_key.add(i, &r.event_name, outcome);
        }
    }
}

/// The line as text: a line of ASCII (CloudTrail escapes nothing else, but any UTF-8 is valid)
/// is checked with `<[u8]>::is_ascii` (several bytes per step), anything else by
/// `std::str::from_utf8`.
#[inline]
#[allow(unsafe_code)] // The ASCII fast path; the benchmark mirrors what the daemon skips.
fn utf8(bytes: &[u8]) -> Result<&str, std::str::Utf8Error> {
    if bytes.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        Ok(unsafe { std::str::from_utf8_unchecked(bytes) })
    } else {
        std::str::from_utf8(bytes)
    }
}

fn peak_rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Streams the file `repeat` times and reports the fastest pass (the machine is shared).
fn stream(path: &str) {
    let repeat: usize = std::env::var("KEYWARDEN_ACCESS_REPEAT")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(5);
    // KEYWARDEN_ACCESS_MEMORY=1: the file is read into memory first, outside the timing, so
    // that only parse + classify + count is timed (access_parse.py --in-memory does the same).
    let in_memory = std::env::var_os("KEYWARDEN_ACCESS_MEMORY").is_some();
    let data =
        in_memory.then(|| std::fs::read(path).unwrap_or_else(|e| panic!("read {path}: {e}")));
    let mut best = f64::MAX;
    let mut last = Counts::default();
    for _ in 0..repeat.max(1) {
        let (secs, c) = match &data {
            Some(d) => count_in_memory(d),
            None => stream_once(path),
        };
        best = best.min(secs);
        last = c;
    }
    report(
        if in_memory { "in memory" } else { "streamed" },
        best,
        &last,
    );
}

/// One timed pass over lines already in memory: line ends, UTF-8 check, parse, classify, count.
fn count_in_memory(data: &[u8]) -> (f64, Counts) {
    let index = index();
    let mut c = Counts::default();
    let started = Instant::now();
    let mut line_of = |line: &[u8]| match utf8(line) {
        Ok(l) => count_line(l, &index, &mut c),
        Err(_) => {
            c.records += 1;
            c.skipped += 1;
        }
    };
    let mut start = 0;
    for nl in memchr::memchr_iter(b'\n', data) {
        line_of(&data[start..nl]);
        start = nl + 1;
    }
    if start < data.len() {
        line_of(&data[start..]);
    }
    (started.elapsed().as_secs_f64(), c)
}

fn stream_once(path: &str) -> (f64, Counts) {
    let index = index();
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // 256 KiB reads: the buffer stays in the core's L2 cache between the kernel's copy and the
    // parse (4 MiB gave the same speed and twice the resident memory).
    let mut reader = std::io::BufReader::with_capacity(256 << 10, file);
    let mut carry: Vec<u8> = Vec::new();
    let mut c = Counts::default();
    let line_of = |bytes: &[u8], c: &mut Counts| match utf8(bytes) {
        Ok(l) => count_line(l, &index, c),
        Err(_) => {
            c.records += 1;
            c.skipped += 1;
        }
    };
    let started = Instant::now();
    // Lines are handled inside the read buffer; only a line cut by the buffer end is copied.
    loop {
        let buf = reader
            .fill_buf()
            .unwrap_or_else(|e| panic!("read {path}: {e}"));
        if buf.is_empty() {
            break;
        }
        let mut start = 0;
        for nl in memchr::memchr_iter(b'\n', buf) {
            if carry.is_empty() {
                line_of(&buf[start..nl], &mut c);
            } else {
                carry.extend_from_slice(&buf[start..nl]);
                line_of(&carry, &mut c);
                carry.clear();
            }
            start = nl + 1;
        }
        carry.extend_from_slice(&buf[start..]);
        let n = buf.len();
        reader.consume(n);
    }
    if !carry.is_empty() {
        line_of(&carry, &mut c);
    }
    (started.elapsed().as_secs_f64(), c)
}

/// Writes every counter of `c` to `path`, one `secret event outcome count` line each, sorted,
/// then the records and skipped lines, for `benches/access_compare.sh` to diff against the
/// Python reference's (`access_parse.py --counts`, same format).
fn write_counts(path: &str, c: &Counts) {
    let mut lines: Vec<String> = c
        .by_key
        .iter()
        .map(|(secret, event, outcome, n)| format!("{secret} {event} {} {n}", outcome.as_str()))
        .collect();
    lines.sort();
    lines.push(format!("records {}", c.records));
    lines.push(format!("skipped {}", c.skipped));
    let mut text = lines.join("\n");
    text.push('\n');
    std::fs::write(path, text).unwrap_or_else(|e| panic!("write {path}: {e}"));
}

fn report(mode: &str, secs: f64, c: &Counts) {
    if let Ok(path) = std::env::var("KEYWARDEN_ACCESS_COUNTS") {
        write_counts(&path, c);
    }
    let counted = c.by_key.total();
    println!(
        "rust ({mode}): {} records, {} counted, {} skipped in {:.3}s (best pass): {:.0} events/s, peak RSS {} KiB",
        c.records,
        counted,
        c.skipped,
        secs,
        c.records as f64 / secs,
        peak_rss_kib()
    );
    println!(
        "rust: counters {} series, total {counted}, skipped {}",
        c.by_key.series(),
        c.skipped
    );
}

fn generated() -> Vec<String> {
    (0..5000)
        .map(|i| {
            format!(
                r#"{{"eventVersion":"1.09","userIdentity":{{"type":"AssumedRole","principalId":"AROAX:i-{p}","arn":"arn:aws:sts::123456789012:assumed-role/app/i-{p}","accountId":"123456789012","sessionContext":{{"sessionIssuer":{{"type":"Role","arn":"arn:aws:iam::123456789012:role/app"}},"attributes":{{"creationDate":"2024-05-01T10:00:00Z","mfaAuthenticated":"false"}}}}}},"eventTime":"2024-05-01T12:{m:02}:00Z","eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue","awsRegion":"us-east-1","sourceIPAddress":"10.0.1.{p}","userAgent":"aws-sdk-rust/1.0","requestParameters":{{"secretId":"svc/secret-{s:02}"}},"responseElements":null,"requestID":"r-{i}","eventID":"e-{i}","readOnly":true,"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"123456789012","tlsDetails":{{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"secretsmanager.us-east-1.amazonaws.com"}}}}"#,
                p = i % 7,
                m = i % 60,
                s = i % 25,
            )
        })
        .collect()
}

fn main() {
    if let Ok(path) = std::env::var("KEYWARDEN_ACCESS_STREAM") {
        stream(&path);
        return;
    }
    let lines: Vec<String> = match std::env::var("KEYWARDEN_ACCESS_INPUT") {
        Ok(path) => std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("read {path}: {e}"))
            .lines()
            .map(str::to_string)
            .collect(),
        Err(_) => generated(),
    };
    let index = index();
    let mut criterion = Criterion::default().configure_from_args().sample_size(10);
    let mut group = criterion.benchmark_group("access");
    group.throughput(Throughput::Elements(lines.len() as u64));
    group.bench_function("parse_classify_count", |b| {
        b.iter(|| {
            let mut c = Counts::default();
            for l in &lines {
                count_line(l, &index, &mut c);
            }
            black_box(c.by_key.series())
        })
    });
    group.finish();
    criterion.final_summary();
}
