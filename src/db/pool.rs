//! The pool the service queries through ([`Pool`]) and how it runs statements ([`PoolMode`]).
//!
//! Behind a proxy in transaction pooling mode (PgBouncer `pool_mode=transaction`, which before
//! 1.21 does not track prepared statements) a client connection holds a server connection for
//! one transaction, or outside a transaction until the next Sync. sqlx runs a statement with
//! arguments in two such steps (Parse and Describe, then Bind and Execute, each ending in a
//! Sync) and names its prepared statements `sqlx_s_1`, `sqlx_s_2`, ... on every connection. A
//! statement cache of capacity 0 only stops it from reusing them: they are still named, and
//! never closed. So through such a proxy the second step of a statement outside a transaction
//! may reach another server connection and bind a statement of the same name that another
//! client prepared there (a different query runs with these arguments), or find none; and
//! inside a transaction the names collide with those earlier clients left on the server
//! connection ("prepared statement already exists").
use sea_orm::{
    AccessMode, ConnectionTrait, DatabaseConnection, DatabaseTransaction, DbBackend, DbErr, ExecResult,
    IsolationLevel, QueryResult, Statement, TransactionError, TransactionTrait,
};
use std::{future::Future, pin::Pin};

/// How a [`Pool`] runs statements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PoolMode {
    /// As sea-orm and sqlx do: cached prepared statements, statements outside a transaction on
    /// their own. For a direct connection or a proxy in session pooling mode.
    #[default]
    Direct,
    /// Safe behind a proxy in transaction pooling mode: no statement cache; every transaction
    /// starts with `DEALLOCATE ALL`, so the server connection it got holds no statement names
    /// of other clients; and every statement outside a transaction runs in a transaction of its
    /// own, so that both of its steps reach the same server connection. A statement without
    /// arguments (`execute_unprepared`) is one message and runs as it is. Costs two to three
    /// round trips per statement outside a transaction and one per transaction.
    TransactionPooled,
}

/// The service's connection pool: sea-orm's, with the [`PoolMode`] its statements need.
/// Queries take it as any sea-orm connection.
#[derive(Debug, Clone)]
pub struct Pool {
    conn: DatabaseConnection,
    mode: PoolMode,
    /// A connection for the batch writer alone, if it has one ([`Pool::writer`]).
    writer: Option<DatabaseConnection>,
}

/// A pool that runs statements as sea-orm does ([`PoolMode::Direct`]).
impl From<DatabaseConnection> for Pool {
    fn from(conn: DatabaseConnection) -> Self {
        Self::new(conn, PoolMode::Direct)
    }
}

impl Pool {
    /// Wraps sea-orm's pool.
    pub fn new(conn: DatabaseConnection, mode: PoolMode) -> Self {
        Self {
            conn,
            mode,
            writer: None,
        }
    }

    /// This pool, with `writer` (a pool of one connection to the same database) kept for the
    /// batch writer.
    pub fn with_writer(self, writer: DatabaseConnection) -> Self {
        Self {
            writer: Some(writer),
            ..self
        }
    }

    /// Where the batch writer writes: its own connection if it has one, else this pool.
    pub fn writer(&self) -> Pool {
        match &self.writer {
            Some(writer) => Pool::new(writer.clone(), self.mode),
            None => self.clone(),
        }
    }

    /// How statements run.
    pub fn mode(&self) -> PoolMode {
        self.mode
    }

    /// Whether the database answers.
    pub async fn ping(&self) -> Result<(), DbErr> {
        self.conn.ping().await
    }

    /// Closes the pool's connections.
    pub async fn close(&self) -> Result<(), DbErr> {
        if let Some(writer) = &self.writer {
            writer.close_by_ref().await?;
        }
        self.conn.close_by_ref().await
    }

    /// sea-orm's pool itself, for what takes only sea-orm's own type (such as the migrator).
    /// It runs statements as [`PoolMode::Direct`] does, whatever this pool's mode.
    pub fn connection(&self) -> &DatabaseConnection {
        &self.conn
    }

