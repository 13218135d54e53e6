//! Glob patterns over principal ARNs (the `consumers` of a secret), kept compact.
//!
//! The syntax and the matching are those of the `glob` crate with its default options, which
//! keywarden used before: `*` any run of characters (including `/`), `?` one character,
//! `[abc]`, `[a-z]` and `[!a-z]` classes, `**` only as a whole `/`-separated component (then it
//! matches zero or more components). The difference is the footprint: a pattern is its text
//! plus a few tokens that point into it (a run of literal characters is one token), about
//! 100 bytes for a typical role pattern, where a token per character cost about 2 KB, which a
//! fleet of 10,000 secrets pays 10,000 times. `tests` checks both against each other on
//! arbitrary patterns and inputs.
//!
//! This module does no I/O.

use std::fmt;

/// Why a pattern is not a valid glob.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{msg} at character {pos}")]
pub struct GlobError {
    /// Index of the offending character (in characters, from 0).
    pub pos: usize,
    /// What is wrong.
    pub msg: &'static str,
}

const ERROR_WILDCARDS: &str = "wildcards are either regular `*` or recursive `**`";
const ERROR_RECURSIVE_WILDCARDS: &str = "recursive wildcards must form a single path component";
const ERROR_INVALID_RANGE: &str = "invalid range pattern";

/// One token; offsets are byte offsets into the pattern text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Token {
    /// Characters that must appear as they are.
    Literal { start: u32, end: u32 },
    /// `?`.
    AnyChar,
    /// `*`.
    AnySequence,
    /// `**` (with its following `/`, when there is one).
    AnyComponents,
    /// `[...]` or `[!...]`: the text between the brackets (after the `!`).
    Class { start: u32, end: u32, negated: bool },
}

/// A compiled glob over principal ARNs.
#[derive(Clone, PartialEq, Eq)]
pub struct PrincipalGlob {
    text: Box<str>,
    tokens: Box<[Token]>,
}

impl fmt::Debug for PrincipalGlob {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("PrincipalGlob").field(&self.text).finish()
    }
}

/// The outcome of matching from a token on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Outcome {
    Match,
    /// This attempt failed; a star before it may try a longer run.
    NoMatchHere,
    /// The input ran out: no longer run of an earlier star can match either.
    NoMatchAtAll,
}

fn is_separator(c: char) -> bool {
    c == '/'
}

