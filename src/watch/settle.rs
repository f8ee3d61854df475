//! The settle tracker: when is a file that is being written ready to be hashed?
//!
//! A file is ready when the platform says its writer closed it (inotify's close-write), or when its
//! size and mtime have not changed for a whole settle window (writers that keep the file open, polling
//! mode, platforms without close-write). A file that changes during a window starts a new one; a file
//! that disappears is dropped (its removal arrives as its own event). Nothing here touches the disk:
//! the caller passes `stat` results in, and the time comes from a [`Clock`](super::clock::Clock), so
//! every rule is tested from small data cases.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::disk::Stat;

#[derive(Debug, Clone)]
struct Entry {
    /// Size and mtime at the start of the current window (`None`: not seen yet).
    last: Option<(u64, i128)>,
    /// When the current window ends.
    check_at: Duration,
    /// The writer closed the file: ready at the next [`Settle::due`].
    closed: bool,
    /// When the close happened (events can be delivered out of order: see [`Settle::touch_at`]).
    closed_at: Duration,
}

/// Files waiting to settle.
#[derive(Debug, Clone)]
pub struct Settle {
    window: Duration,
    pending: HashMap<PathBuf, Entry>,
}

impl Settle {
    pub fn new(window: Duration) -> Settle {
        Settle { window, pending: HashMap::new() }
    }

    pub fn window(&self) -> Duration {
        self.window
    }

    pub fn len(&self) -> usize {
        self.pending.len()
    }

    pub fn is_empty(&self) -> bool {
        self.pending.is_empty()
    }

    pub fn contains(&self, path: &Path) -> bool {
        self.pending.contains_key(path)
    }

    /// The file's content may be changing (created, written, renamed in): a new window starts now.
    /// `stat` is what the file looks like now.
    pub fn touch(&mut self, path: &Path, stat: Option<Stat>, now: Duration) {
        self.touch_at(path, stat, now, now);
    }

    /// [`Settle::touch`] for a change that happened at `at` (≤ `now`). A change that happened before
    /// the file's writer closed it does not undo the close: the close-write travels a faster path
    /// than the create/modify events, so it can arrive first.
    pub fn touch_at(&mut self, path: &Path, stat: Option<Stat>, at: Duration, now: Duration) {
        if self.pending.get(path).is_some_and(|e| e.closed && at <= e.closed_at) {
            return;
        }
        let entry = Entry {
            last: stat.map(|s| s.key()),
            check_at: now + self.window,
            closed: false,
            closed_at: Duration::ZERO,
        };
        self.pending.insert(path.to_path_buf(), entry);
    }

    /// The file's writer closed it: ready at the next [`Settle::due`].
    pub fn closed(&mut self, path: &Path, now: Duration) {
        self.closed_at(path, now, now);
    }

    /// [`Settle::closed`] for a close that happened at `at` (≤ `now`).
    pub fn closed_at(&mut self, path: &Path, at: Duration, now: Duration) {
        let e = self.pending.entry(path.to_path_buf()).or_insert(Entry {
            last: None,
            check_at: now,
            closed: true,
            closed_at: at,
        });
        e.closed = true;
        e.closed_at = e.closed_at.max(at);
        e.check_at = now;
    }

    /// Stop tracking `path` (it was removed).
    pub fn forget(&mut self, path: &Path) {
        self.pending.remove(path);
    }

    /// Stop tracking `path` and everything below it (a folder was removed).
    pub fn forget_under(&mut self, dir: &Path) {
        self.pending.retain(|p, _| !p.starts_with(dir));
    }

    /// A tracked file (or a folder of tracked files) was renamed: follow it.
    pub fn rename(&mut self, from: &Path, to: &Path) -> bool {
        let moved: Vec<PathBuf> = self.pending.keys().filter(|p| p.starts_with(from)).cloned().collect();
        for p in &moved {
            let e = self.pending.remove(p).expect("listed above");
            let rest = p.strip_prefix(from).expect("filtered by prefix");
            let target = if rest.as_os_str().is_empty() { to.to_path_buf() } else { to.join(rest) };
            self.pending.insert(target, e);
        }
        !moved.is_empty()
    }

    /// When the next window ends (`None`: nothing pending).
    pub fn next_deadline(&self) -> Option<Duration> {
        self.pending.values().map(|e| e.check_at).min()
    }

