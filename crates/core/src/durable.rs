//! File operations that survive a power cut (recordings, the generated credentials). A file's data is synced before a name points to it,
//! and a directory is synced after an entry in it is created, renamed or removed: syncing a file
//! does not persist its name (fsync(2), "Calling fsync() does not necessarily ensure that the
//! entry in the directory containing the file has also reached disk").

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::Path;

/// Creates `path`, which must not exist (`AlreadyExists` otherwise), holding `contents`, synced.
/// The caller syncs the directory (once for several new files).
pub fn write_new(path: &Path, contents: &[u8]) -> io::Result<File> {
    let mut file = OpenOptions::new().write(true).create_new(true).open(path)?;
    let written = file.write_all(contents).and_then(|()| file.sync_all());
    if let Err(e) = written {
        // Never leave a half-written file under a name we claimed.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    Ok(file)
}

/// Persists the entries of `dir`: files created, renamed or removed in it.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates `dir` and any missing parents, each new one's entry synced into its parent.
pub fn create_dirs(dir: &Path) -> io::Result<()> {
    if dir.is_dir() {
        return Ok(());
    }
    let parent = dir
        .parent()
        .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no parent directory"))?;
    create_dirs(parent)?;
    match std::fs::create_dir(dir) {
        Ok(()) => sync_dir(parent),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => Ok(()),
        Err(e) => Err(e),
    }
}

/// Renames `from` (synced already) to `to`, which must not exist (`AlreadyExists` otherwise),
/// then syncs the directories, so that after a power cut the file is under one of its names.
pub fn rename_new(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{CWD, RenameFlags, renameat_with};
    match renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE) {
        Ok(()) => {}
        // A file system without RENAME_NOREPLACE: nothing else writes these names, so a check
        // then a rename is enough.
        Err(e) if e == rustix::io::Errno::INVAL || e == rustix::io::Errno::NOSYS => {
            if to.symlink_metadata().is_ok() {
                return Err(io::ErrorKind::AlreadyExists.into());
            }
            std::fs::rename(from, to)?;
        }
        Err(e) => return Err(e.into()),
    }
    let to_dir = to.parent().unwrap_or(Path::new("."));
    sync_dir(to_dir)?;
    match from.parent() {
        Some(from_dir) if from_dir != to_dir => sync_dir(from_dir),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_never_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a");
        write_new(&a, b"first").unwrap();
        let again = write_new(&a, b"second").unwrap_err();
        assert_eq!(again.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&a).unwrap(), b"first");

        let nested = dir.path().join("x/y/z");
        create_dirs(&nested).unwrap();
        create_dirs(&nested).unwrap();
        let b = nested.join("b");
        write_new(&b, b"other").unwrap();
        let taken = rename_new(&a, &b).unwrap_err();
        assert_eq!(taken.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(std::fs::read(&b).unwrap(), b"other");
        rename_new(&a, &nested.join("c")).unwrap();
        assert!(!a.exists());
        assert_eq!(std::fs::read(nested.join("c")).unwrap(), b"first");
    }
}
