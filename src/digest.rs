//! Content hashing: the only module that imports `sha2` (and `hmac`, which needs a SHA-256 type).
//!
//! `sha2` picks the SHA-NI instructions at run time where the CPU has them, so one core hashes one
//! message at about 1.4 GB/s. Bulk hashing ([`sha256_each`], the audit's hot loop) goes further on
//! such CPUs: it hashes two messages at once on each core with [`sha256x2`], about 1.75x the
//! throughput, and falls back to `sha2` one message at a time elsewhere. The audit spreads the
//! work over all cores with rayon.

use std::fs::File;
use std::io::{self, Read};
use std::path::Path;

use sha2::{Digest, Sha256};

#[cfg(target_arch = "x86_64")]
mod sha256x2;

/// Size of the read buffer: large enough that syscalls do not dominate, small enough to stay in L2.
const BUF: usize = 256 * 1024;

/// Lowercase hex SHA-256 of a byte slice.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// SHA-256 of a file's contents and the number of bytes read.
pub fn sha256_file(path: &Path) -> io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    sha256_reader(&mut f)
}

/// SHA-256 of everything a reader yields and the number of bytes read.
pub fn sha256_reader(r: &mut impl Read) -> io::Result<(String, u64)> {
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; BUF];
    let mut total = 0u64;
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        hasher.update(&buf[..n]);
        total += n as u64;
    }
    Ok((hex(&hasher.finalize()), total))
}

/// A stream of messages for [`sha256_each`], each read into a buffer the hasher lends.
pub trait Messages {
    /// What the caller uses to tell the digests apart.
    type Tag;
    /// Put the next message at the start of `buf` and return its tag and length, or `None` when
    /// there are no more. `buf` may be grown; bytes past the message are scratch (they need not be
    /// zero). Work that yields no message (a read error, a value taken from a cache) is done here
    /// and skipped over: only the messages returned are hashed.
    fn next(&mut self, buf: &mut Vec<u8>) -> Option<(Self::Tag, usize)>;
    /// The SHA-256 of a message `next` returned and its length; called once per message, in the
    /// order the hashes complete (not necessarily the order of `next`).
    fn digest(&mut self, tag: Self::Tag, len: usize, digest: [u8; 32]);
}

/// Above this a lent buffer is dropped after use instead of kept for the next call on the thread.
const KEEP_BUF: usize = 64 * 1024 * 1024;

