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

/// A stream of messages for [`sha256_each`], each read from its own reader.
pub trait Messages {
    /// What the caller uses to tell the results apart.
    type Tag;
    /// Where a message's bytes come from.
    type Reader: Read;
    /// The next message: its tag, a reader at its start, and its expected length if known (a
    /// file's size from `stat`). Work that yields no message (an open error, a hash taken from a
    /// cache) is done here and skipped over. Not called again once it has returned `None`.
    ///
    /// The expected length only saves the final end-of-file `read`: when a read that was offered
    /// more room returns exactly the rest of the expected length, the message ends there. A reader
    /// that yields more than expected is read to its end.
    fn next(&mut self) -> Option<(Self::Tag, Self::Reader, Option<u64>)>;
    /// The SHA-256 and length of a message `next` returned, or the error that stopped its reader;
    /// called once per message, in the order they complete (not necessarily the order of `next`).
    fn done(&mut self, tag: Self::Tag, result: io::Result<([u8; 32], u64)>);
}

/// Bytes read into a lane per `read`: files up to this size take one `read` (and none for the end
/// of file when the expected length is right); larger ones stream through the buffer. Two buffers
/// of this size per hashing thread, kept between calls.
const CHUNK: usize = 512 * 1024;

/// Room past a chunk for the padding (at most 72 bytes) and the carried-over partial block.
const SLACK: usize = 128;

thread_local! {
    /// The two lanes' buffers, kept across calls: a scan hashes thousands of files per thread.
    static LANES: std::cell::RefCell<[Vec<u8>; 2]> = const { std::cell::RefCell::new([Vec::new(), Vec::new()]) };
}

/// Hash every message of `messages`, reading each through a fixed-size buffer. With the SHA
/// extensions, two messages are in flight at a time on this thread, interleaved block by block;
/// elsewhere one after the other with `sha2`.
pub fn sha256_each<M: Messages>(messages: &mut M) {
    sha256_each_with(messages, Kernel::best(), CHUNK)
}

/// How [`sha256_each`] compresses blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kernel {
    /// `sha2`, one message at a time (any CPU).
    Portable,
    /// Two messages interleaved on the SHA extensions; only [`Kernel::best`] picks it.
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

fn sha256_each_with<M: Messages>(messages: &mut M, kernel: Kernel, chunk: usize) {
    assert!(chunk >= 2 * 64, "a chunk holds at least two blocks");
    LANES.with(|cell| {
        // A nested call on the same thread (never made today) gets fresh buffers.
        let mut fresh = [Vec::new(), Vec::new()];
        let mut borrowed = cell.try_borrow_mut();
        let bufs = match borrowed.as_deref_mut() {
            Ok(bufs) => bufs,
            Err(_) => &mut fresh,
        };
        for buf in bufs.iter_mut() {
            if buf.len() < chunk + SLACK {
                buf.resize(chunk + SLACK, 0);
            }
        }
        match kernel {
            Kernel::Portable => {
                while let Some((tag, mut reader, expected)) = messages.next() {
                    let result = portable(&mut reader, expected, &mut bufs[0][..chunk]);
                    messages.done(tag, result);
                }
            }
            #[cfg(target_arch = "x86_64")]
            Kernel::Pair => pair(messages, bufs, chunk),
        }
    })
}

/// Where one message's reading stands.
#[derive(Debug, Clone, Copy, Default)]
struct Progress {
    /// Bytes read so far.
    total: u64,
    /// What the caller expects in all.
    expected: Option<u64>,
}

