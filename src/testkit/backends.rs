//! One test on each backend: [`backend_test!`](crate::backend_test) turns an
//! `async fn name(app: TestApp)` (or one taking a [`FreshDatabase`]) into a test on SQLite and
//! one on PostgreSQL, each handed a ready input.
use std::future::Future;

use super::{fresh_database, spawn_app_with, Backend, FreshDatabase, TestApp};
use crate::config::ConfigArgs;

/// Pool size of a [`FreshDatabase`] handed to a test, unless the configuration sets one.
const FRESH_DATABASE_CONNECTIONS: u32 = 2;

/// What a per-backend test is handed.
pub trait TestInput: Sized {
    /// Prepares the input on `backend` after `configure` adjusted the service's flags; `None`
    /// only when PostgreSQL tests were explicitly skipped outside CI.
    fn prepare(
        backend: Backend,
        configure: impl FnOnce(&mut ConfigArgs),
    ) -> impl Future<Output = Option<Self>>;
}

/// The service, started on a fresh database with the test settings.
impl TestInput for TestApp {
    async fn prepare(backend: Backend, configure: impl FnOnce(&mut ConfigArgs)) -> Option<Self> {
        spawn_app_with(backend, configure).await
    }
}

/// A migrated, empty database; of the flags only the pool size applies.
impl TestInput for FreshDatabase {
    async fn prepare(backend: Backend, configure: impl FnOnce(&mut ConfigArgs)) -> Option<Self> {
        let mut args = ConfigArgs::defaults();
        configure(&mut args);
        let connections = args
            .database_max_connections
            .unwrap_or(FRESH_DATABASE_CONNECTIONS);
        fresh_database(backend, connections).await
    }
}

/// Runs `test` with its input prepared on `backend` after `configure`. When PostgreSQL is
/// unreachable the test fails, unless `VOICE_TEST_SKIP_POSTGRES=1` outside CI: then it is
/// skipped with a message on stderr.
pub async fn run<T, F>(backend: Backend, configure: impl FnOnce(&mut ConfigArgs), test: impl FnOnce(T) -> F)
where
    T: TestInput,
    F: Future<Output = ()>,
{
    if let Some(input) = T::prepare(backend, configure).await {
        test(input).await;
    }
}

/// Declares the test `async fn $name(input)` (a [`TestApp`] or a [`FreshDatabase`]) as
/// `$name::sqlite` and `$name::postgres`, optionally after `$configure` (a closure over
/// `&mut ConfigArgs`) adjusted the service's flags. Written just above the function:
///
/// ```text
/// backend_test!(admin_api_is_disabled_without_a_token, |a| a.admin_token = None);
/// async fn admin_api_is_disabled_without_a_token(app: TestApp) { /* … */ }
/// ```
#[macro_export]
macro_rules! backend_test {
    ($name:ident $(,)?) => {
        $crate::backend_test!($name, |_| {});
    };
    ($name:ident, $configure:expr $(,)?) => {
        mod $name {
            // The configuration closure is written in the test's module and may use its names.
            #[allow(unused_imports)]
            use super::*;

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                $crate::testkit::run($crate::testkit::Backend::Sqlite, $configure, super::$name).await
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                $crate::testkit::run($crate::testkit::Backend::Postgres, $configure, super::$name).await
            }
        }
    };
}
