//! What a vector file records about how its vectors were made, in the Parquet key-value metadata.

use std::collections::BTreeMap;

/// Prefix of every key embedkit writes into a file's key-value metadata.
pub const PREFIX: &str = "embedkit.";

/// Keys that describe one file rather than how vectors were made; parts of one corpus differ in them.
pub const INFO_KEYS: &[&str] = &["version", "shard", "records", "input_records", "rows"];

/// The metadata of a vector file: `settings` must be equal for vectors to be comparable (model name,
/// fingerprint, precision, dims, the vector-changing options, id source …); `info` describes this file
/// (embedkit version, shard, record range). Both are stored as `embedkit.<key>` = value.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FileMeta {
    /// Everything that changes the vectors or the meaning of a row.
    pub settings: BTreeMap<String, String>,
    /// Facts about this file only.
    pub info: BTreeMap<String, String>,
}

impl FileMeta {
    /// The key-value pairs to store, prefixed.
    pub fn to_pairs(&self) -> Vec<(String, String)> {
        self.settings
            .iter()
            .chain(&self.info)
            .map(|(k, v)| (format!("{PREFIX}{k}"), v.clone()))
            .collect()
    }

    /// Reads the `embedkit.*` pairs back; other keys (ARROW:schema, pandas, …) are ignored.
    pub fn from_pairs<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> FileMeta {
        let mut meta = FileMeta::default();
        for (k, v) in pairs {
            if let Some(name) = k.strip_prefix(PREFIX) {
                let map = if INFO_KEYS.contains(&name) {
                    &mut meta.info
                } else {
                    &mut meta.settings
                };
                map.insert(name.to_string(), v.to_string());
            }
        }
        meta
    }
}

/// Each setting that differs between `then` and `now`, as `name: then → now` (`(none)` for a missing one),
/// joined by "; "; empty when they agree.
pub fn describe_differences(
    then: &BTreeMap<String, String>,
    now: &BTreeMap<String, String>,
) -> String {
    let mut keys: Vec<&String> = then.keys().chain(now.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| then.get(*k) != now.get(*k))
        .map(|k| {
            let show = |v: Option<&String>| v.map_or("(none)".to_string(), |v| format!("{v:?}"));
            format!("{k}: {} → {}", show(then.get(k)), show(now.get(k)))
        })
        .collect::<Vec<_>>()
        .join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_round_trip_and_differences_name_keys() {
        let mut m = FileMeta::default();
        m.settings.insert("model".into(), "a".into());
        m.info.insert("shard".into(), "1/4".into());
        let pairs = m.to_pairs();
        let back = FileMeta::from_pairs(
            pairs
                .iter()
                .map(|(k, v)| (k.as_str(), v.as_str()))
                .chain([("ARROW:schema", "x")]),
        );
        assert_eq!(back, m);
        let mut other = m.settings.clone();
        other.insert("model".into(), "b".into());
        other.insert("precision".into(), "int8".into());
        assert_eq!(
            describe_differences(&m.settings, &other),
            "model: \"a\" → \"b\"; precision: (none) → \"int8\""
        );
    }
}
