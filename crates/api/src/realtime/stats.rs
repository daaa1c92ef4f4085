//! `GET /api/realtime/stats/`: connections on this instance and group sizes.

use std::collections::BTreeMap;

use actix_web::{HttpResponse, web};
use newspaper_events::GroupName;
use serde::Serialize;
use utoipa::ToSchema;

use super::envelope::BLOG_FEED_GROUP;
use crate::ApiError;
use crate::auth::MaybeAuthenticated;
use crate::error::ErrorDetail;
use crate::state::AppState;

/// Live-feed statistics.
#[derive(Debug, Serialize, ToSchema)]
pub struct RealtimeStats {
    /// This instance's name.
    pub instance: String,
    /// WebSocket connections open on this instance.
    pub connections: usize,
    /// Members per group across all instances: `blog_feed` for everyone; staff also see the
    /// `post.<id>` groups with members on this instance.
    pub groups: BTreeMap<String, usize>,
}

/// Connection and group counts of the live feed.
#[utoipa::path(get, path = "/api/realtime/stats/", tag = "realtime",
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "Connections on this instance and group sizes", body = RealtimeStats),
        (status = 401, description = "A token was sent and is invalid", body = ErrorDetail)))]
pub async fn realtime_stats(
    state: web::Data<AppState>,
    auth: MaybeAuthenticated,
) -> Result<HttpResponse, ApiError> {
    let feed = GroupName::new(BLOG_FEED_GROUP)?;
    let mut groups = BTreeMap::new();
    groups.insert(feed.as_str().to_owned(), state.layer.group_size(&feed).await?);
    if auth.viewer().is_staff() {
        let mut local = state.layer.local_groups();
        local.sort_by_key(|(_, size)| std::cmp::Reverse(*size));
        for (group, _) in
            local.into_iter().filter(|(g, _)| g.as_str().starts_with("post.")).take(100)
        {
            let size = state.layer.group_size(&group).await?;
            groups.insert(group.as_str().to_owned(), size);
        }
    }
    Ok(HttpResponse::Ok().json(RealtimeStats {
        instance: state.realtime.instance().to_owned(),
        connections: state.realtime.connections(),
        groups,
    }))
}
