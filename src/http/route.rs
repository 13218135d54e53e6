//! The routes of the HTTP listener, parsed once from method, path and query into [`Route`].
//!
//! Parsing is pure (no I/O, no state, no clock). The `<secret>` segment of an action route is kept
//! raw: the guard decodes and validates it only after the token check, so an unauthenticated
//! caller learns nothing about names. This module must never import the guard, the handlers or
//! the state.

use hyper::Method;

/// The methods of the read routes.
pub(crate) const GET_HEAD: &str = "GET, HEAD";
/// The method of the action routes.
pub(crate) const POST: &str = "POST";

/// One route, with what its path carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Route {
    /// `GET /metrics`.
    Metrics,
    /// `GET /healthz`.
    Healthz,
    /// `GET /readyz`.
    Readyz,
    /// `GET /secrets`.
    Secrets,
    /// `GET /anomalies`.
    Anomalies,
    /// `GET /rotations`.
    Rotations,
    /// `GET /rotations/<id>`, the id percent-decoded once.
    Rotation(String),
    /// `POST /rotate/<secret>[?force=true]`, the segment raw.
    Rotate {
        /// The raw `<secret>` segment.
        raw: String,
        /// `force=true`, `force=1` or `force` in the query: start past failing pre-flight
        /// checks (SPEC §12).
        force: bool,
    },
    /// `POST /rollback/<secret>[?force=true]`, the segment raw.
    Rollback {
        /// The raw `<secret>` segment.
        raw: String,
        /// `force=true`, `force=1` or `force` in the query.
        force: bool,
    },
    /// `POST /compromised/<secret>`, the segment raw.
    Compromised(String),
    /// `GET /incidents`.
    Incidents,
    /// `GET /incidents/<id>`, a 32-hex-character id.
    Incident(String),
    /// `GET /incidents/<id>/report.md`, a 32-hex-character id.
    IncidentReport(String),
}

/// Why a request has no route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Miss {
    /// No such path: `404` in text.
    NotFound,
    /// The path exists for other methods: `405` with this `Allow`.
    MethodNotAllowed(&'static str),
    /// `/rotations/<id>` with a malformed percent-escape: `400`.
    MalformedId,
    /// `/incidents/<id>` whose id is not 32 hex characters: `404` in JSON.
    NoSuchIncident,
}

impl Route {
    /// The route of `method` on `path` (`query` is the part after `?`, if any).
    pub(crate) fn parse(method: &Method, path: &str, query: Option<&str>) -> Result<Route, Miss> {
        let get = *method == Method::GET || *method == Method::HEAD;
        let post = *method == Method::POST;
        let want = |ok: bool, allow: &'static str, route: Route| {
            if ok {
                Ok(route)
            } else {
                Err(Miss::MethodNotAllowed(allow))
            }
        };
        if let Some(raw) = path.strip_prefix("/compromised/") {
            return want(post, POST, Route::Compromised(raw.to_string()));
        }
        let force = query
            .unwrap_or("")
            .split('&')
            .any(|kv| kv == "force=true" || kv == "force=1" || kv == "force");
        if let Some(raw) = path.strip_prefix("/rotate/") {
            let raw = raw.to_string();
            return want(post, POST, Route::Rotate { raw, force });
        }
        if let Some(raw) = path.strip_prefix("/rollback/") {
            let raw = raw.to_string();
            return want(post, POST, Route::Rollback { raw, force });
        }
        let read = match path {
            "/metrics" => Route::Metrics,
            "/healthz" => Route::Healthz,
            "/readyz" => Route::Readyz,
            "/secrets" => Route::Secrets,
            "/anomalies" => Route::Anomalies,
            "/rotations" => Route::Rotations,
            "/incidents" => Route::Incidents,
            _ => {
                if let Some(rest) = path.strip_prefix("/rotations/") {
                    if !get {
                        return Err(Miss::MethodNotAllowed(GET_HEAD));
                    }
                    return percent_decode(rest)
                        .map(Route::Rotation)
                        .ok_or(Miss::MalformedId);
                }
                let Some(rest) = path.strip_prefix("/incidents/") else {
                    return Err(Miss::NotFound);
                };
                if !get {
                    return Err(Miss::MethodNotAllowed(GET_HEAD));
                }
                let (id, report) = match rest.strip_suffix("/report.md") {
                    Some(id) => (id, true),
                    None => (rest, false),
                };
                if id.len() != 32 || !id.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(Miss::NoSuchIncident);
                }
                let id = id.to_string();
                return Ok(if report {
                    Route::IncidentReport(id)
                } else {
                    Route::Incident(id)
                });
            }
        };
        want(get, GET_HEAD, read)
    }
}

