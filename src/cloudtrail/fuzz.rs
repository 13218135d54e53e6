//! Fuzzing of the scanner and the line index with arbitrary bytes and mutated real records
//! (issue #15). cargo-fuzz needs a nightly toolchain, which this machine does not have, so the
//! fuzzing is a proptest: arbitrary byte strings, and real CloudTrail records mutated byte by
//! byte (bit flips, overwrites with the bytes the scanner looks for, insertions, deletions,
//! duplicated and spliced slices, truncations). Every input is checked for:
//!
//! - no panic in [`parse`] and the helpers a record goes through;
//! - the line index of every kernel this processor has equal to a naive scalar reading of the
//!   bytes (quotes; brackets outside strings; usable only without a backslash), and
//!   `next_quote` equal to a linear search;
//! - [`parse`] (indexed when possible), the block scanner and the index of each kernel giving
//!   exactly what the oracle (`reference.rs`) gives, accepted or refused.
//!
//! The normal test run takes 256 cases per property (a few seconds). Run long with
//! `KEYWARDEN_FUZZ_CASES=2000000 cargo test --lib cloudtrail::fuzz` (any case count).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::TestRunner;

use super::line_index::{Kernel, LineIndex};
use super::{
    MAX_RECORD_BYTES, Scanner, SecretIndex, parse, parse_time_ms, parse_with, reference,
    scan_record_blocks, scan_record_with, strip_arn_suffix,
};

/// Cases per property: `KEYWARDEN_FUZZ_CASES`, else 256.
fn cases() -> u32 {
    std::env::var("KEYWARDEN_FUZZ_CASES")
        .ok()
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(256)
}

