//! Files that appear whole or not at all: written to a temp file beside the target, synced, then renamed.
//! The one home of this writer: vectors, indexes, Parquet parts, reports, profiles and canaries all use it.

use std::io::{self, Write};
use std::path::{Path, PathBuf};

/// A file being written under a temporary name in its target's folder. [`AtomicFile::commit`] makes it
/// readable by everyone (rw-r--r--), syncs it and renames it over the target; dropped without a commit (or
/// killed), it leaves no file under the target's name, and the temp file (`.embedkit-*.tmp`) is removed when
/// the process lives to drop it.
pub struct AtomicFile {
    file: tempfile::NamedTempFile,
    path: PathBuf,
}

impl AtomicFile {
    /// Creates the temp file beside `path` (in the current folder when `path` has no parent).
    pub fn create(path: &Path) -> io::Result<AtomicFile> {
        let dir = match path.parent() {
            Some(d) if !d.as_os_str().is_empty() => d,
            _ => Path::new("."),
        };
        let file = tempfile::Builder::new()
            .prefix(".embedkit-")
            .suffix(".tmp")
            .tempfile_in(dir)?;
        Ok(AtomicFile {
            file,
            path: path.to_path_buf(),
        })
    }

    /// The final path.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The temp file, for writers that seek back (an index header written last).
    pub fn as_file_mut(&mut self) -> &mut std::fs::File {
        self.file.as_file_mut()
    }

    /// Commits under `path` rather than the name given to [`AtomicFile::create`]: for files named by their
    /// contents once written (a download named by its hash). `path` must be in the folder of the name given
    /// to `create`, where the temp file is (a rename does not cross filesystems).
    pub fn commit_as(mut self, path: &Path) -> io::Result<()> {
        self.path = path.to_path_buf();
        self.commit()
    }

    /// Syncs the data and renames it over the final path; then syncs the folder where the platform allows, so
    /// the rename survives a power loss too.
    pub fn commit(self) -> io::Result<()> {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            self.file
                .as_file()
                .set_permissions(std::fs::Permissions::from_mode(0o644))?;
        }
        self.file.as_file().sync_all()?;
        self.file.persist(&self.path).map_err(|e| e.error)?;
        if let Some(dir) = self.path.parent().filter(|d| !d.as_os_str().is_empty())
            && let Ok(d) = std::fs::File::open(dir)
        {
            // Not every platform can sync a folder; the file itself is already durable.
            let _ = d.sync_all();
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.file.write(buf)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

/// Writes `bytes` to `path` atomically.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut f = AtomicFile::create(path)?;
    f.write_all(bytes)?;
    f.commit()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_visible_until_commit() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&target).unwrap();
        f.write_all(b"abc").unwrap();
        assert!(!target.exists());
        f.commit().unwrap();
        assert_eq!(std::fs::read(&target).unwrap(), b"abc");
        let left: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(left.len(), 1, "the temp file was renamed, not copied");
        let dropped = AtomicFile::create(&dir.path().join("never.bin")).unwrap();
        drop(dropped);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn commit_as_names_the_file_when_it_is_done() {
        let dir = tempfile::tempdir().unwrap();
        let mut f = AtomicFile::create(&dir.path().join("download")).unwrap();
        f.write_all(b"abc").unwrap();
        let named = dir.path().join("ba7816bf");
        f.commit_as(&named).unwrap();
        assert_eq!(std::fs::read(&named).unwrap(), b"abc");
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left,
            ["ba7816bf"],
            "only the named file, no temp file, no placeholder"
        );
    }
}
