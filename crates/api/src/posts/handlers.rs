//! /api/posts/: DRF ModelViewSet behaviour (list, create, retrieve, update, partial update,
//! destroy). Every write commits its outbox event with it and wakes the dispatcher.

use std::sync::Arc;

use actix_web::http::header::{self, ContentType};
use actix_web::{HttpRequest, HttpResponse, web};
use bytes::Bytes;
use newspaper_domain::{Post, PostId, Seq, Viewer, now};
use newspaper_persistence::{DbConnection, Page, PostRepository, ReadHead, Visibility};

use super::cache::PageTurn;
use super::input::PostInput;
use super::list::{ListRequest, PageNumber};
use crate::ApiError;
use crate::auth::{Authenticated, MaybeBearer};
use crate::error::ErrorDetail;
use crate::json_body::JsonObject;
use crate::openapi::{
    BadRequestBody, ListPostsParams, PostListPage, PostPatch, PostWrite, ValidationErrorBody,
};
use crate::state::AppState;

/// Whether `viewer` may change `post`: 404 if they cannot see it, 403 if they may not change it.
fn may_change(viewer: &Viewer, post: Option<Post>) -> Result<Post, ApiError> {
    let post =
        post.filter(|p| viewer.can_see(p.author.id, p.status)).ok_or_else(ApiError::not_found)?;
    if viewer.can_modify(post.author.id) { Ok(post) } else { Err(ApiError::forbidden()) }
}

/// The post `viewer` wants to change, read (no lock) to answer before the body is looked at.
fn check_change(conn: &mut DbConnection, viewer: &Viewer, id: PostId) -> Result<Post, ApiError> {
    may_change(viewer, PostRepository::find(conn, id)?)
}

/// The post `viewer` is changing, locked in the write transaction: the change applies to the
/// row as it is now, not as it was when the request was checked.
fn lock_for_change(conn: &mut DbConnection, viewer: &Viewer, id: PostId) -> Result<Post, ApiError> {
    may_change(viewer, PostRepository::find_for_update(conn, id)?)
}

/// The header that tells which feed position a response was read at: open the feed with
/// `?since=` this value to receive exactly the changes after it.
pub const FEED_SEQ_HEADER: &str = "X-Feed-Seq";

/// A JSON body read at feed position `seq`.
fn json_at(seq: Seq, body: Bytes) -> HttpResponse {
    HttpResponse::Ok()
        .content_type(ContentType::json())
        .insert_header((FEED_SEQ_HEADER, seq.0.to_string()))
        .body(body)
}

/// The request's own URL without its query, for pagination links.
fn base_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}{}", info.scheme(), info.host(), req.path())
}

/// List the posts the caller may see.
#[utoipa::path(get, path = "/api/posts/", tag = "posts", params(ListPostsParams),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "A page of the posts the caller may see: numbered (with `count`), or by `cursor`", body = PostListPage,
            headers(("X-Feed-Seq" = i64,
            description = "The feed position this page was read at: open /ws/blog/?since= it to stream exactly the changes after it"))),
        (status = 400, description = "An invalid filter or page size", body = ValidationErrorBody),
        (status = 401, description = "A token was sent and is invalid", body = ErrorDetail),
        (status = 404, description = "No such page (\"Invalid page.\") or an unreadable cursor (\"Invalid cursor\")", body = ErrorDetail)))]
