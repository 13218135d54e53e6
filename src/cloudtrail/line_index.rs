//! A bit index of one line's quotes and of its brackets outside strings, for the scanner.
//!
//! Built in one pass of 64-byte blocks before the line is scanned (AVX-512 or AVX2 when the
//! processor has them, SSE2 otherwise), it is used only for a line without a backslash: then
//! every quote opens or closes a string, so "inside a string" is the parity of the quotes
//! before a byte, and every string and every skipped object or array ends at a bit of the
//! index instead of a fresh classification of its bytes. A scan that gets to a byte at all has
//! taken every quote before it in the same pairs, so this parity is the scanner's own view.

use super::{BLOCK, Marks, marks_block};

/// Bit `k` of word `w` stands for byte `64 w + k` of the line.
pub(super) struct LineIndex {
    /// `"`.
    pub(super) quote: Vec<u64>,
    /// `{`, `}`, `[` or `]` outside strings.
    pub(super) bracket: Vec<u64>,
}

impl LineIndex {
    /// An empty index.
    pub(super) const fn new() -> LineIndex {
        LineIndex {
            quote: Vec::new(),
            bracket: Vec::new(),
        }
    }

    /// Indexes `b` with the fastest kernel the processor has. Returns false, leaving the index
    /// unusable, when `b` holds a backslash.
    pub(super) fn build(&mut self, b: &[u8]) -> bool {
        // SAFETY: `Kernel::best` gives a kernel this processor has.
        unsafe { self.build_with(Kernel::best(), b) }
    }

    /// Indexes `b` with `kernel` (the tests run every one).
    ///
    /// # Safety
    /// The processor must have `kernel`'s features: take it from `Kernel::best` or
    /// `Kernel::available`.
    pub(super) unsafe fn build_with(&mut self, kernel: Kernel, b: &[u8]) -> bool {
        let words = b.len().div_ceil(BLOCK);
        self.quote.clear();
        self.quote.resize(words, 0);
        self.bracket.clear();
        self.bracket.resize(words, 0);
        let (quote, bracket) = (&mut self.quote[..], &mut self.bracket[..]);
        let backslash = match kernel {
            // SAFETY: the processor has the kernel's features (this function's contract).
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx512 => unsafe { x86::fill_avx512(b, quote, bracket) },
            // SAFETY: as above.
            #[cfg(target_arch = "x86_64")]
            Kernel::Avx2 => unsafe { x86::fill_avx2(b, quote, bracket) },
            Kernel::Portable => fill(
                b,
                quote,
                bracket,
                marks_block::<BLOCK>,
                |tail| padded(tail, marks_block::<BLOCK>),
                prefix_xor,
            ),
        };
        backslash == 0
    }

    /// The first quote at `from` or after.
    #[inline(always)]
    pub(super) fn next_quote(&self, from: usize) -> Option<usize> {
        let mut word = from / 64;
        let mut bits = self.quote.get(word)? & (u64::MAX << (from % 64));
        while bits == 0 {
            word += 1;
            bits = *self.quote.get(word)?;
        }
        Some(word * 64 + bits.trailing_zeros() as usize)
    }
}

/// How a line is classified: with AVX-512BW, AVX2 (both with PCLMULQDQ for the parity of the
/// quotes), or SSE2 and shifts (every x86_64 processor; portable code elsewhere).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kernel {
    /// One 64-byte load and four compares to a mask per block.
    #[cfg(target_arch = "x86_64")]
    Avx512,
    /// Two 32-byte halves per block.
    #[cfg(target_arch = "x86_64")]
    Avx2,
    /// [`marks_block`], 16 bytes at a time on x86_64.
    Portable,
}

impl Kernel {
    /// The fastest kernel this processor has (the detection is cached by the standard library).
    #[inline]
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("pclmulqdq") {
                if has!("avx512bw") {
                    return Kernel::Avx512;
                }
                if has!("avx2") {
                    return Kernel::Avx2;
                }
            }
        }
        Kernel::Portable
    }

    /// Every kernel compiled for this architecture, whether the processor has it or not.
    #[cfg(test)]
    pub(super) const ALL: &'static [Kernel] = &[
        Kernel::Portable,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx2,
        #[cfg(target_arch = "x86_64")]
        Kernel::Avx512,
    ];

    /// The kernels a test runs: [`Kernel::available`], after printing (once per thread, so once
    /// per test: the failure of a test shows it, and so does `--nocapture`) which kernels are
    /// tested and which of [`Kernel::ALL`] this processor lacks and are not run.
    #[cfg(test)]
    pub(super) fn under_test() -> Vec<Kernel> {
        thread_local! {
            static PRINTED: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
        }
        let tested = Kernel::available();
        if !PRINTED.replace(true) {
            let missing: Vec<Kernel> = Kernel::ALL
                .iter()
                .copied()
                .filter(|k| !tested.contains(k))
                .collect();
            eprintln!(
                "line index kernels tested: {tested:?}; not available on this processor (not run): {missing:?}"
            );
        }
        tested
    }

    /// Every kernel this processor has.
    #[cfg(test)]
    pub(super) fn available() -> Vec<Kernel> {
        let mut all = vec![Kernel::Portable];
        #[cfg(target_arch = "x86_64")]
        {
            use std::arch::is_x86_feature_detected as has;
            if has!("pclmulqdq") && has!("avx2") {
                all.push(Kernel::Avx2);
            }
            if has!("pclmulqdq") && has!("avx512bw") {
                all.push(Kernel::Avx512);
            }
        }
        all
    }
}

