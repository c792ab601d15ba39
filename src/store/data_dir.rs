//! The data folder on disk. It holds revocations, replay state and the
//! audit trail, so it is the broker's user's alone (DESIGN.md §12): the
//! folder `0700`, every file in it `0600`, whatever the umask.

use std::fs::{DirBuilder, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;

const FOLDER_MODE: u32 = 0o700;
const FILE_MODE: u32 = 0o600;

/// The kinds of file the broker writes here: the embedded store's database,
/// its JSON records, and those records while they are being replaced.
const OWN_EXTENSIONS: [&str; 3] = ["redb", "json", "tmp"];

/// Creates `dir` (and its parents) if needed, and leaves it, and every file
/// of the broker's already in it, readable by this user only: a folder made
/// by an older version, or by hand, is tightened too. Other files are left
/// as they are, in case `data_dir` names a folder shared with something else.
pub fn prepare(dir: &Path) -> io::Result<()> {
    DirBuilder::new().recursive(true).mode(FOLDER_MODE).create(dir)?;
    std::fs::set_permissions(dir, Permissions::from_mode(FOLDER_MODE))?;
    for entry in std::fs::read_dir(dir)? {
        let (entry, path) = entry.map(|entry| (entry.file_type(), entry.path()))?;
        let own = path.extension().and_then(|ext| ext.to_str()).is_some_and(|ext| OWN_EXTENSIONS.contains(&ext));
        if entry?.is_file() && own {
            restrict(&path)?;
        }
    }
    Ok(())
}

/// Makes one file readable and writable by this user only.
pub fn restrict(path: &Path) -> io::Result<()> {
    std::fs::set_permissions(path, Permissions::from_mode(FILE_MODE))
}

/// Writes `bytes` to a new file at `path`, created readable by this user
/// only (never briefly readable by others, as a later `chmod` would leave it).
pub fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    let mut file = OpenOptions::new().write(true).create(true).truncate(true).mode(FILE_MODE).open(path)?;
    // A file that existed before keeps its mode through `open`: set it.
    file.set_permissions(Permissions::from_mode(FILE_MODE))?;
    file.write_all(bytes)?;
    file.sync_all()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        std::fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn the_folder_and_its_files_are_the_users_alone() {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("data");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, Permissions::from_mode(0o755)).unwrap();
        let old = dir.join("old.json");
        std::fs::write(&old, b"{}").unwrap();
        std::fs::set_permissions(&old, Permissions::from_mode(0o644)).unwrap();
        let script = dir.join("notes.sh");
        std::fs::write(&script, b"#!/bin/sh\n").unwrap();
        std::fs::set_permissions(&script, Permissions::from_mode(0o755)).unwrap();
        prepare(&dir).unwrap();
        assert_eq!((mode(&dir), mode(&old)), (0o700, 0o600));
        assert_eq!(mode(&script), 0o755, "a file that is not the broker's keeps its mode");

        let new = dir.join("new.json");
        write_private(&new, b"[]").unwrap();
        assert_eq!(mode(&new), 0o600);
        assert_eq!(std::fs::read(&new).unwrap(), b"[]");

        let nested = root.path().join("a/b/data");
        prepare(&nested).unwrap();
        assert_eq!(mode(&nested), 0o700);
    }
}
