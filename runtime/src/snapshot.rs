//! Session files: everything a session needs to continue exactly where it was saved.
//!
//! Layout: the magic `TERNSESS`, a format version (u32), the payload length (u64), the payload,
//! and the SHA-256 of the payload. All numbers little-endian. The payload holds the model's
//! fingerprint, the session options, the sampler's random state, the conversation window,
//! the penalty history, the last logits and the cache. Files are written to a temporary name
//! and renamed into place, so a crash mid-save leaves the previous file whole.

use std::fs;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use crate::cache::{CacheConfig, KvType};
use crate::chat::Message;
use crate::model::Model;
use crate::sampler::SamplerConfig;
use crate::session::{Session, SessionError, SessionOptions, Stats};

const MAGIC: &[u8; 8] = b"TERNSESS";
/// 2: the cache holds a ring per layer kind (global layers, local sliding-window layers).
const VERSION: u32 = 2;

/// Why a session file cannot be written or read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("{path}: {err}")]
    Io { path: PathBuf, err: std::io::Error },
    #[error("{0}: not a regular file")]
    NotAFile(PathBuf),
    #[error("{path}: the session needs {bytes} bytes, more than the memory budget of {budget}")]
    TooLarge {
        path: PathBuf,
        bytes: u64,
        budget: u64,
    },
    #[error("{0}: not a Tern session file")]
    NotASession(PathBuf),
    #[error("{path}: session format version {found} is not supported (this Tern reads {VERSION})")]
    Version { path: PathBuf, found: u32 },
    #[error("{0}: the session file is corrupt (checksum mismatch or truncated)")]
    Corrupt(PathBuf),
    #[error("{0}: the session was saved with another model")]
    OtherModel(PathBuf),
    #[error("{path}: invalid session data: {what}")]
    Invalid { path: PathBuf, what: String },
}

/// Appends little-endian values to a byte buffer.
#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    pub fn u8(&mut self, v: u8) {
        self.buf.push(v);
    }
    pub fn u32(&mut self, v: u32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn u64(&mut self, v: u64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f32(&mut self, v: f32) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn f64(&mut self, v: f64) {
        self.buf.extend_from_slice(&v.to_le_bytes());
    }
    pub fn bytes(&mut self, v: &[u8]) {
        self.u64(v.len() as u64);
        self.buf.extend_from_slice(v);
    }
    pub fn str(&mut self, v: &str) {
        self.bytes(v.as_bytes());
    }
}

/// Reads what [`Writer`] wrote; every read is bounds-checked, so a corrupt file is an error.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
}

/// A read past the end or an invalid value.
#[derive(Debug)]
pub(crate) struct Short(pub String);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], Short> {
        if n > self.buf.len() {
            return Err(Short(format!("{n} bytes wanted, {} left", self.buf.len())));
        }
        let (a, b) = self.buf.split_at(n);
        self.buf = b;
        Ok(a)
    }
    pub fn u8(&mut self) -> Result<u8, Short> {
        Ok(self.take(1)?[0])
    }
    pub fn u32(&mut self) -> Result<u32, Short> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn u64(&mut self) -> Result<u64, Short> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn usize(&mut self) -> Result<usize, Short> {
        usize::try_from(self.u64()?).map_err(|_| Short("a size does not fit".into()))
    }
    pub fn f32(&mut self) -> Result<f32, Short> {
        Ok(f32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }
    pub fn f64(&mut self) -> Result<f64, Short> {
        Ok(f64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }
    pub fn bytes(&mut self) -> Result<&'a [u8], Short> {
        let n = self.usize()?;
        self.take(n)
    }
    pub fn str(&mut self) -> Result<String, Short> {
        String::from_utf8(self.bytes()?.to_vec()).map_err(|_| Short("a string is not UTF-8".into()))
    }
}

/// A session file's contents, checked and decoded.
pub(crate) struct Snapshot {
    path: PathBuf,
    pub opts: SessionOptions,
    pub cache_config: CacheConfig,
    rng: [u64; 2],
    window: Vec<Message>,
    unfed_tail: String,
    history: Vec<u32>,
    stats: Stats,
    pub logits: Option<Vec<f32>>,
    cache: Vec<u8>,
}

impl Snapshot {
    /// Puts the saved state into a fresh session made with the saved options.
    pub fn apply(self, s: &mut Session) -> Result<(), SessionError> {
        s.sampler.set_rng_state(self.rng);
        s.window = self.window;
        s.unfed_tail = self.unfed_tail;
        s.history = self.history;
        s.stats = self.stats;
        s.cache
            .restore(&self.cache)
            .map_err(|what| SnapshotError::Invalid {
                path: self.path,
                what,
            })?;
        Ok(())
    }
}