/// Fills `quote` and `bracket` (one word per block of `b`, the last block padded with zeros)
/// from the block classifier `classify` (and `classify_tail` for a last block shorter than
/// [`BLOCK`]); returns the union of the backslash masks.
#[inline(always)]
fn fill(
    b: &[u8],
    quote: &mut [u64],
    bracket: &mut [u64],
    classify: impl Fn(&[u8; BLOCK]) -> Marks,
    classify_tail: impl Fn(&[u8]) -> Marks,
    prefix_xor: impl Fn(u64) -> u64,
) -> u64 {
    // All ones while the block starts inside a string.
    let mut carry = 0u64;
    let mut backslash = 0u64;
    let mut one = |m: Marks, q: &mut u64, br: &mut u64| {
        backslash |= m.backslash;
        let inside = prefix_xor(m.quote) ^ carry;
        carry = ((inside as i64) >> 63) as u64;
        *q = m.quote;
        *br = m.bracket & !inside;
    };
    let mut blocks = b.chunks_exact(BLOCK);
    let mut slots = quote.iter_mut().zip(bracket.iter_mut());
    for (block, (q, br)) in (&mut blocks).zip(&mut slots) {
        if let Ok(block) = <&[u8; BLOCK]>::try_from(block) {
            one(classify(block), q, br);
        }
    }
    let tail = blocks.remainder();
    if let (false, Some((q, br))) = (tail.is_empty(), slots.next()) {
        one(classify_tail(tail), q, br);
    }
    backslash
}

/// Classifies `tail` (shorter than a block) as a block padded with zeros.
#[inline(always)]
fn padded(tail: &[u8], classify: impl Fn(&[u8; BLOCK]) -> Marks) -> Marks {
    let mut padded = [0u8; BLOCK];
    if let Some(dst) = padded.get_mut(..tail.len()) {
        dst.copy_from_slice(tail);
    }
    classify(&padded)
}

