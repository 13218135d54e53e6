//! Pre-rotation reminders (SPEC §5): which reminders are due, what they say, the ledger that
//! keeps each one, and the task that publishes each of them exactly once.
//!
//! The folder by layer:
//! - `plan`: which reminders are due ([`due_reminders`], [`ReminderKey`], leads, the overdue
//!   notice).
//! - `message`: what a reminder says ([`render`], [`Message`], the ids of a FIFO topic).
//! - `notice`: what a scheduled rotation's start and end notices say ([`render_notice`]) and
//!   their ledger keys ([`notice_key`]); the rotation scheduler records them, the task sends them.
//! - `ledger`: the `reminders` table of the store ([`LedgerStore`], implemented by the store); the only place that names SQL
//!   for reminders.
//! - `task`: the [`Reminders`] task and its retry [`backoff`].
//!
//! `plan`, `message` and `notice` are pure: they do no I/O and never read the clock (`now` is a
//! parameter). Only `task` talks to SNS, and only `ledger` and `task` touch the store.
//!
//! The [`Reminders`] task ties them together:
//!
//! 1. After each metadata poll (and at least every `poll.metadata_every`) it computes the
//!    reminders due from the view and writes every new one to the ledger as `pending`, with its
//!    rendered message, in one durable transaction. Nothing is published before that commit.
//! 2. It publishes every pending reminder. Once SNS accepted one, the row becomes `sent` with the
//!    SNS message id, and `keywarden_reminders_sent_total{secret,lead}` counts it. A failure
//!    (missing topic, throttling, network) is counted in `keywarden_reminder_failures_total`,
//!    recorded on the row, and retried with capped, jittered exponential backoff. Rows are never
//!    deleted, so a restart finds the pending ones and sends them.
//! 3. On a FIFO topic each message carries a MessageDeduplicationId derived from (secret, due,
//!    lead), so a crash between SNS accepting a message and the ledger recording it does not
//!    deliver it twice when the retry comes within SNS's five-minute deduplication interval. On
//!    a standard topic that same window is the one place a duplicate can happen.
//!
//! Keys: a lead reminder has `lead_seconds` = the lead; the overdue notice has
//! `lead_seconds` = [`OVERDUE_LEAD`]. A rotation moves the due date, so the next cycle gets new
//! keys and its own reminders. With a planned rotation time (SPEC §11) a lead counts back from
//! it, the key stays the due date. A scheduled rotation's notices have `due` = the rotation's
//! `requested_at` and `lead_seconds` = [`STARTED_LEAD`] or [`ENDED_LEAD`]; they are not counted
//! in `keywarden_reminders_sent_total` (failed publishes are, in the failure counter).
//!
//! This folder never reads a secret value: everything it says comes from the view (metadata)
//! and the configuration. It must never import the daemon, the HTTP server, the CLI or the
//! incident workflow; other folders use only what is re-exported here.

mod ledger;
pub mod ledger_dynamodb;
mod message;
mod notice;
mod plan;
mod task;
#[cfg(test)]
mod testing;

pub use ledger::{LedgerRow, LedgerStore, PendingRow, all_rows};
pub use message::{AccessInfo, Message, MessageContext, render};
pub use notice::{RotationNotice, notice_key, render_notice};
pub use plan::{
    ENDED_LEAD, NoticeKind, OVERDUE_LABEL, OVERDUE_LEAD, ReminderKey, STARTED_LEAD, due_reminders,
};
pub use task::{Reminders, backoff};
