//! The drift monitors' series in the Prometheus text exposition of `/metrics`, one family per metric with a
//! `model` label on every sample (several models can be monitored).

use super::{Monitor, NORM_BUCKETS, Shared, State, lock};
use embedkit_monitor::Method;
use std::fmt::Write as _;
use std::sync::atomic::Ordering;

/// A per-model series: name, help, and its value from the monitor's state.
type Series = (&'static str, &'static str, fn(&State, &Shared) -> f64);

/// Escapes a Prometheus label value.
fn label(v: &str) -> String {
    v.replace('\\', r"\\")
        .replace('"', "\\\"")
        .replace('\n', r"\n")
}

/// Appends the drift series of every monitor to a Prometheus text exposition.
pub(crate) fn render<'a>(monitors: impl Iterator<Item = &'a Monitor>, out: &mut String) {
    let monitors: Vec<&Monitor> = monitors.collect();
    if monitors.is_empty() {
        return;
    }
    let states: Vec<(String, std::sync::MutexGuard<'_, State>, &Shared)> = monitors
        .iter()
        .map(|m| (label(&m.model), lock(&m.shared), &*m.shared))
        .collect();
    let family = |out: &mut String, name: &str, kind: &str, help: &str| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
    };
    family(
        out,
        "embedkit_drift_p_value",
        "gauge",
        "p-value of the last checked window by method; overall = the min-p verdict over the methods.",
    );
    for (m, st, _) in &states {
        if let Some((r, _)) = &st.last {
            let _ = writeln!(
                out,
                "embedkit_drift_p_value{{model=\"{m}\",method=\"overall\"}} {}",
                r.p_value
            );
            for (name, res) in &r.methods {
                let _ = writeln!(
                    out,
                    "embedkit_drift_p_value{{model=\"{m}\",method=\"{name}\"}} {}",
                    res.p_value
                );
            }
        }
    }
    family(
        out,
        "embedkit_drift_statistic",
        "gauge",
        "Statistic of the last checked window: mmd = MMD², classifier = AUC, centroid = distance, ks = max D.",
    );
    for (m, st, _) in &states {
        if let Some((r, _)) = &st.last {
            for (name, res) in &r.methods {
                let _ = writeln!(
                    out,
                    "embedkit_drift_statistic{{model=\"{m}\",method=\"{name}\"}} {}",
                    res.statistic
                );
            }
        }
    }
    family(
        out,
        "embedkit_drift_centroid_distance",
        "gauge",
        "Distance between the means of the last window and the reference (euclidean; cosine = 1 - cos).",
    );
    for (m, st, _) in &states {
        if let Some(c) = st
            .last
            .as_ref()
            .and_then(|(r, _)| r.methods.get(Method::Centroid.name()))
        {
            let _ = writeln!(
                out,
                "embedkit_drift_centroid_distance{{model=\"{m}\",kind=\"euclidean\"}} {}",
                c.statistic
            );
            if let Some(cos) = c.details.get("cosine") {
                let _ = writeln!(
                    out,
                    "embedkit_drift_centroid_distance{{model=\"{m}\",kind=\"cosine\"}} {cos}"
                );
            }
        }
    }
    family(
        out,
        "embedkit_drift_cluster_hellinger",
        "gauge",
        "Hellinger distance between the reference's and the last window's shares of the profile's clusters.",
    );
    for (m, st, _) in &states {
        if let Some(c) = st.last.as_ref().and_then(|(r, _)| r.clusters.as_ref()) {
            let _ = writeln!(
                out,
                "embedkit_drift_cluster_hellinger{{model=\"{m}\"}} {}",
                c.hellinger
            );
        }
    }
    let gauges: [Series; 4] = [
        (
            "embedkit_drift_detected",
            "1 when the last checked window drifted (p < alpha and an effect floor), else 0.",
            |st, _| {
                st.last
                    .as_ref()
                    .map_or(0.0, |(r, _)| f64::from(u8::from(r.drift)))
            },
        ),
        (
            "embedkit_drift_alert",
            "1 while the last consecutive windows (2 by default) all drifted, else 0.",
            |st, _| f64::from(u8::from(st.alert)),
        ),
        (
            "embedkit_drift_consecutive_windows",
            "Drifting windows in a row up to the last one.",
            |st, _| st.consecutive as f64,
        ),
        (
            "embedkit_drift_window_filled",
            "Vectors in the window being filled.",
            |st, _| st.filled as f64,
        ),
    ];
    for (name, help, value) in gauges {
        family(out, name, "gauge", help);
        for (m, st, s) in &states {
            let _ = writeln!(out, "{name}{{model=\"{m}\"}} {}", value(st, s));
        }
    }
    let counters: [Series; 6] = [
        (
            "embedkit_drift_windows_total",
            "Windows checked.",
            |st, _| st.checked as f64,
        ),
        (
            "embedkit_drift_windows_drifting_total",
            "Windows checked that drifted.",
            |st, _| st.drifting as f64,
        ),
        ("embedkit_drift_alerts_total", "Alerts raised.", |st, _| {
            st.alerts_raised as f64
        }),
        (
            "embedkit_drift_vectors_offered_total",
            "Vectors offered to the monitor by requests.",
            |_, s| s.offered.load(Ordering::Relaxed) as f64,
        ),
        (
            "embedkit_drift_vectors_dropped_total",
            "Vectors dropped because the monitor was behind (requests never wait for it).",
            |_, s| s.dropped.load(Ordering::Relaxed) as f64,
        ),
        (
            "embedkit_drift_check_errors_total",
            "Window checks that failed.",
            |st, _| st.errors as f64,
        ),
    ];
    for (name, help, value) in counters {
        family(out, name, "counter", help);
        for (m, st, s) in &states {
            let _ = writeln!(out, "{name}{{model=\"{m}\"}} {}", value(st, s));
        }
    }
    family(
        out,
        "embedkit_drift_check_seconds",
        "gauge",
        "Time the last window check took (on the monitor's own low-priority thread).",
    );
    for (m, st, _) in &states {
        let _ = writeln!(
            out,
            "embedkit_drift_check_seconds{{model=\"{m}\"}} {}",
            st.last_check_seconds
        );
    }
    family(
        out,
        "embedkit_drift_vector_norm",
        "histogram",
        "L2 norm of served vectors as the model pools them (before its normalization), per text.",
    );
    for (m, st, _) in &states {
        let mut cumulative = 0;
        for (b, c) in NORM_BUCKETS.iter().zip(&st.norm_counts) {
            cumulative += c;
            let _ = writeln!(
                out,
                "embedkit_drift_vector_norm_bucket{{model=\"{m}\",le=\"{b}\"}} {cumulative}"
            );
        }
        let _ = writeln!(
            out,
            "embedkit_drift_vector_norm_bucket{{model=\"{m}\",le=\"+Inf\"}} {}\n\
             embedkit_drift_vector_norm_sum{{model=\"{m}\"}} {}\n\
             embedkit_drift_vector_norm_count{{model=\"{m}\"}} {}",
            st.norm_count, st.norm_sum, st.norm_count
        );
    }
    family(
        out,
        "embedkit_drift_canary_min_cosine",
        "gauge",
        "Smallest cosine between the canary texts' recorded vectors and their last re-embedding.",
    );
    for (m, st, _) in &states {
        if let Some(l) = st.canary.as_ref().and_then(|c| c.last.as_ref()) {
            let _ = writeln!(
                out,
                "embedkit_drift_canary_min_cosine{{model=\"{m}\"}} {}",
                l.min_cosine
            );
        }
    }
    family(
        out,
        "embedkit_drift_canary_changed",
        "gauge",
        "1 when the last canary re-embedding differed from the recorded vectors (cosine or norm), else 0.",
    );
    for (m, st, _) in &states {
        if let Some(l) = st.canary.as_ref().and_then(|c| c.last.as_ref()) {
            let _ = writeln!(
                out,
                "embedkit_drift_canary_changed{{model=\"{m}\"}} {}",
                u8::from(l.changed)
            );
        }
    }
}
