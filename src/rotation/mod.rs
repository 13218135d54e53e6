//! The rotation core (SPEC §6): one engine for scheduled, manual and compromise rotations.
//!
//! A request is journaled (state `running`, step `create`) before anyone is told it was
//! accepted; a task per rotation then drives the steps create, set, test and finish
//! ([`protocol`]) with the secret's [`strategy::RotationStrategy`] and [`hooks`], recording each
//! completed step durably. A failed step is retried with exponential backoff up to
//! [`MAX_ATTEMPTS`]; then the rotation is `failed`, AWSPENDING is taken off its version (AWSCURRENT
//! was never touched before finish), and the failure is counted and shown. After finish the
//! rotation waits in `grace` and the finalizer ([`RotationCore::run_finalizer`], a
//! `BTreeSet<(due, id)>` plus `Notify`, the mini-redis purge-task shape) runs finalize when the
//! grace has passed; a compromise rotation has no grace, so finalize follows finish at once.
//!
//! At start [`RotationCore::resume`] restarts every `running` rotation from its journaled step
//! and queues every `grace` one; because every step first reads the version stages and the
//! ClientRequestToken is fixed per rotation, resuming never writes a second version.
//!
//! The folder by layer:
//! - `engine`: [`RotationCore`]; request, resume, and the step loop of each rotation.
//! - `steps`: running one step (strategy, protocol, hooks; `lambda` too); never the journal.
//! - `transition`: the pure step transition (what follows a step's result); no I/O, no clock.
//! - [`protocol`]: the Secrets Manager side of each step (stages, versions, tokens).
//! - [`journal`]: the durable record of every rotation and its timeline.
//! - `finalizer`: finalize after the grace; `scheduler` with [`scheduled`], its pure decision.
//! - `rollback`: AWSCURRENT back to AWSPREVIOUS.
//! - [`hooks`]: the configured commands; [`strategy`]: one file per strategy.
//! - [`verify`]: the checks of a guarded rotation (pre-flight, watch, automatic rollback).
//!
//! Invariants: a step's result is journaled before the next step runs, and every
//! `failpoint::hit` stays where it was relative to the journal writes (the crash tests kill
//! there); a rotation moves AWSCURRENT only in finish (and in finalize, to the same value
//! without the previous key), and only rollback moves it back; `transition` decides, the
//! engine applies.
//!
//! This folder must never import the HTTP server, the CLI or the incident workflow: they call
//! the rotation core, never the other way round.

pub mod failpoint;
pub mod hooks;
pub mod journal;
pub mod journal_dynamodb;

pub mod protocol;

pub mod scheduled;
pub mod strategy;
pub mod verify;

mod engine;
mod finalizer;
mod rollback;
mod scheduler;
mod steps;
mod transition;
mod watch;

pub use engine::{Engine, REDRIVE_EVERY, RequestError, RequestOptions, RotationCore};
pub use rollback::{Refusal, RollbackError, RollbackReport, refusal};
pub use transition::{FIRST_BACKOFF, MAX_ATTEMPTS, MAX_BACKOFF, MAX_TRANSIENT_ATTEMPTS};
