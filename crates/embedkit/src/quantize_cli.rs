//! `embedkit quantize` and `embedkit embed --precision`: float32 vectors to the bytes of sentence-transformers'
//! quantize_embeddings (float16, bfloat16, int8, uint8, binary, ubinary), with int8/uint8 calibration ranges
//! saved and reused as files.

use crate::output::{OutputFormat, Sink};
use crate::{CHUNK, progress};
use anyhow::{Context, Result, bail};
use clap::Args;
use embedkit_core::{Embedder, Embeddings, EncodeOptions};
use embedkit_vectors::npy::read_npy;
use embedkit_vectors::{CalibrationRanges, Precision, QuantizedEmbeddings, quantize};
use std::io::Write;
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------------------------------ embed --precision

/// Flags that `embedkit embed` flattens in: `--precision`, `--ranges`, `--save-ranges`.
#[derive(Args, Debug, Clone, Default)]
pub struct PrecisionArgs {
    /// Output precision: float32, float16, bfloat16, int8, uint8, binary or ubinary — the bytes of
    /// sentence-transformers' quantize_embeddings (int8/uint8 ranges come from all the embedded texts unless
    /// --ranges is given).
    #[arg(long, value_name = "P")]
    pub precision: Option<Precision>,
    /// int8/uint8 calibration ranges: a file written by --save-ranges (JSON) or a numpy (2, dims) .npy.
    #[arg(long, value_name = "FILE", requires = "precision")]
    pub ranges: Option<PathBuf>,
    /// Write the int8/uint8 ranges that were used to FILE (.json, or .npy for numpy).
    #[arg(long, value_name = "FILE", requires = "precision")]
    pub save_ranges: Option<PathBuf>,
}

/// `embedkit embed --precision P`: embeds all `texts` (ranges, like sentence-transformers' `encode`, come from
/// the whole set, so the vectors are gathered before quantizing), converts them, and writes them in `format`
/// (`.npy` with the precision's dtype; integers or rounded floats in JSON, JSONL and CSV).
pub fn embed_quantized(
    embedder: &dyn Embedder,
    texts: &[String],
    options: &EncodeOptions,
    args: &PrecisionArgs,
    format: OutputFormat,
    output: Option<&Path>,
    quiet: bool,
) -> Result<()> {
    let precision = args.precision.unwrap_or(Precision::F32);
    let ranges = match &args.ranges {
        Some(p) => Some(CalibrationRanges::load(p)?),
        None => None,
    };
    let bar = progress::texts(texts.len(), quiet);
    let mut all: Option<Embeddings> = None;
    for chunk in texts.chunks(CHUNK) {
        let refs: Vec<&str> = chunk.iter().map(String::as_str).collect();
        let e = embedder.embed(&refs, options)?;
        match all.as_mut() {
            Some(a) => a.append(&e)?,
            None => all = Some(e),
        }
        bar.inc(chunk.len() as u64);
    }
    bar.finish_and_clear();
    let dims = options.truncate_dim.unwrap_or(embedder.dims());
    let all = all.unwrap_or_else(|| Embeddings::empty(dims));
    let (q, used) = quantize_with(&all, precision, ranges, None)?;
    if let (Some(path), Some(r)) = (&args.save_ranges, &used) {
        r.save(path)?;
    }
    write_quantized(&q, format, embedder.name(), output)
}

/// Quantizes with `ranges`, or ranges from `calibration`, or (int8/uint8) from `e` itself; returns the ranges
/// that were used.
fn quantize_with(
    e: &Embeddings,
    precision: Precision,
    ranges: Option<CalibrationRanges>,
    calibration: Option<&Embeddings>,
) -> Result<(QuantizedEmbeddings, Option<CalibrationRanges>)> {
    let ranges = match (ranges, calibration) {
        (Some(r), _) => Some(r),
        (None, Some(c)) if precision.needs_ranges() => {
            Some(CalibrationRanges::from_calibration(c)?)
        }
        (None, _) if precision.needs_ranges() && e.rows() > 1 => {
            Some(CalibrationRanges::from_embeddings(e)?)
        }
        _ => None,
    };
    let q = quantize(e, precision, ranges.as_ref())?;
    Ok((q, ranges.filter(|_| precision.needs_ranges())))
}