thread_local! {
    /// The two lanes' buffers, kept across calls: a scan hashes thousands of files per thread.
    static LANES: std::cell::RefCell<[Vec<u8>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Hash every message of `messages`. With the SHA extensions, two messages are in flight at a
/// time on this thread, interleaved block by block; elsewhere one after the other with `sha2`.
pub fn sha256_each<M: Messages>(messages: &mut M) {
    sha256_each_with(messages, Kernel::best())
}

/// How [`sha256_each`] compresses blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// `sha2`, one message at a time (any CPU).
    Portable,
    /// Two messages interleaved on the SHA extensions.
    #[cfg(target_arch = "x86_64")]
    Pair,
}

impl Kernel {
    fn best() -> Kernel {
        #[cfg(target_arch = "x86_64")]
        if sha256x2::available() {
            return Kernel::Pair;
        }
        Kernel::Portable
    }
}

fn sha256_each_with<M: Messages>(messages: &mut M, kernel: Kernel) {
    LANES.with(|cell| {
        // A nested call on the same thread (never made today) gets fresh buffers.
        let mut fresh = [Vec::new(), Vec::new()];
        let mut borrowed = cell.try_borrow_mut();
        let bufs = match borrowed.as_deref_mut() {
            Ok(bufs) => bufs,
            Err(_) => &mut fresh,
        };
        match kernel {
            Kernel::Portable => {
                while let Some((tag, len)) = messages.next(&mut bufs[0]) {
                    messages.digest(tag, len, Sha256::digest(&bufs[0][..len]).into());
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Pair => pair(messages, bufs),
        }
        for buf in bufs.iter_mut() {
            if buf.capacity() > KEEP_BUF {
                *buf = Vec::new();
            }
        }
    })
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
#[cfg(target_arch = "x86_64")]
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// One message in flight: its padded blocks are `buf[at..end]`.
#[cfg(target_arch = "x86_64")]
struct Lane<T> {
    tag: T,
    len: usize,
    state: [u32; 8],
    at: usize,
    end: usize,
}

/// Append SHA-256 padding after the `len`-byte message at the start of `buf` (growing it when
/// needed) and return the padded length, a multiple of 64.
#[cfg(target_arch = "x86_64")]
fn pad(buf: &mut Vec<u8>, len: usize) -> usize {
    let end = (len + 9).div_ceil(64) * 64;
    if buf.len() < end {
        buf.resize(end, 0);
    }
    buf[len] = 0x80;
    buf[len + 1..end - 8].fill(0);
    buf[end - 8..end].copy_from_slice(&(len as u64 * 8).to_be_bytes());
    end
}

#[cfg(target_arch = "x86_64")]
fn pair<M: Messages>(messages: &mut M, bufs: &mut [Vec<u8>; 2]) {
    fn output(state: &[u32; 8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (chunk, word) in out.chunks_exact_mut(4).zip(state) {
            chunk.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
    let mut lanes: [Option<Lane<M::Tag>>; 2] = [None, None];
    let mut more = true;
    loop {
        for (lane, buf) in lanes.iter_mut().zip(bufs.iter_mut()) {
            if lane.is_none() && more {
                match messages.next(buf) {
                    Some((tag, len)) => {
                        let end = pad(buf, len);
                        *lane = Some(Lane { tag, len, state: H0, at: 0, end });
                    }
                    None => more = false,
                }
            }
        }
        let [buf0, buf1] = bufs;
        match &mut lanes {
            [Some(a), Some(b)] => {
                let n = (a.end - a.at).min(b.end - b.at);
                // SAFETY: `Kernel::Pair` is chosen only when `sha256x2::available()`.
                unsafe {
                    sha256x2::compress2(&mut a.state, &buf0[a.at..a.at + n], &mut b.state, &buf1[b.at..b.at + n])
                };
                a.at += n;
                b.at += n;
            }
            [Some(a), None] => {
                // SAFETY: as above.
                unsafe { sha256x2::compress(&mut a.state, &buf0[a.at..a.end]) };
                a.at = a.end;
            }
            [None, Some(b)] => {
                // SAFETY: as above.
                unsafe { sha256x2::compress(&mut b.state, &buf1[b.at..b.end]) };
                b.at = b.end;
            }
            [None, None] => return,
        }
        for lane in &mut lanes {
            if lane.as_ref().is_some_and(|l| l.at == l.end) {
                let done = lane.take().expect("checked above");
                messages.digest(done.tag, done.len, output(&done.state));
            }
        }
    }
}

/// Lowercase hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 0xf) as usize] as char);
    }
    s
}

/// HMAC-SHA256 of `msg` under `key` (webhook signatures).
pub fn hmac_sha256(key: &[u8], msg: &[u8]) -> [u8; 32] {
    use hmac::{Hmac, Mac};
    // HMAC accepts keys of any length, so `new_from_slice` cannot fail.
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(msg);
    mac.finalize().into_bytes().into()
}

/// `n` random bytes from the operating system.
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut buf = [0u8; N];
    getrandom::getrandom(&mut buf).expect("the operating system's random source is available");
    buf
}

/// 8 random lowercase hex characters (event ids, request ids).
pub fn random_hex8() -> String {
    hex(&random_bytes::<4>())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_vectors() {
        assert_eq!(sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        std::fs::write(&p, vec![b'a'; 1_000_000]).unwrap();
        let (h, n) = sha256_file(&p).unwrap();
        assert_eq!(n, 1_000_000);
        assert_eq!(h, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
    }

    /// Messages of awkward lengths (around the padding boundaries, empty, large) with junk left in
    /// the lent buffer past each message, and every third item yielding no message.
    struct Corpus {
        items: Vec<Vec<u8>>,
        next: usize,
        got: Vec<Option<(usize, [u8; 32])>>,
    }

    impl Corpus {
        fn new() -> Corpus {
            let mut lens: Vec<usize> = vec![0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096];
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            lens.extend((0..40).map(|_| (rand() % 150_000) as usize));
            lens.extend([300_000, 17, 0, 64]);
            let items = lens.iter().map(|&n| (0..n).map(|_| rand() as u8).collect()).collect::<Vec<Vec<u8>>>();
            let got = vec![None; items.len()];
            Corpus { items, next: 0, got }
        }
    }

    impl Messages for Corpus {
        type Tag = usize;
        fn next(&mut self, buf: &mut Vec<u8>) -> Option<(usize, usize)> {
            while self.next < self.items.len() {
                let i = self.next;
                self.next += 1;
                if i % 3 == 2 {
                    continue; // e.g. a cached or unreadable file: no message
                }
                let item = &self.items[i];
                if buf.len() < item.len() + 100 {
                    buf.resize(item.len() + 100, 0);
                }
                buf.fill(0xA5);
                buf[..item.len()].copy_from_slice(item);
                return Some((i, item.len()));
            }
            None
        }
        fn digest(&mut self, tag: usize, len: usize, digest: [u8; 32]) {
            assert!(self.got[tag].is_none(), "message {tag} digested twice");
            self.got[tag] = Some((len, digest));
        }
    }

    fn check_kernel(kernel: Kernel) {
        let mut corpus = Corpus::new();
        sha256_each_with(&mut corpus, kernel);
        for (i, item) in corpus.items.iter().enumerate() {
            if i % 3 == 2 {
                assert!(corpus.got[i].is_none(), "{kernel:?}: item {i} yielded no message but got a digest");
                continue;
            }
            let (len, digest) = corpus.got[i].unwrap_or_else(|| panic!("{kernel:?}: item {i} was never digested"));
            assert_eq!(len, item.len());
            assert_eq!(hex(&digest), sha256_hex(item), "{kernel:?}: item {i} of {} bytes", item.len());
        }
    }

    #[test]
    fn sha256_each_matches_sha2_on_every_kernel() {
        check_kernel(Kernel::Portable);
        check_kernel(Kernel::best());
        // Twice on one thread: the kept buffers hold the previous run's bytes.
        check_kernel(Kernel::best());
    }

    #[test]
    fn sha256_each_of_nothing_and_of_one() {
        struct One(Option<&'static [u8]>, Vec<String>);
        impl Messages for One {
            type Tag = ();
            fn next(&mut self, buf: &mut Vec<u8>) -> Option<((), usize)> {
                let m = self.0.take()?;
                buf.clear();
                buf.extend_from_slice(m);
                Some(((), m.len()))
            }
            fn digest(&mut self, _: (), _: usize, d: [u8; 32]) {
                self.1.push(hex(&d));
            }
        }
        let mut none = One(None, vec![]);
        sha256_each(&mut none);
        assert!(none.1.is_empty());
        let mut abc = One(Some(b"abc"), vec![]);
        sha256_each(&mut abc);
        assert_eq!(abc.1, ["ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"]);
    }

    #[test]
    fn hmac_rfc4231_case_2() {
        let mac = hmac_sha256(b"Jefe", b"what do ya want for nothing?");
        assert_eq!(hex(&mac), "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    }
}