impl Progress {
    /// One `read` into `room`; returns the byte count and whether the message has ended.
    fn read(&mut self, reader: &mut impl Read, room: &mut [u8]) -> io::Result<(usize, bool)> {
        let n = loop {
            match reader.read(room) {
                Ok(n) => break n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        };
        self.total += n as u64;
        let at_expected_end = n > 0 && n < room.len() && Some(self.total) == self.expected;
        Ok((n, n == 0 || at_expected_end))
    }
}

/// One message at a time through `sha2`.
fn portable(reader: &mut impl Read, expected: Option<u64>, buf: &mut [u8]) -> io::Result<([u8; 32], u64)> {
    let mut hasher = Sha256::new();
    let mut progress = Progress { total: 0, expected };
    loop {
        let (n, end) = progress.read(reader, buf)?;
        hasher.update(&buf[..n]);
        if end {
            return Ok((hasher.finalize().into(), progress.total));
        }
    }
}

/// SHA-256's initial state (FIPS 180-4 §5.3.3).
#[cfg(target_arch = "x86_64")]
const H0: [u32; 8] = [0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a, 0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19];

/// One message in flight. Its unhashed bytes are `buf[at..filled]`; once the reader has ended, the
/// padding is in place and `buf[at..end]` are the last blocks.
#[cfg(target_arch = "x86_64")]
struct Lane<T, R> {
    tag: T,
    reader: R,
    progress: Progress,
    state: [u32; 8],
    at: usize,
    filled: usize,
    /// The padded end, once the reader has ended.
    end: Option<usize>,
}

#[cfg(target_arch = "x86_64")]
impl<T, R: Read> Lane<T, R> {
    fn new(tag: T, reader: R, expected: Option<u64>) -> Self {
        Lane { tag, reader, progress: Progress { total: 0, expected }, state: H0, at: 0, filled: 0, end: None }
    }

    /// Whole blocks ready to compress.
    fn ready(&self) -> usize {
        (self.end.unwrap_or(self.filled) - self.at) / 64
    }

    fn finished(&self) -> bool {
        self.end == Some(self.at)
    }

    /// Compress the ready blocks on their own (when no other message is left to pair with).
    fn compress_alone(&mut self, buf: &[u8]) {
        let n = self.ready() * 64;
        // SAFETY: lanes exist only under `Kernel::Pair`, chosen only when `sha256x2::available()`.
        unsafe { sha256x2::compress(&mut self.state, &buf[self.at..self.at + n]) };
        self.at += n;
    }

