//! The tokenizer stored in a GGUF file, reproducing llama.cpp's token ids exactly.
//!
//! Two vocabulary kinds are supported, chosen by `tokenizer.ggml.model`:
//! - `gpt2`: byte-level BPE (SmolLM, Llama 3, Qwen 2, …). The text is split by the regexes
//!   llama.cpp uses for the file's `tokenizer.ggml.pre` type, each piece is mapped to GPT-2's
//!   byte-level alphabet and merged by Tern's own merge loop, which finds each pair's merge
//!   by text in `tokenizer.ggml.merges` as the file writes it (module `bpe`).
//! - `llama`: SentencePiece-style, merging the adjacent pair whose result has the highest
//!   score, with `<0xXX>` byte fallback (Gemma, Llama 2, …) (module `spm`).
//!
//! Before either runs, the text is cut at special tokens the way llama.cpp's
//! `tokenizer_st_partition` does: control and unknown tokens are recognised only when
//! `parse_special` is set; user-defined tokens always are.
//!
//! Decoding is the inverse: each token's piece is its raw bytes ([`Tokenizer::token_to_bytes`],
//! llama.cpp's `token_to_piece` with special tokens rendered), and [`Tokenizer::decode`]
//! concatenates them so that `decode(encode(x)) == x` for any text whose bytes all have
//! tokens (a byte-level vocabulary without one, as SmolLM2 has none for 0x04, drops it, as
//! llama.cpp does).
//!
//! Known differences from llama.cpp, all outside ordinary text: a single run of more than
//! about a million characters that the split regex must backtrack over (such as a million
//! spaces) can be split differently, because the regex engine stops at its backtracking
//! limit; and the per-model strip attributes llama.cpp sets by model name (`<mask>` of some
//! BERT models, the special tokens of Phi-3) are not applied.

mod bpe;
mod spm;
mod vocab;

use crate::gguf::{Array, GgufError, GgufFile, Value};
use vocab::{Arena, Vocab};

/// Why a tokenizer could not be built from a GGUF file, or a text not encoded.
#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    /// A metadata key is missing or has the wrong type.
    #[error(transparent)]
    Gguf(#[from] GgufError),

    /// `tokenizer.ggml.model` names a kind of vocabulary Tern does not implement.
    #[error(
        "tokenizer.ggml.model = {0:?} is not supported (Tern supports \"gpt2\" and \"llama\")"
    )]
    UnsupportedModel(String),

    /// `tokenizer.ggml.pre` names a pre-tokenizer Tern does not implement.
    #[error("tokenizer.ggml.pre = {0:?}: this pre-tokenizer type is not supported")]
    UnsupportedPre(String),

    /// A metadata value is present but unusable (the message says which key and why).
    #[error("{key}: {reason}")]
    Invalid { key: &'static str, reason: String },

    /// A BPE pre-tokenizer could not be built.
    #[error("BPE tokenizer: {0}")]
    Bpe(String),

    /// A byte had to be encoded through byte fallback but the vocabulary has no token for it.
    #[error("no byte-fallback token <0x{0:02X}> in the vocabulary")]
    MissingByteToken(u8),
}

/// llama.cpp's token attribute bits (`LLAMA_TOKEN_ATTR_*`), derived from
/// `tokenizer.ggml.token_type` and a few fix-ups by token text.
mod attr {
    pub const UNDEFINED: u32 = 0;
    pub const UNKNOWN: u32 = 1;
    pub const UNUSED: u32 = 2;
    pub const NORMAL: u32 = 4;
    pub const CONTROL: u32 = 8;
    pub const USER_DEFINED: u32 = 16;
    pub const BYTE: u32 = 32;
}

/// The vocabulary-kind specific encoder for text between special tokens.
enum Model {
    Bpe(Box<bpe::Bpe>),
    Spm(spm::Spm),
}

