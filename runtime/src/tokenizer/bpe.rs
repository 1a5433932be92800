//! Byte-level BPE (`tokenizer.ggml.model = "gpt2"`) as llama.cpp runs it.
//!
//! 1. The text between special tokens is split by the regexes llama.cpp lists for the file's
//!    pre-tokenizer type (`llama-vocab.cpp`, `LLAMA_VOCAB_PRE_TYPE_*`), applied one after the
//!    other, each to every piece the previous one left, keeping both matches and the text
//!    between them (the `tokenizers` crate's `Split` with `Isolated` behaviour).
//! 2. Each piece's bytes are mapped to GPT-2's byte-level alphabet (printable characters
//!    stand for themselves, the other bytes for code points from U+0100 on).
//! 3. Tern's merge loop ([`Bpe`]) merges the characters: always the adjacent pair of lowest
//!    merge rank, leftmost first — the same order as llama.cpp's `llm_tokenizer_bpe`.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::sync::{Mutex, PoisonError};

use fancy_regex::Regex;

use super::vocab::{Arena, Index, Keep, Vocab, VocabError};
use super::{attr, TokenizerError};

/// What a pre-tokenizer type means: its split regexes and the flags llama.cpp attaches.
pub(super) struct PreSpec {
    regexes: &'static [&'static str],
    /// A piece that is itself a token is taken whole, without merging (Llama 3 style).
    ignore_merges: bool,
    /// Default of `add_bos_token` when the file does not say.
    pub(super) add_bos: bool,
    /// The vocabulary has no BOS unless the file names one.
    pub(super) no_bos: bool,
}

// The regexes, verbatim from llama.cpp (which rewrote `(?i:…)` groups as explicit classes
// because its fallback engine is std::regex), except GPT-2's: llama.cpp runs that one
// through a hand-written splitter that also ends with `\s+`, as the original GPT-2 regex does.
const GPT2: &str = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+";
const LLAMA3: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN2: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const QWEN35: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const CHATGLM4: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))*((?=[\p{L}])([^A-Z]))+|[^\r\n\p{L}\p{N}]?((?=[\p{L}])([^a-z]))+((?=[\p{L}])([^A-Z]))*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
const SEED_CODER: &str = r"(?:'[sS]|'[tT]|'[rR][eE]|'[vV][eE]|'[mM]|'[lL][lL]|'[dD])|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1}| ?[^\s\p{L}\p{N}\r\n]+|\s*[\r\n]+|\s+(?!\S)|\s+";
const BLOOM: &str = " ?[^(\\s|.,!?\u{2026}\u{3002}\u{ff0c}\u{3001}\u{964}\u{6d4}\u{60c})]+";