fn config() -> ProptestConfig {
    ProptestConfig {
        cases: cases(),
        max_shrink_iters: 10_000,
        // A failure is kept as a regression test by hand (there is no source file to persist
        // it next to).
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

/// Real records in the shapes CloudTrail writes for Secrets Manager: the seeds of the mutations.
const CORPUS: &[&str] = &[
    r#"{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","principalId":"AROAEXAMPLE:i-0abc","arn":"arn:aws:sts::111122223333:assumed-role/app/i-0abc","accountId":"111122223333","accessKeyId":"ASIAEXAMPLE","sessionContext":{"sessionIssuer":{"type":"Role","principalId":"AROAEXAMPLE","arn":"arn:aws:iam::111122223333:role/app","accountId":"111122223333","userName":"app"},"attributes":{"creationDate":"2024-05-01T11:00:00Z","mfaAuthenticated":"false"}}},"eventTime":"2024-05-01T12:00:00Z","eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue","awsRegion":"us-east-1","sourceIPAddress":"10.0.3.7","userAgent":"aws-sdk-go-v2/1.25.0","requestParameters":{"secretId":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbC123","versionStage":"AWSCURRENT"},"responseElements":null,"requestID":"6f1c2d3e-0000-4000-8000-000000000001","eventID":"0b4f5e6a-1111-4222-8333-944455556666","readOnly":true,"resources":[{"accountId":"111122223333","type":"AWS::SecretsManager::Secret","ARN":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbC123"}],"eventType":"AwsApiCall","managementEvent":true,"recipientAccountId":"111122223333","eventCategory":"Management","tlsDetails":{"tlsVersion":"TLSv1.3","cipherSuite":"TLS_AES_128_GCM_SHA256","clientProvidedHostHeader":"secretsmanager.us-east-1.amazonaws.com"}}"#,
    r#"{"eventVersion":"1.08","userIdentity":{"type":"IAMUser","principalId":"AIDAEXAMPLE","arn":"arn:aws:iam::111122223333:user/ci","accountId":"111122223333","accessKeyId":"AKIAEXAMPLE","userName":"ci"},"eventTime":"2024-05-01T12:00:01.123Z","eventSource":"secretsmanager.amazonaws.com","eventName":"BatchGetSecretValue","awsRegion":"eu-west-1","sourceIPAddress":"203.0.113.9","userAgent":"aws-cli/2.15.0 Python/3.11","errorCode":"AccessDenied","errorMessage":"User: arn:aws:iam::111122223333:user/ci is not authorized to perform: secretsmanager:GetSecretValue on resource: \"prod/db\" because no identity-based policy allows it","requestParameters":{"secretIdList":["prod/db","prod/cache","arn:aws:secretsmanager:eu-west-1:111122223333:secret:prod/x-Zz9Yy8"]},"responseElements":null,"eventID":"e\u0031f2","readOnly":true,"eventType":"AwsApiCall"}"#,
    r#"{"eventVersion":"1.09","userIdentity":{"type":"AWSService","invokedBy":"lambda.amazonaws.com"},"eventTime":"2024-05-01T12:00:02Z","eventSource":"secretsmanager.amazonaws.com","eventName":"PutSecretValue","awsRegion":"us-east-1","sourceIPAddress":"lambda.amazonaws.com","userAgent":"lambda.amazonaws.com","requestParameters":{"secretId":"prod/db","clientRequestToken":"tok-1","versionStages":["AWSPENDING"]},"responseElements":{"arn":"arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbC123","versionId":"tok-1"},"eventID":"7a7a7a7a-0000-0000-0000-000000000003","eventType":"AwsApiCall"}"#,
    r#"{ "eventVersion": "1.09", "userIdentity": { "type": "Root", "principalId": "111122223333", "arn": "arn:aws:iam::111122223333:root", "accountId": "111122223333" }, "eventTime": "2024-05-01T12:00:03+02:00", "eventSource": "secretsmanager.amazonaws.com", "eventName": "GetSecretValue", "sourceIPAddress": "2001:db8::1", "requestParameters": { "secretId": "caf\u00e9/\u2603\ud83d\ude00", "versionId": "v-\"quoted\"-\\" }, "eventID": "root-\t-1", "additionalEventData": { "nested": [ [ { "a": "]}" } ], "[{\"" ] } }"#,
    r#"{"eventID":"min","eventSource":"secretsmanager.amazonaws.com","eventName":"DescribeSecret","userIdentity":{"type":"FederatedUser","arn":"arn:aws:sts::1:federated-user/bob","sessionContext":{"sessionIssuer":{"arn":"arn:aws:iam::1:user/bob"}}},"requestParameters":{"secretId":"é"}}"#,
];

/// One byte-level mutation; positions are indexes into whatever the input is by then.
#[derive(Debug, Clone)]
enum Mutation {
    /// Flips one bit.
    Flip(Index, u8),
    /// Overwrites one byte.
    Set(Index, u8),
    /// Inserts bytes.
    Insert(Index, Vec<u8>),
    /// Deletes up to `len` bytes.
    Delete(Index, usize),
    /// Copies a slice of up to `len` bytes to another place.
    Duplicate(Index, usize, Index),
    /// Inserts a slice of another corpus record.
    Splice(Index, Index, Index, usize),
    /// Keeps a prefix.
    Truncate(Index),
}

/// A byte the scanner treats specially, or any byte.
fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(vec![
            b'"', b'\\', b'{', b'}', b'[', b']', b':', b',', b' ', b'\n', b'\r', b'\t', b'u',
            b'0', b'n', b't', b'f', b'-', b'e', 0x00, 0x7f, 0x80, 0xbf, 0xc3, 0xe2, 0xf0, 0xff,
            b'{' ^ 0x20, b'"' ^ 0x80,
        ]),
        1 => any::<u8>(),
    ]
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::Flip(i, b)),
        4 => (any::<Index>(), interesting_byte()).prop_map(|(i, b)| Mutation::Set(i, b)),
        3 => (any::<Index>(), prop::collection::vec(interesting_byte(), 1..12))
            .prop_map(|(i, b)| Mutation::Insert(i, b)),
        2 => (any::<Index>(), 1usize..40).prop_map(|(i, n)| Mutation::Delete(i, n)),
        1 => (any::<Index>(), 1usize..200, any::<Index>())
            .prop_map(|(i, n, to)| Mutation::Duplicate(i, n, to)),
        1 => (any::<Index>(), any::<Index>(), any::<Index>(), 1usize..300)
            .prop_map(|(r, from, to, n)| Mutation::Splice(r, from, to, n)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
    ]
}