/// Writes quantized vectors in one of `embed`'s formats, atomically when `output` is a file.
pub fn write_quantized(
    q: &QuantizedEmbeddings,
    format: OutputFormat,
    model: &str,
    output: Option<&Path>,
) -> Result<()> {
    let mut sink = Sink::open(output)?;
    match format {
        OutputFormat::Npy => q.write_npy(&mut sink)?,
        OutputFormat::Json => {
            write!(
                sink,
                "{{\"model\":{},\"dimensions\":{},\"precision\":\"{}\",\"embeddings\":[",
                serde_json::to_string(model)?,
                q.dims(),
                q.precision()
            )?;
            for i in 0..q.rows() {
                if i > 0 {
                    sink.write_all(b",")?;
                }
                write_values(&mut sink, q, i, ",")?;
            }
            sink.write_all(b"]}\n")?;
        }
        OutputFormat::Jsonl => {
            for i in 0..q.rows() {
                write!(sink, "{{\"index\":{i},\"embedding\":")?;
                write_values(&mut sink, q, i, ",")?;
                sink.write_all(b"}\n")?;
            }
        }
        OutputFormat::Csv => {
            for i in 0..q.rows() {
                let text = values_text(q, i);
                writeln!(sink, "{}", text.join(","))?;
            }
        }
        OutputFormat::Parquet => bail!("Parquet output is streamed by `embed --format parquet`"),
    }
    sink.finish()
}

/// Row `i` as text: integers for the integer precisions, the shortest round-trip decimal for floats.
fn values_text(q: &QuantizedEmbeddings, i: usize) -> Vec<String> {
    let ints = !matches!(
        q.precision(),
        Precision::F32 | Precision::F16 | Precision::BF16
    );
    q.row_values(i)
        .into_iter()
        .map(|v| {
            if ints {
                format!("{}", v as i64)
            } else if (v as f32).is_finite() {
                format!("{}", v as f32)
            } else {
                "null".to_string()
            }
        })
        .collect()
}

fn write_values(w: &mut impl Write, q: &QuantizedEmbeddings, i: usize, sep: &str) -> Result<()> {
    write!(w, "[{}]", values_text(q, i).join(sep))?;
    Ok(())
}

// ------------------------------------------------------------------------------------------------- quantize

/// `embedkit quantize IN.npy --precision P --output OUT.npy`.
#[derive(Args, Debug, Clone)]
pub struct QuantizeArgs {
    /// float32 embeddings, shape (vectors, dims), e.g. from `embedkit embed --format npy` or numpy.
    #[arg(value_name = "IN.npy")]
    pub input: PathBuf,
    /// float32, float16, bfloat16, int8, uint8, binary or ubinary.
    #[arg(long, short, value_name = "P")]
    pub precision: Precision,
    /// int8/uint8 ranges from FILE (JSON from --save-ranges, or a numpy (2, dims) .npy).
    #[arg(long, value_name = "FILE", conflicts_with = "calibration")]
    pub ranges: Option<PathBuf>,
    /// int8/uint8 ranges from these float32 calibration embeddings (.npy) instead of the input itself.
    #[arg(long, value_name = "FILE.npy")]
    pub calibration: Option<PathBuf>,
    /// Write the int8/uint8 ranges that were used to FILE.
    #[arg(long, value_name = "FILE")]
    pub save_ranges: Option<PathBuf>,
    /// Where to write the quantized array (.npy; written atomically).
    #[arg(long, short, value_name = "OUT.npy")]
    pub output: PathBuf,
}

