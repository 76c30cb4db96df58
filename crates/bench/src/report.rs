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

    /// A progress note on stderr (never mixed into JSON output).
    pub(crate) fn note(&self, text: &str) {
        eprintln!("basic-bench: {text}");
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
