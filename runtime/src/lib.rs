//! Tern: an offline runtime for small quantized language models.
//!
//! The pieces, each in its own module: [`gguf`] reads model files in place from a memory
//! map; [`model`] holds the architectures and their forward passes; [`cache`] the KV cache;
//! [`session`] ties a model, a cache and buffers into one conversation, [`chat`]
//! renders it with the model's template and [`snapshot`] saves it; [`fit`] sizes
//! its cache for a board; [`tokenizer`] builds
//! the tokenizer stored in a GGUF file; [`sampler`] picks the next token, and
//! [`speculative`] lets a small draft model propose tokens for it; [`perplexity`]
//! scores a text; [`speed`] measures it; [`catalog`] knows the models Tern can fetch and fetches them;
//! [`untrusted`] shows text from files safely.

pub mod cache;
pub mod catalog;
pub mod chat;
pub mod fit;
pub mod gguf;
pub mod model;
pub mod perplexity;
pub mod sampler;
pub mod session;
pub mod snapshot;
pub mod speculative;
pub mod speed;
pub mod stream;
pub mod tokenizer;
pub mod untrusted;
