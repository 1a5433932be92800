//! Shared by the integration tests: the models and texts they run on.
#![allow(dead_code)]

#[allow(unused_imports)]
pub use tern_testkit::{model, natural_text, smollm2};
