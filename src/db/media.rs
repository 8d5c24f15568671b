//! Media sessions. The unique token id makes each stream token usable once, across instances.
use chrono::Utc;
use entity::{
    media_session,
    states::{EndReason, MediaSessionStatus},
};
use sea_orm::{ActiveModelTrait, ConnectionTrait, DbErr, Set};

use entity::id::new_id;

/// Opens a session for a call with the token id `jti`; `None` when the token was used already.
pub async fn open<C: ConnectionTrait>(
    db: &C,
    call_id: &str,
    jti: &str,
    stream_sid: &str,
) -> Result<Option<media_session::Model>, DbErr> {
    let inserted = media_session::ActiveModel {
        id: Set(new_id()),
        call_id: Set(call_id.to_owned()),
        token_jti: Set(jti.to_owned()),
        stream_sid: Set(Some(stream_sid.to_owned())),
        status: Set(MediaSessionStatus::Open),
        end_reason: Set(None),
        received_stop: Set(false),
        inbound_frames: Set(0),
        outbound_frames: Set(0),
        malformed_frames: Set(0),
        started_at: Set(Utc::now()),
        ended_at: Set(None),
    }
    .insert(db)
    .await;
    match inserted {
        Ok(model) => Ok(Some(model)),
        Err(e) if super::is_unique_violation(&e) => Ok(None),
        Err(e) => Err(e),
    }
}

/// Frame counts of a finished session.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub inbound: i64,
    pub outbound: i64,
    pub malformed: i64,
}

/// Closes a session with its counts and why it ended.
pub async fn close<C: ConnectionTrait>(
    db: &C,
    session: media_session::Model,
    counts: Counts,
    end_reason: EndReason,
    received_stop: bool,
) -> Result<media_session::Model, DbErr> {
    let mut active: media_session::ActiveModel = session.into();
    active.status = Set(MediaSessionStatus::Ended);
    active.end_reason = Set(Some(end_reason));
    active.received_stop = Set(received_stop);
    active.inbound_frames = Set(counts.inbound);
    active.outbound_frames = Set(counts.outbound);
    active.malformed_frames = Set(counts.malformed);
    active.ended_at = Set(Some(Utc::now()));
    active.update(db).await
}
