//! `tern`: the command line of the Tern runtime. A thin layer over the library.

mod cli;

fn main() {
    if let Err(e) = cli::main() {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}
