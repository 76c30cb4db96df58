//! Printing results: JSON lines for machines, aligned text for people.

use serde_json::{Map, Value};

/// Where results go.
pub(crate) struct Reporter {
    pub(crate) json: bool,
}

impl Reporter {
    /// Prints one result named `name` with `figures` (in order).
    pub(crate) fn result(&self, name: &str, figures: &[(&str, Value)]) {
        if self.json {
            let mut object = Map::new();
            object.insert("name".into(), name.into());
            for (key, value) in figures {
                object.insert((*key).into(), value.clone());
            }
            println!("{}", Value::Object(object));
        } else {
            let parts: Vec<String> =
                figures.iter().map(|(k, v)| format!("{k}={}", human(v))).collect();
            println!("{name:<8} {}", parts.join("  "));
        }
    }

    /// Prints one Basic figure beside its anchor from the same run, with
    /// the ratio Basic ÷ anchor (above 1: Basic has more of `unit`, which
    /// is better for a rate and worse for bytes or a latency).
    pub(crate) fn compare(&self, comparison: Comparison<'_>) {
        let ratio = if comparison.anchor > 0.0 {
            Value::from((comparison.basic / comparison.anchor * 1000.0).round() / 1000.0)
        } else {
            Value::Null
        };
        if self.json {
            let mut figures = vec![
                ("figure", comparison.figure.into()),
                ("unit", comparison.unit.into()),
                ("basic", rounded(comparison.basic)),
                ("anchor", comparison.anchor_name.into()),
                ("anchor_value", rounded(comparison.anchor)),
                ("ratio", ratio),
            ];
            figures.extend(comparison.extra);
            self.result("compare", &figures);
        } else {
            let extra: Vec<String> =
                comparison.extra.iter().map(|(k, v)| format!("{k}={}", human(v))).collect();
            println!(
                "compare  {}: Basic {} {unit} | {} {} {unit} | ratio {}{}",
                comparison.figure,
                human(&rounded(comparison.basic)),
                comparison.anchor_name,
                human(&rounded(comparison.anchor)),
                human(&ratio),
                if extra.is_empty() { String::new() } else { format!("  ({})", extra.join("  ")) },
                unit = comparison.unit,
            );
        }
    }

    /// A progress note on stderr (never mixed into JSON output).
    pub(crate) fn note(&self, text: &str) {
        eprintln!("basic-bench: {text}");
    }
}

/// One Basic figure and its anchor.
pub(crate) struct Comparison<'a> {
    /// What is measured, in words.
    pub(crate) figure: &'a str,
    /// Its unit (`rows/s`, `bytes/row`…).
    pub(crate) unit: &'a str,
    /// Basic's figure.
    pub(crate) basic: f64,
    /// The anchor system and workload.
    pub(crate) anchor_name: &'a str,
    /// The anchor's figure.
    pub(crate) anchor: f64,
    /// Further figures of either side.
    pub(crate) extra: Vec<(&'a str, Value)>,
}

/// A figure with three significant decimals below 100, whole above.
pub(crate) fn rounded(value: f64) -> Value {
    if value.abs() >= 100.0 {
        Value::from(value.round() as i64)
    } else {
        Value::from((value * 1000.0).round() / 1000.0)
    }
}

fn human(value: &Value) -> String {
    match value.as_f64() {
        Some(f) if f.fract() != 0.0 && f.abs() >= 100.0 => format!("{f:.0}"),
        Some(f) if f.fract() != 0.0 => format!("{f:.3}"),
        _ => value.to_string(),
    }
}

/// A rate rounded to a whole number.
pub(crate) fn per_second(count: f64, seconds: f64) -> Value {
    Value::from((count / seconds).round() as u64)
}

/// Milliseconds with microsecond precision.
pub(crate) fn millis(duration: std::time::Duration) -> Value {
    Value::from((duration.as_secs_f64() * 1e6).round() / 1e3)
}

/// A memory figure (`VmRSS`, `VmHWM`…) of process `pid` (`"self"` for this
/// one), in KiB, from `/proc/PID/status` (Linux only).
pub(crate) fn memory_kib(pid: &str, field: &str) -> Result<u64, String> {
    let path = format!("/proc/{pid}/status");
    let status = std::fs::read_to_string(&path).map_err(|e| format!("{path}: {e}"))?;
    status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .ok_or_else(|| format!("no {field} in {path} (Linux only)"))
}
