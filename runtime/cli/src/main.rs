//! `tern`: the command line of the Tern runtime. A thin layer over the library.

use tern_cli::commands;

fn main() {
    tern_cli::START.get_or_init(std::time::Instant::now);
    if let Err(e) = commands::main() {
        if commands::is_broken_pipe(&e) {
            // The reader of our output went away (`tern tokenize | head`): a normal end.
            return;
        }
        let chain = e.chain().map(|c| c.to_string());
        eprintln!("error: {}", tern::untrusted::error_line(chain));
        std::process::exit(1);
    }
}