const DEFAULT_RES: &[&str] = &[r"[\p{P}\$\+<=>\^~\|]+", GPT2, r"\p{N}+", r"[0-9][0-9][0-9]"];
const FALCON_RES: &[&str] = &[r"[\p{P}\$\+<=>\^~\|`]+", GPT2, r"[0-9][0-9][0-9]"];
const SMOLLM_RES: &[&str] = &[r"\p{N}", GPT2];
const DEEPSEEK_LLM_RES: &[&str] = &[
    "[\r\n]",
    "\\s?[A-Za-z\u{b5}\u{c0}-\u{d6}\u{d8}-\u{f6}\u{f8}-\u{1ba}\u{1bc}-\u{1bf}\u{1c4}-\u{293}\u{295}-\u{2af}\u{370}-\u{373}\u{376}\u{377}\u{37b}-\u{37d}\u{37f}\u{386}\u{388}-\u{38a}\u{38c}\u{38e}-\u{3a1}\u{3a3}-\u{3f5}\u{3f7}-\u{481}\u{48a}-\u{52f}\u{531}-\u{556}\u{10a0}-\u{10c5}\u{13a0}-\u{13f5}\u{13f8}-\u{13fd}\u{1c90}-\u{1cba}\u{1cbd}-\u{1cbf}\u{1d00}-\u{1d2b}\u{1d6b}-\u{1d77}\u{1d79}-\u{1d9a}\u{1e00}-\u{1f15}\u{1f18}-\u{1f1d}\u{1f20}-\u{1f45}\u{1f48}-\u{1f4d}\u{1f50}-\u{1f57}\u{1f59}\u{1f5b}\u{1f5d}\u{1f5f}-\u{1f7d}\u{1f80}-\u{1fb4}\u{1fb6}-\u{1fbc}\u{1fbe}\u{1fc2}-\u{1fc4}\u{1fc6}-\u{1fcc}\u{1fd0}-\u{1fd3}\u{1fd6}-\u{1fdb}\u{1fe0}-\u{1fec}\u{1ff2}-\u{1ff4}\u{1ff6}-\u{1ffc}\u{2102}\u{2107}\u{210a}-\u{2113}\u{2115}\u{2119}-\u{211d}\u{2124}\u{2126}\u{2128}\u{212a}-\u{212d}\u{212f}-\u{2134}\u{2139}\u{213c}-\u{213f}\u{2145}-\u{2149}\u{214e}\u{2183}\u{2184}\u{2c00}-\u{2c7b}\u{2c7e}-\u{2ce4}\u{2ceb}-\u{2cee}\u{2cf2}\u{2cf3}\u{a640}-\u{a66d}\u{a680}-\u{a69b}\u{a722}-\u{a76f}\u{a771}-\u{a787}\u{a78b}-\u{a78e}\u{ab70}-\u{abbf}\u{fb00}-\u{fb06}\u{fb13}-\u{fb17}\u{ff21}-\u{ff3a}\u{ff41}-\u{ff5a}\u{10400}-\u{1044f}\u{104b0}-\u{104d3}\u{104d8}-\u{104fb}\u{10c80}-\u{10cb2}\u{10cc0}-\u{10cf2}\u{118a0}-\u{118df}\u{1e900}-\u{1e943}]+",
    "\\s?[!-/:-~\u{ff01}-\u{ff0f}\u{ff1a}-\u{ff5e}\u{2018}-\u{201f}\u{3000}-\u{3002}]+",
    "\\s+$",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}+",
];
const DEEPSEEK_CODER_RES: &[&str] = &[
    "[\r\n]",
    "\\s?\\p{L}+",
    "\\s?\\p{P}+",
    "[\u{4e00}-\u{9fa5}\u{800}-\u{4e00}\u{ac00}-\u{d7ff}]+",
    "\\p{N}",
];
const DEEPSEEK3_RES: &[&str] = &[
    "\\p{N}{1,3}",
    "[\u{4e00}-\u{9fa5}\u{3040}-\u{309f}\u{30a0}-\u{30ff}]+",
    "[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+",
];

impl PreSpec {
    /// The split regexes, compiled (once per process).
    fn regexes(&self) -> Result<Vec<Regex>, TokenizerError> {
        self.regexes.iter().map(|&re| compiled(re)).collect()
    }

    /// Compiles the split regexes ahead of [`Bpe::new`] (on another thread), which then
    /// finds them compiled; an error is left for it to report.
    pub(super) fn compile(&self) {
        let _ = self.regexes();
    }

    /// The pre-tokenizer llama.cpp uses for `tokenizer.ggml.pre = name`.
    pub(super) fn for_name(name: &str) -> Result<PreSpec, TokenizerError> {
        let spec = |regexes, ignore_merges, add_bos, no_bos| PreSpec {
            regexes,
            ignore_merges,
            add_bos,
            no_bos,
        };
        Ok(match name {
            "default" => spec(DEFAULT_RES, false, false, false),
            "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral"
            | "midm-2.0" | "lfm2" | "jina-v5-nano" => spec(&[LLAMA3], true, true, false),
            "dbrx" | "smaug-bpe" => spec(&[LLAMA3], false, false, false),
            "deepseek-llm" => spec(DEEPSEEK_LLM_RES, false, false, false),
            "deepseek-coder" => spec(DEEPSEEK_CODER_RES, false, false, false),
            "deepseek-v3" => spec(DEEPSEEK3_RES, false, false, false),
            "falcon" => spec(FALCON_RES, false, false, false),
            "gpt-2" | "phi-2" | "mpt" | "olmo" | "jais" | "trillion" | "granite-docling"
            | "gigachat" | "a.x-4.0" | "mellum" | "exaone4" => spec(&[GPT2], false, false, false),
            "starcoder" | "refact" | "command-r" | "smollm" | "codeshell" | "exaone"
            | "minerva-7b" | "mellum2" => spec(SMOLLM_RES, false, false, false),
            "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" | "stablelm2"
            | "hunyuan" | "solar-open" => spec(&[QWEN2], false, false, false),
            "qwen35" => spec(&[QWEN35], false, false, false),
            "chatglm-bpe" => spec(&[CHATGLM4], false, false, true),
            "glm4" | "glm5" => spec(&[CHATGLM4], true, false, true),
            "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => {
                spec(&[GPT4O], false, false, false)
            }
            "tekken" => spec(&[TEKKEN], true, true, false),
            "seed-coder" => spec(&[SEED_CODER], false, false, false),
            "bloom" | "poro-chat" | "gpt3-finnish" => spec(&[BLOOM], false, false, false),
            "viking" => spec(&[BLOOM, r"\p{N}"], false, false, false),
            other => return Err(TokenizerError::UnsupportedPre(other.to_string())),
        })
    }
}

