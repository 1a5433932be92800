//! The memory guard: checked once, at load, so that a conversation is never killed by the OS
//! half-way. The cache is allocated once and never grows, so model + cache is the whole need.

/// The smallest window worth running: below it a chat forgets its last question.
pub const MIN_WINDOW: usize = 64;

/// What a session will hold in memory.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub struct MemoryNeed {
    /// The model file (mapped; counted as resident, since decoding reads every weight).
    pub model_bytes: u64,
    /// Everything else allocated at load: repacked weight copies, scratch buffers, logits.
    pub other_bytes: u64,
    /// Keys and values of one token over all layers (`KvType::bytes_per_token`).
    pub kv_bytes_per_token: u64,
    /// Attention sinks kept for ever.
    pub sinks: usize,
    /// The window asked for.
    pub window: usize,
    /// Rows the cache holds beyond `sinks + window` (the largest batch appended at once).
    pub batch: usize,
}

impl MemoryNeed {
    /// Bytes needed with a window of `window` tokens (saturating; never overflows).
    pub fn bytes_with(&self, window: usize) -> u64 {
        u64::try_from(self.total(window)).unwrap_or(u64::MAX)
    }

    /// Exact bytes with a window of `window` tokens (u128: no input overflows it).
    fn total(&self, window: usize) -> u128 {
        let rows = self.sinks as u128 + window as u128 + self.batch as u128;
        self.fixed() + rows * self.kv_bytes_per_token as u128
    }

    fn fixed(&self) -> u128 {
        self.model_bytes as u128 + self.other_bytes as u128
    }
}

/// A need that fits the budget, possibly after shrinking the window.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum MemoryFit {
    /// Fits as asked; `bytes` in all.
    Fits { bytes: u64 },
    /// Fits with the window shrunk to `window` tokens; `message` says so for the user.
    Shrunk {
        window: usize,
        bytes: u64,
        message: String,
    },
}

impl MemoryFit {
    /// The window to use.
    pub fn window(&self, asked: usize) -> usize {
        match self {
            MemoryFit::Fits { .. } => asked,
            MemoryFit::Shrunk { window, .. } => *window,
        }
    }
}

/// A need that cannot fit.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum MemoryError {
    #[error(
        "the model does not fit in memory: it needs {} (weights {}, other buffers {}) but the \
         memory budget is {}; use a smaller model or a smaller quantization, or free memory",
        fmt_bytes(.model_bytes.saturating_add(*.other_bytes)),
        fmt_bytes(*.model_bytes),
        fmt_bytes(*.other_bytes),
        fmt_bytes(*.budget)
    )]
    ModelTooLarge {
        model_bytes: u64,
        other_bytes: u64,
        budget: u64,
    },
    #[error(
        "the model fits in the memory budget of {} but leaves room for only {tokens} tokens of \
         KV cache ({} each), fewer than the {MIN_WINDOW} a conversation needs; use a smaller \
         model, --kv-type q8_0, or free memory",
        fmt_bytes(*.budget),
        fmt_bytes(*.kv_bytes_per_token)
    )]
    NoRoomForCache {
        tokens: u64,
        kv_bytes_per_token: u64,
        budget: u64,
    },
}

/// Checks `need` against `budget` bytes: fits as asked, fits with the largest window that
/// does, or cannot fit (the model alone is too large, or too little room is left for a
/// window of [`MIN_WINDOW`] tokens, or of the window asked if that is smaller).
pub fn guard(need: &MemoryNeed, budget: u64) -> Result<MemoryFit, MemoryError> {
    let budget_w = budget as u128;
    if need.total(need.window) <= budget_w {
        return Ok(MemoryFit::Fits {
            bytes: need.bytes_with(need.window),
        });
    }
    if need.fixed() > budget_w {
        return Err(MemoryError::ModelTooLarge {
            model_bytes: need.model_bytes,
            other_bytes: need.other_bytes,
            budget,
        });
    }
    // Rows of cache the room holds; the sinks and the batch rows come first.
    let room = budget_w - need.fixed();
    let rows = room
        .checked_div(need.kv_bytes_per_token as u128)
        .unwrap_or(u128::MAX);
    let overhead = need.sinks as u128 + need.batch as u128;
    let window = rows.saturating_sub(overhead);
    if window < MIN_WINDOW.min(need.window) as u128 {
        return Err(MemoryError::NoRoomForCache {
            tokens: u64::try_from(rows).unwrap_or(u64::MAX),
            kv_bytes_per_token: need.kv_bytes_per_token,
            budget,
        });
    }
    // `window < need.window` here: the asked window did not fit.
    let window = window as usize;
    let bytes = need.bytes_with(window);
    let message = format!(
        "KV window shrunk from {} to {window} tokens to fit the memory budget of {} \
         (model {}, other buffers {}, KV cache {} per token)",
        need.window,
        fmt_bytes(budget),
        fmt_bytes(need.model_bytes),
        fmt_bytes(need.other_bytes),
        fmt_bytes(need.kv_bytes_per_token)
    );
    Ok(MemoryFit::Shrunk {
        window,
        bytes,
        message,
    })
}

