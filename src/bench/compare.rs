//! `confab bench --compare FILE.json`: this run's figures beside an earlier run's, as ratios.
//!
//! Both runs are read as JSON (the `--json` report), flattened to one number per figure
//! (`confab.saturation.unary.cpu_us_per_message`), and every figure both runs have is printed
//! with its ratio new ÷ old. Generic on purpose: a figure added to the report is compared without
//! a line of code here.

use std::{collections::BTreeMap, fmt::Write as _};

use serde_json::Value;

/// Every numeric figure of `report`, by its dotted path. Arrays of objects are keyed by their
/// `target` or `path` field when they have one (targets, saturation paths), by index otherwise.
pub(crate) fn figures(report: &Value) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    flatten(report, String::new(), &mut out);
    out
}

fn flatten(value: &Value, prefix: String, out: &mut BTreeMap<String, f64>) {
    let join = |key: &str| {
        if prefix.is_empty() {
            key.to_owned()
        } else {
            format!("{prefix}.{key}")
        }
    };
    match value {
        Value::Number(n) => {
            if let Some(f) = n.as_f64() {
                out.insert(prefix, f);
            }
        }
        Value::Object(map) => {
            for (key, v) in map {
                flatten(v, join(key), out);
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let key = ["target", "path"]
                    .iter()
                    .find_map(|k| item.get(k).and_then(Value::as_str))
                    .map_or_else(|| i.to_string(), str::to_owned);
                flatten(item, join(&key), out);
            }
        }
        Value::Null | Value::Bool(_) | Value::String(_) => {}
    }
}

/// The comparison table: figure, old, new, new ÷ old. Settings and machine facts are left out
/// (they are the same, or the comparison says nothing).
pub(crate) fn table(old: &Value, new: &Value) -> String {
    let (old, new) = (figures(old), figures(new));
    let rows: Vec<(&String, f64, f64)> = new
        .iter()
        .filter(|(k, _)| !k.starts_with("settings.") && !k.starts_with("machine."))
        .filter_map(|(k, n)| old.get(k).map(|o| (k, *o, *n)))
        .collect();
    let width = rows.iter().map(|(k, ..)| k.len()).max().unwrap_or(6).max(6);
    let mut text = format!(
        "{:<width$}  {:>12}  {:>12}  {:>9}\n",
        "figure", "old", "new", "new/old"
    );
    for (key, o, n) in rows {
        let ratio = if o == 0.0 {
            "-".to_owned()
        } else {
            format!("{:.2}×", n / o)
        };
        let _ = writeln!(text, "{key:<width$}  {o:>12.2}  {n:>12.2}  {ratio:>9}");
    }
    text
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn figures_are_keyed_by_target_and_path_not_position() {
        let report = json!({
            "settings": {"users": 1000},
            "targets": [
                {"target": "confab", "saturation": [{"path": "stream", "rate": 100.0}],
                 "connect": {"login_per_s": 50}, "note": "text is skipped"},
                {"target": "relay", "saturation": [{"path": "unary", "rate": 80}]}
            ]
        });
        let f = figures(&report);
        assert_eq!(f["targets.confab.saturation.stream.rate"], 100.0);
        assert_eq!(f["targets.confab.connect.login_per_s"], 50.0);
        assert_eq!(f["targets.relay.saturation.unary.rate"], 80.0);
        assert_eq!(f["settings.users"], 1000.0);
        assert_eq!(f.len(), 4);
    }

    #[test]
    fn the_table_shows_ratios_of_figures_both_runs_have() {
        let old = json!({"settings": {"users": 10}, "targets": [{"target": "confab",
            "connect": {"login_per_s": 100.0, "gone": 1}}]});
        let new = json!({"settings": {"users": 20}, "targets": [{"target": "confab",
            "connect": {"login_per_s": 250.0, "zero": 0}}]});
        let table = table(&old, &new);
        assert!(
            table.contains("targets.confab.connect.login_per_s"),
            "{table}"
        );
        assert!(table.contains("2.50×"), "{table}");
        assert!(
            !table.contains("gone") && !table.contains("settings"),
            "{table}"
        );
    }
}
