//! CloudTrail record parser and classifier (SPEC §4).
//!
//! [`parse`] reads one CloudTrail record (one CloudWatch Logs message) and borrows every field
//! it keeps from the input: a lazy scanner decodes only the fields keywarden needs and skips
//! every other value by matching quotes and brackets (no allocation, no number or escape
//! decoding), missing fields are tolerated, and non-JSON, oversized or malformed records (a
//! field keywarden reads with the wrong type) come back as a [`ParseError`] to be counted and
//! skipped. Strings with escapes are decoded with serde_json. A record without a backslash
//! (nearly all) is first indexed in one vector pass (`line_index`: its quotes and its brackets
//! outside strings, a bit per byte), and the scanner finds string ends and skips values from
//! the index; a record with one is scanned block by block. Both give the same results as the
//! first scanner, kept for the tests in `reference.rs`.
//! [`SecretIndex`] maps a `secretId` (name, full ARN or partial ARN) to a watched secret, built
//! once per cycle. [`EventName::of`], [`outcome_of`] and [`AccessCounts`] give the bounded metric
//! labels and the counting by them.
//!
//! This module does no I/O and never reads the clock.
//! Must never import anything of the crate but `domain` vocabulary. Unsafe code is allowed here
//! only (the SIMD line index), each block with its SAFETY comment.

use std::borrow::Cow;
use std::collections::HashMap;

pub use crate::domain::{EventName, Outcome};

#[cfg(test)]
mod fuzz;
mod line_index;
#[cfg(test)]
mod reference;

use line_index::LineIndex;

/// Records larger than this are skipped as oversized (CloudTrail records are a few KiB; the
/// CloudWatch Logs event limit is 256 KiB).
pub const MAX_RECORD_BYTES: usize = 256 * 1024;

/// The event source of Secrets Manager records.
pub const SECRETS_MANAGER: &str = "secretsmanager.amazonaws.com";

/// Why a record was skipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Larger than [`MAX_RECORD_BYTES`].
    Oversized,
    /// Not a JSON object.
    NotJson,
    /// JSON, but a field has the wrong type or a required field (eventID, eventName,
    /// eventSource) is missing.
    Malformed,
}

impl ParseError {
    /// A short name for logs.
    pub fn as_str(self) -> &'static str {
        match self {
            ParseError::Oversized => "oversized",
            ParseError::NotJson => "not_json",
            ParseError::Malformed => "malformed",
        }
    }
}

/// `userIdentity.type`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdentityType {
    /// An IAM user.
    IamUser,
    /// A role session.
    AssumedRole,
    /// An AWS service acting itself.
    AwsService,
    /// The account root user.
    Root,
    /// A federated user (GetFederationToken).
    FederatedUser,
    /// Another account.
    AwsAccount,
    /// IdentityCenterUser, Directory, SAMLUser, WebIdentityUser, Unknown, or absent.
    Other,
}

impl IdentityType {
    fn from_str(s: &str) -> IdentityType {
        match s {
            "IAMUser" => IdentityType::IamUser,
            "AssumedRole" => IdentityType::AssumedRole,
            "AWSService" => IdentityType::AwsService,
            "Root" => IdentityType::Root,
            "FederatedUser" => IdentityType::FederatedUser,
            "AWSAccount" => IdentityType::AwsAccount,
            _ => IdentityType::Other,
        }
    }
}

/// Classifies a CloudTrail `errorCode` as an access outcome.
pub fn outcome_of(error_code: Option<&str>) -> Outcome {
    match error_code {
        None | Some("") => Outcome::Success,
        Some(c)
            if c.contains("AccessDenied")
                || c.starts_with("Unauthorized")
                || c.starts_with("Client.Unauthorized")
                || c == "NotAuthorized" =>
        {
            Outcome::Denied
        }
        Some(_) => Outcome::Error,
    }
}

/// Access events counted by (watched secret, `event` label, outcome): the counting of the
/// access poller and of the benchmark. Keyed by the secret's position in its [`SecretIndex`]
/// and one small slot number for the pair of labels, so a count is one fast hash probe, and
/// memory follows the pairs seen, not the size of the inventory.
#[derive(Debug, Clone, Default)]
pub struct AccessCounts {
    by_key: HashMap<(usize, u8), u64, foldhash::fast::FixedState>,
}

impl AccessCounts {
    /// No counts.
    pub fn new() -> AccessCounts {
        AccessCounts::default()
    }

    /// Counts one event named `event_name` (any eventName: those outside the fixed list
    /// count as `other`) of secret `secret` with `outcome`.
    #[inline]
    pub fn add(&mut self, secret: usize, event_name: &str, outcome: Outcome) {
        let slot = EventName::of(event_name).index() * Outcome::COUNT + outcome.index();
        // At most EventName::COUNT * Outcome::COUNT = 30 slots.
        *self.by_key.entry((secret, slot as u8)).or_default() += 1;
    }

    /// Every count above zero: (secret, `event` label, outcome, count), in no order.
    pub fn iter(&self) -> impl Iterator<Item = (usize, EventName, Outcome, u64)> + '_ {
        self.by_key.iter().map(|(&(secret, slot), &n)| {
            let slot = usize::from(slot);
            (
                secret,
                EventName::ALL[slot / Outcome::COUNT],
                Outcome::ALL[slot % Outcome::COUNT],
                n,
            )
        })
    }

    /// How many (secret, event, outcome) series have a count.
    pub fn series(&self) -> usize {
        self.by_key.len()
    }

    /// The sum of every count.
    pub fn total(&self) -> u64 {
        self.by_key.values().sum()
    }
}

/// Whether an eventName reads the secret value.
pub fn is_read(name: &str) -> bool {
    name == "GetSecretValue" || name == "BatchGetSecretValue"
}

#[derive(Default)]
struct RawRecord<'a> {
    event_id: Option<Cow<'a, str>>,
    event_time: Option<Cow<'a, str>>,
    event_source: Option<Cow<'a, str>>,
    event_name: Option<Cow<'a, str>>,
    user_identity: Option<RawIdentity<'a>>,
    source_ip: Option<Cow<'a, str>>,
    error_code: Option<Cow<'a, str>>,
    request: Option<RawRequest<'a>>,
    aws_region: Option<Cow<'a, str>>,
    recipient_account: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct RawIdentity<'a> {
    kind: Option<Cow<'a, str>>,
    arn: Option<Cow<'a, str>>,
    invoked_by: Option<Cow<'a, str>>,
    principal_id: Option<Cow<'a, str>>,
    account_id: Option<Cow<'a, str>>,
    /// sessionContext.sessionIssuer.arn
    issuer_arn: Option<Cow<'a, str>>,
}

#[derive(Default)]
struct RawRequest<'a> {
    secret_id: Option<Cow<'a, str>>,
    secret_id_list: Option<Vec<Cow<'a, str>>>,
    version_stage: Option<Cow<'a, str>>,
    version_id: Option<Cow<'a, str>>,
}

/// Why the scanner stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The text is not well-formed JSON.
    Syntax,
    /// A field keywarden reads has the wrong type.
    Type,
}

/// Bytes a string body is classified by at once (see [`marks`]): most keys and values of a
/// CloudTrail record fit in one block.
const STRING_BLOCK: usize = 32;

/// Bytes a skipped object or array is classified by at once (see [`marks`]).
const BLOCK: usize = 64;

/// Where the bytes that matter to the scanner sit in one block: bit `k` of each mask stands for
/// byte `pos + k` of the text.
#[derive(Clone, Copy)]
struct Marks {
    /// `"`.
    quote: u64,
    /// `\`.
    backslash: u64,
    /// `{`, `}`, `[` or `]`.
    bracket: u64,
}

/// Classifies the `W` bytes of `b` from `pos` (`W` is 16, 32 or 64). Bytes past the end of `b`
/// count as none of the marks, so a scan that finds no mark and reaches the end of `b` knows
/// the text ended. Near the end, the last `W` bytes are classified and the masks shifted.
#[inline(always)]
fn marks<const W: usize>(b: &[u8], pos: usize) -> Marks {
    if let Some(block) = b
        .get(pos..pos + W)
        .and_then(|s| <&[u8; W]>::try_from(s).ok())
    {
        return marks_block(block);
    }
    let last = b.len().saturating_sub(W);
    if let Some(block) = b.get(last..).and_then(|s| <&[u8; W]>::try_from(s).ok())
        && pos >= last
        && pos < b.len()
    {
        let m = marks_block(block);
        let shift = pos - last;
        return Marks {
            quote: m.quote >> shift,
            backslash: m.backslash >> shift,
            bracket: m.bracket >> shift,
        };
    }
    let mut padded = [0u8; W];
    if let Some(tail) = b.get(pos..)
        && let Some(dst) = padded.get_mut(..tail.len())
    {
        dst.copy_from_slice(tail);
    }
    marks_block(&padded)
}