pub async fn list_posts(
    state: web::Data<AppState>,
    auth: MaybeBearer,
    req: HttpRequest,
) -> Result<HttpResponse, ApiError> {
    let request = ListRequest::parse(req.query_string())?;
    let base = base_url(&req);
    let url = format!("{base}?{}", req.query_string());
    let generation = state.realtime.generation();
    if auth.0.is_none() {
        // Anonymous readers need no check: a page cached since the last change this instance
        // heard of is served as it is.
        let key = page_key(Visibility::Published, &url);
        if let Some((seq, body)) = state.list_cache.get(&key, generation) {
            return Ok(json_at(seq, body));
        }
    }
    // A reader's account is checked on every request, in one statement that also reads the
    // feed head (and answers the other readers who asked at the same moment). A page read for
    // someone who sees the same posts serves them if the head has not moved since (no post was
    // written): exact, even for a write this instance has not heard of yet. Where the database
    // can tell that nothing at all was committed since a reader's head was read (its commit
    // mark), that head is still exact and needs no query. Readers who miss the same page at
    // the same head wait for one read of it.
    let mark = state.db.commit_mark();
    let author = request.query.author;
    let mut shared = None;
    if let Some(reader) = auth.user_id() {
        let known = mark.and_then(|mark| state.list_heads.get(mark, reader, author));
        let head = match known {
            Some(head) => head,
            None => {
                let head = Arc::new(state.db.read_head(Some(reader), author).await?);
                if let Some(mark) = mark {
                    state.list_heads.put(mark, reader, author, head.clone());
                }
                head
            }
        };
        let key = reader_page_key(&state, &auth, &head, &url)?;
        let cached = state.list_cache.get(&key, generation).filter(|(seq, _)| *seq == head.seq);
        if let Some((seq, body)) = cached {
            return Ok(json_at(seq, body));
        }
        match state.page_reads.turn(&key, head.seq) {
            PageTurn::Wait(page) => {
                if let Ok((seq, body)) = page.await {
                    if seq == head.seq {
                        return Ok(json_at(seq, body));
                    }
                    // Read after a later write: exact for this reader only at that head, if
                    // they still see the same posts there.
                    let now = state.db.read_head(Some(reader), author).await?;
                    if now.seq == seq && reader_page_key(&state, &auth, &now, &url)? == key {
                        return Ok(json_at(seq, body));
                    }
                }
            }
            PageTurn::Read(read) => shared = Some(read),
            PageTurn::Alone => {}
        }
    }
    let plan = request.clone();
    let reader = state.clone();
    // One snapshot for the caller, the page and the feed position, so `X-Feed-Seq` is exact.
    let read = move |conn: &mut DbConnection| {
        let head = PostRepository::read_head(conn, auth.user_id(), plan.query.author)?;
        let viewer = auth.viewer_of(&reader.tokens, head.reader.as_ref())?;
        let (seq, visibility) = (head.seq, head.visibility_of(&viewer));
        if let Some(query) = plan.query_for_cursor() {
            let page = PostRepository::list_at(conn, &viewer, &head, &query)?;
            return Ok::<_, ApiError>(Listed { number: None, page, seq, visibility });
        }
        let number = match plan.page {
            PageNumber::Number(n) => n,
            PageNumber::Last => {
                let only_count =
                    newspaper_persistence::PostQuery { limit: 0, ..plan.query.clone() };
                let count = PostRepository::list_at(conn, &viewer, &head, &only_count)?.count;
                count.div_ceil(plan.page_size).max(1)
            }
        };
        let page = PostRepository::list_at(conn, &viewer, &head, &plan.query_for_page(number))?;
        Ok(Listed { number: Some(number), page, seq, visibility })
    };
    let Listed { number, page, seq, visibility } = state.db.read_snapshot(read).await?;
    let body = match number {
        Some(number) => {
            serde_json::to_vec(&request.paginate(&base, number, page.count, page.items)?)
        }
        None => serde_json::to_vec(&request.paginate_by_cursor(&base, page.items)),
    };
    let body = Bytes::from(body.map_err(|e| ApiError::Internal(e.to_string()))?);
    let key = page_key(visibility, &url);
    let page = (seq, body);
    if let Some(read) = shared {
        read.share(&key, &page);
    }
    state.list_cache.put(key, generation, state.realtime.generation(), page.clone());
    Ok(json_at(page.0, page.1))
}

/// A list as read afresh, in one snapshot.
struct Listed {
    number: Option<u64>,
    page: Page<Post>,
    seq: Seq,
    visibility: Visibility,
}

/// The list cache's key for the page at `url` as `auth`'s reader sees it at `head`, once their
/// account there is checked against their token.
fn reader_page_key(
    state: &AppState,
    auth: &MaybeBearer,
    head: &ReadHead,
    url: &str,
) -> Result<String, ApiError> {
    let viewer = auth.viewer_of(&state.tokens, head.reader.as_ref())?;
    Ok(page_key(head.visibility_of(&viewer), url))
}

/// The list cache's key for the page at `url` as readers of `visibility` see it.
fn page_key(visibility: Visibility, url: &str) -> String {
    match visibility {
        Visibility::Published => url.to_owned(),
        Visibility::Everything => format!("staff {url}"),
        Visibility::PublishedAndDraftsOf(user) => format!("user {} {url}", user.0),
    }
}

/// Create a post; the caller is its author.
#[utoipa::path(post, path = "/api/posts/", tag = "posts", request_body = PostWrite,
    security(("bearer" = [])),
    responses(
        (status = 201, description = "Created; `Location` is its URL", body = Post,
            headers(("Location" = String, description = "The new post's URL"))),
        (status = 400, description = "Invalid fields, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "No valid access token", body = ErrorDetail)))]
pub async fn create_post(
    state: web::Data<AppState>,
    Authenticated(user): Authenticated,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    let body = JsonObject::read(&req, payload.into_inner()).await?;
    let new = PostInput::parse(&body, true)?
        .into_new_post()
        .ok_or_else(|| ApiError::field("title", "This field is required."))?;
    let author = user.user.as_author();
    let (post, _) = state.db.create_post(author, new, now()).await?;
    state.realtime.committed();
    Ok(HttpResponse::Created()
        .insert_header((
            header::LOCATION,
            format!("{}/api/posts/{}/", crate::MountPath::of(&req), post.id),
        ))
        .json(post))
}

/// One post; drafts of others are "not found".
#[utoipa::path(get, path = "/api/posts/{id}/", tag = "posts",
    params(("id" = i64, Path, description = "Post id")),
    security((), ("bearer" = [])),
    responses(
        (status = 200, description = "The post", body = Post, headers(("X-Feed-Seq" = i64,
            description = "The feed position this post was read at"))),
        (status = 401, description = "A token was sent and is invalid", body = ErrorDetail),
        (status = 404, description = "No such post, or a draft the caller may not see", body = ErrorDetail)))]
