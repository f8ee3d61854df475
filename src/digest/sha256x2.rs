//! The SHA-256 compression function on the x86 SHA extensions (SHA-NI), for one message or for two
//! independent messages at once.
//!
//! One message is bound by the latency of `sha256rnds2`: every pair of rounds waits for the
//! previous one, so a core hashes about 1.4 GB/s however wide it is. Two messages interleaved
//! round by round keep two dependency chains in flight and reach about 1.75x that on the same core
//! (measured on AMD EPYC; Intel cores behave alike). [`super::sha256_each`] drives this over a
//! stream of messages; nothing else should call it.
//!
//! Only the compression function lives here: padding, the initial state and the final byte order
//! are the caller's. No function checks the CPU: callers must have seen [`available`] return true.
//! The small helpers are `unsafe fn` only because the intrinsics are; they are inlined into the two
//! `target_feature` functions and touch no memory but the slices those are given.

use std::arch::x86_64::*;

/// The round constants (FIPS 180-4 §4.2.2).
const K: [u32; 64] = [
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5, 0xd807aa98,
    0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174, 0xe49b69c1, 0xefbe4786,
    0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da, 0x983e5152, 0xa831c66d, 0xb00327c8,
    0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967, 0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13,
    0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85, 0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819,
    0xd6990624, 0xf40e3585, 0x106aa070, 0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a,
    0x5b9cca4f, 0x682e6ff3, 0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7,
    0xc67178f2,
];

/// True when this CPU has the instructions the functions below use (checked once, then cached by
/// the standard library).
pub fn available() -> bool {
    is_x86_feature_detected!("sha") && is_x86_feature_detected!("ssse3") && is_x86_feature_detected!("sse4.1")
}

/// The working state as the SHA instructions want it: (ABEF, CDGH).
#[inline(always)]
unsafe fn load(s: &[u32; 8]) -> (__m128i, __m128i) {
    let abcd = _mm_loadu_si128(s.as_ptr().cast());
    let efgh = _mm_loadu_si128(s.as_ptr().add(4).cast());
    let cdab = _mm_shuffle_epi32(abcd, 0xB1);
    let hgfe = _mm_shuffle_epi32(efgh, 0x1B);
    (_mm_alignr_epi8(cdab, hgfe, 8), _mm_blend_epi16(hgfe, cdab, 0xF0))
}

/// Back to `[a, b, c, d, e, f, g, h]`.
#[inline(always)]
unsafe fn store(s: &mut [u32; 8], abef: __m128i, cdgh: __m128i) {
    let feba = _mm_shuffle_epi32(abef, 0x1B);
    let dchg = _mm_shuffle_epi32(cdgh, 0xB1);
    _mm_storeu_si128(s.as_mut_ptr().cast(), _mm_blend_epi16(feba, dchg, 0xF0));
    _mm_storeu_si128(s.as_mut_ptr().add(4).cast(), _mm_alignr_epi8(dchg, feba, 8));
}

/// The four big-endian message words at `p` (16 bytes).
#[inline(always)]
unsafe fn words(p: *const u8) -> __m128i {
    let swap = _mm_set_epi64x(0x0c0d0e0f_08090a0b, 0x04050607_00010203);
    _mm_shuffle_epi8(_mm_loadu_si128(p.cast()), swap)
}

/// Message words 4i..4i+4 from the 16 before them (kept in `w` as a ring of four vectors):
/// `W[t] = σ1(W[t-2]) + W[t-7] + σ0(W[t-15]) + W[t-16]`.
#[inline(always)]
unsafe fn schedule(w: &mut [__m128i; 4], i: usize) {
    let t = _mm_add_epi32(
        _mm_sha256msg1_epu32(w[i % 4], w[(i + 1) % 4]),
        _mm_alignr_epi8(w[(i + 3) % 4], w[(i + 2) % 4], 4),
    );
    w[i % 4] = _mm_sha256msg2_epu32(t, w[(i + 3) % 4]);
}