/// A byte-level BPE encoder: the split regexes and the merge table.
///
/// The regexes are applied as the `tokenizers` crate's `Split` (`Isolated`) in a `Sequence`
/// would, but piece by piece, each piece merged as soon as it is found: memory stays that of
/// the largest piece, where building the whole pre-tokenized text first cost about 300 bytes
/// per piece (5 MB of digits, one piece each, took 1.5 GB).
///
/// The merges are Tern's own: [`Merges`], the file's merge texts indexed as they are, and a
/// merge loop over `u32` symbols (ids in one `Vec`, the links in two more, each pair's merge
/// in a fourth, a binary heap of rank and position): about 32 bytes per byte of the piece.
/// The `tokenizers` crate's builder took half of Qwen2.5's start-up, and its merge of one
/// 5 MB run of spaces 286 MB.
pub(super) struct Bpe {
    split: Vec<Regex>,
    merges: Merges,
    /// The token of each byte's byte-level character, or [`NONE`].
    byte_ids: [u32; 256],
    /// A piece that is itself a token is taken whole (Llama 3 style).
    ignore_merges: bool,
}

/// `tokenizer.ggml.merges` as the file writes them, `left` + `' '` + `right`, lowest rank
/// first, indexed by that text: the merge loop finds the rank of two adjacent tokens by
/// their texts when it meets them. A table of token-id pairs resolved at load took three
/// vocabulary lookups per merge, 25–50 ms of Qwen2.5-Coder-0.5B's time to its first token
/// (151 387 merges); this index is built in a few, beside the vocabulary's.
pub(super) struct Merges {
    texts: Arena,
    index: Index,
}

impl Merges {
    /// The merges whose texts are `texts`, lowest rank first (see [`Merges::keeps`]). A
    /// repeated merge keeps its first (lowest) rank, as llama.cpp's map does.
    pub(super) fn new(texts: Arena) -> Result<Merges, VocabError> {
        let n = u32::try_from(texts.len())
            .ok()
            .filter(|&n| n < NIL)
            .ok_or(VocabError::TooLarge)?;
        let index = Index::of(n, |i| texts.get(i), Keep::First);
        Ok(Merges { texts, index })
    }

    /// Whether a merge's text is kept. As llama.cpp reads them, a text splits at the first
    /// space after the first byte (so a left side that is itself a space still parses); a text
    /// without such a space can never apply, and skipping it keeps the relative order of
    /// the others, which is all a rank means.
    pub(super) fn keeps(text: &[u8]) -> bool {
        text.iter().skip(1).any(|&b| b == b' ')
    }

    /// The rank of the merge of `left` with `right`; `key` is scratch for their joined text.
    fn rank(&self, left: &[u8], right: &[u8], key: &mut Vec<u8>) -> Option<u32> {
        // The file's text splits at its first space after the first byte: a left side with
        // a space past its first byte is no merge's.
        if left.is_empty() || left[1..].contains(&b' ') {
            return None;
        }
        key.clear();
        key.extend_from_slice(left);
        key.push(b' ');
        key.extend_from_slice(right);
        self.index.find(key, |i| self.texts.get(i))
    }
}

/// A merge of two adjacent tokens: its rank (lower merges first) and the resulting token.
#[derive(Clone, Copy, PartialEq, Eq)]
struct Merge {
    rank: u32,
    id: u32,
}

/// The merge of a pair that has none.
const NO_MERGE: Merge = Merge {
    rank: u32::MAX,
    id: NONE,
};

/// A symbol whose byte has no token: it never merges and yields no token (llama.cpp's
/// fallback looks up the symbol's single UTF-8 bytes, and a byte-level character that is not
/// a token never has a one-byte token either).
const NONE: u32 = u32::MAX;
/// A symbol merged into its left neighbour.
const DEAD: u32 = u32::MAX - 1;
/// The end of the symbol list.
const NIL: u32 = u32::MAX;

