//! keywarden's integration tests: one binary, shared support code, real parts (moto, promtool,
//! the keywarden binary itself).

mod support;

mod access;
mod accounts;
mod alerting;
mod aws_faults;
mod config_check;
mod databases;
mod elasticache;
mod fake_pg;
mod guarded;
mod ha;
mod hooks;
mod http_server;
mod iam_enforced;
mod in_process;
mod incident;
mod metadata;
mod reminders;
mod rotation;
mod sqs;
mod store_cost;
mod store_crash;
mod store_migrate;
