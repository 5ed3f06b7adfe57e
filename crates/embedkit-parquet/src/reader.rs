//! Reading Parquet: texts (and ids) to embed from any Parquet file, and vector files back.

use crate::writer::{IdType, Ids, Layout, layout_of};
use crate::{Error, FileMeta};
use arrow_array::cast::AsArray;
use arrow_array::types::{Int32Type, Int64Type, UInt32Type, UInt64Type};
use arrow_array::{Array, RecordBatch};
use arrow_schema::DataType;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::{ParquetRecordBatchReader, ParquetRecordBatchReaderBuilder};
use std::fs::File;
use std::path::{Path, PathBuf};

/// Rows decoded at a time.
const READ_BATCH: usize = 4096;

fn builder(path: &Path) -> Result<ParquetRecordBatchReaderBuilder<File>, Error> {
    let f = File::open(path).map_err(Error::io("open", path))?;
    ParquetRecordBatchReaderBuilder::try_new(f).map_err(Error::parquet(path))
}

/// A Parquet file of texts: a string column to embed and, optionally, an id column (strings or integers).
pub struct TextFile {
    path: PathBuf,
    text_index: usize,
    id_index: Option<usize>,
    id_type: Option<IdType>,
    rows: u64,
}

impl TextFile {
    /// Opens `path` and checks that `text_field` is a string column and `id_field`, if given, a string or
    /// integer column.
    pub fn open(path: &Path, text_field: &str, id_field: Option<&str>) -> Result<TextFile, Error> {
        let b = builder(path)?;
        let schema = b.schema().clone();
        let names = || {
            schema
                .fields()
                .iter()
                .map(|f| f.name().as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        let find = |name: &str, what: &str| {
            schema.index_of(name).map_err(|_| {
                Error::invalid(
                    path,
                    format!("no column '{name}' for the {what} (columns: {})", names()),
                )
            })
        };
        let text_index = find(text_field, "text")?;
        if !matches!(
            schema.field(text_index).data_type(),
            DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View
        ) {
            return Err(Error::invalid(
                path,
                format!(
                    "column '{text_field}' is {}, expected strings",
                    schema.field(text_index).data_type()
                ),
            ));
        }
        let (id_index, id_type) = match id_field {
            None => (None, None),
            Some(name) => {
                let i = find(name, "ids")?;
                let t = match schema.field(i).data_type() {
                    DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => IdType::Utf8,
                    DataType::Int32 | DataType::Int64 | DataType::UInt32 | DataType::UInt64 => {
                        IdType::Int64
                    }
                    other => {
                        return Err(Error::invalid(
                            path,
                            format!("id column '{name}' is {other}, expected strings or integers"),
                        ));
                    }
                };
                (Some(i), Some(t))
            }
        };
        let rows = b.metadata().file_metadata().num_rows().max(0) as u64;
        Ok(TextFile {
            path: path.to_path_buf(),
            text_index,
            id_index,
            id_type,
            rows,
        })
    }

    /// Rows in the file (from its footer; nothing is decoded).
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// The type of the id column, when one was asked for.
    pub fn id_type(&self) -> Option<IdType> {
        self.id_type
    }

    /// Streams rows `start..end` to `each` in batches of at most `batch` rows: texts, and ids when an id
    /// column was given (`None` otherwise). Only the row groups that hold the range are decoded.
    pub fn read_range<E: From<Error>>(
        &self,
        start: u64,
        end: u64,
        batch: usize,
        mut each: impl FnMut(Option<Ids>, Vec<String>) -> Result<(), E>,
    ) -> Result<(), E> {
        if start >= end {
            return Ok(());
        }
        let b = builder(&self.path)?;
        let mut groups = Vec::new();
        let mut first_row = 0u64;
        let mut skip = None;
        for (i, rg) in b.metadata().row_groups().iter().enumerate() {
            let n = rg.num_rows().max(0) as u64;
            if first_row + n > start && first_row < end {
                skip.get_or_insert(start - first_row);
                groups.push(i);
            }
            first_row += n;
        }
        let mut cols = vec![self.text_index];
        cols.extend(self.id_index);
        let mask = ProjectionMask::roots(b.parquet_schema(), cols);
        let reader = b
            .with_projection(mask)
            .with_row_groups(groups)
            .with_offset(skip.unwrap_or(0) as usize)
            .with_limit((end - start) as usize)
            .with_batch_size(batch.clamp(1, READ_BATCH))
            .build()
            .map_err(Error::parquet(&self.path))?;
        let mut row = start;
        let path = &self.path;
        for rb in reader {
            let rb = rb.map_err(Error::parquet(path))?;
            // The projection keeps file order: the text and id columns in their schema order.
            let (ti, ii) = match self.id_index {
                Some(i) if i < self.text_index => (1, Some(0)),
                Some(_) => (0, Some(1)),
                None => (0, None),
            };
            let texts = strings(rb.column(ti).as_ref(), path, row, "text")?;
            let ids = match ii {
                None => None,
                Some(c) => Some(self.ids(rb.column(c).as_ref(), row)?),
            };
            row += rb.num_rows() as u64;
            each(ids, texts)?;
        }
        Ok(())
    }

    fn ids(&self, col: &dyn Array, first: u64) -> Result<Ids, Error> {
        let null = |i: usize| {
            Error::invalid(
                &self.path,
                format!("row {}: the id is null", first + i as u64),
            )
        };
        let ints = |v: Vec<Option<i64>>| -> Result<Ids, Error> {
            v.into_iter()
                .enumerate()
                .map(|(i, x)| x.ok_or_else(|| null(i)))
                .collect::<Result<Vec<_>, _>>()
                .map(Ids::Int)
        };
        let too_big = |i: usize| {
            Error::invalid(
                &self.path,
                format!("row {}: the id does not fit in int64", first + i as u64),
            )
        };
        match col.data_type() {
            DataType::Int32 => ints(
                col.as_primitive::<Int32Type>()
                    .iter()
                    .map(|x| x.map(i64::from))
                    .collect(),
            ),
            DataType::Int64 => ints(col.as_primitive::<Int64Type>().iter().collect()),
            DataType::UInt32 => ints(
                col.as_primitive::<UInt32Type>()
                    .iter()
                    .map(|x| x.map(i64::from))
                    .collect(),
            ),
            DataType::UInt64 => {
                let mut out = Vec::with_capacity(col.len());
                for (i, x) in col.as_primitive::<UInt64Type>().iter().enumerate() {
                    let x = x.ok_or_else(|| null(i))?;
                    out.push(i64::try_from(x).map_err(|_| too_big(i))?);
                }
                Ok(Ids::Int(out))
            }
            _ => strings(col, &self.path, first, "id").map(Ids::Text),
        }
    }
}

/// The values of a string column; a null names its row.
fn strings(col: &dyn Array, path: &Path, first: u64, what: &str) -> Result<Vec<String>, Error> {
    let collect = |it: &mut dyn Iterator<Item = Option<&str>>| {
        it.enumerate()
            .map(|(i, s)| {
                s.map(str::to_string).ok_or_else(|| {
                    Error::invalid(
                        path,
                        format!("row {}: the {what} is null", first + i as u64),
                    )
                })
            })
            .collect::<Result<Vec<_>, _>>()
    };
    match col.data_type() {
        DataType::Utf8 => collect(&mut col.as_string::<i32>().iter()),
        DataType::LargeUtf8 => collect(&mut col.as_string::<i64>().iter()),
        DataType::Utf8View => collect(&mut col.as_string_view().iter()),
        other => Err(Error::invalid(
            path,
            format!("the {what} column is {other}, expected strings"),
        )),
    }
}

/// A vector file opened for reading: its metadata, columns and row count.
pub struct VectorFile {
    /// The file.
    pub path: PathBuf,
    /// The `embedkit.*` metadata.
    pub meta: FileMeta,
    /// The columns.
    pub layout: Layout,
    /// Rows (from the footer).
    pub rows: u64,
}

impl VectorFile {
    /// Reads the footer of `path`; an error if it is not a vector file (`id` and `embedding` columns).
    pub fn open(path: &Path) -> Result<VectorFile, Error> {
        let b = builder(path)?;
        let kv = b.metadata().file_metadata().key_value_metadata();
        let meta = FileMeta::from_pairs(
            kv.into_iter()
                .flatten()
                .filter_map(|p| p.value.as_deref().map(|v| (p.key.as_str(), v))),
        );
        let layout = layout_of(b.schema()).ok_or_else(|| {
            Error::invalid(
                path,
                "not a vector file: it needs an id and an embedding column",
            )
        })?;
        Ok(VectorFile {
            path: path.to_path_buf(),
            meta,
            layout,
            rows: b.metadata().file_metadata().num_rows().max(0) as u64,
        })
    }

    /// All rows in record batches, in file order.
    pub fn batches(&self) -> Result<impl Iterator<Item = Result<RecordBatch, Error>> + '_, Error> {
        let reader: ParquetRecordBatchReader = builder(&self.path)?
            .with_batch_size(READ_BATCH)
            .build()
            .map_err(Error::parquet(&self.path))?;
        Ok(reader.map(|b| b.map_err(Error::parquet(&self.path))))
    }
}

/// The ids of a vector file's batch.
pub fn batch_ids(batch: &RecordBatch, path: &Path) -> Result<Ids, Error> {
    let col = batch
        .column_by_name("id")
        .ok_or_else(|| Error::invalid(path, "no id column"))?;
    match col.data_type() {
        DataType::Int64 => Ok(Ids::Int(col.as_primitive::<Int64Type>().values().to_vec())),
        _ => strings(col.as_ref(), path, 0, "id").map(Ids::Text),
    }
}