/// [`Marks`] of one block, 16 bytes at a time with SSE2 (part of the x86_64 baseline).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
fn marks_block<const W: usize>(block: &[u8; W]) -> Marks {
    use std::arch::x86_64::{
        __m128i, _mm_cmpeq_epi8, _mm_loadu_si128, _mm_movemask_epi8, _mm_or_si128, _mm_set1_epi8,
    };
    let mut m = Marks {
        quote: 0,
        backslash: 0,
        bracket: 0,
    };
    for (lane, bytes) in block.chunks_exact(16).enumerate() {
        // SAFETY: `bytes` is 16 readable bytes (chunks_exact), `_mm_loadu_si128` accepts any
        // alignment, and SSE2, the only feature these intrinsics need, is enabled on every
        // x86_64 target.
        let (q, bs, br) = unsafe {
            let v = _mm_loadu_si128(bytes.as_ptr().cast::<__m128i>());
            let q = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'"' as i8));
            let bs = _mm_cmpeq_epi8(v, _mm_set1_epi8(b'\\' as i8));
            // `[` and `]` are `{` and `}` without bit 0x20; no other byte maps onto those two.
            let folded = _mm_or_si128(v, _mm_set1_epi8(0x20));
            let br = _mm_or_si128(
                _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'{' as i8)),
                _mm_cmpeq_epi8(folded, _mm_set1_epi8(b'}' as i8)),
            );
            (
                _mm_movemask_epi8(q),
                _mm_movemask_epi8(bs),
                _mm_movemask_epi8(br),
            )
        };
        // movemask sets only the low 16 bits.
        let shift = 16 * lane;
        m.quote |= u64::from(q as u16) << shift;
        m.backslash |= u64::from(bs as u16) << shift;
        m.bracket |= u64::from(br as u16) << shift;
    }
    m
}

/// [`Marks`] of one block, byte by byte: the other architectures' version, and the tests'
/// reference for the SSE2 one.
#[cfg_attr(target_arch = "x86_64", allow(dead_code))]
#[inline(always)]
fn marks_block_portable<const W: usize>(block: &[u8; W]) -> Marks {
    let mut m = Marks {
        quote: 0,
        backslash: 0,
        bracket: 0,
    };
    for (k, &c) in block.iter().enumerate() {
        let bit = 1u64 << k;
        match c {
            b'"' => m.quote |= bit,
            b'\\' => m.backslash |= bit,
            b'{' | b'}' | b'[' | b']' => m.bracket |= bit,
            _ => {}
        }
    }
    m
}

#[cfg(not(target_arch = "x86_64"))]
#[inline(always)]
fn marks_block<const W: usize>(block: &[u8; W]) -> Marks {
    marks_block_portable(block)
}

/// The bits of `mask` at `from` and above (`from` < 64).
#[inline(always)]
fn from_bit(mask: u64, from: usize) -> u64 {
    mask & (u64::MAX << from)
}

thread_local! {
    /// Reused by every [`parse`] on the thread: it grows to the longest line seen (two bits
    /// per byte: 64 KiB for a record of [`MAX_RECORD_BYTES`]).
    static LINE_INDEX: std::cell::RefCell<LineIndex> = const {
        std::cell::RefCell::new(LineIndex::new())
    };
}

/// A lazy JSON scanner over a `&str`: it decodes only the fields asked for and skips every
/// other value by matching brackets and quotes, without building anything. Strings and skipped
/// objects and arrays are scanned [`BLOCK`] bytes at a time (see [`marks`]). Skipped values are
/// checked for structure, not validated token by token.
struct Scanner<'a, 'x, const INDEXED: bool> {
    /// The text.
    s: &'a str,
    /// Its bytes.
    b: &'a [u8],
    /// Position.
    i: usize,
    /// With `INDEXED`, the text's [`LineIndex`] (the text holds no backslash): strings and
    /// skipped values then end where the index says, without classifying their bytes again.
    /// Without, an empty index that nothing reads.
    index: &'x LineIndex,
}

/// The index of a scanner without one.
static NO_INDEX: LineIndex = LineIndex::new();

impl<'a> Scanner<'a, 'static, false> {
    /// A scanner that classifies the bytes of strings and skipped values block by block.
    fn new(s: &'a str) -> Scanner<'a, 'static, false> {
        Scanner {
            s,
            b: s.as_bytes(),
            i: 0,
            index: &NO_INDEX,
        }
    }

    /// A scanner of `s` that uses `index`, which must have been built from `s` (see
    /// [`LineIndex::build`]).
    fn indexed<'x>(s: &'a str, index: &'x LineIndex) -> Scanner<'a, 'x, true> {
        Scanner {
            s,
            b: s.as_bytes(),
            i: 0,
            index,
        }
    }
}

impl<'a, 'x, const INDEXED: bool> Scanner<'a, 'x, INDEXED> {
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
    #[inline(always)]
    fn string_body(&mut self) -> Result<(usize, usize, bool), Stop> {
        if self.peek() != Some(b'"') {
            return Err(Stop::Syntax);
        }
        let start = self.i + 1;
        if INDEXED {
            // No backslash in the text: the string ends at the next quote.
            let end = self.index.next_quote(start).ok_or(Stop::Syntax)?;
            self.i = end + 1;
            return Ok((start, end, false));
        }
        // Most strings end, unescaped, in their first block.
        if let Some(block) = self
            .b
            .get(start..start + STRING_BLOCK)
            .and_then(|s| <&[u8; STRING_BLOCK]>::try_from(s).ok())
        {
            let m = marks_block(block);
            let hits = m.quote | m.backslash;
            if hits & m.quote & hits.wrapping_neg() != 0 {
                let end = start + hits.trailing_zeros() as usize;
                self.i = end + 1;
                return Ok((start, end, false));
            }
        }
        self.string_body_blocks(start)
    }

    /// [`Scanner::string_body`] from `start`, the byte after the opening quote, block by block.
    #[inline(never)]
    fn string_body_blocks(&mut self, start: usize) -> Result<(usize, usize, bool), Stop> {
        let mut escaped = false;
        // Block by block: the first quote or backslash of a block is found from its masks; a
        // backslash escapes the byte after it, which may start the next block.
        let mut pos = start;
        while pos < self.b.len() {
            let m = marks::<STRING_BLOCK>(self.b, pos);
            let hits = m.quote | m.backslash;
            let mut from = 0;
            loop {
                let rest = from_bit(hits, from);
                if rest == 0 {
                    pos += STRING_BLOCK;
                    break;
                }
                let k = rest.trailing_zeros() as usize;
                if m.quote & (1 << k) != 0 {
                    self.i = pos + k + 1;
                    return Ok((start, pos + k, escaped));
                }
                escaped = true;
                from = k + 2;
                if from >= STRING_BLOCK {
                    pos += from;
                    break;
                }
            }
        }
        Err(Stop::Syntax)
    }