/// A tokenizer built from GGUF metadata. Cheap to share between threads (`Send + Sync`).
pub struct Tokenizer {
    model: Model,
    /// Token text as stored in the file (byte-level alphabet for `gpt2`, `▁` for spaces in
    /// `llama` vocabularies) and the text → id index.
    vocab: Vocab,
    attrs: Vec<u32>,
    /// Ids of control, user-defined and unknown tokens, longest text first: the order in
    /// which llama.cpp cuts them out of the text.
    specials: Vec<u32>,
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    /// SentencePiece only: a space is prepended to text at the start and after special tokens.
    add_space_prefix: bool,
}

// The CLI and sessions share one tokenizer across threads.
const _: fn() = || {
    fn send_sync<T: Send + Sync>() {}
    send_sync::<Tokenizer>();
};

/// One piece of the input after special tokens have been cut out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fragment {
    Text { start: usize, end: usize },
    Token(u32),
}

impl Tokenizer {
    /// Builds the tokenizer described by `g`'s `tokenizer.ggml.*` metadata.
    pub fn from_gguf(g: &GgufFile) -> Result<Tokenizer, TokenizerError> {
        let kind = g.get_str("tokenizer.ggml.model")?;
        let spm_kind = match kind {
            "gpt2" => false,
            "llama" => true,
            other => return Err(TokenizerError::UnsupportedModel(other.to_string())),
        };
        let spec = if spm_kind {
            None
        } else {
            Some(bpe::PreSpec::for_name(pre_tokenizer(g)?)?)
        };

        // The tokens are read and indexed on this thread while another reads the token types
        // and, for a byte-level vocabulary, reads and indexes the merges and compiles the
        // split regexes: the two halves take about as long. (Errors are reported in the
        // order of a serial build: tokens, types, merges.)
        let n = g.get_array("tokenizer.ggml.tokens").map_or(0, Array::len);
        let (vocab, (attrs, merges)) = std::thread::scope(|scope| {
            let side = scope.spawn(|| {
                let attrs = read_attrs(g, n);
                let merges = spec.as_ref().map(|spec| {
                    spec.compile();
                    read_merges(g)
                });
                (attrs, merges)
            });
            let vocab = read_tokens(g);
            let side = side.join().unwrap_or_else(|e| std::panic::resume_unwind(e));
            (vocab, side)
        });
        let vocab = vocab?;
        let mut attrs = attrs?;
        let model = match (&spec, merges) {
            (Some(spec), Some(merges)) => {
                Model::Bpe(Box::new(bpe::Bpe::new(&vocab, spec, merges?)?))
            }
            _ => Model::Spm(spm::Spm::new(read_scores(g, n)?, &vocab)),
        };
        let t = Tokenizer::tables(g, &vocab, &mut attrs, spec.as_ref())?;

        Ok(Tokenizer {
            model,
            vocab,
            attrs,
            specials: t.specials,
            bos: t.ends.bos,
            eos: t.ends.eos,
            eot: t.ends.eot,
            eog: t.ends.eog,
            add_bos: t.add_bos,
            add_eos: t.add_eos,
            add_space_prefix: t.add_space_prefix,
        })
    }

    /// Everything but the encoder: the special and end tokens (updating `attrs` as
    /// llama.cpp does) and the flags. `spec` is the byte-level BPE
    /// pre-tokenizer, `None` for a SentencePiece vocabulary.
    fn tables(
        g: &GgufFile,
        vocab: &Vocab,
        attrs: &mut [u32],
        spec: Option<&bpe::PreSpec>,
    ) -> Result<Tables, TokenizerError> {
        let spm_kind = spec.is_none();
        let n = vocab.len();
        // llama.cpp's defaults per vocabulary kind, which the metadata may override.
        let mut defaults = Defaults {
            bos: Some(if spm_kind { 1 } else { 11 }),
            eos: Some(if spm_kind { 2 } else { 11 }),
            add_bos: spm_kind,
        };
        if let Some(spec) = spec {
            defaults.add_bos = spec.add_bos;
            if spec.no_bos {
                defaults.bos = None;
            }
        }

        let meta = Meta { g, n };
        let ends = EndTokens::resolve(&meta, vocab, attrs, &defaults)?;
        let add_bos = meta
            .flag("tokenizer.ggml.add_bos_token")?
            .unwrap_or(defaults.add_bos);
        let add_eos = meta.flag("tokenizer.ggml.add_eos_token")?.unwrap_or(false);
        let add_space_prefix = spm_kind
            && meta
                .flag("tokenizer.ggml.add_space_prefix")?
                .unwrap_or(true);

        let mut specials: Vec<u32> = (0..n as u32)
            .filter(|&i| attrs[i as usize] & SPECIAL != 0)
            .collect();
        specials.sort_by_key(|&i| std::cmp::Reverse(vocab.text(i).len()));

        Ok(Tables {
            ends,
            add_bos,
            add_eos,
            add_space_prefix,
            specials,
        })
    }

