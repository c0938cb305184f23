//! CSV files as typed rows: one struct per file gives its name, its columns (the header,
//! also when there are no rows) and each cell's type, and both the writer and every
//! reader go through it (the `csv` crate's serde support). Readers find cells by column
//! name, so a file with more columns — or an older one with fewer, where the struct
//! says `#[serde(default)]` — still reads. No domain here: the load writes seconds.csv
//! through it, and the run (run/files.rs) everything else of its directory.

use std::path::Path;

use anyhow::{Context, Result};
use serde::{Serialize, de::DeserializeOwned};

/// A row of one CSV file.
pub trait Row: Serialize + DeserializeOwned {
    /// The file's name in a run (or `load --out`) directory.
    const FILE: &'static str;
    /// The header: the struct's fields in order (a unit test of each row type checks
    /// this against what serde writes).
    const COLUMNS: &'static [&'static str];
    /// Columns without which the file is not this one (the rest may be missing in files
    /// written by older versions, and read as their defaults).
    const REQUIRED: &'static [&'static str] = &[];
}

/// The file's text: the header, then one line per row.
pub fn to_string<R: Row>(rows: &[R]) -> Result<String> {
    let mut w = csv::WriterBuilder::new().has_headers(false).from_writer(Vec::new());
    w.write_record(R::COLUMNS)?;
    for r in rows {
        w.serialize(r).with_context(|| format!("{}: writing a row", R::FILE))?;
    }
    String::from_utf8(w.into_inner().map_err(|e| anyhow::anyhow!("{}: {}", R::FILE, e.error()))?)
        .context("CSV is UTF-8")
}

pub fn write<R: Row>(dir: &Path, rows: &[R]) -> Result<()> {
    let path = dir.join(R::FILE);
    std::fs::write(&path, to_string(rows)?).with_context(|| path.display().to_string())
}

/// Rows from the file's text; an error names the file and the line.
pub fn parse<R: Row>(text: &str) -> Result<Vec<R>> {
    let mut reader = csv::ReaderBuilder::new().from_reader(text.as_bytes());
    let header = reader.headers().with_context(|| format!("{}: no header", R::FILE))?;
    if let Some(missing) = R::REQUIRED.iter().find(|c| !header.iter().any(|h| h == **c)) {
        anyhow::bail!("{} has no {missing} column", R::FILE);
    }
    let header = header.clone();
    reader.deserialize().map(|r| r.map_err(|e| cell_error::<R>(&header, &e))).collect()
}

/// "seconds.csv line 3, column requests: invalid digit found in string".
fn cell_error<R: Row>(header: &csv::StringRecord, e: &csv::Error) -> anyhow::Error {
    let line = e.position().map_or(String::new(), |p| format!(" line {}", p.line()));
    match e.kind() {
        csv::ErrorKind::Deserialize { err, .. } => {
            let column = err
                .field()
                .and_then(|i| header.get(usize::try_from(i).ok()?))
                .map_or(String::new(), |c| format!(", column {c}"));
            anyhow::anyhow!("{}{line}{column}: {}", R::FILE, err.kind())
        }
        _ => anyhow::anyhow!("{}{line}: {e}", R::FILE),
    }
}

pub fn read<R: Row>(dir: &Path) -> Result<Vec<R>> {
    let path = dir.join(R::FILE);
    parse(&std::fs::read_to_string(&path).with_context(|| path.display().to_string())?)
}

/// Rows of an optional file: none when it is missing (a run without kernel metrics).
pub fn read_if_present<R: Row>(dir: &Path) -> Result<Vec<R>> {
    if dir.join(R::FILE).exists() { read(dir) } else { Ok(Vec::new()) }
}

/// Seconds on the run's clock as written: to the millisecond.
pub fn ms3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

/// What serde writes as the header of `R` (for the tests of each row type).
#[cfg(test)]
pub fn serde_header<R: Row + Default>() -> Vec<String> {
    let mut w = csv::Writer::from_writer(Vec::new());
    w.serialize(R::default()).unwrap();
    let text = String::from_utf8(w.into_inner().unwrap()).unwrap();
    text.lines().next().unwrap().split(',').map(str::to_owned).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
    #[serde(default)]
    struct Sample {
        t_s: f64,
        name: String,
        n: Option<u64>,
    }

    impl Row for Sample {
        const FILE: &'static str = "t.csv";
        const COLUMNS: &'static [&'static str] = &["t_s", "name", "n"];
        const REQUIRED: &'static [&'static str] = &["name"];
    }

    #[test]
    fn rows_round_trip_by_column_name_and_the_header_stands_alone() {
        assert_eq!(serde_header::<Sample>(), Sample::COLUMNS);
        assert_eq!(to_string::<Sample>(&[]).unwrap(), "t_s,name,n\n");
        let rows = vec![
            Sample { t_s: ms3(1.234_56), name: "a,\"b\"".into(), n: None },
            Sample { t_s: 2.0, name: "c".into(), n: Some(7) },
        ];
        let text = to_string(&rows).unwrap();
        assert_eq!(text, "t_s,name,n\n1.235,\"a,\"\"b\"\"\",\n2.0,c,7\n");
        assert_eq!(parse::<Sample>(&text).unwrap(), rows);
        // Another column order, an extra column, a missing one: read by name.
        let other = parse::<Sample>("n,extra,name\n3,x,d\n").unwrap();
        assert_eq!(other, vec![Sample { t_s: 0.0, name: "d".into(), n: Some(3) }]);
        let err = format!("{:#}", parse::<Sample>("t_s,name,n\nsoon,a,1\n").unwrap_err());
        assert_eq!(err, "t.csv line 2, column t_s: invalid float literal");
        assert_eq!(parse::<Sample>("t_s,n\n").unwrap_err().to_string(), "t.csv has no name column");
    }
}
