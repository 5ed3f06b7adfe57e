//! A reference profile: what later traffic is compared with, saved once (`embedkit drift profile`) and read by
//! `embedkit serve --drift-reference`. A folder holding
//!
//! * `reference.npy` — a seeded sample of the reference vectors (float32, at most `max_samples` rows);
//! * `centres.npy` — k-means centres of that sample, so that every check reports the same, stable clusters;
//! * `canary.json` (optional) — a canary file (`drift canary record`) to re-embed periodically;
//! * `profile.json` — what made it (source, rows, seed, dimensions, the canary's model).

use crate::cluster::kmeans;
use crate::rng::{SplitMix64, subsample};
use crate::{Canary, DriftError};
use embedkit_core::{Embeddings, write_atomic};
use serde::{Deserialize, Serialize};
use std::path::Path;

/// What `profile.json` records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ProfileMeta {
    /// File format version (1).
    pub version: u32,
    /// Where the reference vectors came from, as given.
    pub source: String,
    /// Reference vectors given.
    pub rows: usize,
    /// Reference vectors kept in `reference.npy`.
    pub sampled: usize,
    /// Vector dimensions.
    pub dims: usize,
    /// k-means clusters in `centres.npy`.
    pub clusters: usize,
    /// Seed of the sample and the clustering.
    pub seed: u64,
    /// Whether `canary.json` is present.
    pub canary: bool,
}

/// A loaded reference profile.
#[derive(Debug, Clone)]
pub struct Profile {
    /// What made it.
    pub meta: ProfileMeta,
    /// The reference sample.
    pub reference: Embeddings,
    /// Cluster centres, `clusters × dims` row-major.
    pub centres: Vec<f32>,
    /// The canary to re-embed, when the profile has one.
    pub canary: Option<Canary>,
}

impl Profile {
    /// Builds a profile from reference vectors: a seeded sample of at most `max_samples` rows and `clusters`
    /// k-means centres of it. `source` names the input in `profile.json`.
    pub fn build(
        vectors: &Embeddings,
        source: &str,
        max_samples: usize,
        clusters: usize,
        seed: u64,
        canary: Option<Canary>,
    ) -> Result<Profile, DriftError> {
        if vectors.rows() < 2 {
            return Err(DriftError::TooFew {
                sample: "reference",
                rows: vectors.rows(),
                need: 2,
            });
        }
        if max_samples < 2 || clusters == 0 {
            return Err(DriftError::InvalidOption(
                "a profile needs max_samples ≥ 2 and at least one cluster".into(),
            ));
        }
        let d = vectors.dims();
        if let Some(v) = canary
            .as_ref()
            .and_then(|c| c.vectors.iter().find(|v| v.len() != d))
        {
            return Err(DriftError::InvalidOption(format!(
                "canary vectors have {} dimensions, the reference {d}",
                v.len()
            )));
        }
        if let Some(row) =
            (0..vectors.rows()).find(|&i| vectors.row(i).iter().any(|v| !v.is_finite()))
        {
            return Err(DriftError::NonFinite {
                sample: "reference",
                row,
            });
        }
        let mut rng = SplitMix64::stream(seed, 0x5A);
        let idx = subsample(vectors.rows(), max_samples, &mut rng);
        let sample: Vec<f32> = idx
            .iter()
            .flat_map(|&i| vectors.row(i).iter().copied())
            .collect();
        let (centres, _) = kmeans(&sample, idx.len(), d, clusters, seed, 100);
        let reference = Embeddings::new(sample, idx.len(), d)
            .map_err(|e| DriftError::InvalidOption(e.to_string()))?;
        Ok(Profile {
            meta: ProfileMeta {
                version: 1,
                source: source.to_string(),
                rows: vectors.rows(),
                sampled: idx.len(),
                dims: d,
                clusters: centres.len() / d,
                seed,
                canary: canary.is_some(),
            },
            reference,
            centres,
            canary,
        })
    }

    /// Vector dimensions.
    pub fn dims(&self) -> usize {
        self.meta.dims
    }

    /// Writes the profile folder (created if needed); each file goes to a temporary name first.
    pub fn write(&self, dir: &Path) -> Result<(), DriftError> {
        let err = |path: &Path, e: std::io::Error| DriftError::File {
            path: path.display().to_string(),
            reason: e.to_string(),
        };
        std::fs::create_dir_all(dir).map_err(|e| err(dir, e))?;
        let d = self.dims();
        let npy = |name: &str, data: &[f32]| -> Result<(), DriftError> {
            let mut bytes = Vec::with_capacity(data.len() * 4 + 128);
            let bytes_of: Vec<u8> = data.iter().flat_map(|x| x.to_le_bytes()).collect();
            embedkit_vectors::npy::write_npy(&mut bytes, "<f4", &[data.len() / d, d], &bytes_of)
                .map_err(|e| err(&dir.join(name), e))?;
            write_atomic(&dir.join(name), &bytes).map_err(|e| err(&dir.join(name), e))
        };
        npy("reference.npy", self.reference.as_slice())?;
        npy("centres.npy", &self.centres)?;
        if let Some(c) = &self.canary {
            let path = dir.join("canary.json");
            let text = serde_json::to_string(c).map_err(|e| err(&path, e.into()))?;
            write_atomic(&path, text.as_bytes()).map_err(|e| err(&path, e))?;
        }
        let path = dir.join("profile.json");
        let text = serde_json::to_string_pretty(&self.meta).map_err(|e| err(&path, e.into()))?;
        write_atomic(&path, text.as_bytes()).map_err(|e| err(&path, e))
    }