    /// The files that are ready at `now`, sorted: closed ones, and ones whose size and mtime did not
    /// change during a whole window. A file whose window ended with a change starts a new window;
    /// a file that is gone is dropped.
    pub fn due(&mut self, now: Duration, stat: impl Fn(&Path) -> Option<Stat>) -> Vec<PathBuf> {
        let mut ready = Vec::new();
        let mut gone = Vec::new();
        for (path, e) in self.pending.iter_mut() {
            if e.check_at > now {
                continue;
            }
            if e.closed {
                ready.push(path.clone());
                continue;
            }
            match stat(path) {
                None => gone.push(path.clone()),
                Some(s) if Some(s.key()) == e.last => ready.push(path.clone()),
                Some(s) => {
                    e.last = Some(s.key());
                    e.check_at = now + self.window;
                }
            }
        }
        for p in gone.iter().chain(&ready) {
            self.pending.remove(p);
        }
        ready.sort();
        ready
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::collections::HashMap;

    const W: Duration = Duration::from_millis(500);

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    /// A disk of (size, mtime) pairs the test edits between steps.
    struct Files(RefCell<HashMap<PathBuf, (u64, i128)>>);

    impl Files {
        fn new() -> Files {
            Files(RefCell::new(HashMap::new()))
        }
        fn set(&self, p: &str, size: u64, mtime: i128) {
            self.0.borrow_mut().insert(PathBuf::from(p), (size, mtime));
        }
        fn rm(&self, p: &str) {
            self.0.borrow_mut().remove(Path::new(p));
        }
        fn stat(&self, p: &Path) -> Option<Stat> {
            self.0.borrow().get(p).map(|&(size, mtime_ns)| Stat { is_dir: false, size, mtime_ns })
        }
    }

    fn paths(v: &[&str]) -> Vec<PathBuf> {
        v.iter().map(PathBuf::from).collect()
    }

    #[test]
    fn close_write_is_ready_at_once() {
        let f = Files::new();
        let mut s = Settle::new(W);
        f.set("/a/x.png", 10, 1);
        s.touch(Path::new("/a/x.png"), f.stat(Path::new("/a/x.png")), ms(0));
        assert!(s.due(ms(1), |p| f.stat(p)).is_empty());
        s.closed(Path::new("/a/x.png"), ms(2));
        assert_eq!(s.due(ms(2), |p| f.stat(p)), paths(&["/a/x.png"]));
        assert!(s.is_empty());
    }

    #[test]
    fn stable_for_a_window_is_ready_and_a_change_starts_a_new_window() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/slow.bin");
        f.set("/a/slow.bin", 100, 1);
        s.touch(p, f.stat(p), ms(0));
        assert_eq!(s.next_deadline(), Some(ms(500)));
        // The writer keeps the file open and appends: the window ends with a change.
        f.set("/a/slow.bin", 200, 2);
        assert!(s.due(ms(500), |p| f.stat(p)).is_empty());
        assert_eq!(s.next_deadline(), Some(ms(1000)));
        // Nothing changed for the next whole window: ready.
        assert!(s.due(ms(999), |p| f.stat(p)).is_empty(), "not before the window ends");
        assert_eq!(s.due(ms(1000), |p| f.stat(p)), paths(&["/a/slow.bin"]));
    }

    #[test]
    fn mtime_change_alone_restarts_the_window() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/x");
        f.set("/a/x", 5, 1);
        s.touch(p, f.stat(p), ms(0));
        f.set("/a/x", 5, 2); // same size, rewritten in place
        assert!(s.due(ms(500), |p| f.stat(p)).is_empty());
        assert_eq!(s.due(ms(1000), |p| f.stat(p)), paths(&["/a/x"]));
    }

    #[test]
    fn every_touch_restarts_the_window() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/x");
        f.set("/a/x", 1, 1);
        s.touch(p, f.stat(p), ms(0));
        f.set("/a/x", 2, 2);
        s.touch(p, f.stat(p), ms(400));
        assert!(s.due(ms(500), |p| f.stat(p)).is_empty());
        assert_eq!(s.due(ms(900), |p| f.stat(p)), paths(&["/a/x"]));
    }

    #[test]
    fn a_write_after_close_cancels_readiness() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/x");
        f.set("/a/x", 1, 1);
        s.closed(p, ms(0));
        f.set("/a/x", 2, 2);
        s.touch(p, f.stat(p), ms(1)); // reopened and written again before we looked
        assert!(s.due(ms(2), |p| f.stat(p)).is_empty());
        assert_eq!(s.due(ms(501), |p| f.stat(p)), paths(&["/a/x"]));
    }

    #[test]
    fn a_change_delivered_late_but_made_before_the_close_does_not_undo_it() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/x");
        f.set("/a/x", 1, 1);
        s.closed_at(p, ms(10), ms(12)); // the close-write, delivered at once
        s.touch_at(p, f.stat(p), ms(5), ms(60)); // the create, made earlier, delivered by the debouncer
        assert_eq!(s.due(ms(60), |p| f.stat(p)), paths(&["/a/x"]));
        // A change made after the close does undo it.
        s.closed_at(p, ms(100), ms(100));
        s.touch_at(p, f.stat(p), ms(101), ms(101));
        assert!(s.due(ms(101), |p| f.stat(p)).is_empty());
    }

    #[test]
    fn a_file_that_disappears_is_dropped() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/tmp");
        f.set("/a/tmp", 1, 1);
        s.touch(p, f.stat(p), ms(0));
        f.rm("/a/tmp");
        assert!(s.due(ms(600), |p| f.stat(p)).is_empty());
        assert!(s.is_empty());
        assert_eq!(s.next_deadline(), None);
    }

    #[test]
    fn renames_follow_files_and_folders() {
        let f = Files::new();
        let mut s = Settle::new(W);
        f.set("/a/d/x", 1, 1);
        s.touch(Path::new("/a/d/x"), f.stat(Path::new("/a/d/x")), ms(0));
        assert!(s.rename(Path::new("/a/d"), Path::new("/a/e")));
        f.rm("/a/d/x");
        f.set("/a/e/x", 1, 1);
        assert_eq!(s.due(ms(500), |p| f.stat(p)), paths(&["/a/e/x"]));
        assert!(!s.rename(Path::new("/a/nothing"), Path::new("/a/else")));
    }

    #[test]
    fn a_file_seen_first_at_window_end_needs_one_more_window() {
        let f = Files::new();
        let mut s = Settle::new(W);
        let p = Path::new("/a/late");
        s.touch(p, None, ms(0)); // stat failed at touch time (raced with the create)
        f.set("/a/late", 3, 1);
        assert!(s.due(ms(500), |p| f.stat(p)).is_empty());
        assert_eq!(s.due(ms(1000), |p| f.stat(p)), paths(&["/a/late"]));
    }
}
