//! `/api/v1/calls`.
use poem_openapi::{
    param::{Path, Query},
    payload::Json,
    OpenApi,
};

use super::{models::*, tenants::DEFAULT_LIMIT, AdminAuth, ApiTags};
use crate::{db, error::AdminError, state::AppState};

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
        _auth: AdminAuth,
        tenant_id: Query<Option<String>>,
        #[oai(validator(minimum(value = "1"), maximum(value = "100")))] limit: Query<Option<u64>>,
        cursor: Query<Option<String>>,
    ) -> Result<Json<List<Call>>, AdminError> {
        let db = &self.state.db;
        let page = db::calls::list(
            db,
            tenant_id.0.as_deref(),
            cursor.0.as_deref(),
            limit.0.unwrap_or(DEFAULT_LIMIT),
        )
        .await?;
        let ids: Vec<String> = page.items.iter().map(|c| c.id.clone()).collect();
        let mut sessions = db::calls::media_sessions_of(db, &ids).await?;
        let items = page
            .items
            .into_iter()
            .map(|c| {
                let own = sessions.remove(&c.id).unwrap_or_default();
                Call::new(c, own)
            })
            .collect();
        Ok(Json(List {
            items,
            next_cursor: page.next_cursor,
        }))
    }

    /// Get a call by CallSid, with its media sessions
    #[oai(path = "/api/v1/calls/:call_sid", method = "get", operation_id = "getCall")]
    async fn get(&self, _auth: AdminAuth, call_sid: Path<String>) -> Result<Json<Call>, AdminError> {
        let db = &self.state.db;
        let call = db::calls::by_sid(db, &call_sid.0)
            .await?
            .ok_or_else(|| AdminError::not_found("call"))?;
        let sessions = db::calls::media_sessions(db, &call.id).await?;
        Ok(Json(Call::new(call, sessions)))
    }
}
