//! Format-independent reading: a CSV, parquet or JSONL file becomes a small table of typed cells,
//! holding only the columns a loader asked for, with typed accessors whose errors name file, row and
//! column.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{BufRead, BufReader, Read};
use std::path::{Path, PathBuf};

use arrow_array::cast::AsArray;
use arrow_array::types::{
    Float32Type, Float64Type, Int8Type, Int16Type, Int32Type, Int64Type, UInt8Type, UInt16Type,
    UInt32Type, UInt64Type,
};
use arrow_array::{Array, ArrayRef};
use arrow_schema::DataType;
use deepconf_core::{ChatMessage, Role};
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::Value;

use crate::error::Location;
use crate::{Error, FileFormat, Result};

/// One cell, as typed as the file format allows (CSV cells are all text).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Cell {
    Null,
    Text(String),
    Bool(bool),
    Int(i64),
    Float(f64),
    /// Nested JSON (arrays and objects from JSONL).
    Json(Value),
    /// A parquet column of a type the loaders never accept; holds the type's name.
    Unsupported(String),
}

impl Cell {
    fn type_name(&self) -> String {
        match self {
            Cell::Null => "null".to_owned(),
            Cell::Text(_) => "string".to_owned(),
            Cell::Bool(_) => "boolean".to_owned(),
            Cell::Int(_) => "integer".to_owned(),
            Cell::Float(_) => "float".to_owned(),
            Cell::Json(Value::Array(_)) => "JSON array".to_owned(),
            Cell::Json(_) => "JSON object".to_owned(),
            Cell::Unsupported(name) => format!("column of type {name}"),
        }
    }

    /// The cell as the text a label vocabulary is matched against.
    fn label_text(&self) -> Option<String> {
        match self {
            Cell::Text(text) => Some(text.trim().to_owned()),
            Cell::Bool(value) => Some(value.to_string()),
            Cell::Int(value) => Some(value.to_string()),
            Cell::Float(value) if value.fract() == 0.0 => Some(format!("{value:.0}")),
            Cell::Float(value) => Some(value.to_string()),
            _ => None,
        }
    }
}

/// An opened data file whose column names are known; rows are read on demand.
pub(crate) struct DataFile {
    path: PathBuf,
    columns: Vec<String>,
    body: Body,
}

enum Body {
    Csv(csv::Reader<File>),
    Parquet(ParquetRecordBatchReaderBuilder<File>),
    Jsonl(Vec<(u64, serde_json::Map<String, Value>)>),
}