    /// Encodes `text` into token ids exactly as `llama_tokenize` does.
    ///
    /// `add_special` adds BOS (and EOS) when the file's `add_bos_token` (`add_eos_token`)
    /// flags ask for them; `parse_special` makes control tokens written in the text (such
    /// as `<|im_start|>`) become their ids instead of being tokenized as plain text.
    pub fn encode(
        &self,
        text: &str,
        add_special: bool,
        parse_special: bool,
    ) -> Result<Vec<u32>, TokenizerError> {
        let mut out = Vec::with_capacity(text.len() / 3 + 2);
        if add_special && self.add_bos {
            if let Some(b) = self.bos {
                out.push(b);
            }
        }
        let mut prev_special = true;
        for frag in self.partition(text, parse_special) {
            match frag {
                Fragment::Token(id) => {
                    out.push(id);
                    prev_special = true;
                }
                Fragment::Text { start, end } => {
                    let piece = &text[start..end];
                    match &self.model {
                        Model::Bpe(b) => b.encode(&self.vocab, piece, &mut out)?,
                        Model::Spm(s) => {
                            let prefix = self.add_space_prefix && prev_special;
                            s.encode(piece, prefix, &self.vocab, &mut out)?
                        }
                    }
                    prev_special = false;
                }
            }
        }
        if add_special && self.add_eos {
            if let Some(e) = self.eos {
                out.push(e);
            }
        }
        Ok(out)
    }

    /// The text of `ids`: their pieces concatenated (special tokens as their text), invalid
    /// UTF-8 replaced by U+FFFD. For SentencePiece vocabularies that prepend a space when
    /// encoding, that one space is dropped again, so `decode(encode(x)) == x`.
    pub fn decode(&self, ids: &[u32]) -> String {
        let mut bytes = Vec::with_capacity(ids.len() * 4);
        let mut prev_special = true;
        for &id in ids {
            let piece = self.token_to_bytes(id);
            let special = self.is_special_fragment(id);
            let strip = self.add_space_prefix && prev_special && !special;
            let piece = match piece.split_first() {
                Some((b' ', rest)) if strip => rest,
                _ => &piece[..],
            };
            bytes.extend_from_slice(piece);
            prev_special = special;
        }
        String::from_utf8_lossy(&bytes).into_owned()
    }

    /// The raw bytes of token `id`'s piece, as llama.cpp's `token_to_piece` gives them with
    /// special tokens rendered: may be a partial UTF-8 sequence (a streaming decoder must
    /// join pieces before converting). Unknown ids and unused tokens give no bytes.
    ///
    /// Made from the token's text on each call (a few characters to map back): a table of
    /// every token's piece, made at load, was 3 % of Qwen2.5-Coder-0.5B's time to its first
    /// token and 1–2 MiB.
    pub fn token_to_bytes(&self, id: u32) -> Vec<u8> {
        let mut piece = Vec::new();
        if let Some(&a) = self.attrs.get(id as usize) {
            let text = self.vocab.text(id);
            match self.model {
                Model::Bpe(_) => bpe::piece(text, a, &mut piece),
                Model::Spm(_) => spm::piece(text, a, &mut piece),
            }
        }
        piece
    }

    /// Number of tokens in the vocabulary.
    pub fn vocab_size(&self) -> usize {
        self.vocab.len()
    }

    /// The beginning-of-sequence token.
    pub fn bos(&self) -> Option<u32> {
        self.bos
    }

