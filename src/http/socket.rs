//! Socket-level control that tiny_http does not expose: I/O timeouts for every connection, and a handle
//! on one client's TCP socket when the server must cut it short (oversized bodies) or multiplex it
//! (WebSocket reads with a short timeout while events are written).
//!
//! Owns no connections: tiny_http keeps owning them. What this module hands out are duplicated file
//! descriptors of the same socket, so socket options and `shutdown` act on the real connection while
//! closing the duplicate leaves it alone. Linux and macOS only (`/proc/self/fd`, `/dev/fd`).

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd, RawFd};
use std::time::Duration;

use anyhow::{Context, Result};

/// Give every connection accepted from `listener` read and write timeouts and `TCP_NODELAY`.
///
/// tiny_http sets none of these. Without timeouts an idle keep-alive client or a stalled uploader
/// would hold a thread forever; a read that times out ends an idle keep-alive connection quietly, a
/// write that times out drops a client that stopped reading. Without `TCP_NODELAY`, a response that
/// tiny_http writes in two segments (anything over its 1 KiB buffer) waits for the client's delayed
/// ACK: 40 ms per request on Linux. Linux and the BSDs copy these options from the listening socket to
/// each accepted one, so setting them here covers the connections tiny_http accepts later.
pub fn set_inherited_options(listener: &TcpListener, timeout: Duration) -> Result<()> {
    let dup = listener.as_fd().try_clone_to_owned().context("cannot duplicate the listening socket")?;
    let sock = TcpStream::from(dup);
    sock.set_read_timeout(Some(timeout)).context("cannot set the read timeout on the listening socket")?;
    sock.set_write_timeout(Some(timeout)).context("cannot set the write timeout on the listening socket")?;
    sock.set_nodelay(true).context("cannot set TCP_NODELAY on the listening socket")?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};

    #[test]
    fn finds_the_accepted_socket_and_controls_it() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        set_inherited_options(&listener, Duration::from_millis(150)).unwrap();
        let port = listener.local_addr().unwrap().port();
        let mut client = TcpStream::connect(listener.local_addr().unwrap()).unwrap();
        let (mut accepted, peer) = listener.accept().unwrap();
        assert!(accepted.nodelay().unwrap());
        // Inherited timeout: a read with nothing to read gives up instead of blocking.
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
}
