//! The free text of a compromise report (`reason`, `reported_by`), made safe to keep, log,
//! publish and print. A responder may paste the leaked value itself ("found `AKIA…` in the build
//! log"); the incident must not spread it to the store, the logs, the SNS notice and the report.
//!
//! [`scrub`] (pure) applies three rules, in order:
//! 1. Anything that looks like a credential is replaced by `[redacted: N chars]`: a word of 16 or
//!    more characters of the token alphabet (letters, digits and `+/=_-.~:`) that mixes letters
//!    and digits with at least 3 bits of entropy per character (random keys, passwords, JWTs,
//!    base64 blobs), a word with a known credential prefix (`AKIA`, `ASIA`, `ghp_`,
//!    `github_pat_`, `glpat-`, `xox?-`, `sk_live_`, `sk-`), the value after `password=`,
//!    `token=`, `secret=`, `key=` (and `:`), the password of a `scheme://user:password@host`
//!    URL, and everything from a `-----BEGIN` line on. "Mixes" means upper case, lower case and
//!    digits; a hex word of 32 or more, or a letters-and-digits word of 24 or more at 4 bits per
//!    character, counts too. ARNs are kept.
//! 2. Control characters (newlines included) and Unicode direction overrides are written as
//!    escapes (`\n`, `\u{202e}`), so the text cannot forge a log line or reorder a terminal.
//! 3. The text is cut at a length limit, with `…[cut]` at the end.
//!
//! Keeping the leaked value out is best effort for text a human typed: a short or dictionary
//! password is not recognisable. The documentation says so and asks responders to describe the
//! leak, never to paste the value.

/// The longest `reason` kept, in characters.
pub const MAX_REASON: usize = 1000;
/// The longest `reported_by` kept, in characters.
pub const MAX_REPORTER: usize = 128;

/// Words shorter than this are never treated as random tokens.
const MIN_TOKEN: usize = 16;
/// Entropy, in bits per character, above which a mixed letters-and-digits word is a token.
const MIN_ENTROPY: f64 = 3.0;
/// Prefixes of well-known credential formats.
const PREFIXES: [&str; 9] = [
    "AKIA",
    "ASIA",
    "ghp_",
    "gho_",
    "github_pat_",
    "glpat-",
    "sk_live_",
    "sk-",
    "xox",
];
/// Names whose value follows `=` or `:`.
const KEYS: [&str; 7] = [
    "password", "passwd", "pwd", "token", "secret", "apikey", "key",
];

/// `text` made safe to keep and print, at most `max` characters (see the module doc).
pub fn scrub(text: &str, max: usize) -> String {
    let masked = mask(text);
    let mut out = String::with_capacity(masked.len().min(max * 2));
    for (chars, c) in masked.chars().enumerate() {
        if chars >= max {
            out.push_str("…[cut]");
            break;
        }
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if c.is_control() || is_direction_control(c) => {
                out.push_str(&c.escape_unicode().to_string())
            }
            c => out.push(c),
        }
    }
    out
}

fn is_direction_control(c: char) -> bool {
    matches!(c, '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// Rule 1 over the whole text.
fn mask(text: &str) -> String {
    let text = match text.find("-----BEGIN") {
        Some(i) => format!(
            "{}[redacted: {} chars]",
            &text[..i],
            text[i..].chars().count()
        ),
        None => text.to_string(),
    };
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || "\"'`,;()<>[]{}|".contains(c) {
            out.push_str(&mask_word(&word));
            word.clear();
            out.push(c);
        } else {
            word.push(c);
        }
    }
    out.push_str(&mask_word(&word));
    out
}

fn redacted(n: usize) -> String {
    format!("[redacted: {n} chars]")
}

/// Rule 1 for one word (no whitespace or quotes in it).
fn mask_word(word: &str) -> String {
    if word.is_empty() || word.starts_with("arn:") {
        return word.to_string();
    }
    // scheme://user:password@host
    if let Some(scheme_end) = word.find("://") {
        let rest = &word[scheme_end + 3..];
        if let Some(at) = rest.find('@')
            && let Some(colon) = rest[..at].find(':')
        {
            let pw = &rest[colon + 1..at];
            return format!(
                "{}{}{}",
                &word[..scheme_end + 3 + colon + 1],
                redacted(pw.chars().count()),
                &rest[at..]
            );
        }
        return word.to_string();
    }
    // key=value, key:value
    if let Some(i) = word.find(['=', ':']) {
        let key = word[..i].to_ascii_lowercase();
        let key = key.trim_start_matches(['-', '_']);
        if KEYS.iter().any(|k| key.ends_with(k)) && i + 1 < word.len() {
            return format!("{}{}", &word[..=i], redacted(word[i + 1..].chars().count()));
        }
    }
    if looks_like_token(word) {
        return redacted(word.chars().count());
    }
    word.to_string()
}

/// A random-looking credential: a known prefix, or a long mixed word of high entropy.
fn looks_like_token(word: &str) -> bool {
    let n = word.chars().count();
    if n >= 12 && PREFIXES.iter().any(|p| word.starts_with(p)) {
        return true;
    }
    if n < MIN_TOKEN
        || !word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "+/=_-.~:".contains(c))
    {
        return false;
    }
    let lower = word.chars().any(|c| c.is_ascii_lowercase());
    let upper = word.chars().any(|c| c.is_ascii_uppercase());
    let digits = word.chars().any(|c| c.is_ascii_digit());
    let hex = word.chars().all(|c| c.is_ascii_hexdigit());
    let e = entropy(word);
    (lower && upper && digits && e >= MIN_ENTROPY)
        || (hex && n >= 32)
        || ((lower || upper) && digits && n >= 24 && e >= 4.0)
}