/// Runs `embedkit quantize`.
pub fn run_quantize(args: &QuantizeArgs, quiet: bool) -> Result<()> {
    let input = read_npy(&args.input)
        .and_then(|a| a.to_embeddings())
        .with_context(|| format!("cannot use '{}'", args.input.display()))?;
    let ranges = match &args.ranges {
        Some(p) => Some(CalibrationRanges::load(p)?),
        None => None,
    };
    let calibration = match &args.calibration {
        Some(p) => Some(
            read_npy(p)
                .and_then(|a| a.to_embeddings())
                .with_context(|| format!("cannot use calibration embeddings '{}'", p.display()))?,
        ),
        None => None,
    };
    let (q, used) = quantize_with(&input, args.precision, ranges, calibration.as_ref())
        .with_context(|| format!("cannot quantize '{}'", args.input.display()))?;
    if let Some(path) = &args.save_ranges {
        match &used {
            Some(r) => r.save(path)?,
            None => bail!("--save-ranges: {} uses no ranges", args.precision),
        }
    }
    write_quantized(&q, OutputFormat::Npy, "", Some(&args.output))?;
    if !quiet {
        eprintln!(
            "wrote {} × {} {} ({} bytes) to {}",
            q.rows(),
            q.values_per_row(),
            q.precision(),
            q.as_bytes().len(),
            args.output.display()
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::Toy;

    #[test]
    fn quantize_command_writes_npy_and_ranges() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.npy");
        let e = Toy { fp: "x" }
            .embed(&["a", "bb", "ccc"], &EncodeOptions::default())
            .unwrap();
        let q = quantize(&e, Precision::F32, None).unwrap();
        write_quantized(&q, OutputFormat::Npy, "", Some(&input)).unwrap();
        let out = dir.path().join("out.npy");
        let ranges = dir.path().join("r.json");
        let args = QuantizeArgs {
            input: input.clone(),
            precision: Precision::Int8,
            ranges: None,
            calibration: None,
            save_ranges: Some(ranges.clone()),
            output: out.clone(),
        };
        run_quantize(&args, true).unwrap();
        let got = read_npy(&out).unwrap();
        assert_eq!(got.descr, "|i1");
        assert_eq!(
            got.data,
            quantize(&e, Precision::Int8, None).unwrap().into_bytes()
        );
        // Reusing the saved ranges gives the same bytes.
        let again = dir.path().join("again.npy");
        run_quantize(
            &QuantizeArgs {
                ranges: Some(ranges),
                save_ranges: None,
                output: again.clone(),
                ..args
            },
            true,
        )
        .unwrap();
        assert_eq!(read_npy(&again).unwrap().data, got.data);
        // A float64 input is refused with the reason.
        let f64_path = dir.path().join("f64.npy");
        let mut buf = Vec::new();
        embedkit_vectors::npy::write_npy(&mut buf, "<f8", &[1, 1], &[0; 8]).unwrap();
        std::fs::write(&f64_path, buf).unwrap();
        let err = run_quantize(
            &QuantizeArgs {
                input: f64_path,
                precision: Precision::Int8,
                ranges: None,
                calibration: None,
                save_ranges: None,
                output: dir.path().join("x.npy"),
            },
            true,
        )
        .unwrap_err();
        assert!(format!("{err:#}").contains("float32"), "{err:#}");
    }

    #[test]
    fn quantized_text_output_uses_integers() {
        let e = Embeddings::from_rows(vec![vec![0.5, -0.5, 0.25], vec![-0.5, 0.5, 0.0]]).unwrap();
        let q = quantize(&e, Precision::Binary, None).unwrap();
        assert_eq!(values_text(&q, 0), vec!["32"]);
        let q = quantize(&e, Precision::Int8, None).unwrap();
        // As sentence-transformers: the column maxima land on 126, not 127 (floor of 254.99998).
        assert_eq!(values_text(&q, 0), vec!["126", "-128", "126"]);
        let q = quantize(&e, Precision::F16, None).unwrap();
        assert_eq!(values_text(&q, 0), vec!["0.5", "-0.5", "0.25"]);
    }
}
