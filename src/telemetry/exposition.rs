//! One `/metrics` answer, as a sequence of chunks that never holds the whole plain text.
//!
//! The per-secret part is cached gzip-compressed (about 3% of the text at 100,000 secrets:
//! 2.8 MB for 88.7 MB). Prometheus asks for gzip and gets the cached bytes as they are. A client
//! that does not (curl, `promtool check metrics`) gets plain text, decompressed here a chunk at a
//! time while the body is sent, and converted line by line to the text format 0.0.4 when it did
//! not ask for OpenMetrics: a plain scrape holds one chunk ([`CHUNK`]) instead of one or two
//! copies of the exposition (measured before this module: +170 MiB for one plain scrape at
//! 100,000 secrets, docs/performance.md).
//!
//! This module does no I/O besides reading the in-memory gzip member.

use std::io::Read;

use bytes::Bytes;
use flate2::read::GzDecoder;

/// Plain text handed out per chunk (complete lines; a longer line makes a longer chunk).
pub const CHUNK: usize = 256 * 1024;

/// One encoded exposition: the per-secret part, then the process part.
pub struct Exposition {
    /// The per-secret part.
    pub fleet: FleetChunks,
    /// The process part (with `# EOF` for OpenMetrics).
    pub process: Bytes,
    /// Every chunk is a gzip member (send `Content-Encoding: gzip`).
    pub gzip: bool,
}

impl Exposition {
    /// Every chunk, in order: the per-secret part, then the process part.
    pub fn into_chunks(self) -> impl Iterator<Item = Bytes> + Send + 'static {
        self.fleet.chain(std::iter::once(self.process))
    }

    /// The whole exposition in one buffer (tests, the CLI; never the scrape path).
    pub fn concat(self) -> Vec<u8> {
        let mut out = Vec::new();
        for chunk in self.into_chunks() {
            out.extend_from_slice(&chunk);
        }
        out
    }
}

/// The per-secret part of one answer: the cached bytes whole, or their plain text by chunks.
pub struct FleetChunks(Inner);

enum Inner {
    /// The cached gzip member, sent as it is.
    Whole(Option<Bytes>),
    /// Decompressing, by complete lines.
    Decoding(Box<Decoding>),
}

struct Decoding {
    decoder: GzDecoder<bytes::buf::Reader<Bytes>>,
    /// The text format 0.0.4 converter; `None` for OpenMetrics.
    text: Option<TextConverter>,
    /// Bytes read after the last complete line.
    carry: Vec<u8>,
    /// The decoder reached its end (or failed: the rest is dropped, see `next`).
    done: bool,
}

impl FleetChunks {
    /// The cached bytes as one chunk.
    pub fn whole(bytes: Bytes) -> FleetChunks {
        FleetChunks(Inner::Whole(Some(bytes)))
    }

    /// The plain text of a gzip member, in OpenMetrics (`text_format` false) or converted to
    /// the text format 0.0.4.
    pub fn decompressed(gzip: Bytes, text_format: bool) -> FleetChunks {
        use bytes::Buf;
        FleetChunks(Inner::Decoding(Box::new(Decoding {
            decoder: GzDecoder::new(gzip.reader()),
            text: text_format.then(TextConverter::default),
            carry: Vec::new(),
            done: false,
        })))
    }
}

impl Iterator for FleetChunks {
    type Item = Bytes;

    fn next(&mut self) -> Option<Bytes> {
        match &mut self.0 {
            Inner::Whole(b) => b.take(),
            Inner::Decoding(d) => d.next_chunk(),
        }
    }
}

impl Decoding {
    fn next_chunk(&mut self) -> Option<Bytes> {
        loop {
            if self.done && self.carry.is_empty() {
                return None;
            }
            if !self.done {
                let start = self.carry.len();
                self.carry.resize(start + CHUNK, 0);
                let mut filled = start;
                // Fill the buffer (a read may return less than asked).
                while filled < self.carry.len() {
                    match self.decoder.read(&mut self.carry[filled..]) {
                        Ok(0) => {
                            self.done = true;
                            break;
                        }
                        Ok(n) => filled += n,
                        // The cache holds only what `Metrics::refresh` compressed, so this
                        // cannot happen in practice; the answer then ends at the last
                        // complete line (the process part follows).
                        Err(_) => {
                            self.done = true;
                            break;
                        }
                    }
                }
                self.carry.truncate(filled);
            }
            // Complete lines only; at the end, whatever is left.
            let cut = match self.carry.iter().rposition(|&b| b == b'\n') {
                Some(i) => i + 1,
                None if self.done => self.carry.len(),
                None => continue,
            };
            let rest = self.carry.split_off(cut);
            let lines = std::mem::replace(&mut self.carry, rest);
            let chunk = match &mut self.text {
                None => Bytes::from(lines),
                Some(conv) => {
                    let text = String::from_utf8_lossy(&lines);
                    let mut out = String::with_capacity(text.len() + 256);
                    for line in text.lines() {
                        conv.line(line, &mut out);
                    }
                    if self.done && self.carry.is_empty() {
                        conv.finish(&mut out);
                    }
                    Bytes::from(out)
                }
            };
            if !chunk.is_empty() {
                return Some(chunk);
            }
        }
    }
}

