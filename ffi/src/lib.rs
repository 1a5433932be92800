//! libtern: the C ABI through which mobile apps and C programs embed Tern. Filled by the C ABI work (issue 6).
