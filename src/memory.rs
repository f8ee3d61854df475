//! Handing memory freed after start-up back to the operating system.
//!
//! Long-running commands (`serve`, `watch`) build large transient structures at start (the asset
//! index is built in parallel from every sidecar; the watcher reconciles the whole tree). glibc keeps
//! what they free in per-thread arenas, so the resident size stays near the start-up peak; one
//! `malloc_trim` after each of those phases returns it (about 7 MB for 20,000 assets). `serve` also
//! caps the number of arenas at the number of cores: its request workers outnumber the cores, and
//! each extra arena keeps its own high-water mark of freed memory. Elsewhere (another libc, another
//! OS) both do nothing. Touches nothing else.

/// Return freed heap memory to the operating system, where the allocator allows it.
pub fn release_free() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim only walks the allocator's own free lists; it takes no pointers from us
    // and is thread-safe (it locks each arena).
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Let the allocator use at most `n` arenas (at least 2). Call once, early, before threads start.
pub fn limit_arenas(n: usize) {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only sets an allocator parameter; M_ARENA_MAX may be changed at any time.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, n.max(2).min(i32::MAX as usize) as i32);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = n;
}
