//! The streaming vector writer: `id`, `embedding` (a fixed-size list per row) and optionally `text`, in row
//! groups of a bounded number of rows, with the settings in the file metadata.

use crate::{Error, FileMeta};
use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Int64Array, RecordBatch, StringArray, make_array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::metadata::KeyValue;
use parquet::file::properties::WriterProperties;
use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;

/// Rows per row group unless the caller says otherwise: about 15 MB of 384-dim float32 vectors, so memory
/// stays flat in the corpus size and readers can skip to any part of a large file.
pub const DEFAULT_ROW_GROUP_ROWS: usize = 10_000;

/// The type of one value of the `embedding` list.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Element {
    /// float32.
    Float32,
    /// IEEE half precision.
    Float16,
    /// bfloat16, stored as its 16 raw bits (Arrow has no bfloat16 type; the `precision` setting says so).
    BFloat16Bits,
    /// int8 (the `int8` and packed `binary` precisions).
    Int8,
    /// uint8 (the `uint8` and packed `ubinary` precisions).
    UInt8,
}

impl Element {
    /// The element for a precision name as embedkit spells it (`float32`, `float16`, `bfloat16`, `int8`,
    /// `uint8`, `binary`, `ubinary`); `None` for anything else.
    pub fn for_precision(name: &str) -> Option<Element> {
        Some(match name {
            "float32" => Element::Float32,
            "float16" => Element::Float16,
            "bfloat16" => Element::BFloat16Bits,
            "int8" | "binary" => Element::Int8,
            "uint8" | "ubinary" => Element::UInt8,
            _ => return None,
        })
    }

    /// The Arrow type of one value.
    pub fn data_type(self) -> DataType {
        match self {
            Element::Float32 => DataType::Float32,
            Element::Float16 => DataType::Float16,
            Element::BFloat16Bits => DataType::UInt16,
            Element::Int8 => DataType::Int8,
            Element::UInt8 => DataType::UInt8,
        }
    }

    /// Bytes of one value.
    pub fn bytes(self) -> usize {
        match self {
            Element::Float32 => 4,
            Element::Float16 | Element::BFloat16Bits => 2,
            Element::Int8 | Element::UInt8 => 1,
        }
    }
}

/// How ids are typed: record positions are integers, ids taken from the input are text (or integers when
/// the input column is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdType {
    /// `int64`.
    Int64,
    /// `string`.
    Utf8,
}

/// The ids of a batch of rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ids {
    /// Integer ids.
    Int(Vec<i64>),
    /// Text ids.
    Text(Vec<String>),
}

impl Ids {
    /// Rows.
    pub fn len(&self) -> usize {
        match self {
            Ids::Int(v) => v.len(),
            Ids::Text(v) => v.len(),
        }
    }

    /// No rows.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// The columns of a vector file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Layout {
    /// Type of the `id` column.
    pub ids: IdType,
    /// Type of the embedding's values.
    pub element: Element,
    /// Values per row (dims; dims / 8 rounded up for packed binary).
    pub width: usize,
    /// Whether a `text` column follows.
    pub text: bool,
}

impl Layout {
    /// The Arrow schema: `id` (not null), `embedding` (fixed_size_list<item: T>[width], not null), `text`.
    pub fn schema(&self) -> SchemaRef {
        let id = match self.ids {
            IdType::Int64 => DataType::Int64,
            IdType::Utf8 => DataType::Utf8,
        };
        let mut fields = vec![
            Field::new("id", id, false),
            Field::new(
                "embedding",
                DataType::FixedSizeList(self.item_field(), self.width as i32),
                false,
            ),
        ];
        if self.text {
            fields.push(Field::new("text", DataType::Utf8, false));
        }
        Arc::new(Schema::new(fields))
    }

    fn item_field(&self) -> Arc<Field> {
        Arc::new(Field::new("item", self.element.data_type(), false))
    }

    /// Bytes of one row's vector.
    pub fn row_bytes(&self) -> usize {
        self.width * self.element.bytes()
    }
}

/// Writes vectors to any `Write` as one Parquet file (snappy, no dictionaries: ids and vectors do not
/// repeat). Rows are encoded as they come and flushed every `row_group_rows`, so memory is bounded by one
/// row group whatever the number of rows.
pub struct ParquetVectorWriter<W: Write + Send> {
    inner: ArrowWriter<W>,
    layout: Layout,
    schema: SchemaRef,
    rows: u64,
    path: PathBuf,
}

impl<W: Write + Send> ParquetVectorWriter<W> {
    /// Starts a file in `out` (`path` only names it in errors) with `meta` in its key-value metadata.
    pub fn new(
        out: W,
        path: impl Into<PathBuf>,
        layout: Layout,
        meta: &FileMeta,
        row_group_rows: usize,
    ) -> Result<Self, Error> {
        // The settings go into the file's key-value metadata (DuckDB's `parquet_kv_metadata`, any Parquet
        // reader) and into the Arrow schema stored beside it (pyarrow's `Table.schema.metadata`).
        let fields = layout.schema().fields().clone();
        let schema = Arc::new(Schema::new_with_metadata(
            fields,
            meta.to_pairs()
                .into_iter()
                .collect::<std::collections::HashMap<_, _>>(),
        ));
        Self::with_schema(out, path, schema, layout, row_group_rows)
    }