/// Converts OpenMetrics text to the text format 0.0.4 line by line: counters' names in HELP and
/// TYPE get `_total`, info and stateset are gauges, UNIT and `# EOF` are dropped. A HELP line is
/// held until its TYPE line says whether it is a counter's.
#[derive(Default)]
pub struct TextConverter {
    help: Option<String>,
}

impl TextConverter {
    /// Converts one line (without its newline) into `out`.
    pub fn line(&mut self, line: &str, out: &mut String) {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            if let Some(pending) = self.help.replace(rest.to_string()) {
                push_help(out, &pending, false);
            }
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap_or((rest, "untyped"));
            let counter = kind == "counter";
            if let Some(pending) = self.help.take() {
                push_help(out, &pending, counter);
            }
            out.push_str("# TYPE ");
            out.push_str(name);
            if counter {
                out.push_str("_total");
            }
            out.push(' ');
            out.push_str(if kind == "info" || kind == "stateset" {
                "gauge"
            } else {
                kind
            });
            out.push('\n');
        } else if line.starts_with("# UNIT ") || line == "# EOF" {
        } else {
            if let Some(pending) = self.help.take() {
                push_help(out, &pending, false);
            }
            out.push_str(line);
            out.push('\n');
        }
    }

    /// Writes a HELP line still held.
    pub fn finish(&mut self, out: &mut String) {
        if let Some(pending) = self.help.take() {
            push_help(out, &pending, false);
        }
    }
}

fn push_help(out: &mut String, rest: &str, counter: bool) {
    let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
    out.push_str("# HELP ");
    out.push_str(name);
    if counter {
        out.push_str("_total");
    }
    out.push(' ');
    out.push_str(text);
    out.push('\n');
}

/// Converts a whole OpenMetrics exposition to the Prometheus text format 0.0.4.
pub fn openmetrics_to_text(openmetrics: &str) -> String {
    let mut out = String::with_capacity(openmetrics.len());
    let mut conv = TextConverter::default();
    for line in openmetrics.lines() {
        conv.line(line, &mut out);
    }
    conv.finish(&mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use flate2::Compression;
    use flate2::write::GzEncoder;
    use std::io::Write;

    fn gz(text: &str) -> Bytes {
        let mut enc = GzEncoder::new(Vec::new(), Compression::fast());
        enc.write_all(text.as_bytes()).expect("in memory");
        Bytes::from(enc.finish().expect("in memory"))
    }

    /// A big exposition: several chunks, lines cut at chunk edges, HELP/TYPE pairs across them.
    fn big() -> String {
        let mut s = String::new();
        for f in 0..2_000 {
            s.push_str(&format!("# HELP fam_{f} Help text of family {f}.\n"));
            s.push_str(&format!(
                "# TYPE fam_{f} {}\n",
                ["counter", "gauge", "info"][f % 3]
            ));
            if f % 3 == 0 {
                s.push_str(&format!("# UNIT fam_{f} seconds\n"));
            }
            for i in 0..40 {
                s.push_str(&format!(
                    "fam_{f}{{secret=\"service-{i:05}\",account=\"123456789012\"}} {i}\n"
                ));
            }
        }
        s
    }

    #[test]
    fn chunks_are_the_decompressed_text_in_complete_lines_and_bounded() {
        let text = big();
        assert!(text.len() > 4 * CHUNK, "{} bytes", text.len());
        let chunks: Vec<Bytes> = FleetChunks::decompressed(gz(&text), false).collect();
        assert!(chunks.len() >= 4, "{} chunks", chunks.len());
        for c in &chunks {
            assert!(c.len() <= CHUNK + 200, "a chunk of {} bytes", c.len());
            assert_eq!(c.last(), Some(&b'\n'));
        }
        let joined: Vec<u8> = chunks.concat();
        assert_eq!(String::from_utf8(joined).expect("utf-8"), text);
    }

    #[test]
    fn text_format_by_chunks_equals_the_whole_conversion() {
        let text = big();
        let chunks: Vec<Bytes> = FleetChunks::decompressed(gz(&text), true).collect();
        assert!(chunks.len() >= 4);
        let joined = String::from_utf8(chunks.concat()).expect("utf-8");
        assert_eq!(joined, openmetrics_to_text(&text));
        assert!(
            joined.contains(
                "# HELP fam_0_total Help text of family 0.\n# TYPE fam_0_total counter\n"
            )
        );
        assert!(joined.contains("# TYPE fam_2 gauge\n"));
        assert!(!joined.contains("# UNIT"));
    }

    #[test]
    fn a_last_line_without_newline_and_an_empty_member_are_sent_whole() {
        let chunks: Vec<Bytes> = FleetChunks::decompressed(gz("a 1\nb 2"), false).collect();
        assert_eq!(chunks.concat(), b"a 1\nb 2");
        assert_eq!(FleetChunks::decompressed(gz(""), false).count(), 0);
        let e = Exposition {
            fleet: FleetChunks::whole(Bytes::from_static(b"x")),
            process: Bytes::from_static(b"y"),
            gzip: true,
        };
        assert_eq!(e.concat(), b"xy");
    }

    #[test]
    fn a_corrupt_member_ends_at_the_last_complete_line() {
        let mut bytes = gz(&big()).to_vec();
        let n = bytes.len();
        bytes[n / 2] ^= 0xff;
        bytes.truncate(n - 10);
        // No panic, every chunk made of whole lines but the last.
        for c in FleetChunks::decompressed(Bytes::from(bytes), true) {
            assert!(!c.is_empty());
        }
    }
}
