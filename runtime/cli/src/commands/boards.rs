//! `tern boards`: the board Tern detects (or is told with `--board`), the settings it chooses
//! and why, and the kernel set this CPU will actually run within the board's ceiling.

use anyhow::Result;

pub fn run(board: Option<&str>) -> Result<()> {
    let b = tern_boards::select(board)?;
    out!("{b}")?;

    let sets = tern_kernels::KernelSet::available();
    let names: Vec<&str> = sets.iter().map(|s| s.name()).collect();
    let ceiling = b.settings.kernel.value;
    let (set, note) = tern::fit::use_board_kernels(&b);
    outln!(
        "{:<10} {:<12} the best of this CPU's kernel sets ({}) within the board's ceiling ({ceiling})",
        "runs",
        set.name(),
        names.join(", ")
    )?;
    if let Some(note) = note {
        outln!("{:<10} {note}", "")?;
    }
    outln!(
        "{:<10} {} (--board NAME; auto detects)",
        "boards",
        tern_boards::names().join(", ")
    )?;
    Ok(())
}