impl DataFile {
    pub(crate) fn open(path: &Path, format: FileFormat) -> Result<Self> {
        let file = File::open(path).map_err(|source| match source.kind() {
            std::io::ErrorKind::NotFound => Error::FileNotFound {
                path: path.to_path_buf(),
                hint: String::new(),
            },
            _ => Error::Io {
                path: path.to_path_buf(),
                source,
            },
        })?;
        match format {
            FileFormat::Csv => open_csv(path, file),
            FileFormat::Parquet => open_parquet(path, file),
            FileFormat::Jsonl => open_jsonl(path, file),
        }
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn has_column(&self, name: &str) -> bool {
        self.columns.iter().any(|column| column == name)
    }

    /// Reads up to `limit` rows of the `required` columns (an error if absent) and of those
    /// `optional` columns the file has.
    pub(crate) fn read(
        self,
        required: &[&str],
        optional: &[&str],
        limit: Option<usize>,
    ) -> Result<Table> {
        for name in required {
            if !self.has_column(name) {
                return Err(Error::MissingColumn {
                    at: Box::new(Location::file(&self.path).with_column(*name)),
                    present: self.columns.join(", "),
                });
            }
        }
        let wanted: Vec<String> = required
            .iter()
            .chain(optional)
            .filter(|name| self.has_column(name))
            .map(|name| (*name).to_owned())
            .collect();
        let limit = limit.unwrap_or(usize::MAX);
        let (rows, lines) = match self.body {
            Body::Csv(reader) => read_csv(&self.path, reader, &wanted, limit)?,
            Body::Parquet(builder) => (
                read_parquet(&self.path, builder, &wanted, limit)?,
                Vec::new(),
            ),
            Body::Jsonl(objects) => read_jsonl(objects, &wanted, limit),
        };
        let index = wanted
            .iter()
            .enumerate()
            .map(|(i, name)| (name.clone(), i))
            .collect();
        Ok(Table {
            path: self.path,
            columns: wanted,
            index,
            rows,
            lines,
        })
    }
}

fn open_csv(path: &Path, file: File) -> Result<DataFile> {
    let mut reader = csv::ReaderBuilder::new()
        .has_headers(true)
        .from_reader(file);
    let columns = reader
        .headers()
        .map_err(|source| Error::Csv {
            at: Box::new(Location {
                line: Some(1),
                ..Location::file(path)
            }),
            source,
        })?
        .iter()
        .map(|name| name.trim().to_owned())
        .collect();
    Ok(DataFile {
        path: path.to_path_buf(),
        columns,
        body: Body::Csv(reader),
    })
}

fn read_csv(
    path: &Path,
    mut reader: csv::Reader<File>,
    wanted: &[String],
    limit: usize,
) -> Result<(Vec<Vec<Cell>>, Vec<u64>)> {
    let headers = reader.headers().cloned().unwrap_or_default();
    let positions: Vec<usize> = wanted
        .iter()
        .map(|name| {
            headers
                .iter()
                .position(|header| header.trim() == name)
                .unwrap_or(usize::MAX)
        })
        .collect();
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    let mut record = csv::StringRecord::new();
    while rows.len() < limit {
        let more = reader.read_record(&mut record).map_err(|source| {
            let line = source.position().map(|position| position.line());
            Error::Csv {
                at: Box::new(Location {
                    row: Some(rows.len() + 1),
                    line,
                    ..Location::file(path)
                }),
                source,
            }
        })?;
        if !more {
            break;
        }
        lines.push(record.position().map_or(0, |position| position.line()));
        rows.push(
            positions
                .iter()
                .map(|&position| match record.get(position) {
                    None | Some("") => Cell::Null,
                    Some(text) => Cell::Text(text.to_owned()),
                })
                .collect(),
        );
    }
    Ok((rows, lines))
}

fn open_parquet(path: &Path, file: File) -> Result<DataFile> {
    let builder =
        ParquetRecordBatchReaderBuilder::try_new(file).map_err(|error| Error::Parquet {
            path: path.to_path_buf(),
            reason: error.to_string(),
        })?;
    let columns = builder
        .schema()
        .fields()
        .iter()
        .map(|field| field.name().clone())
        .collect();
    Ok(DataFile {
        path: path.to_path_buf(),
        columns,
        body: Body::Parquet(builder),
    })
}

fn read_parquet(
    path: &Path,
    builder: ParquetRecordBatchReaderBuilder<File>,
    wanted: &[String],
    limit: usize,
) -> Result<Vec<Vec<Cell>>> {
    let parquet_error = |error: &dyn std::fmt::Display| Error::Parquet {
        path: path.to_path_buf(),
        reason: error.to_string(),
    };
    let schema = builder.schema().clone();
    let roots: Vec<usize> = wanted
        .iter()
        .filter_map(|name| schema.index_of(name).ok())
        .collect();
    let mask = ProjectionMask::roots(builder.parquet_schema(), roots);
    let mut builder = builder.with_projection(mask).with_batch_size(8192);
    if limit != usize::MAX {
        builder = builder.with_limit(limit);
    }
    let reader = builder.build().map_err(|error| parquet_error(&error))?;
    let mut rows: Vec<Vec<Cell>> = Vec::new();
    for batch in reader {
        let batch = batch.map_err(|error| parquet_error(&error))?;
        let columns: Vec<Vec<Cell>> = wanted
            .iter()
            .map(|name| {
                batch
                    .column_by_name(name)
                    .map_or_else(|| vec![Cell::Null; batch.num_rows()], array_cells)
            })
            .collect();
        for row in 0..batch.num_rows() {
            rows.push(columns.iter().map(|column| column[row].clone()).collect());
        }
    }
    rows.truncate(limit);
    Ok(rows)
}

/// Converts one arrow column to cells; types no loader accepts become [`Cell::Unsupported`].
fn array_cells(array: &ArrayRef) -> Vec<Cell> {
    fn collect<T>(
        array: &dyn Array,
        value: impl Fn(usize) -> T,
        wrap: impl Fn(T) -> Cell,
    ) -> Vec<Cell> {
        (0..array.len())
            .map(|i| {
                if array.is_null(i) {
                    Cell::Null
                } else {
                    wrap(value(i))
                }
            })
            .collect()
    }
    macro_rules! ints {
        ($ty:ty) => {{
            let values = array.as_primitive::<$ty>();
            collect(array.as_ref(), |i| values.value(i) as i64, Cell::Int)
        }};
    }
    match array.data_type() {
        DataType::Null => vec![Cell::Null; array.len()],
        DataType::Utf8 => {
            let values = array.as_string::<i32>();
            collect(array.as_ref(), |i| values.value(i).to_owned(), Cell::Text)
        }
        DataType::LargeUtf8 => {
            let values = array.as_string::<i64>();
            collect(array.as_ref(), |i| values.value(i).to_owned(), Cell::Text)
        }
        DataType::Utf8View => {
            let values = array.as_string_view();
            collect(array.as_ref(), |i| values.value(i).to_owned(), Cell::Text)
        }
        DataType::Boolean => {
            let values = array.as_boolean();
            collect(array.as_ref(), |i| values.value(i), Cell::Bool)
        }
        DataType::Int8 => ints!(Int8Type),
        DataType::Int16 => ints!(Int16Type),
        DataType::Int32 => ints!(Int32Type),
        DataType::Int64 => ints!(Int64Type),
        DataType::UInt8 => ints!(UInt8Type),
        DataType::UInt16 => ints!(UInt16Type),
        DataType::UInt32 => ints!(UInt32Type),
        DataType::UInt64 => {
            let values = array.as_primitive::<UInt64Type>();
            collect(
                array.as_ref(),
                |i| values.value(i),
                |value| i64::try_from(value).map_or(Cell::Float(value as f64), Cell::Int),
            )
        }
        DataType::Float32 => {
            let values = array.as_primitive::<Float32Type>();
            collect(array.as_ref(), |i| f64::from(values.value(i)), Cell::Float)
        }
        DataType::Float64 => {
            let values = array.as_primitive::<Float64Type>();
            collect(array.as_ref(), |i| values.value(i), Cell::Float)
        }
        DataType::Dictionary(_, _) => {
            // pandas writes categoricals as dictionaries: decode the values once, then index them.
            let dictionary = array.as_any_dictionary();
            let values = array_cells(dictionary.values());
            let keys = dictionary.normalized_keys();
            (0..array.len())
                .map(|i| {
                    if array.is_null(i) {
                        Cell::Null
                    } else {
                        values.get(keys[i]).cloned().unwrap_or(Cell::Null)
                    }
                })
                .collect()
        }
        other => vec![Cell::Unsupported(other.to_string()); array.len()],
    }
}

fn open_jsonl(path: &Path, file: File) -> Result<DataFile> {
    let mut reader = BufReader::new(file);
    let starts_with_bracket = loop {
        let buffer = reader.fill_buf().map_err(|source| Error::Io {
            path: path.to_path_buf(),
            source,
        })?;
        match buffer.iter().position(|byte| !byte.is_ascii_whitespace()) {
            Some(at) => break buffer[at] == b'[',
            None if buffer.is_empty() => break false,
            None => {
                let skipped = buffer.len();
                reader.consume(skipped);
            }
        }
    };
    let objects = if starts_with_bracket {
        json_array_objects(path, reader)?
    } else {
        jsonl_objects(path, reader)?
    };
    let mut columns: Vec<String> = Vec::new();
    for (_, object) in &objects {
        for key in object.keys() {
            if !columns.contains(key) {
                columns.push(key.clone());
            }
        }
    }
    Ok(DataFile {
        path: path.to_path_buf(),
        columns,
        body: Body::Jsonl(objects),
    })
}

type JsonObjects = Vec<(u64, serde_json::Map<String, Value>)>;

fn not_an_object(found: Value) -> String {
    format!(
        "expected a JSON object, found {}",
        Cell::Json(found).type_name()
    )
}

/// One JSON object per non-blank line, each with its 1-based line number.
fn jsonl_objects(path: &Path, reader: impl BufRead) -> Result<JsonObjects> {
    let mut objects = Vec::new();
    for (index, line) in reader.lines().enumerate() {
        let line_number = index as u64 + 1;
        let at = || {
            Box::new(Location {
                line: Some(line_number),
                ..Location::file(path)
            })
        };
        let line = line.map_err(|error| Error::Json {
            at: at(),
            reason: error.to_string(),
        })?;
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str::<Value>(&line) {
            Ok(Value::Object(object)) => objects.push((line_number, object)),
            Ok(other) => {
                return Err(Error::Json {
                    at: at(),
                    reason: not_an_object(other),
                });
            }
            Err(error) => {
                return Err(Error::Json {
                    at: at(),
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(objects)
}

/// The elements of a file holding one JSON array of objects, each with the line it starts on, so
/// that a row's errors can point into the file as they do for JSONL.
fn json_array_objects(path: &Path, mut reader: impl Read) -> Result<JsonObjects> {
    let mut text = String::new();
    reader
        .read_to_string(&mut text)
        .map_err(|error| Error::Json {
            at: Box::new(Location::file(path)),
            reason: error.to_string(),
        })?;
    let elements: Vec<&serde_json::value::RawValue> =
        serde_json::from_str(&text).map_err(|error| Error::Json {
            at: Box::new(Location {
                line: Some(error.line() as u64),
                ..Location::file(path)
            }),
            reason: format!("not a JSON array of objects: {error}"),
        })?;
    let mut objects = Vec::with_capacity(elements.len());
    let mut line = 1u64;
    let mut counted_to = 0usize;
    for (index, element) in elements.into_iter().enumerate() {
        // The raw element borrows from `text`, so its offset there locates its line.
        let offset = element.get().as_ptr() as usize - text.as_ptr() as usize;
        line += text.as_bytes()[counted_to..offset]
            .iter()
            .filter(|&&byte| byte == b'\n')
            .count() as u64;
        counted_to = offset;
        let at = || {
            Box::new(Location {
                row: Some(index + 1),
                line: Some(line),
                ..Location::file(path)
            })
        };
        match serde_json::from_str::<Value>(element.get()) {
            Ok(Value::Object(object)) => objects.push((line, object)),
            Ok(other) => {
                return Err(Error::Json {
                    at: at(),
                    reason: not_an_object(other),
                });
            }
            Err(error) => {
                return Err(Error::Json {
                    at: at(),
                    reason: error.to_string(),
                });
            }
        }
    }
    Ok(objects)
}

fn read_jsonl(
    objects: Vec<(u64, serde_json::Map<String, Value>)>,
    wanted: &[String],
    limit: usize,
) -> (Vec<Vec<Cell>>, Vec<u64>) {
    let mut rows = Vec::new();
    let mut lines = Vec::new();
    for (line, mut object) in objects.into_iter().take(limit) {
        lines.push(line);
        rows.push(
            wanted
                .iter()
                .map(|name| match object.remove(name) {
                    None | Some(Value::Null) => Cell::Null,
                    Some(Value::String(text)) => Cell::Text(text),
                    Some(Value::Bool(value)) => Cell::Bool(value),
                    Some(Value::Number(number)) => number.as_i64().map_or_else(
                        || Cell::Float(number.as_f64().unwrap_or(f64::NAN)),
                        Cell::Int,
                    ),
                    Some(nested) => Cell::Json(nested),
                })
                .collect(),
        );
    }
    (rows, lines)
}

/// The rows read from a file, restricted to the columns a loader asked for.
pub(crate) struct Table {
    path: PathBuf,
    columns: Vec<String>,
    index: HashMap<String, usize>,
    rows: Vec<Vec<Cell>>,
    /// Line where each row starts (CSV, JSONL); empty for parquet.
    lines: Vec<u64>,
}

impl Table {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    pub(crate) fn path(&self) -> &Path {
        &self.path
    }

    pub(crate) fn has_column(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    /// Null (or, in CSV, empty) cells per column read.
    pub(crate) fn null_counts(&self) -> BTreeMap<String, usize> {
        self.columns
            .iter()
            .enumerate()
            .map(|(i, name)| {
                let nulls = self.rows.iter().filter(|row| row[i] == Cell::Null).count();
                (name.clone(), nulls)
            })
            .collect()
    }

    pub(crate) fn rows(&self) -> impl Iterator<Item = RowView<'_>> {
        (0..self.rows.len()).map(move |row| RowView { table: self, row })
    }
}

/// One row of a [`Table`], with typed accessors.
#[derive(Clone, Copy)]
pub(crate) struct RowView<'a> {
    table: &'a Table,
    row: usize,
}

impl<'a> RowView<'a> {
    /// 1-based data row.
    pub(crate) fn row_number(&self) -> usize {
        self.row + 1
    }

    pub(crate) fn at(&self, column: &str) -> Box<Location> {
        Box::new(Location {
            file: self.table.path.clone(),
            row: Some(self.row_number()),
            line: self.table.lines.get(self.row).copied(),
            column: Some(column.to_owned()),
        })
    }

    /// The cell, or `Null` when the column is absent (only optional columns may be absent).
    fn cell(&self, column: &str) -> &'a Cell {
        const NULL: &Cell = &Cell::Null;
        self.table
            .index
            .get(column)
            .map_or(NULL, |&i| &self.table.rows[self.row][i])
    }

    fn wrong_type(&self, column: &str, expected: &str) -> Error {
        Error::WrongType {
            at: self.at(column),
            expected: expected.to_owned(),
            found: self.cell(column).type_name(),
        }
    }

    /// A text cell; `None` when null.
    pub(crate) fn text(&self, column: &str) -> Result<Option<&'a str>> {
        match self.cell(column) {
            Cell::Null => Ok(None),
            Cell::Text(text) => Ok(Some(text)),
            _ => Err(self.wrong_type(column, "string")),
        }
    }

    /// A text cell without surrounding whitespace, `None` when null or blank.
    pub(crate) fn trimmed_text(&self, column: &str) -> Result<Option<String>> {
        Ok(self
            .text(column)?
            .map(str::trim)
            .filter(|text| !text.is_empty())
            .map(str::to_owned))
    }

    /// An identifier: text or integer.
    pub(crate) fn identifier(&self, column: &str) -> Result<Option<String>> {
        match self.cell(column) {
            Cell::Int(value) => Ok(Some(value.to_string())),
            _ => self
                .trimmed_text(column)
                .map_err(|_| self.wrong_type(column, "string or integer")),
        }
    }

    /// A prompt: non-blank text, kept verbatim.
    pub(crate) fn prompt(&self, column: &str) -> Result<String> {
        match self.text(column)? {
            Some(text) if !text.trim().is_empty() => Ok(text.to_owned()),
            _ => Err(Error::EmptyPrompt {
                at: self.at(column),
            }),
        }
    }

    /// A prompt given either as text or (JSONL) as an array of `{role, content}` messages.
    pub(crate) fn prompt_messages(&self, column: &str) -> Result<Vec<ChatMessage>> {
        let Cell::Json(Value::Array(items)) = self.cell(column) else {
            return Ok(vec![ChatMessage::user(self.prompt(column)?)]);
        };
        let expected = "a string or an array of {\"role\", \"content\"} messages";
        let messages = items
            .iter()
            .map(|item| {
                serde_json::from_value::<ChatMessage>(item.clone()).map_err(|error| {
                    Error::WrongType {
                        at: self.at(column),
                        expected: expected.to_owned(),
                        found: format!("an array with an invalid message ({error})"),
                    }
                })
            })
            .collect::<Result<Vec<_>>>()?;
        let has_user_text = messages
            .iter()
            .any(|message| message.role == Role::User && !message.content.trim().is_empty());
        if has_user_text {
            Ok(messages)
        } else {
            Err(Error::EmptyPrompt {
                at: self.at(column),
            })
        }
    }

    /// A 0/1 or boolean flag (`toxicity`, `jailbreaking`, `adversarial`); `None` when null.
    pub(crate) fn flag(&self, column: &str) -> Result<Option<bool>> {
        self.vocabulary(
            column,
            &[
                ("1", true),
                ("true", true),
                ("1.0", true),
                ("0", false),
                ("false", false),
                ("0.0", false),
            ],
        )
    }

    /// A label from a fixed vocabulary, matched case-insensitively; `None` when null or blank.
    pub(crate) fn vocabulary<T: Copy>(
        &self,
        column: &str,
        vocabulary: &[(&str, T)],
    ) -> Result<Option<T>> {
        let cell = self.cell(column);
        if *cell == Cell::Null {
            return Ok(None);
        }
        let Some(text) = cell.label_text() else {
            return Err(self.wrong_type(column, "a label (string, boolean or integer)"));
        };
        if text.is_empty() {
            return Ok(None);
        }
        vocabulary
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(&text))
            .map(|&(_, value)| Some(value))
            .ok_or_else(|| Error::UnknownLabel {
                at: self.at(column),
                value: text,
                expected: vocabulary
                    .iter()
                    .map(|(name, _)| *name)
                    .collect::<Vec<_>>()
                    .join(", "),
            })
    }

    /// A number given as float, integer or numeric text (`"3.0"`); `None` when null or blank.
    pub(crate) fn number(&self, column: &str) -> Result<Option<f64>> {
        match self.cell(column) {
            Cell::Null => Ok(None),
            Cell::Int(value) => Ok(Some(*value as f64)),
            Cell::Float(value) if value.is_nan() => Ok(None),
            Cell::Float(value) => Ok(Some(*value)),
            Cell::Text(text) if text.trim().is_empty() => Ok(None),
            Cell::Text(text) => {
                text.trim()
                    .parse::<f64>()
                    .map(Some)
                    .map_err(|_| Error::WrongType {
                        at: self.at(column),
                        expected: "a number".to_owned(),
                        found: format!("{text:?}"),
                    })
            }
            _ => Err(self.wrong_type(column, "a number")),
        }
    }
}