    /// Reads a profile folder written by [`Profile::write`], checking that its parts agree.
    pub fn read(dir: &Path) -> Result<Profile, DriftError> {
        let bad = |path: &Path, reason: String| DriftError::File {
            path: path.display().to_string(),
            reason,
        };
        let meta_path = dir.join("profile.json");
        let text = std::fs::read_to_string(&meta_path).map_err(|e| {
            bad(
                &meta_path,
                format!(
                    "{e} (is {} a folder from `embedkit drift profile`?)",
                    dir.display()
                ),
            )
        })?;
        let meta: ProfileMeta = serde_json::from_str(&text)
            .map_err(|e| bad(&meta_path, format!("not a drift profile: {e}")))?;
        if meta.version != 1 {
            return Err(bad(
                &meta_path,
                format!("profile version {} (this embedkit reads 1)", meta.version),
            ));
        }
        let matrix = |name: &str| -> Result<Embeddings, DriftError> {
            let path = dir.join(name);
            let e = embedkit_vectors::npy::read_npy(&path)
                .and_then(|a| a.to_embeddings())
                .map_err(|e| bad(&path, e.to_string()))?;
            if e.dims() != meta.dims {
                return Err(bad(
                    &path,
                    format!("{} dimensions; profile.json says {}", e.dims(), meta.dims),
                ));
            }
            if let Some(row) = (0..e.rows()).find(|&i| e.row(i).iter().any(|v| !v.is_finite())) {
                return Err(bad(&path, format!("a non-finite value in row {row}")));
            }
            Ok(e)
        };
        let reference = matrix("reference.npy")?;
        let centres = matrix("centres.npy")?;
        if reference.rows() < 2 || centres.rows() == 0 {
            return Err(bad(
                dir,
                format!(
                    "{} reference vectors and {} centres; a profile needs at least 2 and 1",
                    reference.rows(),
                    centres.rows()
                ),
            ));
        }
        let canary_path = dir.join("canary.json");
        let canary = if meta.canary {
            let c = Canary::read(&canary_path)?;
            if let Some(v) = c.vectors.iter().find(|v| v.len() != meta.dims) {
                return Err(bad(
                    &canary_path,
                    format!(
                        "canary vectors have {} dimensions, the profile {}",
                        v.len(),
                        meta.dims
                    ),
                ));
            }
            Some(c)
        } else {
            None
        };
        Ok(Profile {
            meta,
            reference,
            centres: centres.as_slice().to_vec(),
            canary,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn vectors(n: usize) -> Embeddings {
        Embeddings::from_rows(
            (0..n)
                .map(|i| {
                    vec![
                        (i as f32 * 0.3).sin(),
                        (i as f32 * 0.7).cos(),
                        i as f32 / n as f32,
                    ]
                })
                .collect(),
        )
        .unwrap()
    }

    #[test]
    fn a_written_profile_reads_back_equal() {
        let dir = std::env::temp_dir().join(format!("embedkit-profile-{}", std::process::id()));
        let canary = Canary {
            version: 1,
            model: "m".into(),
            options: BTreeMap::new(),
            texts: vec!["a".into()],
            vectors: vec![vec![1.0, 0.0, 0.0]],
        };
        let p = Profile::build(&vectors(300), "x.npy", 100, 4, 7, Some(canary)).unwrap();
        assert_eq!((p.reference.rows(), p.centres.len()), (100, 12));
        p.write(&dir).unwrap();
        let q = Profile::read(&dir).unwrap();
        assert_eq!(q.meta, p.meta);
        assert_eq!(q.reference, p.reference);
        assert_eq!(q.centres, p.centres);
        assert_eq!(q.canary, p.canary);
        // A canary of other dimensions is refused, naming the file.
        std::fs::write(
            dir.join("canary.json"),
            r#"{"version":1,"model":"m","options":{},"texts":["a"],"vectors":[[1.0,0.0]]}"#,
        )
        .unwrap();
        let e = Profile::read(&dir).unwrap_err().to_string();
        assert!(
            e.contains("canary.json") && e.contains("2 dimensions"),
            "{e}"
        );
        std::fs::remove_dir_all(&dir).unwrap();
        let e = Profile::read(&dir).unwrap_err().to_string();
        assert!(e.contains("profile.json"), "{e}");
    }
}
