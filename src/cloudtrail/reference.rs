//! The scanner as it was before the block scan (commit c45f3ce): eight bytes at a time over
//! string bodies, byte by byte over skipped objects and arrays. Kept, for tests only, as the
//! oracle of the differential property tests: the block scanner must give the same result for
//! every input.

use std::borrow::Cow;

use super::{RawIdentity, RawRecord, RawRequest, Stop};

/// A lazy JSON scanner over a `&str`: it decodes only the fields asked for and skips every
/// other value by matching brackets and quotes (memchr over string bodies), without building
/// anything. Skipped values are checked for structure, not validated token by token.
pub(super) struct Scanner<'a> {
    /// The text.
    s: &'a str,
    /// Its bytes.
    b: &'a [u8],
    /// Position.
    pub(super) i: usize,
}

impl<'a> Scanner<'a> {
    pub(super) fn new(s: &'a str) -> Scanner<'a> {
        Scanner {
            s,
            b: s.as_bytes(),
            i: 0,
        }
    }

    fn peek(&self) -> Option<u8> {
        self.b.get(self.i).copied()
    }

    fn ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.peek() {
            self.i += 1;
        }
    }

    fn eat(&mut self, c: u8) -> Result<(), Stop> {
        self.ws();
        if self.peek() == Some(c) {
            self.i += 1;
            Ok(())
        } else {
            Err(Stop::Syntax)
        }
    }

    /// At an opening quote: returns the body's range and whether it holds escapes.
    pub(super) fn string_body(&mut self) -> Result<(usize, usize, bool), Stop> {
        if self.peek() != Some(b'"') {
            return Err(Stop::Syntax);
        }
        let start = self.i + 1;
        let mut j = start;
        let mut escaped = false;
        // Eight bytes at a time (SWAR): the first byte of a word equal to a quote or a
        // backslash is exact even when later bytes of the word give false positives.
        const LO: u64 = 0x0101_0101_0101_0101;
        const HI: u64 = 0x8080_8080_8080_8080;
        let has = |x: u64, c: u8| {
            let y = x ^ (LO * u64::from(c));
            y.wrapping_sub(LO) & !y & HI
        };
        loop {
            if let Some(chunk) = self.b.get(j..j + 8) {
                let mut word = [0u8; 8];
                word.copy_from_slice(chunk);
                let x = u64::from_le_bytes(word);
                let m = has(x, b'"') | has(x, b'\\');
                if m == 0 {
                    j += 8;
                    continue;
                }
                j += (m.trailing_zeros() / 8) as usize;
            }
            match self.b.get(j) {
                None => return Err(Stop::Syntax),
                Some(b'"') => {
                    self.i = j + 1;
                    return Ok((start, j, escaped));
                }
                Some(b'\\') => {
                    escaped = true;
                    j += 2;
                }
                Some(_) => j += 1,
            }
        }
    }

