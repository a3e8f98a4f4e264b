//! Values with units on the command line, shared by `bench` and `serve`.

use std::time::Duration;

/// Parses a duration: a number and its unit, `us` (or `µs`), `ms` or `s`; at least 1 µs
/// (`bench --max-p99`, `serve --ping-interval` and `--heartbeat-timeout`).
pub(crate) fn duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let scale = match unit.trim() {
        "us" | "µs" => 1e-6,
        "ms" => 1e-3,
        "s" => 1.0,
        "" => return Err("give a unit: 800us, 5ms or 0.5s".into()),
        other => return Err(format!("unknown unit {other:?}: use us, ms or s")),
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{number:?} is not a number"))?;
    match Duration::try_from_secs_f64(value * scale) {
        Ok(d) if d >= Duration::from_micros(1) => Ok(d),
        _ => Err("must be at least 1us".into()),
    }
}
