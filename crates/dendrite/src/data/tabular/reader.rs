//! Reading a CSV file into a table of text cells.
//!
//! The reader accepts what spreadsheets and other tools commonly write: a UTF-8 byte-order
//! mark, a comma, semicolon or tab delimiter, quoted fields (which may contain the delimiter,
//! quotes written twice and line breaks), and blank lines. Files that start with the gzip
//! magic bytes (`1F 8B`) are decompressed first, whatever their name.

use std::io::Read;
use std::path::{Path, PathBuf};

use csv::{ByteRecord, ReaderBuilder, StringRecord, Trim};
use flate2::read::MultiGzDecoder;

use crate::error::{Error, Result};

/// The delimiters that detection tries, in order of preference when two fit equally well.
pub const DELIMITER_CANDIDATES: [u8; 3] = [b',', b';', b'\t'];

/// The number of records that delimiter detection parses from the start of a file.
const DETECTION_RECORDS: usize = 50;

const GZIP_MAGIC: [u8; 2] = [0x1F, 0x8B];

/// A CSV file read into memory: the header and the text of every cell, trimmed of
/// surrounding whitespace.
///
/// Rows that are empty or contain only delimiters and whitespace are skipped, so every row
/// has at least one non-empty cell. Every row has exactly as many cells as the header.
#[derive(Debug, Clone)]
pub struct Table {
    path: PathBuf,
    delimiter: u8,
    header: Vec<String>,
    rows: Vec<StringRecord>,
    lines: Vec<u64>,
}

impl Table {
    /// Reads the CSV file at `path`. With `delimiter` `None`, the delimiter is detected
    /// among comma, semicolon and tab (see [`detect_delimiter`]).
    ///
    /// # Errors
    ///
    /// Returns [`Error::Io`] if the file cannot be read, and [`Error::InvalidData`] as
    /// [`Table::parse`] does or if a gzip stream is corrupt.
    pub fn read(path: impl AsRef<Path>, delimiter: Option<u8>) -> Result<Table> {
        let path = path.as_ref();
        let mut bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;

        if bytes.starts_with(&GZIP_MAGIC) {
            let mut text = Vec::new();
            MultiGzDecoder::new(bytes.as_slice())
                .read_to_end(&mut text)
                .map_err(|e| {
                    Error::invalid_data(path, format!("the gzip data is corrupt or truncated: {e}"))
                })?;
            bytes = text;
        }

        Table::parse(path, &bytes, delimiter)
    }

    /// Parses CSV text held in memory. `path` only names the source in error messages.
    ///
    /// # Errors
    ///
    /// Returns [`Error::InvalidData`] naming `path` and the line if
    ///
    /// - the text is empty or has no data row after the header,
    /// - a header name is empty or appears twice,
    /// - a row has more or fewer cells than the header,
    /// - a cell is not valid UTF-8, or a quoted field is malformed.
    pub fn parse(path: impl AsRef<Path>, bytes: &[u8], delimiter: Option<u8>) -> Result<Table> {
        let path = path.as_ref();
        let delimiter = delimiter.unwrap_or_else(|| detect_delimiter(bytes));

        let mut reader = ReaderBuilder::new()
            .delimiter(delimiter)
            .has_headers(false)
            .flexible(true)
            .trim(Trim::All)
            .from_reader(bytes);
        let lines = LineIndex::new(bytes);
        let mut records = reader.byte_records();

        // The first record that is not blank is the header.
        let header = loop {
            match records.next() {
                None => {
                    return Err(Error::invalid_data(
                        path,
                        "the file is empty; expected a header row that names the columns",
                    ));
                }
                Some(record) => {
                    let record = record.map_err(|e| csv_error(path, e))?;
                    if !is_blank(&record) {
                        break header_names(path, &record, lines.line_of(&record))?;
                    }
                }
            }
        };

        let mut rows = Vec::new();
        let mut row_lines = Vec::new();
        for record in records {
            let record = record.map_err(|e| csv_error(path, e))?;
            if is_blank(&record) {
                continue;
            }

            let line = lines.line_of(&record);
            if record.len() != header.len() {
                return Err(Error::invalid_data(
                    path,
                    format!(
                        "line {line} has {} cells but the header has {} columns; check the \
                         delimiter ({}) and the quoting on that line",
                        record.len(),
                        header.len(),
                        delimiter_name(delimiter)
                    ),
                ));
            }

            let text = StringRecord::from_byte_record(record).map_err(|e| {
                let column = e.utf8_error().field();
                Error::invalid_data(
                    path,
                    format!(
                        "line {line}, column \"{}\": the text is not valid UTF-8; save the file \
                         as UTF-8",
                        header[column]
                    ),
                )
            })?;
            rows.push(text);
            row_lines.push(line);
        }

        if rows.is_empty() {
            return Err(Error::invalid_data(
                path,
                "the file has no data rows after the header",
            ));
        }

        Ok(Table {
            path: path.to_path_buf(),
            delimiter,
            header,
            rows,
            lines: row_lines,
        })
    }

