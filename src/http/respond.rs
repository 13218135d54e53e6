//! How answers are built: the body type, plain text, JSON with `no-store`, the JSON refusal and
//! `405` with its `Allow` header. It must never import the routes, the guard or the state.

use std::convert::Infallible;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::header::{ALLOW, CACHE_CONTROL, CONNECTION, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Response, StatusCode};
use serde::Serialize;

use super::api::ErrorBody;

/// The body of every answer.
pub(crate) type Body = BoxBody<Bytes, Infallible>;

/// A `text/plain` answer.
pub(crate) fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut r = Response::new(Full::new(body.into()).boxed());
    *r.status_mut() = status;
    r.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

/// A pretty-printed JSON answer that caches must not keep.
pub(crate) fn json<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    match serde_json::to_vec_pretty(value) {
        Ok(mut body) => {
            body.push(b'\n');
            let mut r = Response::new(Full::new(Bytes::from(body)).boxed());
            *r.status_mut() = status;
            r.headers_mut()
                .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
            r.headers_mut()
                .insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
            r
        }
        Err(e) => text(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the response: {e}\n"),
        ),
    }
}

/// A JSON refusal: `{"error": msg}`.
pub(crate) fn error_json(status: StatusCode, msg: impl std::fmt::Display) -> Response<Body> {
    json(
        status,
        &ErrorBody {
            error: msg.to_string(),
        },
    )
}

/// `405` naming the methods the route takes.
pub(crate) fn method_not_allowed(allow: &'static str) -> Response<Body> {
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {allow}\n"),
    );
    r.headers_mut()
        .insert(ALLOW, HeaderValue::from_static(allow));
    r
}

/// `503` of a reserve connection whose request does not carry the admin token: every normal
/// slot (or the peer's share) is taken; the connection closes after it.
pub(crate) fn busy() -> Response<Body> {
    let mut r = text(
        StatusCode::SERVICE_UNAVAILABLE,
        "busy: every connection slot is taken; only requests with the admin token are served now\n",
    );
    r.headers_mut()
        .insert(RETRY_AFTER, HeaderValue::from_static("1"));
    r.headers_mut()
        .insert(CONNECTION, HeaderValue::from_static("close"));
    r
}
