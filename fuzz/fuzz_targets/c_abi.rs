//! The C ABI's string, path and number inputs, called as a C host calls them: byte strings
//! with invalid UTF-8 (cut at their first NUL, as C sees them), role names, stop strings,
//! session file names, board names and every parameter setter with fuzzed numbers (NaN, ±∞,
//! 0, huge), then a session on the fuzz crate's tiny model (loaded once) fed, asked for a
//! reply, saved and restored. Every call returns a status; none panics, aborts or hangs.
#![no_main]

use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use tern_capi::{
    TernKvType, TernModel, TernModelParams, TernPieceCallback, TernSession, TernSessionParams,
    TernStatus, TernStopReason,
};

// The functions as a C host declares them (ffi/include/tern.h); `tern_capi` is linked in,
// instrumented, so the fuzzer's coverage reaches into it. The handle types are opaque: only
// pointers to them cross, which is what `improper_ctypes` cannot see.
#[allow(improper_ctypes)]
extern "C" {
    fn tern_last_error() -> *const c_char;
    fn tern_model_params_new(out: *mut *mut TernModelParams) -> TernStatus;
    fn tern_model_params_free(p: *mut TernModelParams) -> TernStatus;
    fn tern_model_params_set_threads(p: *mut TernModelParams, threads: u32) -> TernStatus;
    fn tern_model_params_set_board(p: *mut TernModelParams, board: *const c_char) -> TernStatus;
    fn tern_model_load(
        path: *const c_char,
        p: *const TernModelParams,
        out: *mut *mut TernModel,
    ) -> TernStatus;
    fn tern_model_free(m: *mut TernModel) -> TernStatus;
    fn tern_session_params_new(out: *mut *mut TernSessionParams) -> TernStatus;
    fn tern_session_params_free(p: *mut TernSessionParams) -> TernStatus;
    fn tern_session_params_set_sinks(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_set_window(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_set_kv_type(p: *mut TernSessionParams, v: TernKvType) -> TernStatus;
    fn tern_session_params_set_evict_chunk(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_set_temperature(p: *mut TernSessionParams, v: f32) -> TernStatus;
    fn tern_session_params_set_top_k(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_set_top_p(p: *mut TernSessionParams, v: f32) -> TernStatus;
    fn tern_session_params_set_min_p(p: *mut TernSessionParams, v: f32) -> TernStatus;
    fn tern_session_params_set_repeat_penalty(p: *mut TernSessionParams, v: f32) -> TernStatus;
    fn tern_session_params_set_repeat_last_n(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_set_seed(p: *mut TernSessionParams, v: u64) -> TernStatus;
    fn tern_session_params_set_system_prompt(
        p: *mut TernSessionParams,
        s: *const c_char,
    ) -> TernStatus;
    fn tern_session_params_set_pin_system(p: *mut TernSessionParams, v: bool) -> TernStatus;
    fn tern_session_params_set_max_tokens(p: *mut TernSessionParams, v: u32) -> TernStatus;
    fn tern_session_params_add_stop(p: *mut TernSessionParams, s: *const c_char) -> TernStatus;
    fn tern_session_new(
        m: *const TernModel,
        p: *const TernSessionParams,
        out: *mut *mut TernSession,
    ) -> TernStatus;
    fn tern_session_free(s: *mut TernSession) -> TernStatus;
    fn tern_session_add_message(
        s: *mut TernSession,
        role: *const c_char,
        text: *const c_char,
    ) -> TernStatus;
    fn tern_session_feed_text(
        s: *mut TernSession,
        text: *const c_char,
        out_tokens: *mut u64,
    ) -> TernStatus;
    fn tern_session_generate(
        s: *mut TernSession,
        callback: TernPieceCallback,
        user_data: *mut c_void,
        out_stop: *mut TernStopReason,
    ) -> TernStatus;
    fn tern_session_save(s: *mut TernSession, path: *const c_char) -> TernStatus;
    fn tern_session_restore(
        m: *const TernModel,
        path: *const c_char,
        out: *mut *mut TernSession,
    ) -> TernStatus;
}

/// The input, read field by field; each field is a length byte and that many bytes.
struct Fields<'a>(&'a [u8]);

impl<'a> Fields<'a> {
    fn bytes(&mut self) -> &'a [u8] {
        let Some((&n, rest)) = self.0.split_first() else {
            return &[];
        };
        let n = (n as usize).min(rest.len());
        self.0 = &rest[n..];
        &rest[..n]
    }
    /// A C string: the bytes up to their first NUL.
    fn c_string(&mut self) -> CString {
        let b = self.bytes();
        let end = b.iter().position(|&c| c == 0).unwrap_or(b.len());
        CString::new(&b[..end]).expect("no NUL before `end`")
    }
    fn u32(&mut self) -> u32 {
        let b = self.bytes();
        let mut x = [0u8; 4];
        x[..b.len().min(4)].copy_from_slice(&b[..b.len().min(4)]);
        u32::from_le_bytes(x)
    }
    fn f32(&mut self) -> f32 {
        f32::from_bits(self.u32())
    }
    fn flag(&mut self) -> bool {
        self.u32() & 1 == 1
    }
}

/// A directory of this process for the session files the input names.
fn dir() -> &'static std::path::Path {
    static DIR: OnceLock<std::path::PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let d = tern_fuzz::scratch_dir().join(format!("tern-fuzz-c-abi-{}", std::process::id()));
        std::fs::create_dir_all(&d).expect("temp dir");
        d
    })
}