fn kv_code(t: KvType) -> u8 {
    match t {
        KvType::F32 => 0,
        KvType::F16 => 1,
        KvType::Q8_0 => 2,
    }
}

fn write_payload(s: &Session, logits: &[f32]) -> Vec<u8> {
    let mut w = Writer::default();
    w.buf.extend_from_slice(&s.model.fingerprint());
    let o = &s.opts;
    let c = s.cache.config();
    for v in [c.sinks, c.window, c.evict_chunk] {
        w.u64(v as u64);
    }
    w.u8(kv_code(c.kv_type));
    let sc = &o.sampler;
    w.f32(sc.temperature);
    w.u64(sc.top_k as u64);
    w.f32(sc.top_p);
    w.f32(sc.min_p);
    w.f32(sc.repeat_penalty);
    w.u64(sc.repeat_last_n as u64);
    w.u64(sc.seed);
    // The options as given (the cache above may have more sinks, for a pinned system).
    for v in [o.cache.sinks, o.cache.window, o.cache.evict_chunk] {
        w.u64(v as u64);
    }
    w.u8(kv_code(o.cache.kv_type));
    match &o.system {
        Some(t) => {
            w.u8(1);
            w.str(t);
        }
        None => w.u8(0),
    }
    w.u8(o.pin_system as u8);
    w.u64(o.max_reply as u64);
    w.u64(o.stop.len() as u64);
    for t in &o.stop {
        w.str(t);
    }
    let rng = s.sampler.rng_state();
    w.u64(rng[0]);
    w.u64(rng[1]);
    w.u64(s.window.len() as u64);
    for m in &s.window {
        w.str(&m.role);
        w.str(&m.content);
    }
    w.str(&s.unfed_tail);
    w.u64(s.history.len() as u64);
    for &t in &s.history {
        w.u32(t);
    }
    let st = &s.stats;
    w.u64(st.prompt_tokens);
    w.f64(st.prompt_secs);
    w.u64(st.generated_tokens);
    w.f64(st.generated_secs);
    if s.logits_valid {
        w.u8(1);
        w.u64(logits.len() as u64);
        for &l in logits {
            w.f32(l);
        }
    } else {
        w.u8(0);
    }
    w.bytes(&s.cache.snapshot());
    w.buf
}