/// Shannon entropy of the characters of `word`, in bits per character.
fn entropy(word: &str) -> f64 {
    let mut counts = [0u32; 128];
    let mut n = 0u32;
    for b in word.bytes().filter(u8::is_ascii) {
        counts[usize::from(b)] += 1;
        n += 1;
    }
    if n == 0 {
        return 0.0;
    }
    let n = f64::from(n);
    counts
        .iter()
        .filter(|&&c| c > 0)
        .map(|&c| {
            let p = f64::from(c) / n;
            -p * p.log2()
        })
        .sum()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_are_masked_and_prose_is_kept() {
        let cases = [
            (
                "found Xq9vT2mP8sLw4Rz7Kd1Nf6Hb in the build log",
                "found [redacted: 24 chars] in the build log",
            ),
            (
                "key AKIAIOSFODNN7EXAMPLE pasted in #ops",
                "key [redacted: 20 chars] pasted in #ops",
            ),
            (
                "DATABASE_URL=postgres://app:hunter2pass@db.internal:5432/app leaked",
                "DATABASE_URL=postgres://app:[redacted: 11 chars]@db.internal:5432/app leaked",
            ),
            (
                "password=hunter2 in ticket",
                "password=[redacted: 7 chars] in ticket",
            ),
            ("api_key:abc", "api_key:[redacted: 3 chars]"),
            (
                "token \"ghp_abcdefghijklmnop\" committed",
                "token \"[redacted: 20 chars]\" committed",
            ),
            (
                "JWT eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0NTY3ODkwIn0.dozjgNryP4J3jVmNHl0w5N_XgL0n3I9PlFUP0THsR8U",
                "JWT [redacted: 92 chars]",
            ),
            // Kept: secret names, ARNs, ids people quote, ordinary words.
            (
                "event-service/jwt-secret read by arn:aws:iam::123456789012:user/deploy",
                "event-service/jwt-secret read by arn:aws:iam::123456789012:user/deploy",
            ),
            (
                "INC-20261202 opened by on-call",
                "INC-20261202 opened by on-call",
            ),
            (
                "the staging database credentials were shared in a public channel",
                "the staging database credentials were shared in a public channel",
            ),
        ];
        for (input, want) in cases {
            assert_eq!(scrub(input, MAX_REASON), want, "{input}");
        }
    }

    #[test]
    fn a_pem_block_is_masked_to_the_end() {
        let pem =
            "key below\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\n-----END PRIVATE KEY-----";
        let out = scrub(pem, MAX_REASON);
        assert!(out.starts_with("key below\\n[redacted: "), "{out}");
        assert!(!out.contains("MIIE"), "{out}");
    }

    #[test]
    fn control_characters_cannot_forge_a_log_line_and_length_is_capped() {
        let out = scrub(
            "leak\n2026-12-02 INFO fake line\r\t\u{1b}[31m\u{202e}",
            MAX_REASON,
        );
        assert!(
            !out.chars()
                .any(|c| c.is_control() || is_direction_control(c)),
            "{out:?}"
        );
        assert!(
            out.starts_with("leak\\n2026-12-02 INFO fake line\\r\\t\\u{1b}"),
            "{out}"
        );
        let long = "word ".repeat(1000);
        let cut = scrub(&long, MAX_REPORTER);
        assert_eq!(cut.chars().count(), MAX_REPORTER + "…[cut]".chars().count());
        assert!(cut.ends_with("…[cut]"));
    }

    #[test]
    fn entropy_separates_words_from_keys() {
        assert!(entropy("aaaaaaaaaaaaaaaa") < 0.1);
        assert!(entropy("Xq9vT2mP8sLw4Rz7") > 3.5);
        assert!(!looks_like_token("release-2026-12-02"));
    }
}
