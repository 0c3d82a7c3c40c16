//! The database's own management-API signing secret (SPEC §9): created on the first start of
//! a server on a database file, and what `latchkey admin-token` signs with, unless
//! `LATCHKEY_JWT_SECRET` (or `--jwt-secret`) overrides it for both.
//!
//! Kept beside the database, in `PATH.jwt-secret` (64 hex digits, readable by its owner only),
//! not in a row of the database: redb locks the whole file while a server has it open, and
//! `admin-token` is run for a running server. The secret is the file's text, the same bytes an
//! operator gets by exporting it as `LATCHKEY_JWT_SECRET`.

use std::io::Write as _;
use std::path::{Path, PathBuf};

use crate::jwt;

/// Where the secret of the database at `db` is kept.
pub fn path_for(db: &Path) -> PathBuf {
    let mut name = db.file_name().map(ToOwned::to_owned).unwrap_or_default();
    name.push(".jwt-secret");
    db.with_file_name(name)
}

/// The secret of the database at `db`, made (and synced to disk) if it has none yet.
pub fn ensure(db: &Path) -> Result<Vec<u8>, String> {
    let path = path_for(db);
    match read_at(&path) {
        Err(Problem::Missing) => {}
        found => return found.map_err(|problem| problem.message(&path)),
    }
    let secret = latchkey::hex_lower(&rand::random::<[u8; 32]>());
    match create(&path, secret.as_bytes()) {
        Ok(()) => Ok(secret.into_bytes()),
        // Another process made it first: theirs is the one.
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            read_at(&path).map_err(|problem| problem.message(&path))
        }
        Err(e) => Err(format!("{}: cannot create: {e}", path.display())),
    }
}

/// The secret of the database at `db`; an error (saying how to get one) when it has none.
pub fn read(db: &Path) -> Result<Vec<u8>, String> {
    let path = path_for(db);
    read_at(&path).map_err(|problem| problem.message(&path))
}

/// Why no secret could be read.
enum Problem {
    Missing,
    Unreadable(std::io::Error),
    Malformed,
}

impl Problem {
    /// The message for `path`. Never the file's content: it may be a secret mistyped.
    fn message(&self, path: &Path) -> String {
        let path = path.display();
        match self {
            Problem::Missing => format!(
                "{path}: no management secret here (a server started on this database without LATCHKEY_JWT_SECRET creates it; with one, set the same LATCHKEY_JWT_SECRET here)"
            ),
            Problem::Unreadable(e) => format!("{path}: cannot read: {e}"),
            Problem::Malformed => format!(
                "{path}: not a management secret (at least {} printable characters on one line)",
                jwt::MIN_SECRET
            ),
        }
    }
}

fn read_at(path: &Path) -> Result<Vec<u8>, Problem> {
    let text = match std::fs::read(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(Problem::Missing),
        Err(e) => return Err(Problem::Unreadable(e)),
    };
    let secret = text.trim_ascii();
    if secret.len() < jwt::MIN_SECRET || !secret.iter().all(u8::is_ascii_graphic) {
        return Err(Problem::Malformed);
    }
    Ok(secret.to_vec())
}

/// Writes `secret` to a new file at `path` (never over an existing one), readable and
/// writable by its owner only, and syncs it and its directory: a server that signed tokens
/// with it must find the same secret after a crash.
fn create(path: &Path, secret: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    let written = file
        .write_all(secret)
        .and_then(|()| file.write_all(b"\n"))
        .and_then(|()| file.sync_all());
    if let Err(e) = written {
        // A partial file would be read as a malformed secret on every later start.
        let _ = std::fs::remove_file(path);
        return Err(e);
    }
    // The directory too, so the new name survives a crash (`latchkey.redb.jwt-secret` alone
    // is in the working directory).
    #[cfg(unix)]
    {
        let dir = path
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or(Path::new("."));
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_made_once_and_read_back_the_same() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shop.redb");
        assert_eq!(path_for(&db), dir.path().join("shop.redb.jwt-secret"));
        let missing = read(&db).unwrap_err();
        assert!(missing.contains("no management secret here"), "{missing}");
        let made = ensure(&db).unwrap();
        assert_eq!(made.len(), 64);
        assert!(made.iter().all(u8::is_ascii_hexdigit));
        assert_eq!(ensure(&db).unwrap(), made);
        assert_eq!(read(&db).unwrap(), made);
        let other = ensure(&dir.path().join("other.redb")).unwrap();
        assert_ne!(other, made);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt as _;
            let mode = std::fs::metadata(path_for(&db))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_malformed_secret_is_refused_without_showing_it() {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("shop.redb");
        for bad in [
            "tooshort-but-secret",
            "has a space in the middle of it, 32+ bytes",
        ] {
            std::fs::write(path_for(&db), bad).unwrap();
            for result in [read(&db), ensure(&db)] {
                let err = result.unwrap_err();
                assert!(err.contains("not a management secret"), "{err}");
                assert!(!err.contains(bad), "{err}");
            }
        }
        // A hand-written secret (an operator's own) is taken as its text.
        let own = "an-operators-own-secret-of-40-characters!";
        std::fs::write(path_for(&db), format!("{own}\n")).unwrap();
        assert_eq!(ensure(&db).unwrap(), own.as_bytes());
    }
}