/// A path in [`dir`] named by fuzzed bytes (any byte but `/` and NUL, invalid UTF-8 too).
fn path_in_dir(name: &[u8]) -> CString {
    use std::os::unix::ffi::OsStrExt;
    let clean: Vec<u8> = name
        .iter()
        .map(|&c| if c == b'/' || c == 0 { b'_' } else { c })
        .collect();
    let mut p = dir().as_os_str().as_bytes().to_vec();
    p.push(b'/');
    p.extend_from_slice(if clean.is_empty() { b"s" } else { &clean });
    CString::new(p).expect("no NUL")
}

/// The tiny model, loaded once through the C ABI (as a `usize`: the handle is only used
/// through the ABI, which serialises access to it).
fn model() -> *const TernModel {
    static M: OnceLock<usize> = OnceLock::new();
    *M.get_or_init(|| {
        let path = CString::new(tern_fuzz::tiny_model().to_str().expect("UTF-8 path")).unwrap();
        let mut m = ptr::null_mut();
        // SAFETY: `path` is NUL-terminated, NULL params are the defaults, `m` is writable.
        let st = unsafe { tern_model_load(path.as_ptr(), ptr::null(), &mut m) };
        assert_eq!(st, TernStatus::TERN_OK, "the tiny model loads");
        m as usize
    }) as *const TernModel
}

extern "C" fn on_piece(_piece: *const c_char, _len: usize, _user: *mut c_void) -> bool {
    true
}

fuzz_target!(|data: &[u8]| {
    let mut f = Fields(data);
    // SAFETY (every call below): strings are NUL-terminated CStrings that outlive the call,
    // handles come from the ABI itself, out-pointers point to locals.
    unsafe {
        // Model parameters and loading by a fuzzed path (in a directory of its own, so the
        // fuzzer never opens a device), with a fuzzed board name.
        let mut mp = ptr::null_mut();
        assert_eq!(tern_model_params_new(&mut mp), TernStatus::TERN_OK);
        let _ = tern_model_params_set_threads(mp, f.u32() % 4);
        let board = f.c_string();
        let _ = tern_model_params_set_board(mp, board.as_ptr());
        let path = path_in_dir(f.bytes());
        let mut loaded = ptr::null_mut();
        if tern_model_load(path.as_ptr(), mp, &mut loaded) == TernStatus::TERN_OK {
            tern_model_free(loaded);
        }
        tern_model_params_free(mp);

        // Session parameters: every setter with fuzzed values.
        let mut sp = ptr::null_mut();
        assert_eq!(tern_session_params_new(&mut sp), TernStatus::TERN_OK);
        let _ = tern_session_params_set_sinks(sp, f.u32() % 64);
        let _ = tern_session_params_set_window(sp, f.u32() % 512);
        let _ = tern_session_params_set_kv_type(sp, (f.u32() % 4) as TernKvType);
        let _ = tern_session_params_set_evict_chunk(sp, f.u32());
        let _ = tern_session_params_set_temperature(sp, f.f32());
        let _ = tern_session_params_set_top_k(sp, f.u32());
        let _ = tern_session_params_set_top_p(sp, f.f32());
        let _ = tern_session_params_set_min_p(sp, f.f32());
        let _ = tern_session_params_set_repeat_penalty(sp, f.f32());
        let _ = tern_session_params_set_repeat_last_n(sp, f.u32());
        let _ = tern_session_params_set_seed(sp, f.u32() as u64);
        let system = f.c_string();
        let _ = tern_session_params_set_system_prompt(sp, system.as_ptr());
        let _ = tern_session_params_set_pin_system(sp, f.flag());
        let _ = tern_session_params_set_max_tokens(sp, 1 + f.u32() % 4);
        let stop = f.c_string();
        let _ = tern_session_params_add_stop(sp, stop.as_ptr());

        // A session on the tiny model: messages with fuzzed roles and texts, raw text, a
        // reply, a save to and a restore from fuzzed names.
        let mut s = ptr::null_mut();
        if tern_session_new(model(), sp, &mut s) == TernStatus::TERN_OK {
            let role = f.c_string();
            let text = f.c_string();
            let _ = tern_session_add_message(s, role.as_ptr(), text.as_ptr());
            let raw = f.c_string();
            let mut n = 0u64;
            let _ = tern_session_feed_text(s, raw.as_ptr(), &mut n);
            let mut stop = TernStopReason::TERN_STOP_MAX_TOKENS;
            let _ = tern_session_generate(s, Some(on_piece), ptr::null_mut(), &mut stop);
            let file = path_in_dir(f.bytes());
            let _ = tern_session_save(s, file.as_ptr());
            let mut back = ptr::null_mut();
            if tern_session_restore(model(), file.as_ptr(), &mut back) == TernStatus::TERN_OK {
                tern_session_free(back);
            }
            let _ = std::fs::remove_file(std::path::Path::new(
                <std::ffi::OsStr as std::os::unix::ffi::OsStrExt>::from_bytes(file.as_bytes()),
            ));
            tern_session_free(s);
        }
        tern_session_params_free(sp);
        let _ = tern_last_error();
    }
});