    /// The end-of-sequence token.
    pub fn eos(&self) -> Option<u32> {
        self.eos
    }

    /// The end-of-turn token (from metadata, or recognised by its text like `<|im_end|>`).
    pub fn eot(&self) -> Option<u32> {
        self.eot
    }

    /// Whether generating `id` ends the reply: EOS, EOT, EOM and the other end tokens
    /// llama.cpp recognises by text.
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., add_special = true, ..)` starts with BOS.
    pub fn add_bos(&self) -> bool {
        self.add_bos && self.bos.is_some()
    }

    /// The id of the token whose stored text is `text`, if any.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.vocab.id(text)
    }

    /// Whether `id` is a control, user-defined or unknown token (one that encoding cuts
    /// out of the text as a whole rather than producing by merges).
    fn is_special_fragment(&self, id: u32) -> bool {
        self.attrs
            .get(id as usize)
            .is_some_and(|a| a & SPECIAL != 0)
    }

    /// Cuts `text` at special tokens like llama.cpp's `tokenizer_st_partition`: for each
    /// special token, longest first, every occurrence inside every remaining text fragment
    /// becomes a token fragment. Control and unknown tokens take part only when
    /// `parse_special` is set.
    fn partition(&self, text: &str, parse_special: bool) -> Vec<Fragment> {
        let mut frags = Vec::new();
        if text.is_empty() {
            return frags;
        }
        frags.push(Fragment::Text {
            start: 0,
            end: text.len(),
        });
        // Large vocabularies have thousands of special tokens; most cannot occur at all.
        let windows = (self.specials.len() > 64).then(|| Windows::of(text.as_bytes()));
        for &id in &self.specials {
            let a = self.attrs[id as usize];
            if !parse_special && a & (attr::CONTROL | attr::UNKNOWN) != 0 {
                continue;
            }
            let needle = self.vocab.text(id);
            if windows
                .as_ref()
                .is_some_and(|w| !w.may_contain(needle.as_bytes()))
            {
                continue;
            }
            let mut next = Vec::with_capacity(frags.len());
            let mut changed = false;
            for f in &frags {
                let Fragment::Text { start, end } = *f else {
                    next.push(*f);
                    continue;
                };
                let mut pos = start;
                while let Some(found) = text[pos..end].find(needle) {
                    let m = pos + found;
                    if m > pos {
                        next.push(Fragment::Text { start: pos, end: m });
                    }
                    next.push(Fragment::Token(id));
                    pos = m + needle.len();
                    changed = true;
                }
                if pos < end {
                    next.push(Fragment::Text { start: pos, end });
                }
            }
            if changed {
                frags = next;
            }
        }
        frags
    }
}

/// The 4-byte windows of a text, hashed into a bitset sized to the text. A needle whose
/// first or last four bytes are not among them cannot occur in the text, so its search can
/// be skipped; a set bit only means "maybe", so no occurrence is ever missed.
struct Windows {
    bits: Vec<u64>,
    shift: u32,
}

impl Windows {
    fn of(text: &[u8]) -> Windows {
        let n_bits = (text.len() * 16)
            .next_power_of_two()
            .clamp(1 << 12, 1 << 24);
        let mut w = Windows {
            bits: vec![0; n_bits / 64],
            shift: 32 - n_bits.trailing_zeros(),
        };
        for win in text.windows(4) {
            let h = w.slot(win);
            w.bits[h / 64] |= 1 << (h % 64);
        }
        w
    }

    fn slot(&self, win: &[u8]) -> usize {
        let v = u32::from_le_bytes([win[0], win[1], win[2], win[3]]);
        (v.wrapping_mul(0x9E37_79B1) >> self.shift) as usize
    }

    fn has(&self, win: &[u8]) -> bool {
        let h = self.slot(win);
        self.bits[h / 64] & (1 << (h % 64)) != 0
    }

    fn may_contain(&self, needle: &[u8]) -> bool {
        needle.len() < 4 || (self.has(&needle[..4]) && self.has(&needle[needle.len() - 4..]))
    }
}

/// What [`Tokenizer::tables`] derives besides the encoder.
struct Tables {
    ends: EndTokens,
    add_bos: bool,
    add_eos: bool,
    add_space_prefix: bool,
    specials: Vec<u32>,
}

/// `tokenizer.ggml.pre`, the byte-level BPE pre-tokenizer type (`"default"` when absent).
fn pre_tokenizer(g: &GgufFile) -> Result<&str, TokenizerError> {
    match g.get("tokenizer.ggml.pre") {
        Some(v) => v.as_str().ok_or_else(|| TokenizerError::Invalid {
            key: "tokenizer.ggml.pre",
            reason: format!("expected a string, found {}", v.type_name()),
        }),
        None => Ok("default"),
    }
}

/// Attributes of the tokens that encoding cuts out of the text whole.
const SPECIAL: u32 = attr::CONTROL | attr::USER_DEFINED | attr::UNKNOWN;

/// What llama.cpp assumes for a vocabulary kind when the metadata is silent.
struct Defaults {
    bos: Option<u32>,
    eos: Option<u32>,
    add_bos: bool,
}

/// Typed access to optional metadata for a vocabulary of `n` tokens.
struct Meta<'a> {
    g: &'a GgufFile,
    n: usize,
}

impl Meta<'_> {
    /// A token id; ids outside the vocabulary are ignored, as llama.cpp does (it warns).
    fn id(&self, key: &'static str) -> Result<Option<u32>, TokenizerError> {
        let Some(v) = self.g.get(key) else {
            return Ok(None);
        };
        match v.as_u64() {
            Some(id) => Ok((id < self.n as u64).then_some(id as u32)),
            None => Err(TokenizerError::Invalid {
                key,
                reason: format!("expected a token id, found {}", v.type_name()),
            }),
        }
    }

    fn flag(&self, key: &str) -> Result<Option<bool>, TokenizerError> {
        match self.g.get(key) {
            None => Ok(None),
            Some(_) => Ok(Some(self.g.get_bool(key)?)),
        }
    }
}

/// The tokens that start and end sequences, resolved the way llama.cpp does.
struct EndTokens {
    bos: Option<u32>,
    eos: Option<u32>,
    eot: Option<u32>,
    /// Sorted ids that end generation.
    eog: Vec<u32>,
}

impl EndTokens {
    /// Reads the ids from metadata; where end-of-turn, end-of-message and fill-in-the-middle
    /// tokens are not named, finds them by their text and makes them control tokens (as
    /// llama.cpp does, updating `attrs`); collects every token that ends generation.
    fn resolve(
        meta: &Meta<'_>,
        vocab: &Vocab,
        attrs: &mut [u32],
        defaults: &Defaults,
    ) -> Result<EndTokens, TokenizerError> {
        let in_vocab = |id: &u32| (*id as usize) < meta.n;
        let bos = meta
            .id("tokenizer.ggml.bos_token_id")?
            .or(defaults.bos.filter(in_vocab));
        let eos = meta
            .id("tokenizer.ggml.eos_token_id")?
            .or(defaults.eos.filter(in_vocab));

        let find = |names: &[&str]| names.iter().find_map(|t| vocab.id(t));
        let mut by_text = Vec::new();
        let mut named_or_found = |key, names: &[&str]| -> Result<Option<u32>, TokenizerError> {
            Ok(match meta.id(key)? {
                Some(id) => Some(id),
                None => {
                    let found = find(names);
                    by_text.extend(found);
                    found
                }
            })
        };
        let eot = named_or_found("tokenizer.ggml.eot_token_id", EOT_TEXTS)?;
        let eom = named_or_found("tokenizer.ggml.eom_token_id", &["<|eom_id|>"])?;
        let mut eog = Vec::new();
        for (key, names) in FIM_KEYS {
            let id = named_or_found(key, names)?;
            if FIM_EOG_KEYS.contains(key) {
                eog.extend(id);
            }
        }
        for name in EOG_TEXTS {
            if let Some(id) = vocab.id(name) {
                by_text.push(id);
                eog.push(id);
            }
        }
        for id in by_text {
            attrs[id as usize] |= attr::CONTROL;
        }
        // gpt-oss renders these as text whatever their declared type.
        for name in ["<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"] {
            if let Some(id) = vocab.id(name) {
                attrs[id as usize] = attr::USER_DEFINED;
            }
        }
        eog.extend([eos, eot, eom].into_iter().flatten());
        eog.sort_unstable();
        eog.dedup();

        // Vocabularies where `<|end|>` separates messages rather than ending the reply
        // (gpt-oss, solar-open), and those where `</s>` is an ordinary token (plamo,
        // gemma4): llama.cpp takes these out of the end-of-generation set again.
        let has = |eog: &[u32], t: &str| vocab.id(t).is_some_and(|id| eog.contains(&id));
        if let Some(end) = vocab.id("<|end|>") {
            let call = has(&eog, "<|call|>") || has(&eog, "<|calls|>");
            let other = has(&eog, "<|return|>") || has(&eog, "<|flush|>");
            if call && other && eog.contains(&end) {
                eog.retain(|&e| e != end);
                attrs[end as usize] = attr::USER_DEFINED;
            }
        }
        if let Some(s_id) = vocab.id("</s>") {
            if has(&eog, "<|tool_response>") || has(&eog, "<|plamo:eos|>") {
                eog.retain(|&e| e != s_id);
                attrs[s_id as usize] = attr::NORMAL;
            }
        }
        Ok(EndTokens { bos, eos, eot, eog })
    }
}

/// Texts llama.cpp takes as the end-of-turn token when `eot_token_id` is absent, in the
/// order Tern tries them.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|end_of_text|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts that end generation wherever they appear in the vocabulary (llama.cpp's list).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "</s>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "[EOT]",
    "[EOS]",
    "<|end_of_text|>",
    "<end_of_utterance>",
    "<eos>",
    "<turn|>",
    "<|tool_response>",
    "<｜end▁of▁sentence｜>",
    "[e~[",
];

/// Fill-in-the-middle tokens: metadata key and the texts that stand for it when the key is
/// absent. llama.cpp makes them control tokens; pad, repo and file-separator also end
/// generation.
const FIM_KEYS: &[(&str, &[&str])] = &[
    (
        "tokenizer.ggml.fim_pre_token_id",
        &[
            "<|fim_prefix|>",
            "<fim-prefix>",
            "<fim_prefix>",
            "<｜fim▁begin｜>",
            "<PRE>",
            "▁<PRE>",
            "<|code_prefix|>",
            "<|prefix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_suf_token_id",
        &[
            "<|fim_suffix|>",
            "<fim-suffix>",
            "<fim_suffix>",
            "<｜fim▁hole｜>",
            "<SUF>",
            "▁<SUF>",
            "<|code_suffix|>",
            "<|suffix|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_mid_token_id",
        &[
            "<|fim_middle|>",
            "<fim-middle>",
            "<fim_middle>",
            "<｜fim▁end｜>",
            "<MID>",
            "▁<MID>",
            "<|code_middle|>",
            "<|middle|>",
        ],
    ),
    (
        "tokenizer.ggml.fim_pad_token_id",
        &["<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"],
    ),
    (
        "tokenizer.ggml.fim_rep_token_id",
        &[
            "<|fim_repo|>",
            "<|repo_name|>",
            "<fim-repo>",
            "<REPO>",
            "<reponame>",
        ],
    ),
    ("tokenizer.ggml.fim_sep_token_id", &["<|file_sep|>"]),
];

const FIM_EOG_KEYS: &[&str] = &[
    "tokenizer.ggml.fim_pad_token_id",
    "tokenizer.ggml.fim_rep_token_id",
    "tokenizer.ggml.fim_sep_token_id",
];

fn read_tokens(g: &GgufFile) -> Result<Vocab, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.tokens";
    let arr = g.get_array(KEY)?;
    if arr.is_empty() {
        return Err(TokenizerError::Invalid {
            key: KEY,
            reason: "the vocabulary is empty".into(),
        });
    }
    let too_large = || TokenizerError::Invalid {
        key: KEY,
        reason: format!("{} tokens do not fit 32-bit ids and offsets", arr.len()),
    };
    if u32::try_from(arr.len()).is_err() {
        return Err(too_large());
    }
    let mut texts = Arena::with_capacity(arr.len(), arr.len() * 8);
    let mut read = 0;
    // As bytes: `Vocab::new` checks all of them as UTF-8 at once.
    for (i, t) in arr.byte_strs().into_iter().flatten().enumerate() {
        // llama.cpp reads tokens as C strings, and renames empty ones so that they never
        // match text.
        let pushed = match c_str(t) {
            b"" => texts.push(format!("[EMPTY_{i}]").as_bytes()),
            t => texts.push(t),
        };
        pushed.map_err(|_| too_large())?;
        read += 1;
    }
    all_strings(KEY, arr, read)?;
    Vocab::new(texts).map_err(|e| match e {
        vocab::VocabError::TooLarge => too_large(),
        // The reader checked them when it opened the file, which has changed since.
        vocab::VocabError::NotUtf8 => TokenizerError::Invalid {
            key: KEY,
            reason: "a token is not UTF-8".into(),
        },
    })
}

fn read_attrs(g: &GgufFile, n: usize) -> Result<Vec<u32>, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.token_type";
    let Some(v) = g.get(KEY) else {
        return Ok(vec![attr::NORMAL; n]);
    };
    let arr = v.as_array().ok_or_else(|| TokenizerError::Invalid {
        key: KEY,
        reason: format!("expected an array, found {}", v.type_name()),
    })?;
    if arr.len() < n {
        return Err(TokenizerError::Invalid {
            key: KEY,
            reason: format!("{} types for {n} tokens", arr.len()),
        });
    }
    let of_type = |i: usize, t: Option<i64>, name: &'static str| {
        let t = t.ok_or_else(|| TokenizerError::Invalid {
            key: KEY,
            reason: format!("element {i} is a {name}, expected an integer"),
        })?;
        Ok(match t {
            1 => attr::NORMAL,
            2 => attr::UNKNOWN,
            3 => attr::CONTROL,
            4 => attr::USER_DEFINED,
            5 => attr::UNUSED,
            6 => attr::BYTE,
            _ => attr::UNDEFINED,
        })
    };
    // Straight from the file's bytes where the array holds integers, as it does.
    if let Some(ints) = arr.ints() {
        let name = arr.elem_type().name();
        return ints
            .take(n)
            .enumerate()
            .map(|(i, t)| of_type(i, t, name))
            .collect();
    }
    arr.iter()
        .take(n)
        .enumerate()
        .map(|(i, v)| of_type(i, v.as_i64(), v.type_name()))
        .collect()
}

fn read_scores(g: &GgufFile, n: usize) -> Result<Vec<f32>, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.scores";
    let Some(v) = g.get(KEY) else {
        return Ok(vec![0.0; n]);
    };
    let arr = v.as_array().ok_or_else(|| TokenizerError::Invalid {
        key: KEY,
        reason: format!("expected an array, found {}", v.type_name()),
    })?;
    if arr.len() < n {
        return Err(TokenizerError::Invalid {
            key: KEY,
            reason: format!("{} scores for {n} tokens", arr.len()),
        });
    }
    arr.iter()
        .take(n)
        .enumerate()
        .map(|(i, v)| {
            v.as_f32().ok_or_else(|| TokenizerError::Invalid {
                key: KEY,
                reason: format!("element {i} is a {}, expected a number", v.type_name()),
            })
        })
        .collect()
}

/// `tokenizer.ggml.merges`, indexed by text.
fn read_merges(g: &GgufFile) -> Result<bpe::Merges, TokenizerError> {
    const KEY: &str = "tokenizer.ggml.merges";
    let arr = g.get_array(KEY)?;
    let too_large = || TokenizerError::Invalid {
        key: KEY,
        reason: format!("{} merges do not fit 32-bit ranks and offsets", arr.len()),
    };
    let mut texts = Arena::with_capacity(arr.len(), arr.len() * 8);
    let mut read = 0;
    // As bytes: they are only compared with tokens' texts, which were checked as UTF-8.
    for s in arr.byte_strs().into_iter().flatten() {
        let s = c_str(s);
        if bpe::Merges::keeps(s) {
            texts.push(s).map_err(|_| too_large())?;
        }
        read += 1;
    }
    all_strings(KEY, arr, read)?;
    bpe::Merges::new(texts).map_err(|_| too_large())
}

/// An error unless all `arr.len()` elements were read as strings: `read` stopped at the
/// first element that is not one.
fn all_strings(key: &'static str, arr: &Array, read: usize) -> Result<(), TokenizerError> {
    if read < arr.len() {
        let v = arr.get(read).unwrap_or(Value::U8(0));
        return Err(TokenizerError::Invalid {
            key,
            reason: format!("element {read} is a {}, expected a string", v.type_name()),
        });
    }
    Ok(())
}

/// `s` up to its first NUL: llama.cpp reads vocabulary strings as C strings.
fn c_str(s: &[u8]) -> &[u8] {
    // A plain scan: token texts are a few bytes, too short for a searcher to pay.
    match s.iter().position(|&b| b == 0) {
        Some(end) => &s[..end],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gguf::GgufWriter;

    /// A byte-level BPE vocabulary of `tokens` and `merges` (pre-tokenizer `gpt-2`).
    fn bpe(tokens: Value, merges: Value) -> Result<Tokenizer, TokenizerError> {
        let mut w = GgufWriter::new();
        w.add_metadata("tokenizer.ggml.model", Value::String("gpt2".into()))
            .add_metadata("tokenizer.ggml.pre", Value::String("gpt-2".into()))
            .add_metadata("tokenizer.ggml.tokens", tokens)
            .add_metadata("tokenizer.ggml.merges", merges);
        let g = GgufFile::from_bytes(&w.to_bytes().unwrap()).unwrap();
        Tokenizer::from_gguf(&g)
    }

    fn strings(s: &[&str]) -> Value {
        Value::array(s.iter().map(|t| Value::String((*t).into())).collect())
    }

    /// Hand-worked merges: the pair of lowest rank first, whatever its place; a byte
    /// without a token is dropped (as llama.cpp's fallback does for a byte-level vocabulary).
    #[test]
    fn merges_go_by_rank_then_leftmost() {
        let tokens = strings(&["a", "b", "c", "ab", "bc", "abc"]);
        let t = bpe(tokens.clone(), strings(&["b c", "a b", "a bc"])).unwrap();
        // "bc" (rank 0) before "ab" (rank 1), then "a bc".
        assert_eq!(t.encode("abc", false, false).unwrap(), [5]);
        assert_eq!(t.encode("abab", false, false).unwrap(), [3, 3]);
        assert_eq!(t.encode("cabz", false, false).unwrap(), [2, 3]);
        let t = bpe(tokens, strings(&["a b", "b c"])).unwrap();
        // "ab" first now, and "ab c" is no merge.
        assert_eq!(t.encode("abc", false, false).unwrap(), [3, 2]);
        // Leftmost of equal ranks: "b b b" merges its first pair only.
        let t = bpe(strings(&["b", "bb"]), strings(&["b b"])).unwrap();
        assert_eq!(t.encode("bbb", false, false).unwrap(), [1, 0]);
    }

    #[test]
    fn metadata_of_the_wrong_type_is_a_typed_error() {
        let numbers = Value::array(vec![Value::U32(1), Value::U32(2)]);
        let e = bpe(numbers, strings(&[])).map(|_| ()).unwrap_err();
        assert!(
            matches!(&e, TokenizerError::Invalid { key: "tokenizer.ggml.tokens", reason } if reason.contains("element 0")),
            "{e}"
        );
        let e = bpe(strings(&["a", "b"]), Value::array(vec![Value::U8(0)]))
            .map(|_| ())
            .unwrap_err();
        assert!(
            matches!(
                &e,
                TokenizerError::Invalid {
                    key: "tokenizer.ggml.merges",
                    ..
                }
            ),
            "{e}"
        );
    }
}