    /// A string value (or null) as a borrowed or, when escaped, decoded string.
    fn str_value(&mut self) -> Result<Option<Cow<'a, str>>, Stop> {
        self.ws();
        match self.peek() {
            Some(b'"') => {
                let (start, end, escaped) = self.string_body()?;
                if !escaped {
                    // Quotes are ASCII, so these are char boundaries.
                    return Ok(self.s.get(start..end).map(Cow::Borrowed));
                }
                let quoted = self.s.get(start - 1..end + 1).ok_or(Stop::Syntax)?;
                serde_json::from_str::<String>(quoted)
                    .map(|v| Some(Cow::Owned(v)))
                    .map_err(|_| Stop::Syntax)
            }
            Some(b'n') => self.literal(b"null").map(|_| None),
            Some(_) => {
                self.skip_value()?;
                Err(Stop::Type)
            }
            None => Err(Stop::Syntax),
        }
    }

    fn literal(&mut self, word: &[u8]) -> Result<(), Stop> {
        if self.b.get(self.i..self.i + word.len()) == Some(word) {
            self.i += word.len();
            Ok(())
        } else {
            Err(Stop::Syntax)
        }
    }

    /// Skips any value.
    pub(super) fn skip_value(&mut self) -> Result<(), Stop> {
        self.ws();
        match self.peek().ok_or(Stop::Syntax)? {
            b'"' => self.string_body().map(|_| ()),
            b'{' | b'[' => {
                // Open brackets as a bit stack (1 = object), 64 levels deep at most.
                let mut stack: u64 = 0;
                let mut depth: u32 = 0;
                loop {
                    let c = self.peek().ok_or(Stop::Syntax)?;
                    match c {
                        b'"' => {
                            self.string_body()?;
                            continue;
                        }
                        b'{' | b'[' => {
                            if depth == 64 {
                                return Err(Stop::Syntax);
                            }
                            stack = (stack << 1) | u64::from(c == b'{');
                            depth += 1;
                        }
                        b'}' | b']' => {
                            if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                                return Err(Stop::Syntax);
                            }
                            stack >>= 1;
                            depth -= 1;
                            if depth == 0 {
                                self.i += 1;
                                return Ok(());
                            }
                        }
                        _ => {}
                    }
                    self.i += 1;
                }
            }
            b't' => self.literal(b"true"),
            b'f' => self.literal(b"false"),
            b'n' => self.literal(b"null"),
            b'-' | b'0'..=b'9' => {
                let start = self.i;
                while let Some(b'0'..=b'9' | b'-' | b'+' | b'.' | b'e' | b'E') = self.peek() {
                    self.i += 1;
                }
                if self.i == start + 1 && self.b[start] == b'-' {
                    return Err(Stop::Syntax);
                }
                Ok(())
            }
            _ => Err(Stop::Syntax),
        }
    }

    /// Walks an object (or null, which calls nothing), calling `field` with each raw key; the
    /// callback must consume the value. Returns whether it was an object.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Scanner<'a>, &'a [u8]) -> Result<(), Stop>,
    ) -> Result<bool, Stop> {
        self.ws();
        match self.peek() {
            Some(b'{') => self.i += 1,
            Some(b'n') => return self.literal(b"null").map(|_| false),
            Some(_) => {
                self.skip_value()?;
                return Err(Stop::Type);
            }
            None => return Err(Stop::Syntax),
        }
        self.ws();
        if self.peek() == Some(b'}') {
            self.i += 1;
            return Ok(true);
        }
        loop {
            self.ws();
            let (start, end, _) = self.string_body()?;
            let key = self.b.get(start..end).ok_or(Stop::Syntax)?;
            self.eat(b':')?;
            self.ws();
            field(self, key)?;
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b'}') => {
                    self.i += 1;
                    return Ok(true);
                }
                _ => return Err(Stop::Syntax),
            }
        }
    }

    /// An array of strings (or null).
    fn str_array(&mut self) -> Result<Option<Vec<Cow<'a, str>>>, Stop> {
        self.ws();
        match self.peek() {
            Some(b'[') => self.i += 1,
            Some(b'n') => return self.literal(b"null").map(|_| None),
            Some(_) => {
                self.skip_value()?;
                return Err(Stop::Type);
            }
            None => return Err(Stop::Syntax),
        }
        let mut out = Vec::new();
        self.ws();
        if self.peek() == Some(b']') {
            self.i += 1;
            return Ok(Some(out));
        }
        loop {
            match self.str_value()? {
                Some(v) => out.push(v),
                None => return Err(Stop::Type),
            }
            self.ws();
            match self.peek() {
                Some(b',') => self.i += 1,
                Some(b']') => {
                    self.i += 1;
                    return Ok(Some(out));
                }
                _ => return Err(Stop::Syntax),
            }
        }
    }
}