/// Decodes `%XX` escapes once; `None` for a malformed escape or invalid UTF-8.
pub(crate) fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const ID: &str = "0123456789abcdef0123456789ABCDEF";

    fn check(method: Method, target: &str, want: Result<Route, Miss>) {
        let (path, query) = match target.split_once('?') {
            Some((p, q)) => (p, Some(q)),
            None => (target, None),
        };
        assert_eq!(
            Route::parse(&method, path, query),
            want,
            "{method} {target}"
        );
    }

    #[test]
    fn every_route_and_its_methods() {
        use Miss::*;
        use Route::*;
        let r = |s: &str| s.to_string();
        for (method, target, want) in [
            (Method::GET, "/metrics", Ok(Metrics)),
            (Method::HEAD, "/metrics", Ok(Metrics)),
            (Method::POST, "/metrics", Err(MethodNotAllowed(GET_HEAD))),
            (Method::GET, "/healthz", Ok(Healthz)),
            (Method::DELETE, "/healthz", Err(MethodNotAllowed(GET_HEAD))),
            (Method::GET, "/readyz", Ok(Readyz)),
            (Method::GET, "/secrets", Ok(Secrets)),
            (Method::PUT, "/secrets", Err(MethodNotAllowed(GET_HEAD))),
            (Method::GET, "/anomalies", Ok(Anomalies)),
            (Method::GET, "/rotations", Ok(Rotations)),
            (Method::POST, "/rotations", Err(MethodNotAllowed(GET_HEAD))),
            (Method::GET, "/rotations/ab", Ok(Rotation(r("ab")))),
            (Method::GET, "/rotations/a%2Fb", Ok(Rotation(r("a/b")))),
            (Method::GET, "/rotations/", Ok(Rotation(r("")))),
            (Method::GET, "/rotations/a%zz", Err(MalformedId)),
            (
                Method::POST,
                "/rotations/a%zz",
                Err(MethodNotAllowed(GET_HEAD)),
            ),
            (
                Method::POST,
                "/rotate/A",
                Ok(Rotate {
                    raw: r("A"),
                    force: false,
                }),
            ),
            (
                Method::POST,
                "/rotate/A?force=true",
                Ok(Rotate {
                    raw: r("A"),
                    force: true,
                }),
            ),
            (
                Method::POST,
                "/rotate/a%2Fb",
                Ok(Rotate {
                    raw: r("a%2Fb"),
                    force: false,
                }),
            ),
            (
                Method::POST,
                "/rotate/",
                Ok(Rotate {
                    raw: r(""),
                    force: false,
                }),
            ),
            (Method::GET, "/rotate/A", Err(MethodNotAllowed(POST))),
            (Method::POST, "/rotate", Err(NotFound)),
            (
                Method::POST,
                "/rollback/A",
                Ok(Rollback {
                    raw: r("A"),
                    force: false,
                }),
            ),
            (
                Method::POST,
                "/rollback/A?x=1&force=true",
                Ok(Rollback {
                    raw: r("A"),
                    force: true,
                }),
            ),
            (
                Method::POST,
                "/rollback/A?force",
                Ok(Rollback {
                    raw: r("A"),
                    force: true,
                }),
            ),
            (
                Method::POST,
                "/rollback/A?force=false",
                Ok(Rollback {
                    raw: r("A"),
                    force: false,
                }),
            ),
            (Method::GET, "/rollback/A", Err(MethodNotAllowed(POST))),
            (
                Method::POST,
                "/compromised/a%2Fb",
                Ok(Compromised(r("a%2Fb"))),
            ),
            (Method::GET, "/compromised/A", Err(MethodNotAllowed(POST))),
            (Method::GET, "/incidents", Ok(Incidents)),
            (Method::POST, "/incidents", Err(MethodNotAllowed(GET_HEAD))),
            (
                Method::GET,
                &format!("/incidents/{ID}"),
                Ok(Incident(r(ID))),
            ),
            (
                Method::GET,
                &format!("/incidents/{ID}/report.md"),
                Ok(IncidentReport(r(ID))),
            ),
            (
                Method::POST,
                &format!("/incidents/{ID}"),
                Err(MethodNotAllowed(GET_HEAD)),
            ),
            (Method::GET, "/incidents/abc", Err(NoSuchIncident)),
            (Method::GET, "/incidents/", Err(NoSuchIncident)),
            (Method::GET, "/", Err(NotFound)),
            (Method::GET, "/metrics/", Err(NotFound)),
            (Method::GET, "/secret", Err(NotFound)),
        ] {
            check(method, target, want);
        }
    }

    #[test]
    fn percent_decoding_is_done_once() {
        for (raw, want) in [
            ("abc", Some("abc")),
            ("a%2Fb", Some("a/b")),
            ("%252F", Some("%2F")),
            ("a%2", None),
            ("a%zz", None),
            ("%C3%A9", Some("é")),
            ("%C0%AE", None),
        ] {
            assert_eq!(percent_decode(raw).as_deref(), want, "{raw}");
        }
    }
}