    /// A string value (or null) as a borrowed or, when escaped, decoded string.
    fn str_value(&mut self) -> Result<Option<Cow<'a, str>>, Stop> {
        let mut value = None;
        self.str_into(&mut value).map(|()| value)
    }

    /// [`Scanner::str_value`] stored straight into `slot` (a string, or `None` for null): a
    /// value of another type leaves `slot` as it was. Writing in place spares a round trip of
    /// the value through the stack, which the processor cannot forward to the 16-byte load.
    #[inline(always)]
    fn str_into(&mut self, slot: &mut Option<Cow<'a, str>>) -> Result<(), Stop> {
        self.ws();
        match self.peek() {
            Some(b'"') => {
                let (start, end, escaped) = self.string_body()?;
                if !escaped {
                    // Quotes are ASCII, so these are char boundaries.
                    *slot = self.s.get(start..end).map(Cow::Borrowed);
                    return Ok(());
                }
                let quoted = self.s.get(start - 1..end + 1).ok_or(Stop::Syntax)?;
                let v = serde_json::from_str::<String>(quoted).map_err(|_| Stop::Syntax)?;
                *slot = Some(Cow::Owned(v));
                Ok(())
            }
            Some(b'n') => {
                self.literal(b"null")?;
                *slot = None;
                Ok(())
            }
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

    /// Skips any value. A string, the most common skipped value, is skipped inline.
    #[inline(always)]
    fn skip_value(&mut self) -> Result<(), Stop> {
        self.ws();
        if self.peek() == Some(b'"') {
            return self.string_body().map(|_| ());
        }
        self.skip_non_string()
    }

    /// [`Scanner::skip_value`] of anything but a string, at its first byte.
    #[inline(never)]
    fn skip_non_string(&mut self) -> Result<(), Stop> {
        match self.peek().ok_or(Stop::Syntax)? {
            b'"' => self.string_body().map(|_| ()),
            b'{' | b'[' => self.skip_container(),
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

    /// At `{` or `[`: skips to after the matching bracket. Brackets are matched as a bit stack
    /// (1 = object), 64 levels deep at most; quotes and backslashes are followed so that
    /// brackets inside strings do not count. Block by block, from the masks of [`marks`].
    fn skip_container(&mut self) -> Result<(), Stop> {
        if INDEXED {
            return self.skip_container_indexed();
        }
        let mut stack: u64 = 0;
        let mut depth: u32 = 0;
        let mut in_string = false;
        let mut pos = self.i;
        while pos < self.b.len() {
            let m = marks::<BLOCK>(self.b, pos);
            let mut from = 0;
            loop {
                let hits = if in_string {
                    m.quote | m.backslash
                } else {
                    m.quote | m.bracket
                };
                let rest = from_bit(hits, from);
                if rest == 0 {
                    pos += BLOCK;
                    break;
                }
                let k = rest.trailing_zeros() as usize;
                // A mark lies inside the text (the padding holds none).
                let c = *self.b.get(pos + k).ok_or(Stop::Syntax)?;
                match c {
                    b'"' => in_string = !in_string,
                    b'\\' => {
                        // Only inside a string (not a mark outside): escapes the next byte.
                        from = k + 2;
                        if from >= BLOCK {
                            pos += from;
                            break;
                        }
                        continue;
                    }
                    b'{' | b'[' => {
                        if depth == 64 {
                            return Err(Stop::Syntax);
                        }
                        stack = (stack << 1) | u64::from(c == b'{');
                        depth += 1;
                    }
                    _ => {
                        // `}` or `]`.
                        if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                            return Err(Stop::Syntax);
                        }
                        stack >>= 1;
                        depth -= 1;
                        if depth == 0 {
                            self.i = pos + k + 1;
                            return Ok(());
                        }
                    }
                }
                from = k + 1;
                if from >= BLOCK {
                    pos += from;
                    break;
                }
            }
        }
        Err(Stop::Syntax)
    }

    /// [`Scanner::skip_container`] over the brackets outside strings that `index` lists: the
    /// same bit stack, without looking at any other byte.
    fn skip_container_indexed(&mut self) -> Result<(), Stop> {
        let index = self.index;
        let mut stack: u64 = 0;
        let mut depth: u32 = 0;
        let mut word = self.i / 64;
        let mut bits = index.bracket.get(word).ok_or(Stop::Syntax)? & (u64::MAX << (self.i % 64));
        loop {
            while bits == 0 {
                word += 1;
                bits = *index.bracket.get(word).ok_or(Stop::Syntax)?;
            }
            let pos = word * 64 + bits.trailing_zeros() as usize;
            bits &= bits - 1;
            let c = *self.b.get(pos).ok_or(Stop::Syntax)?;
            if c == b'{' || c == b'[' {
                if depth == 64 {
                    return Err(Stop::Syntax);
                }
                stack = (stack << 1) | u64::from(c == b'{');
                depth += 1;
            } else {
                if depth == 0 || (stack & 1 == 1) != (c == b'}') {
                    return Err(Stop::Syntax);
                }
                stack >>= 1;
                depth -= 1;
                if depth == 0 {
                    self.i = pos + 1;
                    return Ok(());
                }
            }
        }
    }

    /// Walks an object (or null, which calls nothing), calling `field` with each raw key; the
    /// callback must consume the value. Returns whether it was an object.
    fn object(
        &mut self,
        mut field: impl FnMut(&mut Scanner<'a, 'x, INDEXED>, &'a [u8]) -> Result<(), Stop>,
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
            // At the key (whitespace done).
            let (start, end, _) = self.string_body()?;
            let key = self.b.get(start..end).ok_or(Stop::Syntax)?;
            // Most often `:` and at most one space, then the value.
            match self.b.get(self.i..self.i + 3) {
                Some(&[b':', c, _]) if c > b' ' => self.i += 1,
                Some(&[b':', b' ', c]) if c > b' ' => self.i += 2,
                _ => {
                    self.eat(b':')?;
                    self.ws();
                }
            }
            field(self, key)?;
            // Most often `,` and at most one space, then the next key.
            match self.b.get(self.i..self.i + 3) {
                Some(&[b',', c, _]) if c > b' ' => {
                    self.i += 1;
                    continue;
                }
                Some(&[b',', b' ', c]) if c > b' ' => {
                    self.i += 2;
                    continue;
                }
                _ => {}
            }
            self.ws();
            match self.peek() {
                Some(b',') => {
                    self.i += 1;
                    self.ws();
                }
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

/// Reads an object field with `fill` (which returns whether it was an object rather than null)
/// into `slot`: the value replaces what `slot` held only when it was an object. Filled in
/// place when `slot` is empty, the common case: no copy of the struct.
#[inline(always)]
fn fill_in_place<T: Default>(
    slot: &mut Option<T>,
    fill: impl FnOnce(&mut T) -> Result<bool, Stop>,
) -> Result<bool, Stop> {
    if slot.is_some() {
        // A repeated key.
        let mut fresh = T::default();
        let r = fill(&mut fresh);
        if r == Ok(true) {
            *slot = Some(fresh);
        }
        return r;
    }
    let r = fill(slot.insert(T::default()));
    if r != Ok(true) {
        *slot = None;
    }
    r
}

/// A string field's result: a type error is remembered, a syntax error stops the scan.
#[inline(always)]
fn keep(r: Result<(), Stop>, type_error: &mut bool) -> Result<(), Stop> {
    match r {
        Err(Stop::Type) => {
            *type_error = true;
            Ok(())
        }
        other => other,
    }
}

/// Reads a record with the scanner into `rec` (filled in place: it is a few hundred bytes). A
/// type error is remembered and reported only once the whole text proved to be JSON, so that a
/// truncated record is "not JSON" whatever it holds.
fn scan_record<'a>(text: &'a str, rec: &mut RawRecord<'a>) -> Result<(), Stop> {
    LINE_INDEX.with_borrow_mut(|index| {
        if index.build(text.as_bytes()) {
            scan_record_with(Scanner::indexed(text, index), rec)
        } else {
            scan_record_with(Scanner::new(text), rec)
        }
    })
}

/// [`scan_record`] with the block scanner only (the tests compare both ways).
#[cfg(test)]
fn scan_record_blocks<'a>(text: &'a str, rec: &mut RawRecord<'a>) -> Result<(), Stop> {
    scan_record_with(Scanner::new(text), rec)
}

fn scan_record_with<'a, const INDEXED: bool>(
    mut sc: Scanner<'a, '_, INDEXED>,
    rec: &mut RawRecord<'a>,
) -> Result<(), Stop> {
    let mut type_error = false;
    let is_object = sc.object(|sc, key| match key {
        b"eventID" => keep(sc.str_into(&mut rec.event_id), &mut type_error),
        b"eventTime" => keep(sc.str_into(&mut rec.event_time), &mut type_error),
        b"eventSource" => keep(sc.str_into(&mut rec.event_source), &mut type_error),
        b"eventName" => keep(sc.str_into(&mut rec.event_name), &mut type_error),
        b"sourceIPAddress" => keep(sc.str_into(&mut rec.source_ip), &mut type_error),
        b"errorCode" => keep(sc.str_into(&mut rec.error_code), &mut type_error),
        b"awsRegion" => keep(sc.str_into(&mut rec.aws_region), &mut type_error),
        b"recipientAccountId" => keep(sc.str_into(&mut rec.recipient_account), &mut type_error),
        b"userIdentity" => {
            let mut inner_type = false;
            let r = fill_in_place(&mut rec.user_identity, |id| {
                sc.object(|sc, key| {
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
                                        b"arn" => sc.str_into(&mut issuer),
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
                    match sc.str_into(slot) {
                        Ok(()) => Ok(()),
                        Err(Stop::Type) => {
                            inner_type = true;
                            Ok(())
                        }
                        Err(e) => Err(e),
                    }
                })
            });
            match r {
                Ok(_) => {}
                Err(Stop::Type) => type_error = true,
                Err(e) => return Err(e),
            }
            if inner_type {
                type_error = true;
            }
            Ok(())
        }
        b"requestParameters" => {
            let mut inner_type = false;
            let r = fill_in_place(&mut rec.request, |req| {
                sc.object(|sc, key| {
                    let got = match key {
                        b"secretId" => sc.str_into(&mut req.secret_id),
                        b"versionStage" => sc.str_into(&mut req.version_stage),
                        b"versionId" => sc.str_into(&mut req.version_id),
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
                })
            });
            match r {
                Ok(_) => {}
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

/// One parsed CloudTrail record. Every string borrows from the input unless it held escapes.
#[derive(Debug, Clone, PartialEq)]
pub struct Record<'a> {
    /// CloudTrail eventID: the unit of exactly-once counting.
    pub event_id: Cow<'a, str>,
    /// eventTime as written (see [`Record::time_ms`]).
    pub event_time: Option<Cow<'a, str>>,
    /// eventSource.
    pub event_source: Cow<'a, str>,
    /// eventName.
    pub event_name: Cow<'a, str>,
    /// userIdentity.type.
    pub identity_type: IdentityType,
    /// The principal, named for every identity type (see `principal_name`).
    pub principal: Cow<'a, str>,
    /// For an assumed role: the role ARN of the session issuer.
    pub issuer: Option<Cow<'a, str>>,
    /// userIdentity.invokedBy: set when an AWS service made the call for the principal.
    pub invoked_by: Option<Cow<'a, str>>,
    /// sourceIPAddress (an IP, or a service host name for AWS service calls).
    pub source_ip: Option<Cow<'a, str>>,
    /// errorCode.
    pub error_code: Option<Cow<'a, str>>,
    /// requestParameters.secretId.
    pub secret_id: Option<Cow<'a, str>>,
    /// requestParameters.secretIdList (BatchGetSecretValue); empty when absent.
    pub secret_id_list: Vec<Cow<'a, str>>,
    /// requestParameters.versionStage.
    pub version_stage: Option<Cow<'a, str>>,
    /// requestParameters.versionId.
    pub version_id: Option<Cow<'a, str>>,
    /// awsRegion: the region of the call (which secret a plain name means).
    pub aws_region: Option<Cow<'a, str>>,
    /// recipientAccountId: the account the call was made to.
    pub recipient_account: Option<Cow<'a, str>>,
}

impl Record<'_> {
    /// eventTime in milliseconds since the epoch, when present and valid. Decoded on each call:
    /// most records are counted without it.
    pub fn time_ms(&self) -> Option<i64> {
        self.event_time.as_deref().and_then(parse_time_ms)
    }

    /// Every secret the call names: `secretId`, then each entry of `secretIdList`.
    pub fn secret_ids(&self) -> impl Iterator<Item = &str> {
        self.secret_id
            .as_deref()
            .into_iter()
            .chain(self.secret_id_list.iter().map(|id| id.as_ref()))
    }

    /// The outcome label.
    pub fn outcome(&self) -> Outcome {
        outcome_of(self.error_code.as_deref())
    }

    /// Whether an AWS service made this call (itself or on behalf of a principal).
    pub fn is_aws_service(&self) -> bool {
        self.identity_type == IdentityType::AwsService
            || self.invoked_by.is_some()
            || self
                .source_ip
                .as_deref()
                .is_some_and(|s| s.ends_with(".amazonaws.com"))
    }
}

/// Names the principal of a `userIdentity` for every type: the ARN for IAM users, role
/// sessions, federated users and root; the service (`invokedBy`) for AWS services; for another
/// account `account:<accountId>` with `/<principalId>` when known.
fn principal_name<'a>(kind: IdentityType, id: &mut RawIdentity<'a>) -> Cow<'a, str> {
    if kind == IdentityType::AwsService
        && let Some(s) = &id.invoked_by
    {
        return s.clone();
    }
    if kind != IdentityType::AwsAccount
        && let Some(arn) = id.arn.take().filter(|a| !a.is_empty())
    {
        return arn;
    }
    match (&id.account_id, &id.principal_id) {
        (Some(a), Some(p)) if kind == IdentityType::AwsAccount => {
            Cow::Owned(format!("account:{a}/{p}"))
        }
        (Some(a), None) => Cow::Owned(format!("account:{a}")),
        _ => match id.principal_id.take() {
            Some(p) => p,
            None => match &id.invoked_by {
                Some(s) => s.clone(),
                None => Cow::Borrowed("unknown"),
            },
        },
    }
}

/// Parses one CloudTrail record.
pub fn parse(message: &str) -> Result<Record<'_>, ParseError> {
    parse_with(message, scan_record)
}

/// [`parse`] with a given record scanner (the tests pass the reference scanner too).
#[inline(always)]
fn parse_with<'a>(
    message: &'a str,
    scan: impl FnOnce(&'a str, &mut RawRecord<'a>) -> Result<(), Stop>,
) -> Result<Record<'a>, ParseError> {
    if message.len() > MAX_RECORD_BYTES {
        return Err(ParseError::Oversized);
    }
    let trimmed = message.trim_start();
    if !trimmed.starts_with('{') {
        return Err(ParseError::NotJson);
    }
    let mut raw = RawRecord::default();
    match scan(trimmed, &mut raw) {
        Ok(()) => {}
        Err(Stop::Syntax) => return Err(ParseError::NotJson),
        Err(Stop::Type) => return Err(ParseError::Malformed),
    };
    let (Some(event_id), Some(event_source), Some(event_name)) =
        (raw.event_id, raw.event_source, raw.event_name)
    else {
        return Err(ParseError::Malformed);
    };
    if event_id.is_empty() {
        return Err(ParseError::Malformed);
    }
    let (identity_type, principal, issuer, invoked_by) = match raw.user_identity {
        Some(mut id) => {
            let kind = IdentityType::from_str(id.kind.as_deref().unwrap_or(""));
            let principal = principal_name(kind, &mut id);
            (kind, principal, id.issuer_arn, id.invoked_by)
        }
        None => (IdentityType::Other, Cow::Borrowed("unknown"), None, None),
    };
    let (secret_id, secret_id_list, version_stage, version_id) = match raw.request {
        Some(r) => (
            r.secret_id,
            r.secret_id_list.unwrap_or_default(),
            r.version_stage,
            r.version_id,
        ),
        None => (None, Vec::new(), None, None),
    };
    Ok(Record {
        event_id,
        event_time: raw.event_time,
        event_source,
        event_name,
        identity_type,
        principal,
        issuer,
        invoked_by,
        source_ip: raw.source_ip,
        error_code: raw.error_code.filter(|c| !c.is_empty()),
        secret_id,
        secret_id_list,
        version_stage,
        version_id,
        aws_region: raw.aws_region,
        recipient_account: raw.recipient_account,
    })
}

/// Parses a CloudTrail eventTime (`2024-05-01T12:34:56Z`, fractions and offsets tolerated) into
/// milliseconds since the epoch.
pub fn parse_time_ms(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() == 20
        && b[4] == b'-'
        && b[7] == b'-'
        && b[10] == b'T'
        && b[13] == b':'
        && b[16] == b':'
        && b[19] == b'Z'
    {
        let num = |r: std::ops::Range<usize>| -> Option<i64> {
            let mut v = 0i64;
            for &c in &b[r] {
                if !c.is_ascii_digit() {
                    return None;
                }
                v = v * 10 + i64::from(c - b'0');
            }
            Some(v)
        };
        let (y, mo, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
        let (h, mi, se) = (num(11..13)?, num(14..16)?, num(17..19)?);
        if !(1..=12).contains(&mo) || !(1..=31).contains(&d) || h > 23 || mi > 59 || se > 60 {
            return None;
        }
        let date = chrono::NaiveDate::from_ymd_opt(y as i32, mo as u32, d as u32)?;
        let days = date
            .signed_duration_since(chrono::NaiveDate::default())
            .num_days();
        return Some(((days * 86_400) + h * 3600 + mi * 60 + se) * 1000);
    }
    chrono::DateTime::parse_from_rfc3339(s)
        .ok()
        .map(|t| t.timestamp_millis())
}

/// Maps `secretId` values (name, full ARN or partial ARN) to watched secrets. Built once per
/// cycle from each secret's configured id, Secrets Manager name and ARN; a lookup costs a few
/// hash probes whatever the size of the inventory.
#[derive(Debug, Clone, Default)]
pub struct SecretIndex {
    /// Key (id, name, ARN, partial ARN) to the index of the secret in `names`.
    by_key: HashMap<String, usize, foldhash::fast::RandomState>,
    /// The `secret` labels.
    names: Vec<String>,
    /// The daemon's own account (empty when not known) and region: a plain name in a call to
    /// any other account or region is looked up qualified (`account:region:name`).
    home: Option<(String, String)>,
}

/// The ARN without the `-XXXXXX` suffix that Secrets Manager appends to names.
pub fn strip_arn_suffix(arn: &str) -> Option<&str> {
    let (head, suffix) = arn.rsplit_once('-')?;
    (suffix.len() == 6 && suffix.bytes().all(|c| c.is_ascii_alphanumeric())).then_some(head)
}

/// The part after `:secret:` of a Secrets Manager ARN.
fn arn_resource(id: &str) -> Option<&str> {
    if !id.starts_with("arn:") {
        return None;
    }
    id.split_once(":secret:").map(|(_, r)| r)
}

impl SecretIndex {
    /// An empty index.
    pub fn new() -> SecretIndex {
        SecretIndex::default()
    }

    /// An empty index whose plain names belong to `account` (empty: not known) and `region`.
    pub fn with_home(account: &str, region: &str) -> SecretIndex {
        SecretIndex {
            home: Some((account.to_string(), region.to_string())),
            ..SecretIndex::default()
        }
    }

    /// The qualifier of a call to `account` in `region`: `None` for the home account and
    /// region (or when the call does not say, or the index has no home).
    fn place_of<'k>(
        &self,
        account: Option<&'k str>,
        region: Option<&'k str>,
    ) -> Option<(&'k str, &'k str)> {
        let (home_account, home_region) = self.home.as_ref()?;
        let (account, region) = (account?, region?);
        let same_account = home_account.is_empty() || account == home_account;
        (!(same_account && region == home_region)).then_some((account, region))
    }

    /// [`SecretIndex::add`] for a secret of another account and region (`place`): its plain
    /// name and id are indexed qualified; its ARN forms as they are.
    pub fn add_at(
        &mut self,
        label: &str,
        id: &str,
        arn: Option<&str>,
        place: Option<(&str, &str)>,
    ) -> usize {
        let Some((account, region)) = place else {
            return self.add(label, id, arn);
        };
        let idx = self.position_of(label);
        let mut keys: Vec<String> = Vec::with_capacity(4);
        if arn_resource(id).is_some() {
            keys.push(id.to_string());
        } else {
            keys.push(crate::domain::targets::qualified_key(account, region, id));
        }
        if let Some(arn) = arn {
            keys.push(arn.to_string());
            if let Some(partial) = strip_arn_suffix(arn) {
                keys.push(partial.to_string());
            }
            if let Some(name) = arn_resource(arn).and_then(strip_arn_suffix) {
                keys.push(crate::domain::targets::qualified_key(account, region, name));
            }
        }
        for k in keys {
            self.by_key.entry(k).or_insert(idx);
        }
        idx
    }

    fn position_of(&mut self, label: &str) -> usize {
        match self.names.iter().position(|n| n == label) {
            Some(i) => i,
            None => {
                self.names.push(label.to_string());
                self.names.len() - 1
            }
        }
    }

    /// Adds a watched secret: its `secret` label, its configured id, and its ARN once known.
    /// Returns its position in [`SecretIndex::names`].
    pub fn add(&mut self, label: &str, id: &str, arn: Option<&str>) -> usize {
        let idx = self.position_of(label);
        let mut keys: Vec<&str> = vec![id];
        if let Some(arn) = arn {
            keys.push(arn);
            if let Some(partial) = strip_arn_suffix(arn) {
                keys.push(partial);
            }
            if let Some(name) = arn_resource(arn).and_then(strip_arn_suffix) {
                keys.push(name);
            }
        }
        for k in keys {
            self.by_key.entry(k.to_string()).or_insert(idx);
        }
        idx
    }

    /// The `secret` label a `secretId` refers to, if it is watched.
    pub fn resolve(&self, secret_id: &str) -> Option<&str> {
        self.resolve_index(secret_id)
            .map(|i| self.names[i].as_str())
    }

    /// [`SecretIndex::resolve_index`] for a call to `account` in `region` (the record's
    /// recipientAccountId and awsRegion): a plain name means the secret of that account and
    /// region; an ARN names its own.
    pub fn resolve_index_at(
        &self,
        secret_id: &str,
        account: Option<&str>,
        region: Option<&str>,
    ) -> Option<usize> {
        let hit_in = |place: Option<(&str, &str)>, k: &str| match place {
            None => self.by_key.get(k).copied(),
            Some((a, r)) => self
                .by_key
                .get(&crate::domain::targets::qualified_key(a, r, k))
                .copied(),
        };
        if arn_resource(secret_id).is_none() {
            return hit_in(self.place_of(account, region), secret_id);
        }
        if let Some(n) = self.by_key.get(secret_id).copied() {
            return Some(n);
        }
        if let Some(n) = strip_arn_suffix(secret_id).and_then(|k| self.by_key.get(k).copied()) {
            return Some(n);
        }
        let (arn_account, arn_region) = crate::domain::targets::arn_account_region(secret_id)?;
        let place = self.place_of(Some(arn_account), Some(arn_region));
        let resource = arn_resource(secret_id)?;
        hit_in(place, resource)
            .or_else(|| strip_arn_suffix(resource).and_then(|r| hit_in(place, r)))
    }

    /// The position in [`SecretIndex::names`] of the secret a `secretId` refers to.
    pub fn resolve_index(&self, secret_id: &str) -> Option<usize> {
        if self.home.is_some() {
            return self.resolve_index_at(secret_id, None, None);
        }
        let hit = |k: &str| self.by_key.get(k).copied();
        if let Some(n) = hit(secret_id) {
            return Some(n);
        }
        // An ARN whose form the index does not hold yet (metadata not read, or the configured
        // id is a name): try the partial ARN and the name with and without the suffix.
        let resource = arn_resource(secret_id)?;
        if let Some(n) = strip_arn_suffix(secret_id).and_then(hit) {
            return Some(n);
        }
        hit(resource).or_else(|| strip_arn_suffix(resource).and_then(hit))
    }

    /// Number of watched secrets.
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Whether no secret is watched.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// The `secret` labels.
    pub fn names(&self) -> &[String] {
        &self.names
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ACCOUNT: &str = "123456789012";

    fn record(identity: &str, extra: &str) -> String {
        format!(
            r#"{{"eventVersion":"1.09","userIdentity":{identity},"eventTime":"2024-05-01T12:00:00Z",
            "eventSource":"secretsmanager.amazonaws.com","eventName":"GetSecretValue",
            "awsRegion":"us-east-1","sourceIPAddress":"10.1.2.3","userAgent":"x",
            "requestParameters":{{"secretId":"svc/db"}},"responseElements":null,
            "eventID":"e-1","readOnly":true,"tlsDetails":{{"tlsVersion":"TLSv1.3"}}{extra}}}"#
        )
    }

    #[test]
    fn principals_are_named_for_every_identity_type() {
        let cases: &[(&str, IdentityType, &str)] = &[
            (
                r#"{"type":"IAMUser","principalId":"AIDA1","arn":"arn:aws:iam::123456789012:user/deploy","accountId":"123456789012","userName":"deploy"}"#,
                IdentityType::IamUser,
                "arn:aws:iam::123456789012:user/deploy",
            ),
            (
                r#"{"type":"AssumedRole","principalId":"AROA1:i-1","arn":"arn:aws:sts::123456789012:assumed-role/app/i-1","sessionContext":{"sessionIssuer":{"type":"Role","arn":"arn:aws:iam::123456789012:role/app"},"attributes":{"mfaAuthenticated":"false"}}}"#,
                IdentityType::AssumedRole,
                "arn:aws:sts::123456789012:assumed-role/app/i-1",
            ),
            (
                r#"{"type":"AWSService","invokedBy":"secretsmanager.amazonaws.com"}"#,
                IdentityType::AwsService,
                "secretsmanager.amazonaws.com",
            ),
            (
                r#"{"type":"Root","principalId":"123456789012","arn":"arn:aws:iam::123456789012:root","accountId":"123456789012"}"#,
                IdentityType::Root,
                "arn:aws:iam::123456789012:root",
            ),
            (
                r#"{"type":"FederatedUser","principalId":"123456789012:bob","arn":"arn:aws:sts::123456789012:federated-user/bob","accountId":"123456789012"}"#,
                IdentityType::FederatedUser,
                "arn:aws:sts::123456789012:federated-user/bob",
            ),
            (
                r#"{"type":"AWSAccount","principalId":"AIDAX","accountId":"111122223333"}"#,
                IdentityType::AwsAccount,
                "account:111122223333/AIDAX",
            ),
            (
                r#"{"type":"AWSAccount","accountId":"111122223333"}"#,
                IdentityType::AwsAccount,
                "account:111122223333",
            ),
            (
                r#"{"type":"IdentityCenterUser","principalId":"u-1"}"#,
                IdentityType::Other,
                "u-1",
            ),
            (r#"{}"#, IdentityType::Other, "unknown"),
        ];
        for (identity, kind, name) in cases {
            let text = record(identity, "");
            let r = parse(&text).unwrap_or_else(|e| panic!("{identity}: {e:?}"));
            assert_eq!(r.identity_type, *kind, "{identity}");
            assert_eq!(r.principal, *name, "{identity}");
        }
        let text = record(cases[1].0, "");
        let r = parse(&text).unwrap();
        assert_eq!(
            r.issuer.as_deref(),
            Some("arn:aws:iam::123456789012:role/app")
        );
        let _ = ACCOUNT;
    }

    #[test]
    fn fields_borrow_from_the_input() {
        let text = record(r#"{"type":"IAMUser","arn":"arn:aws:iam::1:user/u"}"#, "");
        let r = parse(&text).unwrap();
        assert!(matches!(r.event_id, Cow::Borrowed(_)));
        assert!(matches!(r.principal, Cow::Borrowed(_)));
        assert!(matches!(r.secret_id, Some(Cow::Borrowed(_))));
        assert_eq!(r.time_ms(), Some(1_714_564_800_000));
        assert_eq!(r.outcome(), Outcome::Success);
        assert_eq!(r.source_ip.as_deref(), Some("10.1.2.3"));
    }

    #[test]
    fn skipped_records_say_why() {
        let big = format!(
            "{{\"eventID\":\"x\",\"pad\":\"{}\"}}",
            "a".repeat(MAX_RECORD_BYTES)
        );
        let cases: &[(&str, Result<(), ParseError>)] = &[
            ("", Err(ParseError::NotJson)),
            ("hello world", Err(ParseError::NotJson)),
            ("[1,2]", Err(ParseError::NotJson)),
            ("{\"eventID\":", Err(ParseError::NotJson)),
            ("{\"eventID\":\"a\"} trailing", Err(ParseError::NotJson)),
            (
                "{\"eventID\":1,\"eventName\":\"x\",\"eventSource\":\"s\"}",
                Err(ParseError::Malformed),
            ),
            (
                "{\"eventName\":\"x\",\"eventSource\":\"s\"}",
                Err(ParseError::Malformed),
            ),
            (
                "{\"eventID\":\"\",\"eventName\":\"x\",\"eventSource\":\"s\"}",
                Err(ParseError::Malformed),
            ),
            (
                "{\"eventID\":\"a\",\"eventName\":\"x\",\"eventSource\":\"s\",\"requestParameters\":\"oops\"}",
                Err(ParseError::Malformed),
            ),
            (
                "{\"eventID\":\"a\",\"eventName\":\"x\",\"eventSource\":\"s\"}",
                Ok(()),
            ),
            (
                "{\"eventID\":\"a\",\"eventName\":\"x\",\"eventSource\":\"s\",\"requestParameters\":null,\"userIdentity\":null,\"eventTime\":\"garbage\"}",
                Ok(()),
            ),
            (&big, Err(ParseError::Oversized)),
        ];
        for (text, expected) in cases {
            let got = parse(text).map(|_| ());
            assert_eq!(&got, expected, "{}", &text[..text.len().min(80)]);
        }
    }

    #[test]
    fn access_counts_are_exact_per_secret_event_and_outcome() {
        let mut c = AccessCounts::new();
        assert_eq!((c.series(), c.total()), (0, 0));
        for _ in 0..3 {
            c.add(0, "GetSecretValue", Outcome::Success);
        }
        c.add(0, "GetSecretValue", Outcome::Denied);
        c.add(7, "RestoreSecret", Outcome::Error);
        c.add(7, "ListSecrets", Outcome::Success);
        c.add(7, "SomethingNew", Outcome::Success);
        let mut got: Vec<_> = c.iter().collect();
        got.sort_by_key(|&(i, e, o, _)| (i, e, o.as_str()));
        assert_eq!(
            got,
            [
                (0, EventName::GetSecretValue, Outcome::Denied, 1),
                (0, EventName::GetSecretValue, Outcome::Success, 3),
                (7, EventName::RestoreSecret, Outcome::Error, 1),
                (7, EventName::Other, Outcome::Success, 2),
            ]
        );
        assert_eq!((c.series(), c.total()), (4, 7));
        // Every label pair round-trips.
        for (e, name) in EventName::ALL.into_iter().enumerate() {
            for o in Outcome::ALL {
                let mut c = AccessCounts::new();
                c.add(e, name.as_str(), o);
                assert_eq!(c.iter().collect::<Vec<_>>(), [(e, name, o, 1)]);
            }
        }
    }

    #[test]
    fn batch_get_lists_every_secret_and_errors_classify() {
        let text = r#"{"eventID":"b","eventSource":"secretsmanager.amazonaws.com","eventName":"BatchGetSecretValue",
            "requestParameters":{"secretIdList":["a","arn:aws:secretsmanager:us-east-1:1:secret:b-AbC123"]},
            "errorCode":"AccessDenied"}"#;
        let r = parse(text).unwrap();
        assert_eq!(
            r.secret_ids().collect::<Vec<_>>(),
            ["a", "arn:aws:secretsmanager:us-east-1:1:secret:b-AbC123"]
        );
        assert_eq!(r.outcome(), Outcome::Denied);
        for (code, outcome) in [
            (None, Outcome::Success),
            (Some(""), Outcome::Success),
            (Some("AccessDenied"), Outcome::Denied),
            (Some("AccessDeniedException"), Outcome::Denied),
            (Some("UnauthorizedOperation"), Outcome::Denied),
            (Some("ResourceNotFoundException"), Outcome::Error),
            (Some("DecryptionFailure"), Outcome::Error),
        ] {
            assert_eq!(outcome_of(code), outcome, "{code:?}");
        }
        for (name, label) in [
            ("GetSecretValue", "GetSecretValue"),
            ("RestoreSecret", "RestoreSecret"),
            ("ListSecrets", "other"),
            ("TagResource", "other"),
        ] {
            assert_eq!(EventName::of(name).as_str(), label);
        }
    }

    #[test]
    fn times_parse_fast_and_slow_forms() {
        for (s, ms) in [
            ("1970-01-01T00:00:00Z", Some(0)),
            ("2024-02-29T23:59:59Z", Some(1_709_251_199_000)),
            ("2024-02-30T00:00:00Z", None),
            ("2024-05-01T12:00:00.250Z", Some(1_714_564_800_250)),
            ("2024-05-01T14:00:00+02:00", Some(1_714_564_800_000)),
            ("2024-13-01T00:00:00Z", None),
            ("yesterday", None),
        ] {
            assert_eq!(parse_time_ms(s), ms, "{s}");
        }
    }

    #[test]
    fn secret_ids_resolve_by_name_full_and_partial_arn() {
        let arn = "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db-AbC123";
        let mut with_meta = SecretIndex::new();
        with_meta.add("DB", "svc/db", Some(arn));
        let mut config_only = SecretIndex::new();
        config_only.add("DB", "svc/db", None);
        let mut by_partial = SecretIndex::new();
        by_partial.add(
            "DB",
            "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db",
            None,
        );
        for index in [&with_meta, &config_only, &by_partial] {
            for (id, expected) in [
                ("svc/db", true),
                (arn, true),
                (
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/db",
                    true,
                ),
                ("svc/d", false),
                ("svc/db-AbC123x", false),
                (
                    "arn:aws:secretsmanager:us-east-1:123456789012:secret:svc/other-AbC123",
                    false,
                ),
            ] {
                let got = index.resolve(id);
                if std::ptr::eq(index, &by_partial) && id == "svc/db" {
                    // A partial ARN in the configuration does not name a bare name until the
                    // metadata poller reports the ARN.
                    continue;
                }
                assert_eq!(got.is_some(), expected, "{id}");
            }
        }
        assert_eq!(with_meta.resolve(arn), Some("DB"));
    }

    mod fuzz {
        //! Property tests: no input makes the parser, the index or the detector panic. Run
        //! longer with `PROPTEST_CASES=1000000 cargo test --release --lib cloudtrail::tests::fuzz`.
        use super::super::*;
        use crate::access::detect::{Detector, Event, Policy, Thresholds};
        use proptest::prelude::*;

        pub(super) const VALID: &str = r#"{"eventVersion":"1.09","userIdentity":{"type":"AssumedRole","principalId":"AROA:i","arn":"arn:aws:sts::1:assumed-role/app/i","accountId":"1","invokedBy":"x","sessionContext":{"sessionIssuer":{"arn":"arn:aws:iam::1:role/app"}}},"eventTime":"2024-05-01T12:00:00Z","eventSource":"secretsmanager.amazonaws.com","eventName":"BatchGetSecretValue","sourceIPAddress":"10.0.0.1","errorCode":"AccessDenied","requestParameters":{"secretId":"arn:aws:secretsmanager:us-east-1:1:secret:svc/db-AbC123","secretIdList":["a","b"],"versionStage":"AWSPREVIOUS","versionId":"v1"},"eventID":"e\u0031"}"#;

        fn exercise(text: &str) {
            let mut index = SecretIndex::new();
            index.add(
                "DB",
                "svc/db",
                Some("arn:aws:secretsmanager:us-east-1:1:secret:svc/db-AbC123"),
            );
            let _ = parse_time_ms(text);
            let _ = index.resolve(text);
            let _ = strip_arn_suffix(text);
            if let Ok(r) = parse(text) {
                let _ = EventName::of(&r.event_name);
                let _ = r.is_aws_service();
                for id in r.secret_ids() {
                    let _ = index.resolve(id);
                }
                let mut d = Detector::new(
                    Thresholds {
                        baseline_ms: 86_400_000,
                        spike_factor: 1.0,
                        spike_min_reads: 1,
                        denied_burst: 1,
                        max_principals: 2,
                    },
                    0,
                );
                let allowed = ["10.0.0.0/8".parse().unwrap()];
                let consumers = crate::config::ConsumerPatterns::empty();
                let policy = Policy {
                    consumers: Some(&consumers),
                    allowed_sources: &allowed,
                    grace_ms: 0,
                    last_rotated_ms: Some(r.time_ms().unwrap_or(0).saturating_sub(1)),
                    current_version: Some("v2"),
                };
                let ev = Event {
                    event_id: &r.event_id,
                    time_ms: r.time_ms().unwrap_or(0),
                    event_name: &r.event_name,
                    outcome: r.outcome(),
                    principal: &r.principal,
                    source_ip: r.source_ip.as_deref(),
                    aws_service: r.is_aws_service(),
                    version_stage: r.version_stage.as_deref(),
                    version_id: r.version_id.as_deref(),
                };
                for learning in [true, false, false] {
                    let _ = d.observe("DB", &policy, &ev, learning);
                }
                d.expire(ev.time_ms);
            }
        }

        /// Arbitrary JSON values, to splice into records.
        fn json_value() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                Just(serde_json::Value::Null),
                any::<bool>().prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                any::<f64>().prop_map(|f| serde_json::json!(f)),
                ".*".prop_map(serde_json::Value::from),
                "[0-9T:Z.+-]{0,30}".prop_map(serde_json::Value::from),
            ];
            leaf.prop_recursive(4, 32, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map(
                        prop_oneof![
                            Just("type".to_string()),
                            Just("arn".to_string()),
                            Just("secretId".to_string()),
                            Just("secretIdList".to_string()),
                            Just("sessionIssuer".to_string()),
                            Just("sessionContext".to_string()),
                            Just("accountId".to_string()),
                            Just("principalId".to_string()),
                            ".{0,8}"
                        ],
                        inner,
                        0..6
                    )
                    .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        proptest! {
            #[test]
            fn arbitrary_text_never_panics(text in ".*") {
                exercise(&text);
            }

            #[test]
            fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..2048)) {
                exercise(&String::from_utf8_lossy(&bytes));
            }

            #[test]
            fn truncated_and_mutated_records_never_panic(
                cut in 0usize..VALID.len(),
                at in 0usize..VALID.len(),
                insert in ".{0,8}",
            ) {
                exercise(&VALID[..cut]);
                let mut s: String = VALID.to_string();
                let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                s.insert_str(at, &insert);
                exercise(&s);
                // Whatever serde_json accepts as an object, the scanner reads as JSON too.
                if let Ok(serde_json::Value::Object(_)) = serde_json::from_str::<serde_json::Value>(&s) {
                    prop_assert_ne!(parse(&s).err(), Some(ParseError::NotJson), "{}", s);
                }
            }

            #[test]
            fn fields_of_any_type_never_panic(
                field in prop_oneof![
                    Just("eventID"), Just("eventTime"), Just("eventSource"), Just("eventName"),
                    Just("userIdentity"), Just("sourceIPAddress"), Just("errorCode"),
                    Just("requestParameters"),
                ],
                value in json_value(),
            ) {
                let mut v: serde_json::Value = serde_json::from_str(VALID).unwrap();
                v[field] = value.clone();
                let text = v.to_string();
                exercise(&text);
                // Differential check against serde_json: a string or null where a string is
                // read keeps the record; another type makes it malformed.
                let string_field = field != "userIdentity" && field != "requestParameters";
                let got = parse(&text);
                if string_field {
                    let required = matches!(field, "eventID" | "eventSource" | "eventName");
                    match &value {
                        serde_json::Value::String(x) if !(required && field == "eventID" && x.is_empty()) => {
                            let r = got.unwrap();
                            let read = match field {
                                "eventID" => Some(r.event_id.to_string()),
                                "eventSource" => Some(r.event_source.to_string()),
                                "eventName" => Some(r.event_name.to_string()),
                                "sourceIPAddress" => r.source_ip.map(|c| c.to_string()),
                                "errorCode" => r.error_code.map(|c| c.to_string()),
                                _ => Some(x.clone()),
                            };
                            if field != "errorCode" || !x.is_empty() {
                                prop_assert_eq!(read, Some(x.clone()));
                            }
                        }
                        serde_json::Value::Null if !required => prop_assert!(got.is_ok()),
                        serde_json::Value::String(_) | serde_json::Value::Null => {
                            prop_assert_eq!(got.err(), Some(ParseError::Malformed))
                        }
                        _ => prop_assert_eq!(got.err(), Some(ParseError::Malformed)),
                    }
                } else if matches!(value, serde_json::Value::Object(_) | serde_json::Value::Null) {
                    // Objects are read field by field; only their string fields can fail.
                } else {
                    prop_assert_eq!(got.err(), Some(ParseError::Malformed));
                }
            }
        }
    }

    mod block_scan {
        //! Differential property tests of the block scanner against the scanner it replaced
        //! (`reference.rs`): same result and same end position for every skipped value and
        //! string, and the same parse of whole records. The inputs are dense in the bytes the
        //! block scan looks for (quotes, backslashes, brackets), put them at every offset from
        //! a block boundary, and nest past the 64-level limit. Run longer with
        //! `PROPTEST_CASES=200000 cargo test --release --lib cloudtrail::tests::block_scan`.
        use super::super::line_index::Kernel;
        use super::super::reference;
        use super::super::*;
        use proptest::prelude::*;

        /// A fragment of JSON-like text, heavy in the bytes the scanner treats specially.
        fn piece() -> impl Strategy<Value = String> {
            prop_oneof![
                4 => "[a-zA-Z0-9 ,:.]{1,40}",
                3 => Just("\"".to_string()),
                2 => Just("\\".to_string()),
                2 => Just("\\\"".to_string()),
                2 => Just("\\\\".to_string()),
                1 => Just("\\\\\"".to_string()),
                3 => prop::sample::select(vec!["{", "}", "[", "]", "{}", "[]", "\"\""])
                    .prop_map(String::from),
                1 => prop::sample::select(vec!["é", "\u{1F600}", "\u{7f}", "\u{0}", "\n"])
                    .prop_map(String::from),
            ]
        }

        fn soup(max: usize) -> impl Strategy<Value = String> {
            prop::collection::vec(piece(), 0..max).prop_map(|v| v.concat())
        }

        /// Nested objects and arrays `depth` deep around `inner`, keys and strings holding
        /// brackets, quotes and backslashes; `cut` drops that many closing brackets.
        fn nested() -> impl Strategy<Value = String> {
            (
                prop::collection::vec((any::<bool>(), 0usize..40), 0..80),
                soup(6),
                0usize..3,
                "[a-z\\]\\[{}]{0,3}",
            )
                .prop_map(|(levels, inner, cut, tail)| {
                    let mut s = String::new();
                    for (object, pad) in &levels {
                        if *object {
                            s.push_str(&format!("{{\"k{}]\\\"\":", "}".repeat(*pad % 5)));
                        } else {
                            s.push('[');
                        }
                        s.push_str(&format!("\"{}\\\\\",", "x".repeat(*pad)));
                    }
                    s.push_str(&serde_json::to_string(&inner).unwrap_or_default());
                    for (object, _) in levels.iter().rev().skip(cut) {
                        s.push(if *object { '}' } else { ']' });
                    }
                    s.push_str(&tail);
                    s
                })
        }

        /// Valid JSON values whose strings hold the scanner's special bytes (escaped by
        /// serde_json), of every length around the block sizes.
        fn tricky_json() -> impl Strategy<Value = serde_json::Value> {
            let leaf = prop_oneof![
                "[\"\\\\{}\\[\\]a é]{0,70}".prop_map(serde_json::Value::from),
                ".{0,40}".prop_map(serde_json::Value::from),
                any::<i64>().prop_map(serde_json::Value::from),
                Just(serde_json::Value::Null),
            ];
            leaf.prop_recursive(6, 48, 6, |inner| {
                prop_oneof![
                    prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::from),
                    prop::collection::btree_map("[\"\\\\{}\\[\\]a]{0,34}", inner, 0..6)
                        .prop_map(|m| serde_json::Value::Object(m.into_iter().collect())),
                ]
            })
        }

        /// The block scanner and, when `text` has no backslash, the indexed one skip `text`
        /// like the old scanner, and read a string at its start like it.
        ///
        /// The indexed scanner runs once with the index of each kernel this processor has
        /// (`Kernel::under_test` prints which were tested and which were not available).
        fn same_skip(text: &str) -> Result<(), TestCaseError> {
            like_reference(text, "blocks", || Scanner::new(text))?;
            for kernel in Kernel::under_test() {
                let mut index = LineIndex::new();
                // SAFETY: `Kernel::under_test` lists only kernels this processor has.
                if unsafe { index.build_with(kernel, text.as_bytes()) } {
                    let what = format!("indexed ({kernel:?} kernel)");
                    like_reference(text, &what, || Scanner::indexed(text, &index))?;
                }
            }
            Ok(())
        }

        /// [`scan_record`] with the line index built by `kernel` (one this processor has).
        fn scan_record_kernel<'a>(
            kernel: Kernel,
            text: &'a str,
            rec: &mut RawRecord<'a>,
        ) -> Result<(), Stop> {
            let mut index = LineIndex::new();
            // SAFETY: the callers take `kernel` from `Kernel::under_test`, which lists only
            // kernels this processor has.
            if unsafe { index.build_with(kernel, text.as_bytes()) } {
                scan_record_with(Scanner::indexed(text, &index), rec)
            } else {
                scan_record_with(Scanner::new(text), rec)
            }
        }

        /// A skipped value and a string at the start of `text`: same result and end position
        /// from a scanner made by `scanner` as from the old one.
        fn like_reference<'a, 'x, const INDEXED: bool>(
            text: &'a str,
            what: &str,
            scanner: impl Fn() -> Scanner<'a, 'x, INDEXED>,
        ) -> Result<(), TestCaseError> {
            let (mut new, mut old) = (scanner(), reference::Scanner::new(text));
            let (a, b) = (new.skip_value(), old.skip_value());
            prop_assert_eq!(a, b, "{} skip {:?}", what, text);
            if a.is_ok() {
                prop_assert_eq!(new.i, old.i, "{} skip end {:?}", what, text);
            }
            let (mut new, mut old) = (scanner(), reference::Scanner::new(text));
            let (a, b) = (new.string_body(), old.string_body());
            prop_assert_eq!(a, b, "{} string {:?}", what, text);
            if a.is_ok() {
                prop_assert_eq!(new.i, old.i, "{} string end {:?}", what, text);
            }
            Ok(())
        }

        /// `parse` gives what the old scanner gives, with the line index (any text without a
        /// backslash) of each kernel this processor has, and without it.
        fn same_parse(text: &str) -> Result<(), TestCaseError> {
            let old = parse_with(text, reference::scan_record);
            prop_assert_eq!(parse(text), old.clone(), "{:?}", text);
            for kernel in Kernel::under_test() {
                prop_assert_eq!(
                    parse_with(text, |t, rec| scan_record_kernel(kernel, t, rec)),
                    old.clone(),
                    "indexed ({:?} kernel) {:?}",
                    kernel,
                    text
                );
            }
            prop_assert_eq!(
                parse_with(text, scan_record_blocks),
                old,
                "blocks {:?}",
                text
            );
            Ok(())
        }

        /// A record with `value` as the value of a skipped field and of each field keywarden
        /// reads.
        fn records(value: &str) -> Vec<String> {
            let valid = super::fuzz::VALID;
            let body = &valid[1..];
            let mut out = vec![
                format!("{{\"skipped\":{value},{body}"),
                format!("{{\"skipped\": {value} ,{body}"),
            ];
            for field in [
                "eventID",
                "userIdentity",
                "requestParameters",
                "errorCode",
                "sessionContext",
                "secretIdList",
            ] {
                out.push(format!("{{{body}").replacen(
                    &format!("\"{field}\":"),
                    &format!("\"{field}\":{value},\"{field}_was\":"),
                    1,
                ));
            }
            out
        }

        #[test]
        fn sse2_marks_match_the_portable_ones() {
            let mut block = [b'a'; BLOCK];
            for k in 0..BLOCK {
                for c in [b'"', b'\\', b'{', b'}', b'[', b']', b'{' ^ 0x20, 0x80, 0xfb] {
                    block[k] = c;
                    let (x, y) = (marks_block(&block), marks_block_portable(&block));
                    assert_eq!(
                        (x.quote, x.backslash, x.bracket),
                        (y.quote, y.backslash, y.bracket)
                    );
                }
            }
        }

        /// [`marks`] at `pos` of `text`, byte by byte.
        fn naive_marks(text: &[u8], pos: usize, width: usize) -> (u64, u64, u64) {
            let mut m = (0, 0, 0);
            for (k, c) in text.iter().skip(pos).take(width).enumerate() {
                match c {
                    b'"' => m.0 |= 1 << k,
                    b'\\' => m.1 |= 1 << k,
                    b'{' | b'}' | b'[' | b']' => m.2 |= 1 << k,
                    _ => {}
                }
            }
            m
        }

        #[test]
        fn marks_near_the_end_match() {
            let mut text = Vec::new();
            for len in 0..3 * BLOCK {
                text.push(b"\"\\{}[]a "[len * 7 % 8]);
                for pos in 0..=len + 1 {
                    let m = marks::<BLOCK>(&text, pos);
                    assert_eq!(
                        (m.quote, m.backslash, m.bracket),
                        naive_marks(&text, pos, BLOCK)
                    );
                    let m = marks::<STRING_BLOCK>(&text, pos);
                    assert_eq!(
                        (m.quote, m.backslash, m.bracket),
                        naive_marks(&text, pos, STRING_BLOCK)
                    );
                }
            }
        }

        #[test]
        fn edge_cases_match() {
            let mut cases: Vec<String> = vec![
                "".into(),
                "\"".into(),
                "\"\\".into(),
                "\"\\\"".into(),
                "[\\\"]".into(),
                "{\"a\\\\\":[\"]\"]}".into(),
                "[".repeat(64) + &"]".repeat(64),
                "[".repeat(65) + &"]".repeat(65),
                "{\"a\":".repeat(64) + "1" + &"}".repeat(64),
                "{\"a\":".repeat(65) + "1" + &"}".repeat(65),
            ];
            for n in 0..3 * BLOCK {
                let x = "x".repeat(n);
                cases.push(format!("\"{x}\\\"\""));
                cases.push(format!("\"{x}\\\\\"\""));
                cases.push(format!("\"{x}\\"));
                cases.push(format!("[\"{x}\\\"]\"]"));
                cases.push(format!("[\"{x}\\\\\"]"));
                cases.push(format!("{{\"{x}\":[{{}}]}}"));
                cases.push(format!("[{x}]"));
                cases.push(format!("[{x}"));
            }
            for text in &cases {
                same_skip(text).unwrap();
                for r in records(text) {
                    same_parse(&r).unwrap();
                }
            }
        }

        /// Every form of the separators between a key and its value and between two fields
        /// (the scanner takes `:`/`,` with at most one space in one test, anything else the
        /// long way), and every truncation of the result.
        #[test]
        fn separators_parse_like_before() {
            let forms = [
                "", " ", "  ", "\t", "\n", "\r\n", " \t", "\u{1}", "\u{b}", "x",
            ];
            for before in ["", " ", "\n"] {
                for after in forms {
                    for (colon, comma) in [(":", ","), (":", ";"), (";", ","), ("", ",")] {
                        let c = format!("{before}{colon}{after}");
                        let s = format!("{before}{comma}{after}");
                        let text = format!(
                            "{{\"eventID\"{c}\"e\"{s}\"eventSource\"{c}\"secretsmanager.amazonaws.com\"{s}\"n\"{c}1{s}\"t\"{c}true{s}\"eventName\"{c}\"GetSecretValue\"{s}\"userIdentity\"{c}{{\"type\"{c}\"IAMUser\"{s}\"arn\"{c}\"a\"}}{s}\"requestParameters\"{c}{{\"secretId\"{c}\"s\"}}{s}\"o\"{c}{{\"k\"{c}[1{s}2]}}}}"
                        );
                        for cut in 0..=text.len() {
                            if text.is_char_boundary(cut) {
                                same_parse(&text[..cut]).unwrap();
                            }
                        }
                    }
                }
            }
            // The parse above really takes the fast forms.
            let compact = r#"{"eventID":"e","eventSource":"s","eventName":"n"}"#;
            let spaced = r#"{"eventID": "e", "eventSource": "s", "eventName": "n"}"#;
            assert!(parse(compact).is_ok() && parse(spaced).is_ok());
        }

        /// A repeated userIdentity or requestParameters: an object replaces the one before, a
        /// null or a value of another type leaves it (the parse fills the first in place).
        #[test]
        fn repeated_object_fields_parse_like_before() {
            let values = [
                r#"{"type":"IAMUser","arn":"arn:aws:iam::1:user/a"}"#,
                r#"{"arn":"arn:aws:iam::1:user/b","secretId":"s2"}"#,
                r#"{"secretId":"s1","versionStage":"AWSCURRENT"}"#,
                "null",
                "{}",
                "1",
                "\"x\"",
                r#"{"arn":1}"#,
                r#"{"arn":"#,
            ];
            for field in ["userIdentity", "requestParameters"] {
                for a in values {
                    for b in values {
                        let text = format!(
                            r#"{{"eventID":"e","eventSource":"s","eventName":"n","{field}":{a},"{field}":{b}}}"#
                        );
                        same_parse(&text).unwrap();
                    }
                }
            }
        }

        proptest! {
            #[test]
            fn soup_skips_like_before(pad in 0usize..70, open in "[\\[{\"]", body in soup(40)) {
                let text = format!("{}{open}{body}", " ".repeat(pad % 3));
                same_skip(&text)?;
                same_skip(&body)?;
            }

            #[test]
            fn nested_values_skip_like_before(text in nested()) {
                same_skip(&text)?;
                for r in records(&text) {
                    same_parse(&r)?;
                }
            }

            #[test]
            fn json_values_skip_like_before(value in tricky_json()) {
                let text = value.to_string();
                same_skip(&text)?;
                let mut v: serde_json::Value = serde_json::from_str(super::fuzz::VALID).unwrap();
                v["tlsDetails"] = value.clone();
                v["userIdentity"]["sessionContext"]["attributes"] = value.clone();
                same_parse(&v.to_string())?;
                for r in records(&text) {
                    same_parse(&r)?;
                }
            }

            #[test]
            fn records_with_soup_parse_like_before(value in soup(30)) {
                for r in records(&value) {
                    same_parse(&r)?;
                }
            }

            #[test]
            fn mutated_records_parse_like_before(
                cut in 0usize..super::fuzz::VALID.len(),
                at in 0usize..super::fuzz::VALID.len(),
                insert in soup(4),
            ) {
                let valid = super::fuzz::VALID;
                same_parse(&valid[..cut])?;
                let mut s = valid.to_string();
                let at = (0..=at).rev().find(|i| s.is_char_boundary(*i)).unwrap_or(0);
                s.insert_str(at, &insert);
                same_parse(&s)?;
            }

            #[test]
            fn arbitrary_text_parses_like_before(text in ".*") {
                same_parse(&text)?;
                same_skip(&text)?;
            }
        }
    }
}