/// `index` into `0..=len` (an insertion point or a cut).
fn at(index: &Index, len: usize) -> usize {
    index.index(len + 1)
}

fn apply(bytes: &mut Vec<u8>, m: &Mutation) {
    match m {
        Mutation::Flip(i, bit) => {
            if !bytes.is_empty() {
                let k = i.index(bytes.len());
                bytes[k] ^= 1 << bit;
            }
        }
        Mutation::Set(i, b) => {
            if !bytes.is_empty() {
                let k = i.index(bytes.len());
                bytes[k] = *b;
            }
        }
        Mutation::Insert(i, b) => {
            let k = at(i, bytes.len());
            bytes.splice(k..k, b.iter().copied());
        }
        Mutation::Delete(i, n) => {
            let k = at(i, bytes.len());
            let end = (k + n).min(bytes.len());
            bytes.drain(k..end);
        }
        Mutation::Duplicate(i, n, to) => {
            let k = at(i, bytes.len());
            let slice: Vec<u8> = bytes[k..(k + n).min(bytes.len())].to_vec();
            let t = at(to, bytes.len());
            bytes.splice(t..t, slice);
        }
        Mutation::Splice(r, from, to, n) => {
            let other = CORPUS[r.index(CORPUS.len())].as_bytes();
            let k = at(from, other.len());
            let slice = &other[k..(k + n).min(other.len())];
            let t = at(to, bytes.len());
            bytes.splice(t..t, slice.iter().copied());
        }
        Mutation::Truncate(i) => {
            let k = at(i, bytes.len());
            bytes.truncate(k);
        }
    }
}

/// Every kernel's index of `b` equals the naive one, and `next_quote` a linear search.
fn check_index(b: &[u8]) -> Result<(), TestCaseError> {
    let (quote, bracket, usable) = super::line_index::tests::naive(b);
    for kernel in Kernel::under_test() {
        let mut index = LineIndex::new();
        // SAFETY: `Kernel::under_test` lists only kernels this processor has.
        let built = unsafe { index.build_with(kernel, b) };
        prop_assert_eq!(built, usable, "{:?}", kernel);
        prop_assert_eq!(&index.quote, &quote, "{:?} quotes", kernel);
        prop_assert_eq!(&index.bracket, &bracket, "{:?} brackets", kernel);
        // Every quote position, and the positions just past each (the scanner's `from`).
        let mut from = 0;
        loop {
            let expected = b[from.min(b.len())..]
                .iter()
                .position(|&c| c == b'"')
                .map(|p| p + from);
            prop_assert_eq!(
                index.next_quote(from),
                expected,
                "{:?} from {}",
                kernel,
                from
            );
            match expected {
                Some(q) => from = q + 1,
                None => break,
            }
        }
        prop_assert_eq!(index.next_quote(b.len() + 64), None);
    }
    Ok(())
}

/// `parse` and every scanner variant give what the oracle gives, and nothing panics on the way.
fn check_parse(text: &str, tally: &Tally) -> Result<(), TestCaseError> {
    tally.inputs.fetch_add(1, Ordering::Relaxed);
    let oracle = parse_with(text, reference::scan_record);
    let got = parse(text);
    prop_assert_eq!(&got, &oracle, "parse {:?}", text);
    prop_assert_eq!(
        &parse_with(text, scan_record_blocks),
        &oracle,
        "blocks {:?}",
        text
    );
    for kernel in Kernel::under_test() {
        let indexed = parse_with(text, |t, rec| {
            let mut index = LineIndex::new();
            // SAFETY: `Kernel::under_test` lists only kernels this processor has.
            if unsafe { index.build_with(kernel, t.as_bytes()) } {
                scan_record_with(Scanner::indexed(t, &index), rec)
            } else {
                scan_record_with(Scanner::new(t), rec)
            }
        });
        prop_assert_eq!(&indexed, &oracle, "indexed ({:?}) {:?}", kernel, text);
    }
    if text.len() > MAX_RECORD_BYTES {
        prop_assert!(got.is_err());
    }
    // What an accepted record goes through next in the access poller.
    if let Ok(r) = got {
        tally.accepted.fetch_add(1, Ordering::Relaxed);
        let mut index = SecretIndex::new();
        index.add(
            "DB",
            "prod/db",
            Some("arn:aws:secretsmanager:us-east-1:111122223333:secret:prod/db-AbC123"),
        );
        let _ = r.time_ms();
        let _ = r.outcome();
        let _ = r.is_aws_service();
        for id in r.secret_ids() {
            let _ = index.resolve(id);
            let _ = strip_arn_suffix(id);
        }
        if let Some(t) = &r.event_time {
            let _ = parse_time_ms(t);
        }
    }
    Ok(())
}