    /// Runs `run` in a transaction of its own: committed when it succeeds, else rolled back
    /// (and its error, not the rollback's, returned).
    async fn alone<T>(
        &self,
        run: impl for<'t> FnOnce(
            &'t DatabaseTransaction,
        ) -> Pin<Box<dyn Future<Output = Result<T, DbErr>> + Send + 't>>,
    ) -> Result<T, DbErr> {
        let txn = self.begin().await?;
        match run(&txn).await {
            Ok(value) => {
                txn.commit().await?;
                Ok(value)
            }
            Err(e) => {
                let _ = txn.rollback().await;
                Err(e)
            }
        }
    }
}

#[async_trait::async_trait]
impl ConnectionTrait for Pool {
    fn get_database_backend(&self) -> DbBackend {
        self.conn.get_database_backend()
    }

    async fn execute(&self, stmt: Statement) -> Result<ExecResult, DbErr> {
        match self.mode {
            PoolMode::Direct => self.conn.execute(stmt).await,
            PoolMode::TransactionPooled => self.alone(move |txn| Box::pin(txn.execute(stmt))).await,
        }
    }

    async fn execute_unprepared(&self, sql: &str) -> Result<ExecResult, DbErr> {
        self.conn.execute_unprepared(sql).await
    }

    async fn query_one(&self, stmt: Statement) -> Result<Option<QueryResult>, DbErr> {
        match self.mode {
            PoolMode::Direct => self.conn.query_one(stmt).await,
            PoolMode::TransactionPooled => self.alone(move |txn| Box::pin(txn.query_one(stmt))).await,
        }
    }

    async fn query_all(&self, stmt: Statement) -> Result<Vec<QueryResult>, DbErr> {
        match self.mode {
            PoolMode::Direct => self.conn.query_all(stmt).await,
            PoolMode::TransactionPooled => self.alone(move |txn| Box::pin(txn.query_all(stmt))).await,
        }
    }

    fn support_returning(&self) -> bool {
        self.conn.support_returning()
    }

    fn is_mock_connection(&self) -> bool {
        self.conn.is_mock_connection()
    }
}

#[async_trait::async_trait]
impl TransactionTrait for Pool {
    async fn begin(&self) -> Result<DatabaseTransaction, DbErr> {
        match self.mode {
            PoolMode::Direct => self.conn.begin().await,
            PoolMode::TransactionPooled => self.begin_with_config(None, None).await,
        }
    }

    async fn begin_with_config(
        &self,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<DatabaseTransaction, DbErr> {
        match self.mode {
            PoolMode::Direct => self.conn.begin_with_config(isolation_level, access_mode).await,
            PoolMode::TransactionPooled => {
                // sea-orm would set the isolation level with a prepared statement, before the
                // names are free: set it here, in the same message.
                let txn = self.conn.begin().await?;
                let mut sql = "DEALLOCATE ALL".to_owned();
                if let Some(level) = isolation_level {
                    sql.push_str(&format!("; SET TRANSACTION ISOLATION LEVEL {level}"));
                }
                if let Some(mode) = access_mode {
                    sql.push_str(&format!("; SET TRANSACTION {mode}"));
                }
                txn.execute_unprepared(&sql).await?;
                Ok(txn)
            }
        }
    }

    async fn transaction<F, T, E>(&self, callback: F) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        self.transaction_with_config(callback, None, None).await
    }

    async fn transaction_with_config<F, T, E>(
        &self,
        callback: F,
        isolation_level: Option<IsolationLevel>,
        access_mode: Option<AccessMode>,
    ) -> Result<T, TransactionError<E>>
    where
        F: for<'c> FnOnce(&'c DatabaseTransaction) -> Pin<Box<dyn Future<Output = Result<T, E>> + Send + 'c>>
            + Send,
        T: Send,
        E: std::fmt::Display + std::fmt::Debug + Send,
    {
        if self.mode == PoolMode::Direct {
            return self
                .conn
                .transaction_with_config(callback, isolation_level, access_mode)
                .await;
        }
        let txn = self
            .begin_with_config(isolation_level, access_mode)
            .await
            .map_err(TransactionError::Connection)?;
        match callback(&txn).await {
            Ok(value) => {
                txn.commit().await.map_err(TransactionError::Connection)?;
                Ok(value)
            }
            Err(e) => {
                txn.rollback().await.map_err(TransactionError::Connection)?;
                Err(TransactionError::Transaction(e))
            }
        }
    }
}
