//! Writing a report to a directory: the three files, never overwriting one silently.

use crate::Report;
use std::fmt;
use std::path::{Path, PathBuf};

/// The files a report directory holds.
pub const FILE_NAMES: [&str; 3] = ["report.html", "report.json", "report.md"];

/// What to do when a report file exists already.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Overwrite {
    /// Refuse, naming the files, and write nothing.
    Refuse,
    /// Replace them (the user asked: `--force`).
    Replace,
}

#[derive(Debug)]
pub enum WriteError {
    /// These report files exist and `Overwrite::Refuse` was given.
    Exists(Vec<PathBuf>),
    Io(PathBuf, std::io::Error),
}

impl fmt::Display for WriteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            WriteError::Exists(paths) => {
                let names: Vec<String> = paths.iter().map(|p| p.display().to_string()).collect();
                write!(
                    f,
                    "{} already exist{}; refusing to overwrite (--force replaces them)",
                    names.join(", "),
                    if names.len() == 1 { "s" } else { "" }
                )
            }
            WriteError::Io(path, error) => write!(f, "{}: cannot write: {error}", path.display()),
        }
    }
}

impl std::error::Error for WriteError {}

/// The report files in `dir` that exist already.
fn existing(dir: &Path) -> Vec<PathBuf> {
    FILE_NAMES
        .iter()
        .map(|name| dir.join(name))
        .filter(|path| path.exists())
        .collect()
}

/// Writes `report.html`, `report.json` and `report.md` into `dir`, creating it if missing, and
/// returns their paths. With `Overwrite::Refuse`, nothing is written if any of them exists.
pub fn write(
    report: &Report,
    dir: &Path,
    overwrite: Overwrite,
) -> Result<Vec<PathBuf>, WriteError> {
    let present = existing(dir);
    if overwrite == Overwrite::Refuse && !present.is_empty() {
        return Err(WriteError::Exists(present));
    }
    std::fs::create_dir_all(dir).map_err(|e| WriteError::Io(dir.to_path_buf(), e))?;
    let contents = [report.to_html(), report.to_json(), report.to_markdown()];
    let mut written = Vec::new();
    for (name, text) in FILE_NAMES.iter().zip(contents) {
        let path = dir.join(name);
        std::fs::write(&path, text).map_err(|e| WriteError::Io(path.clone(), e))?;
        written.push(path);
    }
    Ok(written)
}