/// Stores a decoded string; a type error is remembered, a syntax error stops the scan.
fn keep<'a>(
    r: Result<Option<Cow<'a, str>>, Stop>,
    slot: &mut Option<Cow<'a, str>>,
    type_error: &mut bool,
) -> Result<(), Stop> {
    match r {
        Ok(v) => {
            *slot = v;
            Ok(())
        }
        Err(Stop::Type) => {
            *type_error = true;
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Reads a record with the scanner. A type error is remembered and reported only once the
/// whole text proved to be JSON, so that a truncated record is "not JSON" whatever it holds.
pub(super) fn scan_record<'a>(text: &'a str, rec: &mut RawRecord<'a>) -> Result<(), Stop> {
    let mut sc = Scanner::new(text);
    let mut type_error = false;
    let is_object = sc.object(|sc, key| match key {
        b"eventID" => keep(sc.str_value(), &mut rec.event_id, &mut type_error),
        b"eventTime" => keep(sc.str_value(), &mut rec.event_time, &mut type_error),
        b"eventSource" => keep(sc.str_value(), &mut rec.event_source, &mut type_error),
        b"eventName" => keep(sc.str_value(), &mut rec.event_name, &mut type_error),
        b"sourceIPAddress" => keep(sc.str_value(), &mut rec.source_ip, &mut type_error),
        b"errorCode" => keep(sc.str_value(), &mut rec.error_code, &mut type_error),
        b"awsRegion" => keep(sc.str_value(), &mut rec.aws_region, &mut type_error),
        b"recipientAccountId" => keep(sc.str_value(), &mut rec.recipient_account, &mut type_error),
        b"userIdentity" => {
            let mut id = RawIdentity::default();
            let mut inner_type = false;
            let r = sc.object(|sc, key| {
                let slot = match key {
                    b"type" => &mut id.kind,
                    b"arn" => &mut id.arn,
                    b"invokedBy" => &mut id.invoked_by,
                    b"principalId" => &mut id.principal_id,
                    b"accountId" => &mut id.account_id,
                    b"sessionContext" => {
                        let mut issuer = None;
                        let r = sc.object(|sc, key| match key {
                            b"sessionIssuer" => sc
                                .object(|sc, key| match key {
                                    b"arn" => sc.str_value().map(|v| issuer = v),
                                    _ => sc.skip_value(),
                                })
                                .map(|_| ()),
                            _ => sc.skip_value(),
                        });
                        id.issuer_arn = issuer;
                        return r.map(|_| ());
                    }
                    _ => return sc.skip_value(),
                };
                match sc.str_value() {
                    Ok(v) => {
                        *slot = v;
                        Ok(())
                    }
                    Err(Stop::Type) => {
                        inner_type = true;
                        Ok(())
                    }
                    Err(e) => Err(e),
                }
            });
            match r {
                Ok(true) => rec.user_identity = Some(id),
                Ok(false) => {}
                Err(Stop::Type) => type_error = true,
                Err(e) => return Err(e),
            }
            if inner_type {
                type_error = true;
            }
            Ok(())
        }
        b"requestParameters" => {
            let mut req = RawRequest::default();
            let mut inner_type = false;
            let r = sc.object(|sc, key| {
                let got = match key {
                    b"secretId" => sc.str_value().map(|v| req.secret_id = v),
                    b"versionStage" => sc.str_value().map(|v| req.version_stage = v),
                    b"versionId" => sc.str_value().map(|v| req.version_id = v),
                    b"secretIdList" => sc.str_array().map(|v| req.secret_id_list = v),
                    _ => sc.skip_value(),
                };
                match got {
                    Err(Stop::Type) => {
                        inner_type = true;
                        Ok(())
                    }
                    other => other,
                }
            });
            match r {
                Ok(true) => rec.request = Some(req),
                Ok(false) => {}
                Err(Stop::Type) => type_error = true,
                Err(e) => return Err(e),
            }
            if inner_type {
                type_error = true;
            }
            Ok(())
        }
        _ => sc.skip_value(),
    });
    match is_object {
        Ok(true) => {}
        Ok(false) | Err(Stop::Type) => return Err(Stop::Syntax),
        Err(e) => return Err(e),
    }
    sc.ws();
    if sc.i != sc.b.len() {
        return Err(Stop::Syntax);
    }
    if type_error {
        return Err(Stop::Type);
    }
    Ok(())
}