/// Rounds 4i..4i+4 on one state.
#[inline(always)]
unsafe fn rounds(abef: &mut __m128i, cdgh: &mut __m128i, w: __m128i, i: usize) {
    let m = _mm_add_epi32(w, _mm_loadu_si128(K.as_ptr().add(4 * i).cast()));
    *cdgh = _mm_sha256rnds2_epu32(*cdgh, *abef, m);
    *abef = _mm_sha256rnds2_epu32(*abef, *cdgh, _mm_shuffle_epi32(m, 0x0E));
}

/// Compress the 64-byte blocks of `blocks` (its length a multiple of 64) into `state`.
///
/// # Safety
/// The CPU must have the SHA extensions, SSSE3 and SSE4.1 ([`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub unsafe fn compress(state: &mut [u32; 8], blocks: &[u8]) {
    assert!(blocks.len().is_multiple_of(64), "compress takes whole blocks");
    let (mut abef, mut cdgh) = load(state);
    for block in blocks.chunks_exact(64) {
        let (abef0, cdgh0) = (abef, cdgh);
        let p = block.as_ptr();
        let mut w = [words(p), words(p.add(16)), words(p.add(32)), words(p.add(48))];
        for i in 0..16 {
            if i >= 4 {
                schedule(&mut w, i);
            }
            rounds(&mut abef, &mut cdgh, w[i % 4], i);
        }
        abef = _mm_add_epi32(abef, abef0);
        cdgh = _mm_add_epi32(cdgh, cdgh0);
    }
    store(state, abef, cdgh);
}

/// Compress `a` into `sa` and `b` into `sb` (the same number of whole blocks each), interleaving
/// the two round by round.
///
/// # Safety
/// The CPU must have the SHA extensions, SSSE3 and SSE4.1 ([`available`]).
#[target_feature(enable = "sha,sse2,ssse3,sse4.1")]
pub unsafe fn compress2(sa: &mut [u32; 8], a: &[u8], sb: &mut [u32; 8], b: &[u8]) {
    assert!(a.len() == b.len() && a.len().is_multiple_of(64), "compress2 takes whole blocks, as many of each");
    let (mut a_abef, mut a_cdgh) = load(sa);
    let (mut b_abef, mut b_cdgh) = load(sb);
    for (block_a, block_b) in a.chunks_exact(64).zip(b.chunks_exact(64)) {
        let saved = (a_abef, a_cdgh, b_abef, b_cdgh);
        let (pa, pb) = (block_a.as_ptr(), block_b.as_ptr());
        let mut wa = [words(pa), words(pa.add(16)), words(pa.add(32)), words(pa.add(48))];
        let mut wb = [words(pb), words(pb.add(16)), words(pb.add(32)), words(pb.add(48))];
        // Fully unrolled (the ring indices become constants) so both chains stay in registers.
        macro_rules! step {
            ($i:expr) => {
                if $i >= 4 {
                    schedule(&mut wa, $i);
                    schedule(&mut wb, $i);
                }
                let ka = _mm_add_epi32(wa[$i % 4], _mm_loadu_si128(K.as_ptr().add(4 * $i).cast()));
                let kb = _mm_add_epi32(wb[$i % 4], _mm_loadu_si128(K.as_ptr().add(4 * $i).cast()));
                a_cdgh = _mm_sha256rnds2_epu32(a_cdgh, a_abef, ka);
                b_cdgh = _mm_sha256rnds2_epu32(b_cdgh, b_abef, kb);
                a_abef = _mm_sha256rnds2_epu32(a_abef, a_cdgh, _mm_shuffle_epi32(ka, 0x0E));
                b_abef = _mm_sha256rnds2_epu32(b_abef, b_cdgh, _mm_shuffle_epi32(kb, 0x0E));
            };
        }
        step!(0);
        step!(1);
        step!(2);
        step!(3);
        step!(4);
        step!(5);
        step!(6);
        step!(7);
        step!(8);
        step!(9);
        step!(10);
        step!(11);
        step!(12);
        step!(13);
        step!(14);
        step!(15);
        a_abef = _mm_add_epi32(a_abef, saved.0);
        a_cdgh = _mm_add_epi32(a_cdgh, saved.1);
        b_abef = _mm_add_epi32(b_abef, saved.2);
        b_cdgh = _mm_add_epi32(b_cdgh, saved.3);
    }
    store(sa, a_abef, a_cdgh);
    store(sb, b_abef, b_cdgh);
}