    /// Returns the path the table was read from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Returns the delimiter, as configured or detected.
    pub fn delimiter(&self) -> u8 {
        self.delimiter
    }

    /// Returns the column names, in file order.
    pub fn header(&self) -> &[String] {
        &self.header
    }

    /// Returns the position of the column named `name`, if there is one.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.header.iter().position(|column| column == name)
    }

    /// Returns the number of data rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// Returns true if the table has no data rows. [`Table::read`] never returns such a
    /// table.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Returns the trimmed text of the cell in `row` and `column`.
    ///
    /// # Panics
    ///
    /// Panics if `row` or `column` is out of range.
    pub fn cell(&self, row: usize, column: usize) -> &str {
        &self.rows[row][column]
    }

    /// Returns the line of the file on which `row` starts, counting from 1, for messages.
    ///
    /// # Panics
    ///
    /// Panics if `row` is out of range.
    pub fn line(&self, row: usize) -> u64 {
        self.lines[row]
    }
}

/// Detects the delimiter of CSV text among comma, semicolon and tab.
///
/// Each candidate parses the first 50 records that are not blank, with quoting. A candidate
/// fits when every record then has the same number of cells, at least 2. The fitting
/// candidate with the most cells wins, and on a tie the earlier one in
/// [`DELIMITER_CANDIDATES`]. If none fits, the candidate that splits the first record into
/// the most cells wins. A file with a single column gets a comma.
pub fn detect_delimiter(bytes: &[u8]) -> u8 {
    let mut best_fitting: Option<(u8, usize)> = None;
    let mut best_first: Option<(u8, usize)> = None;

    for candidate in DELIMITER_CANDIDATES {
        let mut reader = ReaderBuilder::new()
            .delimiter(candidate)
            .has_headers(false)
            .flexible(true)
            .from_reader(bytes);
        let counts: Vec<usize> = reader
            .byte_records()
            .map_while(std::result::Result::ok)
            .filter(|record| !is_blank(record))
            .take(DETECTION_RECORDS)
            .map(|record| record.len())
            .collect();
        let Some(&first) = counts.first() else {
            continue;
        };
        if first < 2 {
            continue;
        }

        if counts.iter().all(|&count| count == first)
            && best_fitting.is_none_or(|(_, cells)| first > cells)
        {
            best_fitting = Some((candidate, first));
        }
        if best_first.is_none_or(|(_, cells)| first > cells) {
            best_first = Some((candidate, first));
        }
    }

    best_fitting
        .or(best_first)
        .map_or(b',', |(delimiter, _)| delimiter)
}

/// Returns a delimiter as it reads in messages: `','`, `';'` or `tab`.
pub fn delimiter_name(delimiter: u8) -> String {
    match delimiter {
        b'\t' => "tab".to_string(),
        other => format!("'{}'", char::from(other)),
    }
}

/// Returns true if every cell of `record` is empty after trimming, as on a blank line or a
/// line of only delimiters.
fn is_blank(record: &ByteRecord) -> bool {
    record.iter().all(|cell| cell.trim_ascii().is_empty())
}