    /// Read until at least one block is ready (or the message is padded): the partial block left
    /// over moves to the front of `buf`, then `read`s fill the chunk after it.
    fn fill(&mut self, buf: &mut [u8], chunk: usize) -> io::Result<()> {
        buf.copy_within(self.at..self.filled, 0);
        self.filled -= self.at;
        self.at = 0;
        while self.filled < 64 {
            let (n, end) = self.progress.read(&mut self.reader, &mut buf[self.filled..chunk])?;
            self.filled += n;
            if end {
                self.end = Some(pad(buf, self.filled, self.progress.total));
                return Ok(());
            }
        }
        Ok(())
    }
}

/// Write SHA-256 padding for a message of `total` bytes whose last bytes end at `buf[filled]`, and
/// return where the padded blocks end (a multiple of 64 when the buffer starts at a block).
#[cfg(target_arch = "x86_64")]
fn pad(buf: &mut [u8], filled: usize, total: u64) -> usize {
    let end = (filled + 9).div_ceil(64) * 64;
    buf[filled] = 0x80;
    buf[filled + 1..end - 8].fill(0);
    buf[end - 8..end].copy_from_slice(&total.wrapping_mul(8).to_be_bytes());
    end
}

#[cfg(target_arch = "x86_64")]
fn pair<M: Messages>(messages: &mut M, bufs: &mut [Vec<u8>; 2], chunk: usize) {
    debug_assert!(sha256x2::available(), "Kernel::Pair without the SHA extensions");
    fn output(state: &[u32; 8]) -> [u8; 32] {
        let mut out = [0u8; 32];
        for (bytes, word) in out.chunks_exact_mut(4).zip(state) {
            bytes.copy_from_slice(&word.to_be_bytes());
        }
        out
    }
    let mut lanes: [Option<Lane<M::Tag, M::Reader>>; 2] = [None, None];
    let mut more = true;
    loop {
        // Every lane busy (while messages last), every busy lane with a block ready.
        for (slot, buf) in lanes.iter_mut().zip(bufs.iter_mut()) {
            loop {
                if slot.is_none() && more {
                    match messages.next() {
                        Some((tag, reader, expected)) => *slot = Some(Lane::new(tag, reader, expected)),
                        None => more = false,
                    }
                }
                let Some(lane) = slot else { break };
                if lane.ready() > 0 || lane.end.is_some() {
                    break;
                }
                if let Err(e) = lane.fill(buf, chunk) {
                    let failed = slot.take().expect("checked above");
                    messages.done(failed.tag, Err(e));
                }
            }
        }
        let [buf0, buf1] = bufs;
        match &mut lanes {
            [Some(a), Some(b)] => {
                let n = a.ready().min(b.ready()) * 64;
                // SAFETY: `Kernel::Pair` is chosen only when `sha256x2::available()`.
                unsafe {
                    sha256x2::compress2(&mut a.state, &buf0[a.at..a.at + n], &mut b.state, &buf1[b.at..b.at + n])
                };
                a.at += n;
                b.at += n;
            }
            [Some(a), None] => a.compress_alone(buf0),
            [None, Some(b)] => b.compress_alone(buf1),
            [None, None] => return,
        }
        for slot in &mut lanes {
            if slot.as_ref().is_some_and(Lane::finished) {
                let done = slot.take().expect("checked above");
                messages.done(done.tag, Ok((output(&done.state), done.progress.total)));
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

    /// A reader over `data` that returns short reads of varying sizes (from `seed`; only at the end
    /// when `whole`, like a regular file) and, when `fail_at` is set, fails once that many bytes
    /// have been read.
    struct Chunky {
        data: std::rc::Rc<Vec<u8>>,
        pos: usize,
        seed: u64,
        whole: bool,
        fail_at: Option<usize>,
    }

    impl Read for Chunky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.fail_at.is_some_and(|f| self.pos >= f) {
                return Err(io::Error::other("disk on fire"));
            }
            self.seed = self.seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            // Mostly whole reads (like a regular file); sometimes short, sometimes a single byte.
            let want = match self.seed >> 60 {
                _ if self.whole => buf.len(),
                0 => 1,
                1..=3 => 1 + (self.seed >> 20) as usize % buf.len(), // never 0 before the end: that means end of file
                _ => buf.len(),
            };
            let end = (self.pos + want).min(self.data.len()).min(self.fail_at.unwrap_or(usize::MAX).max(self.pos + 1));
            let n = end - self.pos;
            buf[..n].copy_from_slice(&self.data[self.pos..end]);
            self.pos = end;
            Ok(n)
        }
    }

    /// What the caller tells the hasher to expect.
    #[derive(Debug, Clone, Copy)]
    enum Expect {
        Right,
        Unknown,
        /// Fewer bytes than the reader yields (a file that grew since its stat).
        Short,
    }

    type Outcome = io::Result<([u8; 32], u64)>;

    /// Messages of awkward lengths (around the padding boundaries and the chunk size, empty,
    /// large), every third item yielding no message, some readers failing midway.
    struct Corpus {
        items: Vec<(std::rc::Rc<Vec<u8>>, Expect, Option<usize>)>,
        next: usize,
        got: Vec<Option<Outcome>>,
    }

    impl Corpus {
        fn new(chunk: usize) -> Corpus {
            let mut lens: Vec<usize> = vec![0, 1, 3, 55, 56, 57, 63, 64, 65, 119, 120, 127, 128, 129, 1000, 4096];
            lens.extend([chunk - 1, chunk, chunk + 1, chunk + 55, chunk + 64, 2 * chunk, 3 * chunk + 7]);
            let mut x = 0x2545_f491_4f6c_dd1du64;
            let mut rand = move || {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x
            };
            lens.extend((0..40).map(|_| (rand() % 150_000) as usize));
            lens.extend([1_300_000, 17, 0, 64]);
            let items = lens
                .iter()
                .enumerate()
                .map(|(i, &n)| {
                    let data = std::rc::Rc::new((0..n).map(|_| rand() as u8).collect::<Vec<u8>>());
                    let fail_at = (i % 7 == 3 && n > 0).then_some(n / 2);
                    let expect = match i % 4 {
                        3 if fail_at.is_none() => Expect::Short,
                        1 => Expect::Unknown,
                        _ => Expect::Right,
                    };
                    (data, expect, fail_at)
                })
                .collect::<Vec<_>>();
            let got = items.iter().map(|_| None).collect();
            Corpus { items, next: 0, got }
        }
    }

    impl Messages for Corpus {
        type Tag = usize;
        type Reader = Chunky;
        fn next(&mut self) -> Option<(usize, Chunky, Option<u64>)> {
            while self.next < self.items.len() {
                let i = self.next;
                self.next += 1;
                if i % 3 == 2 {
                    continue; // e.g. a cached or unopenable file: no message
                }
                let (data, expect, fail_at) = &self.items[i];
                let len = data.len() as u64;
                let expected = match expect {
                    Expect::Right => Some(len),
                    Expect::Unknown => None,
                    Expect::Short => Some(len / 2),
                };
                // A reader that yields more than expected is read to its end only if its short reads
                // do not stop exactly at the expected length, as a regular file's never do.
                let whole = matches!(expect, Expect::Short);
                let reader = Chunky { data: data.clone(), pos: 0, seed: i as u64, whole, fail_at: *fail_at };
                return Some((i, reader, expected));
            }
            None
        }
        fn done(&mut self, tag: usize, result: io::Result<([u8; 32], u64)>) {
            assert!(self.got[tag].is_none(), "message {tag} reported twice");
            self.got[tag] = Some(result);
        }
    }

    fn check_kernel(kernel: Kernel, chunk: usize) {
        let mut corpus = Corpus::new(chunk);
        sha256_each_with(&mut corpus, kernel, chunk);
        for (i, (data, _, fail_at)) in corpus.items.iter().enumerate() {
            let what = format!("{kernel:?}, chunk {chunk}: item {i} of {} bytes", data.len());
            match (i % 3 == 2, fail_at, &corpus.got[i]) {
                (true, _, None) => {}
                (true, _, Some(_)) => panic!("{what} yielded no message but was reported"),
                (false, _, None) => panic!("{what} was never reported"),
                (false, Some(_), Some(Err(e))) => assert_eq!(e.to_string(), "disk on fire", "{what}"),
                (false, None, Some(Ok((digest, len)))) => {
                    assert_eq!(*len, data.len() as u64, "{what}");
                    assert_eq!(hex(digest), sha256_hex(data), "{what}");
                }
                (false, _, Some(other)) => panic!("{what}: unexpected {other:?}"),
            }
        }
    }

    #[test]
    fn sha256_each_matches_sha2_on_every_kernel_and_chunk_size() {
        for chunk in [128, 1000, CHUNK] {
            check_kernel(Kernel::Portable, chunk);
            check_kernel(Kernel::best(), chunk);
        }
        // Again on the same thread: the kept buffers hold the previous run's bytes.
        check_kernel(Kernel::best(), 1000);
    }

    #[test]
    fn the_two_lane_kernel_is_available_where_the_cpu_has_sha_ni() {
        // So that the test above exercises it on the machines that build this project; on other
        // CPUs it covers the portable path only, and says so.
        #[cfg(target_arch = "x86_64")]
        if std::arch::is_x86_feature_detected!("sha") && std::arch::is_x86_feature_detected!("sse4.1") {
            assert_eq!(Kernel::best(), Kernel::Pair);
            return;
        }
        eprintln!("this CPU has no SHA extensions: only the portable SHA-256 path is tested");
        assert_eq!(Kernel::best(), Kernel::Portable);
    }

    #[test]
    fn sha256_each_of_nothing_and_of_one() {
        struct One(Option<&'static [u8]>, Vec<String>);
        impl Messages for One {
            type Tag = ();
            type Reader = &'static [u8];
            fn next(&mut self) -> Option<((), &'static [u8], Option<u64>)> {
                let m = self.0.take()?;
                Some(((), m, Some(m.len() as u64)))
            }
            fn done(&mut self, _: (), result: io::Result<([u8; 32], u64)>) {
                self.1.push(hex(&result.unwrap().0));
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
