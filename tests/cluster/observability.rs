//! The shipped dashboards and alert rules (`configs/grafana/`, `configs/prometheus/alerts/`)
//! name only series a live node exports: a renamed metric breaks this test, not an operator's
//! dashboard in silence.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::json;

use crate::harness::{wait_until, Cluster};

/// Every `cograft_...` metric name in the files of `dir` ending in `ext`.
fn names_in(dir: &str, ext: &str) -> BTreeSet<String> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join(dir);
    let mut names = BTreeSet::new();
    for entry in std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.extension().and_then(|e| e.to_str()) != Some(ext) {
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap();
        let mut rest = text.as_str();
        while let Some(at) = rest.find("cograft_") {
            let tail = &rest[at..];
            let end = tail.find(|c: char| !(c.is_ascii_alphanumeric() || c == '_')).unwrap_or(tail.len());
            // Series in expressions, not words in prose ("cograft_spreading_..." in a
            // description still has to exist, so they count too).
            names.insert(tail[..end].to_string());
            rest = &tail[end..];
        }
    }
    assert!(!names.is_empty(), "no metric names found in {}", dir.display());
    names
}

/// A sample's family: without the suffixes OpenMetrics adds to counters and histograms.
fn family(name: &str) -> &str {
    ["_bucket", "_count", "_sum", "_total"].iter().find_map(|s| name.strip_suffix(s)).unwrap_or(name)
}

#[test]
fn the_dashboards_and_alerts_name_only_series_a_node_exports() {
    let c = Cluster::start(1, &[("COGRAFT__HEALTH__INTERVAL_MS", "200")]);
    c.add_atom(1, "cat");
    // The index folds the write in shortly after it applied.
    wait_until("a spread from the new atom", Duration::from_secs(20), || {
        let body = json!({ "sources": [{ "type": "ConceptNode", "name": "cat" }] });
        (c.post(1, "/v1/spread", body).status == 200).then_some(())
    });
    let text = c.get(1, "/metrics").body.as_str().unwrap_or_default().to_string();
    let exported: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    assert!(exported.contains("cograft_spreading_spread_seconds"), "{text}");
    // Summed within a second of the last fold, also when no write follows.
    wait_until("the index memory gauge to count the new atom", Duration::from_secs(10), || {
        let text = c.get(1, "/metrics").body.as_str().unwrap_or_default().to_string();
        let memory = text
            .lines()
            .find_map(|l| l.strip_prefix("cograft_spreading_index_memory_bytes "))
            .and_then(|v| v.trim().parse::<u64>().ok());
        (memory.unwrap_or(0) > 0).then_some(())
    });
    let mut used = names_in("configs/prometheus/alerts", "yml");
    used.extend(names_in("configs/grafana", "json"));
    let missing: Vec<&String> = used.iter().filter(|n| !exported.contains(family(n))).collect();
    assert!(missing.is_empty(), "named in configs/ but not exported: {missing:?}\nexported: {exported:?}");
}
