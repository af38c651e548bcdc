//! A job's artifacts archive (the zip the runner uploaded to the mock), unpacked into a directory
//! of the run: complete or absent.

use std::path::Path;

use anyhow::{Context, Result};

/// A file name for a job: `/` (parallel jobs are `name 1/2`) and NUL become `_`, a leading `.`
/// too, so that each job has one entry in `artifacts/` and `traces/`.
pub fn job_file_name(job: &str) -> String {
    let mut s: String = job
        .chars()
        .map(|c| if c == '/' || c == '\0' { '_' } else { c })
        .collect();
    if s.starts_with('.') || s.is_empty() {
        s.insert(0, '_');
    }
    s
}

/// Unpack zip `bytes` into `dest` (which must not exist): into a temporary sibling first, renamed
/// into place when every entry is out. Entries that would land outside `dest` are refused by the
/// zip reader. Returns the number of files.
pub fn unpack(bytes: &[u8], dest: &Path) -> Result<usize> {
    let parent = dest.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(parent)?;
    let tmp = tempfile::Builder::new()
        .prefix(".unpacking-")
        .tempdir_in(parent)?;
    let mut zip = zip::ZipArchive::new(std::io::Cursor::new(bytes))
        .context("the artifacts archive is not a zip file")?;
    let files = (0..zip.len())
        .filter(|&i| zip.by_index(i).is_ok_and(|e| !e.is_dir()))
        .count();
    zip.extract(tmp.path())
        .with_context(|| format!("unpacking artifacts into {}", dest.display()))?;
    std::fs::rename(tmp.keep(), dest)
        .with_context(|| format!("moving artifacts to {}", dest.display()))?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
        for (name, data) in entries {
            w.start_file(*name, zip::write::SimpleFileOptions::default())
                .unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap().into_inner()
    }

    #[test]
    fn an_archive_is_unpacked_whole() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifacts/build");
        let n = unpack(&zip_of(&[("out/a.txt", b"A"), ("b", b"B")]), &dest).unwrap();
        assert_eq!(n, 2);
        assert_eq!(std::fs::read(dest.join("out/a.txt")).unwrap(), b"A");
        assert_eq!(std::fs::read(dest.join("b")).unwrap(), b"B");
    }

    #[test]
    fn a_broken_or_escaping_archive_leaves_nothing() {
        let d = tempfile::tempdir().unwrap();
        let dest = d.path().join("artifacts/bad");
        assert!(unpack(b"not a zip", &dest).is_err());
        assert!(unpack(&zip_of(&[("ok", b"x"), ("../evil", b"x")]), &dest).is_err());
        assert!(!d.path().join("artifacts/evil").exists());
        // Neither the destination nor a temporary directory is left.
        let left = std::fs::read_dir(d.path().join("artifacts"))
            .unwrap()
            .count();
        assert_eq!(left, 0);
    }

    #[test]
    fn job_names_become_one_file_name() {
        assert_eq!(job_file_name("unit 1/2"), "unit 1_2");
        assert_eq!(job_file_name(".hidden"), "_.hidden");
        assert_eq!(job_file_name("build"), "build");
    }
}
