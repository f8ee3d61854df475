//! The outbound pipeline: everything that leaves the machine goes through it, whatever the sink.
//!
//! ```text
//!  source                         queue / position             sink                 policy
//!  hook history ──(follower)──▶  outbox + checkpoint   ──▶  webhook (signed)  ─┐
//!  crash dumps  ──(a pass)────▶  outbox                ──▶  sentry (envelope) ─┼─▶ client ─▶ Verdict ─▶ ack │ retry │ drop
//!  history, run.log, dumps ───▶  checkpoint / offsets  ──▶  otlp (protobuf)   ─┘
//! ```
//!
//! - [`client`]: the HTTP client (the only home of `ureq`); every answer, even "no answer", is a
//!   [`Reply`].
//! - [`queue`]: the durable [`Outbox`] for sinks that track each message (webhooks, crash uploads).
//! - [`checkpoint`]: a follower's durable position in the hook history (webhooks, OTLP).
//! - [`retry`]: what an answer means ([`Verdict`]) and the backoff schedule with `Retry-After`.
//! - [`sink`]: the [`Sink`] trait: how a protocol turns a body into a request (signing,
//!   authentication, compression) and reads its answers; [`send`] runs one attempt.
//!
//! The drivers stay with their sources: `hooks::delivery` (the webhook worker with its lanes),
//! `crash_upload` (one pass over the dumps) and `otlp` (the exporter). Each holds its own lock file,
//! so each has exactly one writer of its outbox and checkpoint.

pub mod checkpoint;
pub mod client;
pub mod queue;
pub mod retry;
pub mod sink;

pub use client::{check_url, Client, Reply};
pub use queue::{Outbox, Outcome, Pending};
pub use retry::{next_delay, parse_retry_after, receiver_unavailable, Verdict};
pub use sink::{send, Attempt, Compression, Request, Sink};
