//! Rust errors as Python exceptions. The exception classes live in `tern/_errors.py` (so that
//! they can also derive from `ValueError`, `FileNotFoundError`, …); each failure names its
//! class and carries the runtime's message.

use std::any::Any;
use std::panic::{catch_unwind, AssertUnwindSafe};

use pyo3::prelude::*;
use pyo3::types::PyType;

use tern::cache::CacheError;
use tern::model::{LoadError, ModelError};
use tern::session::SessionError;
use tern::snapshot::SnapshotError;
use tern_cli::fetch::CatalogError;

/// A failed call: the name of its exception class in `tern._errors`, and the message.
#[derive(Debug)]
pub struct Failure {
    pub class: &'static str,
    pub message: String,
}

impl Failure {
    pub fn new(class: &'static str, message: impl Into<String>) -> Failure {
        Failure {
            class,
            message: message.into(),
        }
    }

    pub fn invalid(message: impl Into<String>) -> Failure {
        Failure::new("InvalidArgumentError", message)
    }

    /// A Rust panic caught at the boundary: a bug in Tern, reported rather than aborting.
    pub fn panic(payload: Box<dyn Any + Send>) -> Failure {
        let what = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".to_string());
        Failure::new(
            "InternalError",
            format!("internal error (a bug in Tern): {what}"),
        )
    }
}

impl From<Failure> for PyErr {
    fn from(f: Failure) -> PyErr {
        Python::attach(|py| {
            let class = py
                .import("tern._errors")
                .and_then(|m| m.getattr(f.class))
                .and_then(|c| c.cast_into::<PyType>().map_err(PyErr::from));
            match class {
                Ok(class) => PyErr::from_type(class, f.message),
                Err(e) => e,
            }
        })
    }
}

/// Runs `f`, turning a panic into a [`Failure`] instead of unwinding into Python or rayon.
pub fn guarded<T>(f: impl FnOnce() -> Result<T, Failure>) -> Result<T, Failure> {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|p| Err(Failure::panic(p)))
}

impl From<LoadError> for Failure {
    fn from(e: LoadError) -> Failure {
        match &e {
            LoadError::File {
                source: source @ tern::gguf::GgufError::Io { .. },
                ..
            } => Failure::new("ModelNotFoundError", source.to_string()),
            _ => Failure::new("ModelError", e.to_string()),
        }
    }
}

impl From<CatalogError> for Failure {
    fn from(e: CatalogError) -> Failure {
        let class = match &e {
            CatalogError::UnknownModel { .. } | CatalogError::NoSuchFile(_) => "ModelNotFoundError",
            CatalogError::NotAFile(_) => "ModelError",
            _ => "DownloadError",
        };
        Failure::new(class, e.to_string())
    }
}

impl From<SessionError> for Failure {
    fn from(e: SessionError) -> Failure {
        let class = match &e {
            SessionError::BadRole(_) | SessionError::Draft(_) => "InvalidArgumentError",
            SessionError::Snapshot(SnapshotError::Io { err, .. })
                if err.kind() == std::io::ErrorKind::NotFound =>
            {
                "SessionFileNotFoundError"
            }
            // A cache (new or restored) that the memory budget does not allow.
            SessionError::Memory(_)
            | SessionError::Snapshot(SnapshotError::TooLarge { .. })
            | SessionError::Cache(CacheError::TooLarge { .. }) => "MemoryBudgetError",
            SessionError::Snapshot(_) => "SessionFileError",
            SessionError::Cache(c) | SessionError::Model(ModelError::Cache(c)) => match c {
                // A cache that cannot be made: the session's arguments are at fault.
                CacheError::EmptyWindow
                | CacheError::BadEvictChunk { .. }
                | CacheError::Q8HeadSize(_)
                | CacheError::HeadTooLarge(_) => "InvalidArgumentError",
                _ => "SessionError",
            },
            _ => "SessionError",
        };
        Failure::new(class, e.to_string())
    }
}
