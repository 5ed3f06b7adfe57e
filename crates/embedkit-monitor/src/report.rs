//! The `--report DIR` files of a drift test: report.md (verdict, methods, clusters, novel texts), results.json
//! and SVG plots (p-values per method against α; cluster shares before and after). Each file is written to a
//! temporary name and renamed, so a reader never sees half a report.

use crate::DriftReport;
use embedkit_core::write_atomic;
use serde_json::Value;
use std::fmt::Write as _;
use std::path::Path;

/// Writes report.md, results.json, pvalues.svg, clusters.svg and projection.svg into `dir` (created if needed). `json` is the
/// caller's JSON result (with texts), `report` the numbers.
pub fn write_report(dir: &Path, json: &Value, report: &DriftReport) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    write_atomic(
        &dir.join("results.json"),
        serde_json::to_string_pretty(json)
            .unwrap_or_default()
            .as_bytes(),
    )?;
    write_atomic(&dir.join("report.md"), markdown(json, report).as_bytes())?;
    write_atomic(&dir.join("pvalues.svg"), pvalue_svg(report).as_bytes())?;
    write_atomic(&dir.join("clusters.svg"), cluster_svg(json).as_bytes())?;
    write_atomic(
        &dir.join("projection.svg"),
        projection_svg(report).as_bytes(),
    )?;
    Ok(())
}

/// The `embedkit drift --json` document of a report: verdict, methods, clusters, cluster shift, novel and
/// emptied rows. Where a sample was given as texts, `reference_texts` / `current_texts` (indexed like the
/// samples given to [`crate::detect`]) name the clusters and rows.
pub fn to_json(
    r: &DriftReport,
    reference_texts: Option<&[String]>,
    current_texts: Option<&[String]>,
) -> Value {
    use serde_json::json;
    let text_of = |t: Option<&[String]>, i: usize| t.and_then(|t| t.get(i)).cloned();
    let methods: serde_json::Map<String, Value> = r
        .methods
        .iter()
        .map(|(k, m)| {
            (
                k.clone(),
                json!({"p_value": m.p_value, "statistic": m.statistic, "drift": m.drift, "details": m.details}),
            )
        })
        .collect();
    let clusters: Vec<Value> = r.clusters.as_ref().map_or_else(Vec::new, |c| {
        c.clusters
            .iter()
            .map(|cl| {
                let names: Vec<String> = cl
                    .central
                    .iter()
                    .filter_map(|&i| text_of(reference_texts, i))
                    .collect();
                json!({"id": cl.id, "reference_share": cl.reference_share, "current_share": cl.current_share,
                       "central": cl.central, "names": names})
            })
            .collect()
    });
    let rows = |v: &[crate::WitnessRow], t: Option<&[String]>| -> Vec<Value> {
        v.iter()
            .map(|w| json!({"index": w.index, "witness": w.witness, "text": text_of(t, w.index)}))
            .collect()
    };
    json!({
        "drift": r.drift,
        "p_value": r.p_value,
        "alpha": r.alpha,
        "rows": {"reference": r.rows.0, "current": r.rows.1},
        "sampled": {"reference": r.sampled.0, "current": r.sampled.1},
        "methods": methods,
        "clusters": clusters,
        "cluster_shift": r.clusters.as_ref().map(|c| json!({"hellinger": c.hellinger, "chi2": c.chi2, "p_value": c.chi2_p_value})),
        "novel": rows(&r.novel, current_texts),
        "emptied": rows(&r.emptied, reference_texts),
    })
}

