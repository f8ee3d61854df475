//! The threads that send responses, so that a request worker never waits on a client.
//!
//! A response is written into the socket, and the write blocks once the client stops reading and the
//! kernel buffers are full, until the client reads or the write times out (`io_timeout_ms`). Written by
//! a request worker, a few downloads nobody reads, or one of them with small requests pipelined behind
//! it (tiny_http writes a connection's responses in order), would hold every worker for that long and
//! leave `GET /health` unanswered. So a worker only computes the reply and hands the writing here.
//!
//! The pool is elastic: a job goes to an idle thread when there is one and to a new thread when there
//! is none, so a blocked write never delays another; threads beyond `keep` end after idling
//! [`IDLE_EXIT`]. It owns no sockets and knows nothing of HTTP: a job is any closure.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

/// How long a thread beyond the ones kept waits for work before it ends.
pub const IDLE_EXIT: Duration = Duration::from_secs(5);

type Job = Box<dyn FnOnce() + Send>;

#[derive(Default)]
struct State {
    jobs: VecDeque<Job>,
    /// Threads blocked waiting for a job.
    waiting: usize,
    threads: usize,
}

struct Inner {
    state: Mutex<State>,
    ready: Condvar,
    keep: usize,
}

/// See the module documentation.
#[derive(Clone)]
pub(crate) struct Writers {
    inner: Arc<Inner>,
}

impl Writers {
    /// A pool that keeps `keep` idle threads once they exist (it starts none).
    pub fn new(keep: usize) -> Writers {
        Writers { inner: Arc::new(Inner { state: Mutex::new(State::default()), ready: Condvar::new(), keep }) }
    }

    /// Run `job` on a writer thread; on this thread when no thread can be started.
    pub fn run(&self, job: impl FnOnce() + Send + 'static) {
        let mut st = self.lock();
        st.jobs.push_back(Box::new(job));
        // Every waiting thread will take one job; more jobs than that need another thread.
        if st.jobs.len() <= st.waiting {
            self.inner.ready.notify_one();
            return;
        }
        st.threads += 1;
        drop(st);
        let pool = self.clone();
        let spawned = std::thread::Builder::new().name("http-writer".into()).spawn(move || pool.work());
        if let Err(e) = spawned {
            tracing::warn!(error = %e, "cannot start a response writer thread; writing on the request worker");
            let job = {
                let mut st = self.lock();
                st.threads -= 1;
                st.jobs.pop_back()
            };
            if let Some(job) = job {
                job();
            }
        }
    }

    /// Wait until no job is queued or running, at most `timeout`.
    pub fn wait_idle(&self, timeout: Duration) {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let st = self.lock();
            if st.jobs.is_empty() && st.threads == st.waiting {
                return;
            }
            drop(st);
            if std::time::Instant::now() >= deadline {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn work(&self) {
        let mut st = self.lock();
        loop {
            if let Some(job) = st.jobs.pop_front() {
                drop(st);
                // A job that panics must not take the thread's bookkeeping with it.
                if std::panic::catch_unwind(std::panic::AssertUnwindSafe(job)).is_err() {
                    tracing::error!("a response writer job panicked");
                }
                st = self.lock();
                continue;
            }
            st.waiting += 1;
            let (next, timeout) = self.inner.ready.wait_timeout(st, IDLE_EXIT).unwrap_or_else(|p| p.into_inner());
            st = next;
            st.waiting -= 1;
            if timeout.timed_out() && st.jobs.is_empty() && st.threads > self.inner.keep {
                st.threads -= 1;
                return;
            }
        }
    }

    #[cfg(test)]
    fn threads(&self) -> usize {
        self.lock().threads
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::time::Instant;

    #[test]
    fn a_blocked_job_never_delays_the_next_and_idle_threads_are_reused() {
        let pool = Writers::new(1);
        let (release, blocked) = mpsc::channel::<()>();
        let (done, finished) = mpsc::channel::<u32>();
        // Two jobs that block until released, like writes to clients that do not read.
        let blocked = Arc::new(Mutex::new(blocked));
        for _ in 0..2 {
            let blocked = Arc::clone(&blocked);
            pool.run(move || {
                let _ = blocked.lock().unwrap().recv();
            });
        }
        let started = Instant::now();
        let d = done.clone();
        pool.run(move || d.send(3).unwrap());
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)), Ok(3));
        assert!(started.elapsed() < Duration::from_secs(1));
        assert_eq!(pool.threads(), 3);
        release.send(()).unwrap();
        release.send(()).unwrap();
        // Let the threads go idle, then the next jobs reuse them instead of starting new ones.
        std::thread::sleep(Duration::from_millis(100));
        for i in 0..10 {
            let d = done.clone();
            pool.run(move || d.send(i).unwrap());
            assert_eq!(finished.recv_timeout(Duration::from_secs(5)), Ok(i));
        }
        assert_eq!(pool.threads(), 3);
        pool.run(|| panic!("a job that panics"));
        let d = done.clone();
        pool.run(move || d.send(42).unwrap());
        assert_eq!(finished.recv_timeout(Duration::from_secs(5)), Ok(42));
    }
}
