//! Socket-level control that tiny_http does not expose: I/O timeouts for every connection, and a handle
//! on one client's TCP socket when the server must cut it short (oversized bodies), multiplex it
//! (WebSocket reads with a short timeout while events are written) or notice that its peer left (an
//! idle SSE stream, which writes nothing for many seconds).
//!
//! Owns no connections: tiny_http keeps owning them. What this module hands out are duplicated file
//! descriptors of the same socket, so socket options and `shutdown` act on the real connection while
//! closing the duplicate leaves it alone. Linux and macOS only (`/proc/self/fd`, `/dev/fd`).

use std::net::{SocketAddr, TcpStream};
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Mutex;
use std::time::Duration;

/// Give one accepted connection read and write timeouts and `TCP_NODELAY`.
///
/// tiny_http sets none of these. Without timeouts an idle keep-alive client or a stalled uploader
/// would hold a thread forever; a read that times out ends an idle keep-alive connection quietly, a
/// write that times out drops a client that stopped reading. Without `TCP_NODELAY`, a response that
/// tiny_http writes in two segments (anything over its 1 KiB buffer) waits for the client's delayed
/// ACK: 40 ms per request on Linux.
///
/// These go on each accepted socket, never on the listener: `SO_RCVTIMEO` on a listening socket also
/// bounds `accept()`, which then fails with EAGAIN after one idle timeout.
pub fn prepare_accepted(sock: &TcpStream, timeout: Duration) -> std::io::Result<()> {
    sock.set_read_timeout(Some(timeout))?;
    sock.set_write_timeout(Some(timeout))?;
    sock.set_nodelay(true)
}

/// What the accept loop does about an `accept()` error: the pause before the next accept, and one
/// warning per burst of descriptor or memory exhaustion (not one per failed accept).
#[derive(Debug, Default)]
pub struct AcceptErrors {
    state: Mutex<BurstState>,
}

#[derive(Debug, Default)]
struct BurstState {
    /// Set while a burst of exhaustion errors is going on.
    in_burst: bool,
    errors: u64,
}

/// Pause after EMFILE/ENFILE/ENOBUFS/ENOMEM: the queue of waiting clients stays in the kernel's
/// backlog meanwhile, and each retry frees nothing by itself, so spinning would only burn a core.
pub const EXHAUSTED_BACKOFF: Duration = Duration::from_millis(100);
/// Pause after any other error (a client that reset before we accepted it, EINTR, ...).
pub const OTHER_BACKOFF: Duration = Duration::from_millis(5);

impl AcceptErrors {
    /// Called for every failed accept (or failed set-up of an accepted connection).
    pub fn on_error(&self, e: &std::io::Error) -> Duration {
        let exhausted = is_exhaustion(e);
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if !exhausted {
            tracing::debug!(error = %e, "accept failed; accepting the next connection");
            return OTHER_BACKOFF;
        }
        st.errors += 1;
        if !st.in_burst {
            st.in_burst = true;
            tracing::warn!(
                error = %e,
                "out of file descriptors or memory while accepting connections; backing off and retrying \
                 (raise `ulimit -n` if this repeats)"
            );
        }
        EXHAUSTED_BACKOFF
    }

    /// Called for every connection accepted and set up: ends a burst, saying how long it was.
    pub fn on_accepted(&self) {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.in_burst {
            tracing::info!(failed_accepts = st.errors, "accepting connections again");
            *st = BurstState::default();
        }
    }

    /// Whether a burst of exhaustion errors is going on now.
    pub fn in_burst(&self) -> bool {
        self.state.lock().unwrap_or_else(|p| p.into_inner()).in_burst
    }
}

fn is_exhaustion(e: &std::io::Error) -> bool {
    matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM))
}