pub async fn retrieve_post(
    state: web::Data<AppState>,
    auth: MaybeBearer,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (reader, id) = (state.clone(), PostId(id.into_inner()));
    let (post, seq) = state
        .db
        .read_snapshot(move |conn| {
            let head = PostRepository::read_head(conn, auth.user_id(), None)?;
            let viewer = auth.viewer_of(&reader.tokens, head.reader.as_ref())?;
            Ok::<_, ApiError>((PostRepository::find_visible_to(conn, &viewer, id)?, head.seq))
        })
        .await?;
    let post = post.ok_or_else(ApiError::not_found)?;
    let body = serde_json::to_vec(&post).map_err(|e| ApiError::Internal(e.to_string()))?;
    Ok(json_at(seq, Bytes::from(body)))
}

async fn update(
    state: web::Data<AppState>,
    user: crate::auth::AuthUser,
    id: PostId,
    req: HttpRequest,
    payload: web::Payload,
    full: bool,
) -> Result<HttpResponse, ApiError> {
    let viewer = user.viewer();
    // Permission before the body, as DRF does: a stranger learns nothing from validation.
    state.db.read(move |conn| check_change(conn, &viewer, id)).await?;
    let body = JsonObject::read(&req, payload.into_inner()).await?;
    let changes = PostInput::parse(&body, full)?.into_changes();
    let post = state
        .db
        .write(move |conn| {
            let current = lock_for_change(conn, &viewer, id)?;
            Ok::<_, ApiError>(PostRepository::update(conn, &current, changes, now())?.0)
        })
        .await?;
    state.realtime.committed();
    Ok(HttpResponse::Ok().json(post))
}

/// Replace a post's fields (`title` required; fields not sent keep their values).
#[utoipa::path(put, path = "/api/posts/{id}/", tag = "posts", request_body = PostWrite,
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post as changed", body = Post),
        (status = 400, description = "Invalid fields, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "No valid access token", body = ErrorDetail),
        (status = 403, description = "Neither the author nor staff", body = ErrorDetail),
        (status = 404, description = "No such post, or a draft the caller may not see", body = ErrorDetail)))]
pub async fn update_post(
    state: web::Data<AppState>,
    Authenticated(user): Authenticated,
    id: web::Path<i64>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(state, user, PostId(id.into_inner()), req, payload, true).await
}

/// Change some of a post's fields.
#[utoipa::path(patch, path = "/api/posts/{id}/", tag = "posts",
    request_body(content = Option<PostPatch>, description = "The fields to change (an empty body changes none)"),
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 200, description = "The post as changed", body = Post),
        (status = 400, description = "Invalid fields, or the body is not JSON", body = BadRequestBody),
        (status = 401, description = "No valid access token", body = ErrorDetail),
        (status = 403, description = "Neither the author nor staff", body = ErrorDetail),
        (status = 404, description = "No such post, or a draft the caller may not see", body = ErrorDetail)))]
pub async fn partial_update_post(
    state: web::Data<AppState>,
    Authenticated(user): Authenticated,
    id: web::Path<i64>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    update(state, user, PostId(id.into_inner()), req, payload, false).await
}

/// Delete a post.
#[utoipa::path(delete, path = "/api/posts/{id}/", tag = "posts",
    params(("id" = i64, Path, description = "Post id")),
    security(("bearer" = [])),
    responses(
        (status = 204, description = "Deleted"),
        (status = 401, description = "No valid access token", body = ErrorDetail),
        (status = 403, description = "Neither the author nor staff", body = ErrorDetail),
        (status = 404, description = "No such post, or a draft the caller may not see", body = ErrorDetail)))]
pub async fn destroy_post(
    state: web::Data<AppState>,
    Authenticated(user): Authenticated,
    id: web::Path<i64>,
) -> Result<HttpResponse, ApiError> {
    let (viewer, id) = (user.viewer(), PostId(id.into_inner()));
    state
        .db
        .write(move |conn| {
            let current = lock_for_change(conn, &viewer, id)?;
            Ok::<_, ApiError>(PostRepository::delete(conn, &current, now())?)
        })
        .await?;
    state.realtime.committed();
    Ok(HttpResponse::NoContent().finish())
}