/// The pre-tokenizer regex `re`, compiled once per process (the patterns are the fixed table
/// above). Compiling one (Unicode classes, look-arounds, a DFA) took about 15 ms of the 60
/// of building SmolLM2's tokenizer, again at every load; for the GGUF fuzz target's tiny
/// vocabulary it was nearly all of a load (52 loads a second, 420 with this). A clone
/// shares the compiled program.
fn compiled(re: &'static str) -> Result<Regex, TokenizerError> {
    static CACHE: Mutex<Vec<(&'static str, Regex)>> = Mutex::new(Vec::new());
    let mut cache = CACHE.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some((_, r)) = cache.iter().find(|(p, _)| *p == re) {
        return Ok(r.clone());
    }
    let r = Regex::new(re)
        .map_err(|e| TokenizerError::Bpe(format!("pre-tokenizer regex {re:?}: {e}")))?;
    cache.push((re, r.clone()));
    Ok(r)
}

/// The merge loop's buffers, reused for every piece of one text.
#[derive(Default)]
struct Work {
    ids: Vec<u32>,
    prev: Vec<u32>,
    next: Vec<u32>,
    /// The merge of the pair that starts at each symbol, [`NO_MERGE`] if none.
    pair: Vec<Merge>,
    /// `Reverse(rank << 32 | left)`: the lowest rank first, leftmost on ties.
    heap: BinaryHeap<Reverse<u64>>,
    look: Lookup,
    word: String,
}

impl Work {
    /// The merge of queue entry `key` (`rank << 32 | left`) if its pair is still there: the
    /// symbol it starts at is alive and its pair has that rank (ranks are unique per pair of
    /// texts, so the same two tokens).
    fn queued(&self, key: u64) -> Option<Merge> {
        let left = key as u32 as usize;
        let m = self.pair[left];
        (self.ids[left] != DEAD && m != NO_MERGE && u64::from(m.rank) == key >> 32).then_some(m)
    }
}

/// What the merge loop needs to find a pair's merge: its texts joined, and the pairs met
/// lately. A lookup by text takes about four cache misses (the merge's text and index, the
/// result's); most pairs of a text come back again and again, and with the memo encoding
/// runs at about the speed of a table of id pairs built at load.
#[derive(Default)]
struct Lookup {
    key: Vec<u8>,
    /// Direct-mapped, [`MEMO`] slots of `(left << 32 | right, merge)` (`u64::MAX`: none);
    /// empty until the first lookup.
    memo: Vec<(u64, Merge)>,
}

/// Slots of [`Lookup::memo`] (a power of two): 64 KiB.
const MEMO: usize = 4096;

impl Bpe {
    /// The encoder of `vocab` with `merges`.
    ///
    /// A merge whose result is not a token is never made: llama.cpp would make it and
    /// then fall back to byte tokens for the result, but converted vocabularies never have
    /// one, and a symbol holds a token id.
    pub(super) fn new(
        vocab: &Vocab,
        spec: &PreSpec,
        merges: Merges,
    ) -> Result<Bpe, TokenizerError> {
        let split = spec.regexes()?;
        let mut byte_ids = [NONE; 256];
        let mut utf8 = [0u8; 4];
        for (b, id) in byte_ids.iter_mut().enumerate() {
            *id = vocab
                .id(byte_to_char(b as u8).encode_utf8(&mut utf8))
                .unwrap_or(NONE);
        }
        Ok(Bpe {
            split,
            merges,
            byte_ids,
            ignore_merges: spec.ignore_merges,
        })
    }

    /// The merge of tokens `left` and `right` side by side, [`NO_MERGE`] if they have none
    /// (or either is [`NONE`]).
    fn merge(&self, vocab: &Vocab, left: u32, right: u32, look: &mut Lookup) -> Merge {
        if left == NONE || right == NONE {
            return NO_MERGE;
        }
        let pair = u64::from(left) << 32 | u64::from(right);
        if look.memo.is_empty() {
            look.memo = vec![(u64::MAX, NO_MERGE); MEMO];
        }
        // Fibonacci hashing: the top bits of the product pick the slot.
        let slot =
            (pair.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> (64 - MEMO.trailing_zeros())) as usize;
        if look.memo[slot].0 == pair {
            return look.memo[slot].1;
        }
        let (l, r) = (vocab.bytes(left), vocab.bytes(right));
        let key = &mut look.key;
        let m = match self.merges.rank(l, r, key) {
            Some(rank) => {
                // The result is the token of the joined text: `key` without its space.
                key.remove(l.len());
                vocab
                    .id_of_bytes(key)
                    .map_or(NO_MERGE, |id| Merge { rank, id })
            }
            None => NO_MERGE,
        };
        look.memo[slot] = (pair, m);
        m
    }

    /// Appends the ids of `text` (no special tokens inside) to `out`.
    pub(super) fn encode(
        &self,
        vocab: &Vocab,
        text: &str,
        out: &mut Vec<u32>,
    ) -> Result<(), TokenizerError> {
        let mut work = Work::default();
        self.split_each(0, text, &mut |piece| {
            self.merge_piece(vocab, piece.as_bytes(), &mut work, out);
            Ok(())
        })
    }

    /// Merges one piece as llama.cpp's `llm_tokenizer_bpe_session` does: one symbol per
    /// byte (a character of the byte-level alphabet), then always the adjacent pair of lowest
    /// rank, leftmost first, until no pair has a merge.
    fn merge_piece(&self, vocab: &Vocab, piece: &[u8], w: &mut Work, out: &mut Vec<u32>) {
        if self.ignore_merges {
            w.word.clear();
            w.word.extend(piece.iter().map(|&b| byte_to_char(b)));
            if let Some(id) = vocab.id(&w.word) {
                out.push(id);
                return;
            }
        }
        if let [b] = piece {
            out.extend(Some(self.byte_ids[usize::from(*b)]).filter(|&id| id != NONE));
            return;
        }
        // Pieces are cut from a `&str`, so far below 4 GiB here only if the text is; the
        // indices are u32 to keep a symbol at 12 bytes. Longer pieces go in parts that
        // each fit, which only a text of more than 4 GiB in one piece can tell apart.
        for part in piece.chunks(NIL as usize - 1) {
            self.merge_symbols(vocab, part, w, out);
        }
    }

    fn merge_symbols(&self, vocab: &Vocab, piece: &[u8], w: &mut Work, out: &mut Vec<u32>) {
        let n = piece.len() as u32;
        w.ids.clear();
        w.ids
            .extend(piece.iter().map(|&b| self.byte_ids[usize::from(b)]));
        w.prev.clear();
        w.prev.extend((0..n).map(|i| i.wrapping_sub(1)));
        w.next.clear();
        w.next.extend(1..=n);
        w.next[n as usize - 1] = NIL;
        w.pair.clear();
        w.pair.resize(n as usize, NO_MERGE);

        // Room for every pair and half as many more: past that, the pairs gone stale are
        // dropped (at most one per merge made stays valid), so the queue never grows by
        // doubling, and each clean-up is paid for by the half a piece's worth of pushes before it.
        let mut queue = std::mem::take(&mut w.heap).into_vec();
        queue.clear();
        queue.reserve(n as usize + n as usize / 2);
        for i in 1..n as usize {
            let m = self.merge(vocab, w.ids[i - 1], w.ids[i], &mut w.look);
            w.pair[i - 1] = m;
            if m != NO_MERGE {
                queue.push(Reverse(u64::from(m.rank) << 32 | (i - 1) as u64));
            }
        }
        let mut heap = BinaryHeap::from(queue);
        while let Some(Reverse(key)) = heap.pop() {
            let Some(m) = w.queued(key) else {
                continue;
            };
            let left = key as u32;
            let (l, r) = (left as usize, w.next[left as usize] as usize);
            w.ids[l] = m.id;
            w.ids[r] = DEAD;
            w.pair[r] = NO_MERGE;
            let after = w.next[r];
            w.next[l] = after;
            w.pair[l] = NO_MERGE;
            if after != NIL {
                w.prev[after as usize] = left;
                self.pair_at(vocab, &mut heap, w, left);
            }
            let before = w.prev[l];
            if before != NIL {
                self.pair_at(vocab, &mut heap, w, before);
            }
        }
        w.heap = heap;

        let mut at = 0;
        while at != NIL {
            let id = w.ids[at as usize];
            if id != NONE {
                out.push(id);
            }
            at = w.next[at as usize];
        }
    }

    /// Finds the merge of the pair that starts at symbol `left` (which has a right
    /// neighbour) and queues it, if it has one.
    fn pair_at(&self, vocab: &Vocab, heap: &mut BinaryHeap<Reverse<u64>>, w: &mut Work, left: u32) {
        let (l, r) = (left as usize, w.next[left as usize] as usize);
        let m = self.merge(vocab, w.ids[l], w.ids[r], &mut w.look);
        w.pair[l] = m;
        if m == NO_MERGE {
            return;
        }
        if heap.len() == heap.capacity() {
            heap.retain(|&Reverse(key)| w.queued(key).is_some());
        }
        heap.push(Reverse(u64::from(m.rank) << 32 | u64::from(left)));
    }

    /// Calls `f` on each non-empty piece that regexes `level..` cut `text` into, in order:
    /// each match and each stretch between matches is a piece for the next regex. A regex
    /// that fails (its backtracking limit) ends its matches there, the rest of the text being
    /// one piece, as in the `tokenizers` crate.
    fn split_each(
        &self,
        level: usize,
        text: &str,
        f: &mut dyn FnMut(&str) -> Result<(), TokenizerError>,
    ) -> Result<(), TokenizerError> {
        let Some(re) = self.split.get(level) else {
            return if text.is_empty() { Ok(()) } else { f(text) };
        };
        let mut prev = 0;
        for m in re.find_iter(text) {
            let Ok(m) = m else { break };
            if prev != m.start() {
                self.split_each(level + 1, &text[prev..m.start()], f)?;
            }
            self.split_each(level + 1, m.as_str(), f)?;
            prev = m.end();
        }
        self.split_each(level + 1, &text[prev..], f)
    }
}

/// Bytes that GPT-2's byte-level alphabet writes as themselves (printable Latin-1).
const fn printable(b: u8) -> bool {
    matches!(b, b'!'..=b'~' | 0xA1..=0xAC | 0xAE..=0xFF)
}

/// GPT-2's byte-level alphabet: printable bytes stand for themselves, the other 68 bytes
/// take the code points U+0100, U+0101, … in byte order.
const BYTE_CHARS: [char; 256] = {
    let mut table = ['\0'; 256];
    let mut next = 256u32;
    let mut b = 0usize;
    while b < 256 {
        let cp = if printable(b as u8) {
            b as u32
        } else {
            next += 1;
            next - 1
        };
        table[b] = match char::from_u32(cp) {
            Some(c) => c,
            None => panic!("byte-level code points are valid chars"),
        };
        b += 1;
    }
    table
};

/// The bytes behind U+0100.., the non-printable half of the alphabet.
const SHIFTED_BYTES: [u8; 68] = {
    let mut table = [0u8; 68];
    let mut n = 0usize;
    let mut b = 0usize;
    while b < 256 {
        if !printable(b as u8) {
            table[n] = b as u8;
            n += 1;
        }
        b += 1;
    }
    table
};

fn byte_to_char(b: u8) -> char {
    BYTE_CHARS[usize::from(b)]
}

/// The inverse of [`byte_to_char`], for characters of the byte-level alphabet.
fn char_to_byte(c: char) -> Option<u8> {
    let cp = u32::from(c);
    match u8::try_from(cp) {
        Ok(b) => printable(b).then_some(b),
        Err(_) => SHIFTED_BYTES.get(cp.checked_sub(256)? as usize).copied(),
    }
}

/// A token's piece as llama.cpp's `token_to_piece` (special tokens rendered) gives it for a
/// byte-level BPE vocabulary: special and user-defined tokens verbatim, normal tokens mapped
/// back from the byte-level alphabet, unused and undefined tokens empty. Appended to `out`.
pub(super) fn piece(text: &str, a: u32, out: &mut Vec<u8>) {
    if a & (attr::UNKNOWN | attr::CONTROL | attr::USER_DEFINED) != 0 {
        out.extend_from_slice(text.as_bytes());
    } else if a & attr::NORMAL != 0 {
        for c in text.chars() {
            match char_to_byte(c) {
                Some(b) => out.push(b),
                // llama.cpp marks characters outside the alphabet this way.
                None => {
                    out.extend_from_slice(b"[UNK_BYTE_0x");
                    let mut utf8 = [0u8; 4];
                    for b in c.encode_utf8(&mut utf8).bytes() {
                        out.extend_from_slice(format!("{b:02x}").as_bytes());
                    }
                    out.extend_from_slice(text.as_bytes());
                    out.push(b']');
                }
            }
        }
    } else if a & attr::BYTE != 0 {
        // `<0xXX>` byte tokens, as some BPE vocabularies carry.
        if let Some(b) = text
            .strip_prefix("<0x")
            .and_then(|h| h.strip_suffix('>'))
            .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
        }
    }
}
