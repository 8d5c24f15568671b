//! Consistent copies of a live SQLite database (`VACUUM INTO`), taken while the service keeps
//! writing: the copy is one read transaction's snapshot, and in WAL mode writers do not wait
//! for it.
use std::path::{Path, PathBuf};

use sea_orm::{ConnectionTrait, DbBackend, DbErr, Statement};

/// The file of an SQLite database URL (`sqlite://FILE?...`, `sqlite:FILE`); `None` for
/// PostgreSQL and in-memory databases.
pub fn sqlite_file(url: &str) -> Option<PathBuf> {
    url.strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .map(|rest| rest.split('?').next().unwrap_or_default())
        .filter(|path| !path.is_empty() && !path.starts_with(':'))
        .map(PathBuf::from)
}

/// Writes a consistent copy of the database to `target`, which must not exist yet (SQLite
/// refuses to write over a file that is not empty). The copy is a self-contained database
/// file (no `-wal`), with the connection's `auto_vacuum` mode (incremental: see
/// [`super::connect_url`]).
pub async fn vacuum_into<C: ConnectionTrait>(db: &C, target: &Path) -> Result<(), DbErr> {
    if db.get_database_backend() != DbBackend::Sqlite {
        return Err(DbErr::Custom(
            "VACUUM INTO copies SQLite databases only".to_owned(),
        ));
    }
    let target = target
        .to_str()
        .ok_or_else(|| DbErr::Custom(format!("{} is not a UTF-8 path", target.display())))?;
    db.execute(Statement::from_sql_and_values(
        DbBackend::Sqlite,
        "VACUUM INTO ?",
        [target.into()],
    ))
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sqlite_files_are_read_from_their_urls() {
        for (url, file) in [
            ("sqlite://stateset-voice.db?mode=rwc", Some("stateset-voice.db")),
            ("sqlite:///var/lib/voice/v.db", Some("/var/lib/voice/v.db")),
            ("sqlite:data/v.db?mode=rwc", Some("data/v.db")),
            ("sqlite::memory:", None),
            ("postgres://postgres@db/voice", None),
        ] {
            assert_eq!(sqlite_file(url), file.map(PathBuf::from), "{url}");
        }
    }
}
