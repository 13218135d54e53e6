//! The EventBridge envelope of a CloudTrail record pushed to SQS (`[access] source = "sqs"`):
//! [`detail`] borrows the record's JSON text from the message body, for `cloudtrail::parse`.
//! Pure: no I/O, no clock.

use serde::Deserialize;
use serde::de::IgnoredAny;
use serde_json::value::RawValue;

/// The parts of an EventBridge event that keywarden reads; the rest is skipped unparsed.
#[derive(Deserialize)]
struct Envelope<'a> {
    /// `detail-type`, such as `AWS API Call via CloudTrail`: present on every event.
    #[serde(rename = "detail-type")]
    detail_type: Option<IgnoredAny>,
    /// `source`, such as `aws.secretsmanager`: present on every event.
    source: Option<IgnoredAny>,
    /// The CloudTrail record, borrowed as raw JSON text.
    #[serde(borrow)]
    detail: Option<&'a RawValue>,
}

/// The CloudTrail record inside an EventBridge event (the JSON text of its `detail` object,
/// borrowed from `body`), or the reason the body is not such an event: `not_json` (not
/// JSON) or `not_event` (JSON without `detail-type`, `source` and a `detail` object).
pub fn detail(body: &str) -> Result<&str, &'static str> {
    let envelope: Envelope<'_> = serde_json::from_str(body)
        .map_err(|e| if e.is_data() { "not_event" } else { "not_json" })?;
    match envelope {
        Envelope {
            detail_type: Some(_),
            source: Some(_),
            detail: Some(detail),
        } if detail.get().starts_with('{') => Ok(detail.get()),
        _ => Err("not_event"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_detail_of_an_eventbridge_event_is_borrowed_and_anything_else_is_rejected() {
        let record = r#"{"eventID":"e-1","eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue"}"#;
        let body = format!(
            r#"{{"version":"0","id":"x","detail-type":"AWS API Call via CloudTrail","source":"aws.secretsmanager","account":"123456789012","time":"2026-01-01T00:00:00Z","region":"us-east-1","resources":[],"detail":{record}}}"#
        );
        let d = detail(&body).unwrap();
        assert_eq!(d, record);
        // Borrowed from the body, not copied.
        let range = body.as_bytes().as_ptr_range();
        assert!(range.contains(&d.as_ptr()));
        let parsed = crate::cloudtrail::parse(d).unwrap();
        assert_eq!(parsed.event_id, "e-1");
        for (body, why) in [
            ("", "not_json"),
            ("not json", "not_json"),
            ("{\"detail\":", "not_json"),
            ("[1,2]", "not_event"),
            ("\"text\"", "not_event"),
            ("{}", "not_event"),
            (r#"{"detail-type":"x","source":"y"}"#, "not_event"),
            (
                r#"{"detail-type":"x","source":"y","detail":"text"}"#,
                "not_event",
            ),
            (
                r#"{"detail-type":"x","source":"y","detail":[1]}"#,
                "not_event",
            ),
            (r#"{"source":"y","detail":{"eventID":"a"}}"#, "not_event"),
            (
                r#"{"detail-type":"x","detail":{"eventID":"a"}}"#,
                "not_event",
            ),
        ] {
            assert_eq!(detail(body), Err(why), "{body:?}");
        }
        // A valid envelope whose detail is not a usable record is the parser's to reject.
        let bad = r#"{"detail-type":"x","source":"y","detail":{"eventName":1}}"#;
        assert!(crate::cloudtrail::parse(detail(bad).unwrap()).is_err());
    }
}