/// The byte offset at which each line of a text starts, to find the line of a record.
///
/// The csv crate's own line count (csv 1.4) misses blank lines and CRLF line ends, so the
/// line is computed from the record's byte offset instead.
struct LineIndex<'b> {
    bytes: &'b [u8],
    starts: Vec<usize>,
}

impl<'b> LineIndex<'b> {
    /// Indexes the lines of `bytes`; a line ends with `\n`, `\r\n` or a lone `\r`.
    fn new(bytes: &'b [u8]) -> LineIndex<'b> {
        let mut starts = vec![0];
        for (i, &byte) in bytes.iter().enumerate() {
            let ends_line = byte == b'\n' || (byte == b'\r' && bytes.get(i + 1) != Some(&b'\n'));
            if ends_line {
                starts.push(i + 1);
            }
        }
        LineIndex { bytes, starts }
    }

    /// Returns the line, from 1, on which `record` starts. The csv crate reports the offset
    /// where its search for the record began, which can be before blank lines or inside a
    /// CRLF line end, so leading line-end bytes are skipped first. A record cannot start
    /// with one, because blank lines produce no record.
    fn line_of(&self, record: &ByteRecord) -> u64 {
        let Some(position) = record.position() else {
            return 0;
        };
        let mut start = position.byte() as usize;
        while matches!(self.bytes.get(start), Some(b'\r' | b'\n')) {
            start += 1;
        }
        self.starts
            .partition_point(|&line_start| line_start <= start) as u64
    }
}

/// Checks the header record and returns its names.
fn header_names(path: &Path, record: &ByteRecord, line: u64) -> Result<Vec<String>> {
    let header = StringRecord::from_byte_record(record.clone()).map_err(|_| {
        Error::invalid_data(
            path,
            format!("line {line}: the header is not valid UTF-8; save the file as UTF-8"),
        )
    })?;

    let names: Vec<String> = header.iter().map(str::to_string).collect();
    for (i, name) in names.iter().enumerate() {
        if name.is_empty() {
            return Err(Error::invalid_data(
                path,
                format!(
                    "line {line}: column {} of the header has no name; every column needs a \
                     name",
                    i + 1
                ),
            ));
        }
        if names[..i].contains(name) {
            return Err(Error::invalid_data(
                path,
                format!("line {line}: the header names the column \"{name}\" twice"),
            ));
        }
    }
    Ok(names)
}

/// Converts a CSV error to [`Error::Io`] for read failures and to [`Error::InvalidData`]
/// for malformed content. The csv crate's message gives the line of a malformed record.
fn csv_error(path: &Path, error: csv::Error) -> Error {
    if error.is_io_error() {
        if let csv::ErrorKind::Io(io_error) = error.into_kind() {
            return Error::io(path, io_error);
        }
        unreachable!("is_io_error returned true for a non-I/O error");
    }
    Error::invalid_data(path, error.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Table {
        Table::parse("test.csv", text.as_bytes(), None).unwrap_or_else(|e| panic!("{e}\n{text}"))
    }

    fn parse_error(text: &[u8]) -> String {
        Table::parse("test.csv", text, None)
            .expect_err("the text must be rejected")
            .to_string()
    }

    fn cells(table: &Table) -> Vec<Vec<&str>> {
        (0..table.len())
            .map(|row| {
                (0..table.header().len())
                    .map(|column| table.cell(row, column))
                    .collect()
            })
            .collect()
    }

    #[test]
    fn detects_comma_semicolon_and_tab() {
        for (text, delimiter, columns) in [
            ("a,b,c\n1,2,3\n", b',', 3),
            ("a;b;c\n1,5;2,5;3\n", b';', 3),
            ("a\tb\n1\t2\n", b'\t', 2),
        ] {
            let table = parse(text);
            assert_eq!(table.delimiter(), delimiter, "{text:?}");
            assert_eq!(table.header().len(), columns, "{text:?}");
        }
    }

    #[test]
    fn detection_prefers_consistent_counts() {
        // Commas inside a text column would give 3 cells on one line and 4 on the next,
        // while semicolons give 3 cells on every line.
        let text = "name;city;score\nAda;Paris, France;3\nBob;Lyon, Rhone, France;4\n";

        assert_eq!(detect_delimiter(text.as_bytes()), b';');
    }

    #[test]
    fn single_column_gets_comma() {
        assert_eq!(detect_delimiter(b"value\n1\n2\n"), b',');
    }

    #[test]
    fn configured_delimiter_wins() {
        let table = Table::parse("t.csv", b"a;b,c\n1;2,3\n", Some(b',')).unwrap();

        assert_eq!(table.header(), ["a;b", "c"]);
        assert_eq!(table.cell(0, 0), "1;2");
    }

    #[test]
    fn quoted_fields_keep_delimiters_and_quotes() {
        let table = parse("id,comment,n\n1,\"late, then \"\"paid\"\"\",2\n2,\"two\nlines\",3\n");

        assert_eq!(table.cell(0, 1), "late, then \"paid\"");
        assert_eq!(table.cell(1, 1), "two\nlines");
        assert_eq!(table.line(0), 2);
        assert_eq!(table.line(1), 3);
    }

    #[test]
    fn byte_order_mark_is_ignored() {
        let table = parse("\u{feff}age,income\n30,1000\n");

        assert_eq!(table.header(), ["age", "income"]);
        assert_eq!(table.column("age"), Some(0));
    }

    #[test]
    fn blank_lines_are_skipped() {
        let table = parse("\n\na , b\n\n 1, 2 \n   \n,\n3,4\n\n");

        assert_eq!(table.header(), ["a", "b"]);
        assert_eq!(cells(&table), [["1", "2"], ["3", "4"]]);
        assert_eq!(table.line(0), 5);
        assert_eq!(table.line(1), 8);
    }

    #[test]
    fn crlf_line_ends_are_read() {
        let table = parse("a,b\r\n1,2\r\n\r\n3,4\r\n");

        assert_eq!(cells(&table), [["1", "2"], ["3", "4"]]);
        assert_eq!(table.line(0), 2);
        assert_eq!(table.line(1), 4);
    }

    #[test]
    fn ragged_row_names_line_and_counts() {
        let message = parse_error(b"a,b,c\n1,2,3\n4,5\n");

        assert!(message.contains("test.csv"), "{message}");
        assert!(message.contains("line 3 has 2 cells"), "{message}");
        assert!(message.contains("header has 3 columns"), "{message}");
        assert!(message.contains("delimiter (',')"), "{message}");
    }

    #[test]
    fn empty_and_header_only_files_are_rejected() {
        assert!(parse_error(b"").contains("the file is empty"));
        assert!(parse_error(b"\n \n").contains("the file is empty"));
        assert!(parse_error(b"a,b\n\n").contains("no data rows"));
    }

    #[test]
    fn bad_header_names_are_rejected() {
        let message = parse_error(b"a,,c\n1,2,3\n");
        assert!(
            message.contains("column 2 of the header has no name"),
            "{message}"
        );

        let message = parse_error(b"a,b,a\n1,2,3\n");
        assert!(
            message.contains("names the column \"a\" twice"),
            "{message}"
        );
    }

    #[test]
    fn invalid_utf8_names_line_and_column() {
        let message = parse_error(b"name,age\nAda,30\nB\xe9a,40\n");

        assert!(message.contains("line 3, column \"name\""), "{message}");
        assert!(message.contains("not valid UTF-8"), "{message}");
    }

    #[test]
    fn gzip_file_is_decompressed() {
        use std::io::Write;

        let dir = std::env::temp_dir().join(format!("dendrite-table-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("data.csv.gz");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        encoder.write_all(b"x;y\n1;2\n").unwrap();
        std::fs::write(&path, encoder.finish().unwrap()).unwrap();

        let table = Table::read(&path, None).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();

        assert_eq!(table.delimiter(), b';');
        assert_eq!(cells(&table), [["1", "2"]]);
        assert_eq!(table.path(), path);
    }

    #[test]
    fn missing_file_names_path() {
        let err = Table::read("/nonexistent/dendrite/file.csv", None).unwrap_err();

        assert!(matches!(err, Error::Io { .. }), "{err}");
        assert!(
            err.to_string().contains("/nonexistent/dendrite/file.csv"),
            "{err}"
        );
    }
}
