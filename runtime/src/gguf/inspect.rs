//! A human-readable listing of a GGUF file: what `tern inspect FILE` prints.

use std::io::{self, Write};

use tern_kernels::GgmlType;

use super::{GgufFile, Value};

/// Array items shown before the rest is summarised.
const ARRAY_ITEMS_SHOWN: usize = 6;
/// String characters shown before the rest is summarised (chat templates are long).
const STRING_CHARS_SHOWN: usize = 72;

/// Prints the header, every metadata entry (long arrays and strings abbreviated), a table of
/// tensors (name, type, shape, bytes) and totals per type.
pub fn inspect(g: &GgufFile, out: &mut impl Write) -> io::Result<()> {
    writeln!(
        out,
        "GGUF v{}, {} bytes ({}), alignment {}, data section at offset {}",
        g.version(),
        g.file_size(),
        human_bytes(g.file_size()),
        g.alignment(),
        g.data_offset(),
    )?;

    writeln!(out, "\nmetadata ({} keys):", g.metadata().len())?;
    let key_width = g
        .metadata()
        .iter()
        .map(|(k, _)| k.len())
        .max()
        .unwrap_or(0)
        .min(40);
    for (key, value) in g.metadata() {
        let key = crate::untrusted::escape(key);
        writeln!(
            out,
            "  {key:<key_width$}  {:<12} {}",
            value.describe_type(),
            format_value(value, 0)
        )?;
    }

    let tensors = g.tensors();
    writeln!(out, "\ntensors ({}):", tensors.len())?;
    let name_width = tensors
        .iter()
        .map(|t| t.name.len())
        .max()
        .unwrap_or(0)
        .max(4);
    let shapes: Vec<String> = tensors.iter().map(|t| format_shape(&t.dims)).collect();
    let shape_width = shapes.iter().map(String::len).max().unwrap_or(0).max(5);
    writeln!(
        out,
        "  {:<name_width$}  {:<5}  {:<shape_width$}  {:>12}",
        "name", "type", "shape", "bytes"
    )?;
    for (t, shape) in tensors.iter().zip(&shapes) {
        writeln!(
            out,
            "  {:<name_width$}  {:<5}  {:<shape_width$}  {:>12}",
            crate::untrusted::escape(&t.name),
            t.ty.name(),
            shape,
            t.bytes
        )?;
    }

    // Totals, then one line per type in GGUF numbering order.
    // Saturating: tensors may overlap in a hostile file, so sums are not bounded by its size.
    let total_bytes = tensors.iter().fold(0u64, |s, t| s.saturating_add(t.bytes));
    let total_values = tensors
        .iter()
        .fold(0u64, |s, t| s.saturating_add(t.n_elements()));
    writeln!(
        out,
        "\ntotal: {} tensors, {} values, {} bytes ({})",
        tensors.len(),
        total_values,
        total_bytes,
        human_bytes(total_bytes)
    )?;
    for ty in GgmlType::ALL {
        let of_ty = tensors.iter().filter(|t| t.ty == ty);
        let (count, values, bytes) = of_ty.fold((0u64, 0u64, 0u64), |(c, v, b), t| {
            (
                c + 1,
                v.saturating_add(t.n_elements()),
                b.saturating_add(t.bytes),
            )
        });
        if count > 0 {
            writeln!(
                out,
                "  {:<5} {count:>5} tensors, {values:>12} values, {bytes:>12} bytes ({})",
                ty.name(),
                human_bytes(bytes)
            )?;
        }
    }
    Ok(())
}

/// Dims as ggml orders them, `[cols, rows]` for a matrix: `576 x 49152`; `scalar` for none.
fn format_shape(dims: &[u64]) -> String {
    if dims.is_empty() {
        return "scalar".to_string();
    }
    dims.iter()
        .map(u64::to_string)
        .collect::<Vec<_>>()
        .join(" x ")
}

/// One value on one line; arrays show their first few items, strings their first characters.
fn format_value(v: &Value, depth: usize) -> String {
    match v {
        Value::U8(x) => x.to_string(),
        Value::I8(x) => x.to_string(),
        Value::U16(x) => x.to_string(),
        Value::I16(x) => x.to_string(),
        Value::U32(x) => x.to_string(),
        Value::I32(x) => x.to_string(),
        Value::U64(x) => x.to_string(),
        Value::I64(x) => x.to_string(),
        Value::F32(x) => x.to_string(),
        Value::F64(x) => x.to_string(),
        Value::Bool(x) => x.to_string(),
        Value::String(s) => {
            let n_chars = s.chars().count();
            if n_chars <= STRING_CHARS_SHOWN {
                format!("{s:?}")
            } else {
                let head: String = s.chars().take(STRING_CHARS_SHOWN).collect();
                format!("{head:?}… ({} bytes)", s.len())
            }
        }
        Value::Array(items) => {
            // Inner arrays show fewer items so one line stays readable.
            let shown = if depth == 0 { ARRAY_ITEMS_SHOWN } else { 3 };
            let mut parts: Vec<String> = items
                .iter()
                .take(shown)
                .map(|item| format_value(&item, depth + 1))
                .collect();
            if items.len() > shown {
                parts.push(format!("… {} more", items.len() - shown));
            }
            format!("[{}]", parts.join(", "))
        }
    }
}

/// Bytes in binary units with one decimal: `98.7 MiB`.
fn human_bytes(n: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn abbreviates_long_arrays_and_strings() {
        let tokens = Value::array((0..10).map(|i| Value::String(format!("t{i}"))).collect());
        assert_eq!(
            format_value(&tokens, 0),
            r#"["t0", "t1", "t2", "t3", "t4", "t5", … 4 more]"#
        );
        let long = Value::String("x".repeat(100));
        assert_eq!(
            format_value(&long, 0),
            format!("{:?}… (100 bytes)", "x".repeat(72))
        );
        let nested = Value::array(vec![Value::array((0..5).map(Value::U8).collect())]);
        assert_eq!(format_value(&nested, 0), "[[0, 1, 2, … 2 more]]");
    }

    #[test]
    fn formats_shapes_and_sizes() {
        assert_eq!(format_shape(&[576, 49152]), "576 x 49152");
        assert_eq!(format_shape(&[]), "scalar");
        assert_eq!(human_bytes(1000), "1000 B");
        assert_eq!(human_bytes(3 * 1024 * 1024 / 2), "1.5 MiB");
    }
}