/// Writes `s` to `path` through a temporary file and a rename.
pub(crate) fn save(s: &Session, logits: &[f32], path: &Path) -> Result<(), SnapshotError> {
    let payload = write_payload(s, logits);
    let io = |err| SnapshotError::Io {
        path: path.to_path_buf(),
        err,
    };
    let tmp = path.with_extension(format!("tmp{}", std::process::id()));
    let result = (|| {
        let mut f = fs::File::create(&tmp)?;
        f.write_all(MAGIC)?;
        f.write_all(&VERSION.to_le_bytes())?;
        f.write_all(&(payload.len() as u64).to_le_bytes())?;
        f.write_all(&payload)?;
        f.write_all(&Sha256::digest(&payload))?;
        f.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(io)
}

fn kv_type(code: u8) -> Result<KvType, Short> {
    match code {
        0 => Ok(KvType::F32),
        1 => Ok(KvType::F16),
        2 => Ok(KvType::Q8_0),
        _ => Err(Short(format!("unknown KV type {code}"))),
    }
}

fn read_cache_config(r: &mut Reader) -> Result<CacheConfig, Short> {
    let (sinks, window, evict_chunk) = (r.usize()?, r.usize()?, r.usize()?);
    Ok(CacheConfig {
        sinks,
        window,
        evict_chunk,
        kv_type: kv_type(r.u8()?)?,
    })
}

/// Bytes before the payload: magic, version, payload length.
const HEADER: usize = 20;

/// Reads and checks the session file at `path` for `model`. The header is read and checked
/// first (magic, version, and a payload length that the file holds exactly and, given
/// `max_bytes`, within it), and only then the payload, so neither a device nor a huge file
/// is read whole.
pub(crate) fn load(
    model: &Model,
    path: &Path,
    max_bytes: Option<u64>,
) -> Result<Snapshot, SnapshotError> {
    let p = || path.to_path_buf();
    let io = |err| SnapshotError::Io { path: p(), err };
    let mut file = fs::File::open(path).map_err(io)?;
    let meta = file.metadata().map_err(io)?;
    if !meta.is_file() {
        return Err(SnapshotError::NotAFile(p()));
    }
    let mut head = [0u8; HEADER];
    if meta.len() < HEADER as u64 {
        return Err(SnapshotError::NotASession(p()));
    }
    file.read_exact(&mut head).map_err(io)?;
    if &head[..8] != MAGIC {
        return Err(SnapshotError::NotASession(p()));
    }
    let version = u32::from_le_bytes(head[8..12].try_into().expect("4 bytes"));
    if version != VERSION {
        return Err(SnapshotError::Version {
            path: p(),
            found: version,
        });
    }
    let len = u64::from_le_bytes(head[12..20].try_into().expect("8 bytes"));
    if meta.len() != (HEADER as u64).saturating_add(len).saturating_add(32) {
        return Err(SnapshotError::Corrupt(p()));
    }
    if let Some(budget) = max_bytes.filter(|&b| len > b) {
        return Err(SnapshotError::TooLarge {
            path: p(),
            bytes: len,
            budget,
        });
    }
    let body_len = usize::try_from(len + 32).map_err(|_| SnapshotError::Corrupt(p()))?;
    let mut body = Vec::new();
    body.try_reserve_exact(body_len)
        .map_err(|_| SnapshotError::TooLarge {
            path: p(),
            bytes: len,
            budget: max_bytes.unwrap_or(0),
        })?;
    file.take(body_len as u64)
        .read_to_end(&mut body)
        .map_err(io)?;
    if body.len() != body_len {
        return Err(SnapshotError::Corrupt(p()));
    }
    let (payload, digest) = body.split_at(len as usize);
    if Sha256::digest(payload).as_slice() != digest {
        return Err(SnapshotError::Corrupt(p()));
    }
    let mut r = Reader { buf: payload };
    let invalid = |e: Short| SnapshotError::Invalid {
        path: path.to_path_buf(),
        what: e.0,
    };
    let fp = r.take(32).map_err(invalid)?;
    if fp != model.fingerprint() {
        return Err(SnapshotError::OtherModel(p()));
    }
    (|| -> Result<Snapshot, Short> {
        let cache_config = read_cache_config(&mut r)?;
        let sampler = SamplerConfig {
            temperature: r.f32()?,
            top_k: r.usize()?,
            top_p: r.f32()?,
            min_p: r.f32()?,
            repeat_penalty: r.f32()?,
            repeat_last_n: r.usize()?,
            seed: r.u64()?,
        };
        // Validated as the CLI validates them: the checksum proves integrity, not sense.
        sampler.validate().map_err(|e| Short(e.to_string()))?;
        let cache = read_cache_config(&mut r)?;
        let system = match r.u8()? {
            0 => None,
            _ => Some(r.str()?),
        };
        let pin_system = r.u8()? != 0;
        let max_reply = r.usize()?;
        let n_stop = r.usize()?;
        let mut stop = Vec::new();
        for _ in 0..n_stop {
            stop.push(r.str()?);
        }
        let rng = [r.u64()?, r.u64()?];
        let n_win = r.usize()?;
        let mut window = Vec::new();
        for _ in 0..n_win {
            let role = r.str()?;
            let content = r.str()?;
            window.push(Message { role, content });
        }
        let unfed_tail = r.str()?;
        let n_hist = r.usize()?;
        if n_hist > payload.len() / 4 {
            return Err(Short("history longer than the file".into()));
        }
        let mut history = Vec::with_capacity(n_hist);
        for _ in 0..n_hist {
            history.push(r.u32()?);
        }
        let stats = Stats {
            prompt_tokens: r.u64()?,
            prompt_secs: r.f64()?,
            generated_tokens: r.u64()?,
            generated_secs: r.f64()?,
            ..Stats::default()
        };
        let logits = match r.u8()? {
            0 => None,
            _ => {
                let n = r.usize()?;
                if n != model.llama().config().n_vocab {
                    return Err(Short("logits of another vocabulary size".into()));
                }
                let mut v = Vec::with_capacity(n);
                for _ in 0..n {
                    v.push(r.f32()?);
                }
                Some(v)
            }
        };
        let cache_bytes = r.bytes()?.to_vec();
        Ok(Snapshot {
            path: path.to_path_buf(),
            opts: SessionOptions {
                cache,
                sampler,
                system,
                pin_system,
                max_reply,
                stop,
            },
            cache_config,
            rng,
            window,
            unfed_tail,
            history,
            stats,
            logits,
            cache: cache_bytes,
        })
    })()
    .map_err(invalid)
}
