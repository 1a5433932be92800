//! Benchmarks of Tern: kernel throughput and the head-to-head against llama.cpp (issue 3).