    fn with_schema(
        out: W,
        path: impl Into<PathBuf>,
        schema: SchemaRef,
        layout: Layout,
        row_group_rows: usize,
    ) -> Result<Self, Error> {
        let path = path.into();
        let kv = schema
            .metadata()
            .iter()
            .map(|(k, v)| KeyValue::new(k.clone(), v.clone()))
            .collect();
        let props = WriterProperties::builder()
            .set_compression(Compression::SNAPPY)
            .set_dictionary_enabled(false)
            .set_max_row_group_row_count(Some(row_group_rows.max(1)))
            .set_key_value_metadata(Some(kv))
            .build();
        let inner = ArrowWriter::try_new(out, schema.clone(), Some(props))
            .map_err(Error::parquet(&path))?;
        Ok(Self {
            inner,
            layout,
            schema,
            rows: 0,
            path,
        })
    }

    /// Appends rows: `ids`, their vectors as `values` (row-major, little-endian, `layout.row_bytes()` each —
    /// what `embedkit_vectors::Quantizer` produces), and their texts when the layout keeps text.
    pub fn write(&mut self, ids: &Ids, values: &[u8], texts: Option<&[&str]>) -> Result<(), Error> {
        let n = ids.len();
        let bad = |m: String| Error::invalid(&self.path, m);
        if values.len() != n * self.layout.row_bytes() {
            return Err(bad(format!(
                "{} bytes of vectors for {n} rows of {} bytes",
                values.len(),
                self.layout.row_bytes()
            )));
        }
        let id_col: ArrayRef = match (ids, self.layout.ids) {
            (Ids::Int(v), IdType::Int64) => Arc::new(Int64Array::from(v.clone())),
            (Ids::Text(v), IdType::Utf8) => Arc::new(StringArray::from_iter_values(v)),
            _ => return Err(bad("id type differs from the file's".into())),
        };
        let data = arrow_data::ArrayDataBuilder::new(self.layout.element.data_type())
            .len(n * self.layout.width)
            .add_buffer(arrow_buffer::Buffer::from(values.to_vec()))
            .align_buffers(true)
            .build()
            .map_err(Error::parquet(&self.path))?;
        let list = FixedSizeListArray::try_new(
            self.layout.item_field(),
            self.layout.width as i32,
            make_array(data),
            None,
        )
        .map_err(Error::parquet(&self.path))?;
        let mut columns = vec![id_col, Arc::new(list) as ArrayRef];
        match (texts, self.layout.text) {
            (Some(t), true) if t.len() == n => {
                columns.push(Arc::new(StringArray::from_iter_values(t)))
            }
            (_, false) => {}
            _ => return Err(bad(format!("the file keeps text: {n} texts needed"))),
        }
        let batch = RecordBatch::try_new(self.schema.clone(), columns)
            .map_err(Error::parquet(&self.path))?;
        self.write_batch(&batch)
    }

    /// Appends a record batch that has this file's schema (copying rows from another vector file).
    pub fn write_batch(&mut self, batch: &RecordBatch) -> Result<(), Error> {
        if batch.schema().fields() != self.schema.fields() {
            return Err(Error::invalid(
                &self.path,
                format!(
                    "columns {:?} differ from the file's {:?}",
                    batch.schema().fields(),
                    self.schema.fields()
                ),
            ));
        }
        // Under this file's schema (and so its metadata), whatever file the batch was read from.
        let batch = RecordBatch::try_new(self.schema.clone(), batch.columns().to_vec())
            .map_err(Error::parquet(&self.path))?;
        self.inner
            .write(&batch)
            .map_err(Error::parquet(&self.path))?;
        self.rows += batch.num_rows() as u64;
        Ok(())
    }

    /// Rows written so far.
    pub fn rows(&self) -> u64 {
        self.rows
    }

    /// Writes the footer and returns the output (to be committed, for an `AtomicFile`).
    pub fn finish(self) -> Result<W, Error> {
        self.inner.into_inner().map_err(Error::parquet(&self.path))
    }
}

/// The layout a file's Arrow schema describes, if it is a vector file embedkit can read.
pub fn layout_of(schema: &Schema) -> Option<Layout> {
    let ids = match schema.field_with_name("id").ok()?.data_type() {
        DataType::Int64 => IdType::Int64,
        DataType::Utf8 => IdType::Utf8,
        _ => return None,
    };
    let (item, width) = match schema.field_with_name("embedding").ok()?.data_type() {
        DataType::FixedSizeList(item, w) => (item.data_type().clone(), *w as usize),
        _ => return None,
    };
    let element = [
        Element::Float32,
        Element::Float16,
        Element::BFloat16Bits,
        Element::Int8,
        Element::UInt8,
    ]
    .into_iter()
    .find(|e| e.data_type() == item)?;
    Some(Layout {
        ids,
        element,
        width,
        text: schema.field_with_name("text").is_ok(),
    })
}

/// The vector bytes of a batch's `embedding` column (row-major, little-endian), for comparisons and copies.
pub fn embedding_bytes(batch: &RecordBatch) -> Option<Vec<u8>> {
    let col = batch.column_by_name("embedding")?;
    let list = col.as_any().downcast_ref::<FixedSizeListArray>()?;
    let values = list.values().to_data();
    let width = list.value_length() as usize;
    let elem = values.data_type().primitive_width()?;
    let start = (values.offset() + list.offset() * width) * elem;
    let len = list.len() * width * elem;
    Some(values.buffers().first()?.as_slice()[start..start + len].to_vec())
}