/// A duplicate of the accepted socket whose peer is `peer` and whose local port is `local_port`, or
/// `None` when it cannot be found (no fd listing on this platform, or the client already went away).
///
/// tiny_http keeps each connection's `TcpStream` private; the only way to reach it is through the
/// process's descriptor table. Each candidate is duplicated first and only the duplicate is inspected,
/// so a descriptor closed or reused by another thread meanwhile is simply not a match.
pub fn find_client_socket(peer: SocketAddr, local_port: u16) -> Option<TcpStream> {
    let dir = std::fs::read_dir("/proc/self/fd").or_else(|_| std::fs::read_dir("/dev/fd")).ok()?;
    for entry in dir.flatten() {
        let Ok(fd) = entry.file_name().to_string_lossy().parse::<RawFd>() else { continue };
        // On Linux the link names the kind; skip files and pipes without a syscall on them.
        if let Ok(target) = std::fs::read_link(entry.path()) {
            if !target.to_string_lossy().starts_with("socket:") && cfg!(target_os = "linux") {
                continue;
            }
        }
        // SAFETY: `fd` was listed as open a moment ago and is only used for the `dup` below, which the
        // kernel answers with EBADF if it was closed since; if the number was reused by an unrelated
        // descriptor, the address check on our own duplicate rejects it. We never close `fd` itself.
        let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
        let Ok(owned) = borrowed.try_clone_to_owned() else { continue };
        let sock = TcpStream::from(owned);
        let same_peer = sock.peer_addr().is_ok_and(|a| a == peer);
        if same_peer && sock.local_addr().is_ok_and(|a| a.port() == local_port) {
            return Some(sock);
        }
    }
    None
}

/// Whether the peer closed or reset the connection, asked without reading from it (`poll` for
/// `POLLRDHUP`), so bytes the peer sent stay where they are. A client of a stream never closes its
/// sending side while it still listens, so a half-close counts as gone too.
pub fn peer_gone(sock: &TcpStream) -> bool {
    use std::os::fd::AsRawFd;
    let mut fds = libc::pollfd { fd: sock.as_raw_fd(), events: libc::POLLRDHUP, revents: 0 };
    // SAFETY: `fds` is one valid, initialised `pollfd` that lives across the call, and the count passed
    // is 1; the descriptor belongs to `sock`, which is borrowed for the call. A zero timeout never blocks.
    let ready = unsafe { libc::poll(&mut fds, 1, 0) };
    ready > 0 && fds.revents & (libc::POLLRDHUP | libc::POLLHUP | libc::POLLERR) != 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    #[test]
    fn finds_the_accepted_socket_and_controls_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        prepare_accepted(&accepted, Duration::from_millis(150)).unwrap();
        assert!(accepted.nodelay().unwrap());
        // The timeout: a read with nothing to read gives up instead of blocking.
        let mut b = [0u8; 1];
        let err = accepted.read(&mut b).unwrap_err();
        assert!(matches!(err.kind(), std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut), "{err}");
        let found = find_client_socket(peer, port).expect("socket found");
        found.shutdown(std::net::Shutdown::Write).unwrap();
        // The shutdown acted on the real connection: the client sees end of stream.
        let mut out = Vec::new();
        client.read_to_end(&mut out).unwrap();
        assert!(out.is_empty());
        client.write_all(b"x").unwrap();
        assert!(find_client_socket("127.0.0.1:1".parse().unwrap(), port).is_none());
    }

    #[test]
    fn a_peer_that_left_is_seen_without_reading() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, _) = listener.accept().unwrap();
        client.write_all(b"pending").unwrap();
        std::thread::sleep(Duration::from_millis(20));
        assert!(!peer_gone(&accepted), "unread bytes are not a hang-up");
        drop(client);
        std::thread::sleep(Duration::from_millis(20));
        assert!(peer_gone(&accepted));
        let mut left = Vec::new();
        accepted.read_to_end(&mut left).unwrap();
        assert_eq!(left, b"pending", "nothing was consumed");
    }
}

#[cfg(test)]
mod accept_error_tests {
    use super::*;

    #[test]
    fn exhaustion_backs_off_and_is_one_burst_until_a_connection_is_accepted() {
        let errs = AcceptErrors::default();
        let emfile = std::io::Error::from_raw_os_error(libc::EMFILE);
        assert_eq!(errs.on_error(&emfile), EXHAUSTED_BACKOFF);
        assert!(errs.in_burst());
        assert_eq!(errs.on_error(&std::io::Error::from_raw_os_error(libc::ENFILE)), EXHAUSTED_BACKOFF);
        assert_eq!(errs.state.lock().unwrap().errors, 2);
        errs.on_accepted();
        assert!(!errs.in_burst());
        let aborted = std::io::Error::from_raw_os_error(libc::ECONNABORTED);
        assert_eq!(errs.on_error(&aborted), OTHER_BACKOFF);
        assert!(!errs.in_burst());
    }
}