/// Bytes for people: `512 B`, `23.4 KiB`, `1.5 GiB`.
pub fn fmt_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    if bytes < 1024 {
        return format!("{bytes} B");
    }
    let mut v = bytes as f64 / 1024.0;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if v >= 100.0 {
        format!("{v:.0} {}", UNITS[unit])
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    /// SmolLM2-135M Q4_1 (~ 92 MB) with an f16 cache of 23 040 bytes per token.
    fn smollm(window: usize) -> MemoryNeed {
        MemoryNeed {
            model_bytes: 92 * MIB,
            other_bytes: 4 * MIB,
            kv_bytes_per_token: 2 * 30 * 192 * 2,
            sinks: 4,
            window,
            batch: 64,
        }
    }

    #[test]
    fn fits_unchanged() {
        let need = smollm(1020);
        let bytes = 96 * MIB + (4 + 1020 + 64) * 23_040;
        assert_eq!(guard(&need, 512 * MIB), Ok(MemoryFit::Fits { bytes }));
        // Exactly at the budget still fits.
        assert_eq!(guard(&need, bytes), Ok(MemoryFit::Fits { bytes }));
    }

    #[test]
    fn shrinks_to_the_largest_window_that_fits() {
        let need = smollm(8188);
        // Room for 96 MiB plus 2000 rows and a few bytes.
        let budget = 96 * MIB + 2000 * 23_040 + 100;
        let fit = guard(&need, budget).unwrap();
        let MemoryFit::Shrunk {
            window,
            bytes,
            ref message,
        } = fit
        else {
            panic!("expected a shrunk window, got {fit:?}");
        };
        assert_eq!(window, 2000 - 4 - 64);
        assert_eq!(bytes, need.bytes_with(window));
        assert!(bytes <= budget && need.bytes_with(window + 1) > budget);
        assert!(
            message.contains("8188") && message.contains("1932"),
            "{message}"
        );
        assert_eq!(fit.window(8188), 1932);
    }

    #[test]
    fn model_alone_too_large() {
        let need = smollm(1020);
        let err = guard(&need, 90 * MIB).unwrap_err();
        assert!(matches!(err, MemoryError::ModelTooLarge { .. }));
        let text = err.to_string();
        assert!(
            text.contains("does not fit") && text.contains("90.0 MiB"),
            "{text}"
        );
    }

    #[test]
    fn too_little_room_for_a_useful_window() {
        let need = smollm(1020);
        // The model fits, with room for 4 + 64 + 10 rows: a window of 10 < MIN_WINDOW.
        let err = guard(&need, 96 * MIB + 78 * 23_040).unwrap_err();
        assert_eq!(
            err,
            MemoryError::NoRoomForCache {
                tokens: 78,
                kv_bytes_per_token: 23_040,
                budget: 96 * MIB + 78 * 23_040
            }
        );
        // A window smaller than MIN_WINDOW, asked for, is granted when it fits.
        let small = smollm(8);
        assert!(guard(&small, 96 * MIB + 76 * 23_040).is_ok());
    }

    #[test]
    fn huge_numbers_do_not_overflow() {
        let need = MemoryNeed {
            model_bytes: u64::MAX,
            other_bytes: u64::MAX,
            kv_bytes_per_token: u64::MAX,
            sinks: usize::MAX,
            window: usize::MAX,
            batch: usize::MAX,
        };
        assert!(matches!(
            guard(&need, u64::MAX),
            Err(MemoryError::ModelTooLarge { .. })
        ));
        let zero_kv = MemoryNeed {
            kv_bytes_per_token: 0,
            ..smollm(1 << 20)
        };
        assert!(matches!(guard(&zero_kv, GIB), Ok(MemoryFit::Fits { .. })));
    }

    const GIB: u64 = 1 << 30;

    #[test]
    fn byte_formatting() {
        assert_eq!(fmt_bytes(512), "512 B");
        assert_eq!(fmt_bytes(23_040), "22.5 KiB");
        assert_eq!(fmt_bytes(3 * GIB / 2), "1.5 GiB");
        assert_eq!(fmt_bytes(384 * MIB), "384 MiB");
    }
}
