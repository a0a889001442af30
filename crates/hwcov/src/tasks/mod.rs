//! The user-facing tasks of `hwcov run`, one module each.

pub mod embed;
pub mod generate;
