//! Batches written through sea-orm: the lanes on PostgreSQL.
use std::collections::HashSet;

use chrono::Utc;
use entity::{call, call_webhook, outbox_event};
use sea_orm::{
    sea_query::OnConflict, ConnectionTrait, DbErr, EntityTrait, IntoActiveModel, QueryTrait, TransactionTrait,
};

use super::{Batches, Job, NewCall, Plan};
use crate::db::{calls, Pool};

/// Writes each batch in a transaction of the pool's.
pub(super) struct SeaOrm<'a>(pub &'a Pool);

impl Batches for SeaOrm<'_> {
    async fn write(&mut self, jobs: &[Job]) -> Result<Vec<bool>, DbErr> {
        let plan = Plan::of(jobs);
        let txn = self.0.begin().await?;
        let mut claimed = vec![false; jobs.len()];
        if !plan.candidates.is_empty() {
            let mut insert = call::Entity::insert_many(
                plan.candidates
                    .iter()
                    .map(|(_, c)| c.call.clone().into_active_model()),
            )
            .on_conflict(OnConflict::column(call::Column::CallSid).do_nothing().to_owned())
            .into_query();
            insert.returning_col(call::Column::CallSid);
            let rows = txn.query_all(txn.get_database_backend().build(&insert)).await?;
            let inserted = rows
                .iter()
                .map(|row| row.try_get::<String>("", "call_sid"))
                .collect::<Result<HashSet<_>, _>>()?;
            let won: Vec<&NewCall> = plan
                .candidates
                .iter()
                .filter(|(_, c)| inserted.contains(&c.call.call_sid))
                .map(|&(i, c)| {
                    claimed[i] = true;
                    c
                })
                .collect();
            if !won.is_empty() {
                call_webhook::Entity::insert_many(won.iter().map(|c| c.answer.clone().into_active_model()))
                    .exec_without_returning(&txn)
                    .await?;
                outbox_event::Entity::insert_many(won.iter().map(|c| c.event.clone().into_active_model()))
                    .exec_without_returning(&txn)
                    .await?;
            }
        }
        let now = Utc::now();
        for (&by, ids) in &plan.calls {
            calls::add_attempts(ids.iter().copied(), by, now)
                .exec(&txn)
                .await?;
        }
        for (&by, ids) in &plan.answers {
            calls::add_webhook_attempts(ids.iter().copied(), by, now)
                .exec(&txn)
                .await?;
        }
        txn.commit().await?;
        Ok(claimed)
    }
}
