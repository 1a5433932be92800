//! llama.cpp and ggml, reached through bindgen bindings, as the reference for Tern's tests
//! and the peer in its benchmarks. Never a dependency of the runtime itself.
pub use llama_cpp_sys_2 as sys;
pub mod ggml;
pub mod llama;
