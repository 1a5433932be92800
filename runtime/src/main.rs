//! `tern`: the command line of the Tern runtime. A thin layer over the library.

mod cli;

/// When `main` started: `tern bench` times its first token from here.
static START: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();

fn main() {
    START.get_or_init(std::time::Instant::now);
    if let Err(e) = cli::main() {
        if cli::is_broken_pipe(&e) {
            // The reader of our output went away (`tern tokenize | head`): a normal end.
            return;
        }
        let chain = e.chain().map(|c| c.to_string());
        eprintln!("error: {}", tern::untrusted::error_line(chain));
        std::process::exit(1);
    }
}
