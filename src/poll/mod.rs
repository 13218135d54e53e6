//! Pollers: tasks that read AWS on a period and feed the shared [`crate::view::SharedView`].

pub mod access;
pub mod metadata;
