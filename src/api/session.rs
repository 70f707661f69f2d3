//! What a client (the dashboard at `/ui`) needs to know to offer only what it
//! may: who its token names and with what role (`GET /auth/me`), and which
//! agent images a job may name (`GET /images`).

use axum::Json;
use axum::extract::State;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::AppState;
use super::auth::{Caller, role_name};
use super::error::{ApiResult, ErrorBody};
use crate::config::AccessRole;

/// `GET /auth/me`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Me {
    /// The token's holder (`anonymous` with authentication off).
    pub name: String,
    /// `viewer`, `submitter`, `approver` or `admin` (each may do what the
    /// ones before it may); `admin` with authentication off.
    #[schema(pattern = "^(viewer|submitter|approver|admin)$", example = "approver")]
    pub role: String,
    /// Whether the server asks for a token (`auth.enabled`).
    pub authentication: bool,
}

/// Who the caller is: the holder and role of its token.
#[utoipa::path(get, path = "/auth/me", tag = "service", operation_id = "get_caller",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The caller's name and role", body = Me),
        (status = 403, description = "Refused: a foreign Host with authentication off", body = ErrorBody),
    ))]
pub async fn me(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Me>> {
    caller.require(AccessRole::Viewer, "reading who you are")?;
    Ok(Json(Me {
        name: caller.name,
        role: role_name(caller.role).to_owned(),
        authentication: state.auth.enabled(),
    }))
}

/// `GET /images`.
#[derive(Debug, Serialize, Deserialize, ToSchema)]
pub struct Images {
    /// The builder image a job gets when it names none (`agents.builder.image_name`).
    pub builder: String,
    /// The checker image a job gets when it names none (`agents.checker.image_name`).
    pub checker: String,
    /// Other images a job may name (`agents.allowed_images`): names, or
    /// prefixes ending in `*`.
    pub allowed: Vec<String>,
}

/// The agent images a job may name as `builder_image` or `checker_image`.
#[utoipa::path(get, path = "/images", tag = "jobs", operation_id = "list_images",
    security(("api_token" = [])),
    responses(
        (status = 200, description = "The configured images and the allowed others", body = Images),
        (status = 403, description = "Refused: a foreign Host with authentication off (every role may read)", body = ErrorBody),
    ))]
pub async fn images(State(state): State<AppState>, caller: Caller) -> ApiResult<Json<Images>> {
    caller.require(AccessRole::Viewer, "reading the images")?;
    let choice = &state.policy.images;
    Ok(Json(Images {
        builder: choice.builder.clone(),
        checker: choice.checker.clone(),
        allowed: choice.allowed.clone(),
    }))
}
