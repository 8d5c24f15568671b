//! `/api/v1/calls`: handlers and the call shapes.
use chrono::{DateTime, Utc};
use entity::{
    media_session,
    states::{CallStatus, EndReason, FallbackReason, MediaSessionStatus, Outcome},
};
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    Object, OpenApi,
};

use super::{
    common::{paging, List},
    AdminOrTenantKey, ApiTags,
};
use crate::{
    domain::admin::{self, CallRecord},
    error::AdminError,
    state::AppState,
};

/// Call records.
pub struct CallsApi {
    pub state: AppState,
}

#[OpenApi(tag = "ApiTags::Calls")]
impl CallsApi {
    /// List calls, newest first
    #[oai(path = "/api/v1/calls", method = "get", operation_id = "listCalls")]
    async fn list(
        &self,
        auth: AdminOrTenantKey,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Call>>, AdminError> {
        let scope = auth.caller().list_scope(tenant_id.0.as_deref())?;
        // Retries this instance answered are counted in what it reads.
        self.state.writer.settle().await;
        let page = admin::list_calls(&self.state.db, &scope, &paging(limit, cursor)).await?;
        Ok(Json(List::from_page(page)))
    }

    /// Get a call by CallSid, with its media sessions
    #[oai(path = "/api/v1/calls/:call_sid", method = "get", operation_id = "getCall")]
    async fn get(&self, auth: AdminOrTenantKey, call_sid: Path<String>) -> Result<Json<Call>, AdminError> {
        let scope = auth.caller().scope();
        self.state.writer.settle().await;
        Ok(Json(
            admin::call(&self.state.db, &scope, &call_sid.0).await?.into(),
        ))
    }
}

/// A media stream session of a call.
#[derive(Debug, Object)]
pub struct MediaSession {
    pub id: String,
    #[oai(nullable)]
    pub stream_sid: Option<String>,
    pub status: MediaSessionStatus,
    /// Why the stream ended; null while it is open.
    #[oai(nullable)]
    pub end_reason: Option<EndReason>,
    pub received_stop: bool,
    pub inbound_frames: i64,
    pub outbound_frames: i64,
    pub malformed_frames: i64,
    pub started_at: DateTime<Utc>,
    #[oai(nullable)]
    pub ended_at: Option<DateTime<Utc>>,
}

impl From<media_session::Model> for MediaSession {
    fn from(m: media_session::Model) -> Self {
        Self {
            id: m.id,
            stream_sid: m.stream_sid,
            status: m.status,
            end_reason: m.end_reason,
            received_stop: m.received_stop,
            inbound_frames: m.inbound_frames,
            outbound_frames: m.outbound_frames,
            malformed_frames: m.malformed_frames,
            started_at: m.started_at,
            ended_at: m.ended_at,
        }
    }
}

/// A call record.
#[derive(Debug, Object)]
pub struct Call {
    pub id: String,
    pub call_sid: String,
    pub tenant_id: String,
    pub route_id: String,
    pub from: String,
    pub to: String,
    /// Twilio's latest CallStatus.
    pub status: CallStatus,
    pub outcome: Outcome,
    #[oai(nullable)]
    pub fallback_reason: Option<FallbackReason>,
    /// Deliveries of the voice webhook for this call (1 + retries).
    pub attempts: i32,
    #[oai(nullable)]
    pub error_code: Option<String>,
    #[oai(nullable)]
    pub error_url: Option<String>,
    #[oai(nullable)]
    pub duration_secs: Option<i32>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[oai(nullable)]
    pub ended_at: Option<DateTime<Utc>>,
    pub media_sessions: Vec<MediaSession>,
}

impl From<CallRecord> for Call {
    fn from(
        CallRecord {
            call: c,
            media_sessions,
        }: CallRecord,
    ) -> Self {
        Self {
            id: c.id,
            call_sid: c.call_sid,
            tenant_id: c.tenant_id,
            route_id: c.route_id,
            from: c.from_number,
            to: c.to_number,
            status: c.status,
            outcome: c.outcome,
            fallback_reason: c.fallback_reason,
            attempts: c.attempts,
            error_code: c.error_code,
            error_url: c.error_url,
            duration_secs: c.duration_secs,
            created_at: c.created_at,
            updated_at: c.updated_at,
            ended_at: c.ended_at,
            media_sessions: media_sessions.into_iter().map(Into::into).collect(),
        }
    }
}
