//! `tern._tern`: the Rust half of the Python package `tern`.
//!
//! It drives the `tern` library the way the CLI and the C ABI do: a [`model::Model`] is a
//! memory-mapped model with its board and thread pool; a [`session::Session`] is one
//! conversation on it. Long calls run as jobs in the model's pool while the calling thread
//! has released the GIL and waits for their pieces, checking for Ctrl-C in between, so two
//! Python threads run two sessions in parallel and an interrupt stops a reply cleanly.
//! The exceptions are Python classes (`tern/_errors.py`); [`errors`] maps Rust errors to
//! them.

mod errors;
mod model;
mod session;

use pyo3::prelude::*;

/// The models `tern.Model` knows by name, as `(name, description)` pairs; the first is the
/// default.
#[pyfunction]
fn known_models() -> Vec<(String, String)> {
    tern::catalog::known_models()
        .iter()
        .map(|m| (m.name.to_string(), m.description.to_string()))
        .collect()
}

/// The directory where models fetched by name are kept (`$XDG_CACHE_HOME/tern/models`, else
/// `~/.cache/tern/models`).
#[pyfunction]
fn cache_dir() -> std::path::PathBuf {
    tern::catalog::cache_dir()
}

/// The board profile names `tern.Model(board=...)` accepts, besides "auto".
#[pyfunction]
fn boards() -> Vec<String> {
    tern_boards::names().iter().map(|s| s.to_string()).collect()
}

#[pymodule]
fn _tern(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<model::Model>()?;
    m.add_class::<model::ModelInfo>()?;
    m.add_class::<session::Session>()?;
    m.add_class::<session::Stream>()?;
    m.add_class::<session::Stats>()?;
    m.add_function(wrap_pyfunction!(known_models, m)?)?;
    m.add_function(wrap_pyfunction!(cache_dir, m)?)?;
    m.add_function(wrap_pyfunction!(boards, m)?)?;
    m.add("DEFAULT_MODEL", tern::catalog::DEFAULT_MODEL)?;
    Ok(())
}