fn markdown(json: &Value, r: &DriftReport) -> String {
    let mut s = String::new();
    let _ = writeln!(s, "# Drift report\n");
    let _ = writeln!(
        s,
        "**{}** — combined p = {:.4} at α = {} (min-p over the methods). Reference {} vectors, current {}; tested {} and {}.\n",
        if r.drift { "Drift" } else { "No drift" },
        r.p_value,
        r.alpha,
        r.rows.0,
        r.rows.1,
        r.sampled.0,
        r.sampled.1
    );
    let _ = writeln!(
        s,
        "| method | p-value | statistic | drift |\n| --- | --- | --- | --- |"
    );
    for (name, m) in &r.methods {
        let _ = writeln!(
            s,
            "| {name} | {:.4} | {:.5} | {} |",
            m.p_value,
            m.statistic,
            if m.drift { "yes" } else { "no" }
        );
    }
    let _ = writeln!(
        s,
        "\n![p-values](pvalues.svg)\n\n![both samples, first two principal components](projection.svg)\n"
    );
    if let Some(c) = &r.clusters {
        let _ = writeln!(
            s,
            "## Reference clusters\n\nHellinger distance {:.3}; χ² {:.1}, p = {:.4}.\n\n![cluster shares](clusters.svg)\n",
            c.hellinger, c.chi2, c.chi2_p_value
        );
        let _ = writeln!(
            s,
            "| cluster | reference share | current share | central texts |\n| --- | --- | --- | --- |"
        );
        for cl in json["clusters"].as_array().into_iter().flatten() {
            let names: Vec<String> = cl["names"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(|n| n.as_str())
                .map(|t| t.chars().take(60).collect::<String>().replace('|', "/"))
                .collect();
            let _ = writeln!(
                s,
                "| {} | {:.3} | {:.3} | {} |",
                cl["id"],
                cl["reference_share"].as_f64().unwrap_or(0.0),
                cl["current_share"].as_f64().unwrap_or(0.0),
                names.join(" · ")
            );
        }
    }
    for (key, title) in [
        ("novel", "Current rows the reference explains worst"),
        ("emptied", "Reference rows the current sample covers least"),
    ] {
        let rows = json[key].as_array().cloned().unwrap_or_default();
        if rows.is_empty() {
            continue;
        }
        let _ = writeln!(
            s,
            "\n## {title}\n\n| row | witness | text |\n| --- | --- | --- |"
        );
        for w in rows {
            let text = w["text"]
                .as_str()
                .map(|t| t.chars().take(100).collect::<String>().replace('|', "/"))
                .unwrap_or_default();
            let _ = writeln!(
                s,
                "| {} | {:+.5} | {} |",
                w["index"],
                w["witness"].as_f64().unwrap_or(0.0),
                text
            );
        }
    }
    s
}

/// Horizontal bars of −log10(p) per method, with a line at −log10(α).
fn pvalue_svg(r: &DriftReport) -> String {
    let (w, row_h, left) = (520.0, 28.0, 110.0);
    let h = 40.0 + row_h * r.methods.len() as f64;
    let max = r
        .methods
        .values()
        .map(|m| -m.p_value.log10())
        .fold(-r.alpha.log10() * 1.5, f64::max);
    let x = |v: f64| left + (w - left - 20.0) * v / max;
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"{left}\" y=\"14\">−log10(p) per method; line: α = {}</text>",
        r.alpha
    );
    for (i, (name, m)) in r.methods.iter().enumerate() {
        let y = 24.0 + row_h * i as f64;
        let colour = if m.drift { "#c0392b" } else { "#7f8c8d" };
        let _ = writeln!(s, "<text x=\"4\" y=\"{}\">{name}</text>", y + 16.0);
        let _ = writeln!(
            s,
            "<rect x=\"{left}\" y=\"{y}\" width=\"{:.1}\" height=\"20\" fill=\"{colour}\"/>",
            x(-m.p_value.log10()) - left
        );
    }
    let xa = x(-r.alpha.log10());
    let _ = writeln!(
        s,
        "<line x1=\"{xa:.1}\" y1=\"20\" x2=\"{xa:.1}\" y2=\"{h}\" stroke=\"black\" stroke-dasharray=\"4 3\"/>\n</svg>"
    );
    s
}

/// Paired bars of each cluster's reference and current share.
fn cluster_svg(json: &Value) -> String {
    let clusters = json["clusters"].as_array().cloned().unwrap_or_default();
    let (w, h, bottom) = (40.0 + 36.0 * clusters.len().max(1) as f64, 240.0, 210.0);
    let max = clusters
        .iter()
        .flat_map(|c| {
            [
                c["reference_share"].as_f64().unwrap_or(0.0),
                c["current_share"].as_f64().unwrap_or(0.0),
            ]
        })
        .fold(0.01, f64::max);
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"14\">cluster shares: reference (grey), current (blue)</text>"
    );
    for (i, c) in clusters.iter().enumerate() {
        let x0 = 20.0 + 36.0 * i as f64;
        for (k, (key, colour)) in [("reference_share", "#95a5a6"), ("current_share", "#2e86c1")]
            .iter()
            .enumerate()
        {
            let v = c[*key].as_f64().unwrap_or(0.0);
            let bh = (bottom - 30.0) * v / max;
            let _ = writeln!(
                s,
                "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"14\" height=\"{bh:.1}\" fill=\"{colour}\"/>",
                x0 + 15.0 * k as f64,
                bottom - bh
            );
        }
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{}</text>",
            x0 + 6.0,
            bottom + 14.0,
            c["id"]
        );
    }
    s.push_str("</svg>\n");
    s
}

/// Both samples in the plane of their first two principal components: reference grey, current blue.
fn projection_svg(r: &DriftReport) -> String {
    let (w, h, pad) = (420.0, 420.0, 20.0);
    let pts = &r.projection;
    let (mut x0, mut x1, mut y0, mut y1) = (f32::MAX, f32::MIN, f32::MAX, f32::MIN);
    for p in pts {
        (x0, x1, y0, y1) = (x0.min(p.x), x1.max(p.x), y0.min(p.y), y1.max(p.y));
    }
    let sx = |v: f32| pad + (w - 2.0 * pad) * f64::from((v - x0) / (x1 - x0).max(1e-12));
    let sy = |v: f32| h - pad - (h - 2.0 * pad) * f64::from((v - y0) / (y1 - y0).max(1e-12));
    let mut s = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        s,
        "<text x=\"4\" y=\"14\">first two principal components: reference (grey), current (blue)</text>"
    );
    // Reference first, so current points are drawn on top.
    for current in [false, true] {
        let colour = if current { "#2e86c1" } else { "#95a5a6" };
        for p in pts.iter().filter(|p| p.current == current) {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2\" fill=\"{colour}\" fill-opacity=\"0.6\"/>",
                sx(p.x),
                sy(p.y)
            );
        }
    }
    s.push_str("</svg>\n");
    s
}