/// Both checks on raw bytes: the index on the bytes as they are, the parse on their lossy text
/// (CloudWatch Logs messages are strings) and, when they are UTF-8, on them unchanged.
fn check_bytes(bytes: &[u8], tally: &Tally) -> Result<(), TestCaseError> {
    check_index(bytes)?;
    let text = String::from_utf8_lossy(bytes);
    check_index(text.as_bytes())?;
    check_parse(&text, tally)?;
    // A record as the poller gets it, with trailing and leading white space.
    check_parse(&format!(" \n{text}\r\n"), tally)?;
    Ok(())
}

/// Inputs checked and records the oracle accepted, for the summary a run prints.
#[derive(Default)]
struct Tally {
    inputs: AtomicU64,
    accepted: AtomicU64,
}

/// Runs `check` on `config().cases` inputs of `strategy` (shrinking a failure) and prints how
/// many inputs it checked, how many the oracle accepted and how long it took.
fn fuzz<S: Strategy>(
    name: &str,
    strategy: S,
    check: impl Fn(&S::Value, &Tally) -> Result<(), TestCaseError>,
) where
    S::Value: std::fmt::Debug,
{
    let tally = Tally::default();
    let started = Instant::now();
    let mut runner = TestRunner::new(config());
    let result = runner.run(&strategy, |v| check(&v, &tally));
    eprintln!(
        "fuzz {name}: {} cases, {} inputs checked, {} accepted by the oracle, {:.1}s",
        config().cases,
        tally.inputs.load(Ordering::Relaxed),
        tally.accepted.load(Ordering::Relaxed),
        started.elapsed().as_secs_f64()
    );
    if let Err(e) = result {
        panic!("fuzz {name}: {e}");
    }
}

#[test]
fn arbitrary_bytes() {
    fuzz(
        "arbitrary_bytes",
        prop::collection::vec(any::<u8>(), 0..600),
        |bytes, t| check_bytes(bytes, t),
    );
}

/// Arbitrary bytes after an object's start, dense in the bytes the scanner looks for, so the
/// scan gets past the first byte.
#[test]
fn arbitrary_json_like_bytes() {
    fuzz(
        "arbitrary_json_like_bytes",
        prop::collection::vec(interesting_byte(), 0..600),
        |bytes, t| {
            let mut b = b"{\"eventID\":\"".to_vec();
            b.extend_from_slice(bytes);
            check_bytes(&b, t)?;
            check_bytes(bytes, t)
        },
    );
}

#[test]
fn mutated_real_records() {
    fuzz(
        "mutated_real_records",
        (any::<Index>(), prop::collection::vec(mutation(), 1..10)),
        |(seed, mutations), t| {
            let mut bytes = CORPUS[seed.index(CORPUS.len())].as_bytes().to_vec();
            for m in mutations {
                apply(&mut bytes, m);
            }
            check_bytes(&bytes, t)
        },
    );
}

/// The unmutated corpus parses, the same way by every scanner (a seed the oracle refuses would
/// make the mutations above test refusals only).
#[test]
fn the_corpus_is_accepted() {
    for record in CORPUS {
        assert!(parse(record).is_ok(), "{record}");
        check_bytes(record.as_bytes(), &Tally::default()).unwrap();
    }
}