/// Bit `k` of the result is the XOR of bits `0..=k` of `x`.
#[inline(always)]
fn prefix_xor(mut x: u64) -> u64 {
    x ^= x << 1;
    x ^= x << 2;
    x ^= x << 4;
    x ^= x << 8;
    x ^= x << 16;
    x ^= x << 32;
    x
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{BLOCK, Marks, fill};
    use std::arch::x86_64::*;

    /// [`fill`] with AVX-512BW: one 64-byte load and four compares to a mask per block.
    #[target_feature(enable = "avx512bw,pclmulqdq")]
    pub(super) fn fill_avx512(b: &[u8], quote: &mut [u64], bracket: &mut [u64]) -> u64 {
        fill(
            b,
            quote,
            bracket,
            // SAFETY: a whole block of 64 readable bytes.
            |block| unsafe { marks_avx512(block.as_ptr(), u64::MAX) },
            // SAFETY: the mask selects the tail's bytes only (`fill` passes fewer than 64).
            |tail| unsafe { marks_avx512(tail.as_ptr(), (1u64 << tail.len()) - 1) },
            |x| prefix_xor_clmul(x),
        )
    }

    /// [`fill`] with AVX2: two 32-byte halves per block.
    #[target_feature(enable = "avx2,pclmulqdq")]
    pub(super) fn fill_avx2(b: &[u8], quote: &mut [u64], bracket: &mut [u64]) -> u64 {
        fill(
            b,
            quote,
            bracket,
            |block| marks_avx2(block),
            |tail| super::padded(tail, |block| marks_avx2(block)),
            |x| prefix_xor_clmul(x),
        )
    }

    /// The marks of the bytes at `p` that `load` selects (bit `k` for byte `p + k`); the
    /// others read as zero.
    ///
    /// # Safety
    /// Every byte that `load` selects must be readable: all ones for a whole block of 64
    /// bytes, the low `len` bits for a tail of `len` bytes. The processor must have AVX-512BW.
    #[target_feature(enable = "avx512bw")]
    #[inline]
    unsafe fn marks_avx512(p: *const u8, load: u64) -> Marks {
        // SAFETY: the masked load touches only the selected bytes, readable by the contract
        // above; it accepts any alignment.
        let v = unsafe { _mm512_maskz_loadu_epi8(load, p.cast()) };
        // `[` and `]` are `{` and `}` without bit 0x20; no other byte maps onto those two.
        let folded = _mm512_or_si512(v, _mm512_set1_epi8(0x20));
        Marks {
            quote: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'"' as i8)),
            backslash: _mm512_cmpeq_epi8_mask(v, _mm512_set1_epi8(b'\\' as i8)),
            bracket: _mm512_cmpeq_epi8_mask(folded, _mm512_set1_epi8(b'{' as i8))
                | _mm512_cmpeq_epi8_mask(folded, _mm512_set1_epi8(b'}' as i8)),
        }
    }

    #[target_feature(enable = "avx2")]
    #[inline]
    fn marks_avx2(block: &[u8; BLOCK]) -> Marks {
        let mut m = Marks {
            quote: 0,
            backslash: 0,
            bracket: 0,
        };
        for (half, bytes) in block.chunks_exact(32).enumerate() {
            // SAFETY: `bytes` is 32 readable bytes; the load accepts any alignment.
            let v = unsafe { _mm256_loadu_si256(bytes.as_ptr().cast()) };
            let folded = _mm256_or_si256(v, _mm256_set1_epi8(0x20));
            let q = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'"' as i8));
            let bs = _mm256_cmpeq_epi8(v, _mm256_set1_epi8(b'\\' as i8));
            let br = _mm256_or_si256(
                _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'{' as i8)),
                _mm256_cmpeq_epi8(folded, _mm256_set1_epi8(b'}' as i8)),
            );
            let shift = 32 * half;
            m.quote |= u64::from(_mm256_movemask_epi8(q) as u32) << shift;
            m.backslash |= u64::from(_mm256_movemask_epi8(bs) as u32) << shift;
            m.bracket |= u64::from(_mm256_movemask_epi8(br) as u32) << shift;
        }
        m
    }

    /// Prefix XOR as a carry-less multiplication by all ones.
    #[target_feature(enable = "pclmulqdq")]
    #[inline]
    fn prefix_xor_clmul(x: u64) -> u64 {
        let r = _mm_clmulepi64_si128(_mm_set_epi64x(0, x as i64), _mm_set1_epi8(-1), 0);
        _mm_cvtsi128_si64(r) as u64
    }
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The index as a byte-by-byte reading defines it: `(quote, bracket, usable)` (also the
    /// fuzz run's reference, `super::fuzz`).
    pub(in crate::cloudtrail) fn naive(b: &[u8]) -> (Vec<u64>, Vec<u64>, bool) {
        let words = b.len().div_ceil(64);
        let (mut quote, mut bracket) = (vec![0u64; words], vec![0u64; words]);
        let mut inside = false;
        for (k, &c) in b.iter().enumerate() {
            let bit = 1u64 << (k % 64);
            match c {
                b'"' => {
                    quote[k / 64] |= bit;
                    inside = !inside;
                }
                b'{' | b'}' | b'[' | b']' if !inside => bracket[k / 64] |= bit,
                _ => {}
            }
        }
        (quote, bracket, !b.contains(&b'\\'))
    }

    fn check(b: &[u8]) -> Result<(), TestCaseError> {
        let (quote, bracket, usable) = naive(b);
        for kernel in Kernel::under_test() {
            let mut index = LineIndex::new();
            // SAFETY: `Kernel::under_test` lists only what this processor has.
            let built = unsafe { index.build_with(kernel, b) };
            prop_assert_eq!(built, usable, "{:?}", kernel);
            prop_assert_eq!(&index.quote, &quote, "{:?}", kernel);
            prop_assert_eq!(&index.bracket, &bracket, "{:?}", kernel);
        }
        let mut index = LineIndex::new();
        prop_assert_eq!(index.build(b), usable);
        for from in 0..=b.len() {
            let expected = b
                .iter()
                .skip(from)
                .position(|&c| c == b'"')
                .map(|p| p + from);
            prop_assert_eq!(index.next_quote(from), expected);
        }
        Ok(())
    }

    /// The kernel `build` picks is one the tests run, and every available kernel is listed in
    /// `Kernel::ALL` (so the printed "not available" list is complete).
    #[test]
    fn the_detected_kernel_is_among_the_tested_ones() {
        let tested = Kernel::under_test();
        assert!(
            tested.contains(&Kernel::best()),
            "{:?} not in {tested:?}",
            Kernel::best()
        );
        assert!(tested.iter().all(|k| Kernel::ALL.contains(k)), "{tested:?}");
    }

    proptest! {
        /// Dense in the bytes the index marks, at every offset from a block boundary, strings
        /// crossing blocks, both parities at a block's start.
        #[test]
        fn vector_and_portable_indexes_match_a_byte_by_byte_reading(
            bytes in prop::collection::vec(
                prop::sample::select(vec![b'"', b'{', b'}', b'[', b']', b'\\', b'a', b' ', 0x7b ^ 0x20, 0xff]),
                0..300,
            )
        ) {
            check(&bytes)?;
        }

        #[test]
        fn any_bytes_index_like_a_byte_by_byte_reading(
            bytes in prop::collection::vec(any::<u8>(), 0..300)
        ) {
            check(&bytes)?;
        }
    }
}
