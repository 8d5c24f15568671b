//! The database URL as the service reads it: sqlx's own URL, plus the `pgbouncer` parameter
//! that selects [`PoolMode::TransactionPooled`].
use sea_orm::{DbErr, RuntimeErr};

use super::pool::PoolMode;

/// The service's own URL parameter: `pgbouncer=true` or `pgbouncer=false`.
const PGBOUNCER: &str = "pgbouncer";
/// sqlx's parameter for the size of its statement cache.
const STATEMENT_CACHE: &str = "statement-cache-capacity";

/// A database URL split into what sqlx reads and what the service reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DatabaseUrl {
    /// The URL without the `pgbouncer` parameter, for sqlx.
    pub sqlx: String,
    /// How the pool must run statements.
    pub mode: PoolMode,
}

impl DatabaseUrl {
    /// Reads `url`. A PostgreSQL URL with `pgbouncer=true` runs statements for a proxy in
    /// transaction pooling mode; so does one with sqlx's `statement-cache-capacity=0` and no
    /// `pgbouncer=false`, since without a cache that is the only safe way for sqlx to run.
    /// Other parameters are passed on unchanged, in their order.
    pub fn parse(url: &str) -> Result<Self, DbErr> {
        let (base, query) = url.split_once('?').unwrap_or((url, ""));
        let mut kept = Vec::new();
        let mut pgbouncer = None;
        let mut statement_cache = None;
        for pair in query.split('&').filter(|pair| !pair.is_empty()) {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            if key == PGBOUNCER {
                if pgbouncer.is_some() {
                    return Err(invalid(format!("`{PGBOUNCER}` is given more than once")));
                }
                pgbouncer = Some(match value {
                    "true" => true,
                    "false" => false,
                    other => return Err(invalid(format!("{PGBOUNCER}={other}: expected true or false"))),
                });
                continue;
            }
            if key == STATEMENT_CACHE {
                statement_cache = value.parse::<usize>().ok();
            }
            kept.push(pair);
        }
        let postgres = base.starts_with("postgres://") || base.starts_with("postgresql://");
        let mode = match pgbouncer {
            Some(true) if !postgres => {
                return Err(invalid(format!("{PGBOUNCER}=true is for PostgreSQL URLs")));
            }
            Some(true) if statement_cache.is_some_and(|capacity| capacity > 0) => {
                return Err(invalid(format!(
                    "{PGBOUNCER}=true runs without a statement cache: drop {STATEMENT_CACHE} or set it to 0"
                )));
            }
            Some(true) => PoolMode::TransactionPooled,
            None if postgres && statement_cache == Some(0) => PoolMode::TransactionPooled,
            _ => PoolMode::Direct,
        };
        let sqlx = if kept.is_empty() {
            base.to_owned()
        } else {
            format!("{base}?{}", kept.join("&"))
        };
        Ok(Self { sqlx, mode })
    }
}

fn invalid(message: String) -> DbErr {
    DbErr::Conn(RuntimeErr::Internal(format!("database URL: {message}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(url: &str) -> (String, PoolMode) {
        let parsed = DatabaseUrl::parse(url).unwrap();
        (parsed.sqlx, parsed.mode)
    }

    fn error(url: &str) -> String {
        DatabaseUrl::parse(url).unwrap_err().to_string()
    }

    #[test]
    fn a_url_without_the_parameter_is_passed_on_as_it_is() {
        for url in [
            "postgres://u:p@db:5432/voice",
            "postgres://u@db/voice?sslmode=require&application_name=voice",
            "postgres://u@db/voice?statement-cache-capacity=50",
            "sqlite:///var/lib/voice.db?mode=rwc",
            "sqlite::memory:",
        ] {
            assert_eq!(parse(url), (url.to_owned(), PoolMode::Direct), "{url}");
        }
    }

    #[test]
    fn pgbouncer_true_selects_transaction_pooling_and_is_not_passed_to_sqlx() {
        assert_eq!(
            parse("postgres://u@pgbouncer:6432/voice?pgbouncer=true"),
            (
                "postgres://u@pgbouncer:6432/voice".to_owned(),
                PoolMode::TransactionPooled
            )
        );
        assert_eq!(
            parse("postgresql://u@h/voice?sslmode=require&pgbouncer=true&application_name=voice"),
            (
                "postgresql://u@h/voice?sslmode=require&application_name=voice".to_owned(),
                PoolMode::TransactionPooled
            )
        );
        assert_eq!(
            parse("postgres://u@h/voice?pgbouncer=true&statement-cache-capacity=0"),
            (
                "postgres://u@h/voice?statement-cache-capacity=0".to_owned(),
                PoolMode::TransactionPooled
            )
        );
    }

    #[test]
    fn pgbouncer_false_is_direct_and_not_passed_to_sqlx() {
        assert_eq!(
            parse("postgres://u@h/voice?pgbouncer=false&sslmode=disable"),
            (
                "postgres://u@h/voice?sslmode=disable".to_owned(),
                PoolMode::Direct
            )
        );
        assert_eq!(
            parse("postgres://u@h/voice?statement-cache-capacity=0&pgbouncer=false"),
            (
                "postgres://u@h/voice?statement-cache-capacity=0".to_owned(),
                PoolMode::Direct
            )
        );
    }

    #[test]
    fn sqlx_statement_cache_capacity_zero_selects_transaction_pooling() {
        assert_eq!(
            parse("postgres://u@h/voice?statement-cache-capacity=0"),
            (
                "postgres://u@h/voice?statement-cache-capacity=0".to_owned(),
                PoolMode::TransactionPooled
            )
        );
        assert_eq!(
            parse("postgres://u@h/voice?statement-cache-capacity=1").1,
            PoolMode::Direct
        );
    }

    #[test]
    fn contradictions_and_unknown_values_are_refused() {
        assert!(error("postgres://u@h/voice?pgbouncer=yes").contains("expected true or false"));
        assert!(error("postgres://u@h/voice?pgbouncer").contains("expected true or false"));
        assert!(error("postgres://u@h/voice?pgbouncer=true&pgbouncer=true").contains("more than once"));
        assert!(
            error("postgres://u@h/voice?pgbouncer=true&statement-cache-capacity=100")
                .contains("statement-cache-capacity")
        );
        assert!(error("sqlite:///tmp/voice.db?pgbouncer=true").contains("PostgreSQL"));
    }
}