impl PrincipalGlob {
    /// Compiles a pattern.
    pub fn new(text: &str) -> Result<PrincipalGlob, GlobError> {
        // (byte offset, char), plus the end offset, for index arithmetic in characters.
        let chars: Vec<(usize, char)> = text.char_indices().collect();
        let len = chars.len();
        let at = |i: usize| chars.get(i).map_or(text.len(), |&(b, _)| b);
        let offset = |b: usize| u32::try_from(b).unwrap_or(u32::MAX);
        let mut tokens: Vec<Token> = Vec::new();
        let mut i = 0;
        while i < len {
            match chars[i].1 {
                '?' => {
                    tokens.push(Token::AnyChar);
                    i += 1;
                }
                '*' => {
                    let old = i;
                    while i < len && chars[i].1 == '*' {
                        i += 1;
                    }
                    match i - old {
                        1 => tokens.push(Token::AnySequence),
                        2 => {
                            if old != 0 && !is_separator(chars[old - 1].1) {
                                return Err(GlobError {
                                    pos: old - 1,
                                    msg: ERROR_RECURSIVE_WILDCARDS,
                                });
                            }
                            if i < len && is_separator(chars[i].1) {
                                i += 1;
                            } else if i != len {
                                return Err(GlobError {
                                    pos: i,
                                    msg: ERROR_RECURSIVE_WILDCARDS,
                                });
                            }
                            // Consecutive `**/` collapse into one (as the glob crate does).
                            if !(tokens.len() > 1 && tokens.last() == Some(&Token::AnyComponents)) {
                                tokens.push(Token::AnyComponents);
                            }
                        }
                        _ => {
                            return Err(GlobError {
                                pos: old + 2,
                                msg: ERROR_WILDCARDS,
                            });
                        }
                    }
                }
                '[' => {
                    let close = |from: usize| {
                        chars
                            .get(from..)
                            .and_then(|rest| rest.iter().position(|&(_, c)| c == ']'))
                    };
                    let negated = i + 4 <= len && chars[i + 1].1 == '!';
                    let body = if negated {
                        close(i + 3).map(|j| (i + 2, i + 3 + j, i + j + 4))
                    } else if i + 3 <= len && chars[i + 1].1 != '!' {
                        close(i + 2).map(|j| (i + 1, i + 2 + j, i + j + 3))
                    } else {
                        None
                    };
                    let Some((first, end, next)) = body else {
                        return Err(GlobError {
                            pos: i,
                            msg: ERROR_INVALID_RANGE,
                        });
                    };
                    tokens.push(Token::Class {
                        start: offset(at(first)),
                        end: offset(at(end)),
                        negated,
                    });
                    i = next;
                }
                _ => {
                    let start = at(i);
                    while i < len && !matches!(chars[i].1, '?' | '*' | '[') {
                        i += 1;
                    }
                    tokens.push(Token::Literal {
                        start: offset(start),
                        end: offset(at(i)),
                    });
                }
            }
        }
        Ok(PrincipalGlob {
            text: text.into(),
            tokens: tokens.into_boxed_slice(),
        })
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Whether the whole of `input` matches.
    pub fn matches(&self, input: &str) -> bool {
        self.match_from(true, input, 0) == Outcome::Match
    }

    fn slice(&self, start: u32, end: u32) -> &str {
        self.text.get(start as usize..end as usize).unwrap_or("")
    }

    fn match_from(&self, mut follows_separator: bool, mut rest: &str, from: usize) -> Outcome {
        for (k, token) in self.tokens.iter().enumerate().skip(from) {
            match *token {
                Token::AnySequence | Token::AnyComponents => {
                    let components = *token == Token::AnyComponents;
                    match self.match_from(follows_separator, rest, k + 1) {
                        Outcome::NoMatchHere => {}
                        m => return m,
                    }
                    let mut chars = rest.chars();
                    while let Some(c) = chars.next() {
                        follows_separator = is_separator(c);
                        // `**` only ends after a separator.
                        if components && !follows_separator {
                            continue;
                        }
                        match self.match_from(follows_separator, chars.as_str(), k + 1) {
                            Outcome::NoMatchHere => {}
                            m => return m,
                        }
                    }
                    rest = "";
                }
                Token::Literal { start, end } => {
                    let literal = self.slice(start, end);
                    if let Some(after) = rest.strip_prefix(literal) {
                        rest = after;
                        follows_separator = literal.chars().next_back().is_some_and(is_separator);
                    } else if literal.starts_with(rest) {
                        // Every character matched until the input ran out.
                        return Outcome::NoMatchAtAll;
                    } else {
                        return Outcome::NoMatchHere;
                    }
                }
                Token::AnyChar | Token::Class { .. } => {
                    let mut chars = rest.chars();
                    let Some(c) = chars.next() else {
                        return Outcome::NoMatchAtAll;
                    };
                    if let Token::Class {
                        start,
                        end,
                        negated,
                    } = *token
                        && class_contains(self.slice(start, end), c) == negated
                    {
                        return Outcome::NoMatchHere;
                    }
                    rest = chars.as_str();
                    follows_separator = is_separator(c);
                }
            }
        }
        if rest.is_empty() {
            Outcome::Match
        } else {
            Outcome::NoMatchHere
        }
    }
}

/// Whether `c` is in a class body: `a-z` is a range when a character follows the `-`, any
/// other character stands for itself.
fn class_contains(body: &str, c: char) -> bool {
    let mut chars = body.chars();
    while let Some(first) = chars.next() {
        let mut look = chars.clone();
        match (look.next(), look.next()) {
            (Some('-'), Some(last)) => {
                if first <= c && c <= last {
                    return true;
                }
                chars = look;
            }
            _ => {
                if first == c {
                    return true;
                }
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn role_patterns_match_like_the_runbook_expects() {
        let g =
            PrincipalGlob::new("arn:aws:sts::123456789012:assumed-role/event-service-*/*").unwrap();
        assert!(g.matches("arn:aws:sts::123456789012:assumed-role/event-service-prod/i-0abc"));
        assert!(g.matches("arn:aws:sts::123456789012:assumed-role/event-service-/x/y"));
        assert!(!g.matches("arn:aws:sts::123456789012:assumed-role/billing/i-0abc"));
        assert!(!g.matches("arn:aws:sts::123456789012:assumed-role/event-service-prod"));
        let g = PrincipalGlob::new("arn:aws:iam::12345678901[0-9]:user/[!x]?").unwrap();
        assert!(g.matches("arn:aws:iam::123456789012:user/ab"));
        assert!(!g.matches("arn:aws:iam::123456789012:user/xb"));
        assert!(!g.matches("arn:aws:iam::123456789012:user/abc"));
        let g = PrincipalGlob::new("a/**/b").unwrap();
        assert!(g.matches("a/b") && g.matches("a/x/y/b") && !g.matches("a/xb"));
    }

    #[test]
    fn bad_patterns_say_where() {
        let e = PrincipalGlob::new("arn:[a").unwrap_err();
        assert_eq!((e.pos, e.msg), (4, ERROR_INVALID_RANGE));
        assert_eq!(PrincipalGlob::new("a***").unwrap_err().pos, 3);
        assert_eq!(
            PrincipalGlob::new("a**/b").unwrap_err().msg,
            ERROR_RECURSIVE_WILDCARDS
        );
        assert_eq!(PrincipalGlob::new("a/**b").unwrap_err().pos, 4);
    }

    #[test]
    fn a_typical_pattern_is_small() {
        let g =
            PrincipalGlob::new("arn:aws:sts::123456789012:assumed-role/service-4242-*/*").unwrap();
        let heap = g.text.len() + g.tokens.len() * std::mem::size_of::<Token>();
        assert_eq!(g.tokens.len(), 4);
        assert!(heap < 120, "{heap} bytes");
    }

    fn text(alphabet: &'static [char], max: usize) -> impl Strategy<Value = String> {
        prop::collection::vec(prop::sample::select(alphabet), 0..max)
            .prop_map(|v| v.into_iter().collect())
    }

    const PATTERN: &[char] = &['a', 'b', '/', '*', '?', '[', ']', '!', '-', 'é', ':'];
    const INPUT: &[char] = &['a', 'b', '/', '-', '!', ']', 'é', ':', 'z'];

    proptest! {
        // 20,000 cases by default; PROPTEST_CASES runs more.
        #![proptest_config(ProptestConfig::with_cases(
            std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(20_000)
        ))]

        /// Same accepted patterns, same errors, same matches as the glob crate.
        #[test]
        fn agrees_with_the_glob_crate(pattern in text(PATTERN, 10), inputs in prop::collection::vec(text(INPUT, 10), 1..6)) {
            let theirs = glob::Pattern::new(&pattern);
            let ours = PrincipalGlob::new(&pattern);
            match (&theirs, &ours) {
                (Ok(t), Ok(o)) => {
                    for input in &inputs {
                        prop_assert_eq!(t.matches(input), o.matches(input), "pattern {:?} input {:?}", pattern, input);
                    }
                    // An input built from the pattern's own literal characters, too.
                    let own: String = pattern.chars().filter(|c| !"*?[]!".contains(*c)).collect();
                    prop_assert_eq!(t.matches(&own), o.matches(&own), "pattern {:?} input {:?}", pattern, own);
                }
                (Err(t), Err(o)) => {
                    prop_assert_eq!((t.pos, t.msg), (o.pos, o.msg), "pattern {:?}", pattern);
                }
                _ => prop_assert!(false, "pattern {:?}: glob {:?}, ours {:?}", pattern, theirs.is_ok(), ours.is_ok()),
            }
        }
    }
}
