//! Admin handlers: model and deployment views, promote, shadows, thresholds, policies, rollback,
//! downloads, rescan, and the OIP repository extension's load/unload. Every change is applied by
//! `serving` and answered with the model's new deployment and its revision as the `ETag`; every
//! change to one model accepts `If-Match: "<revision>"` (412 with the current deployment when
//! it is stale).

use super::registry_guard::check_registry;
use super::revision::etag;
use super::revision::{deployment_response, expected_revision};
use super::v2_types::parse_json;
use super::{ApiError, AppState, body};
use crate::mlflow::SyncView;
use crate::replication::FleetView;
use crate::serving::{
    DeployPolicy, DeploymentState, ModelHistory, ModelMonitoring, ModelReport, ScanOutcome,
    ServingError,
};
use crate::store::AuditEntry;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::{Json, Router};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The admin routes (authentication is layered on by the caller).
pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/admin/models", get(list_models))
        .route("/admin/models/{model}", get(show_model))
        .route("/admin/models/{model}/champion", put(promote))
        .route(
            "/admin/models/{model}/shadows/{version}",
            put(set_shadow).delete(remove_shadow),
        )
        .route("/admin/models/{model}/threshold", put(set_threshold))
        .route("/admin/models/{model}/policy", put(set_policy))
        .route("/admin/models/{model}/rollback", post(rollback))
        .route(
            "/admin/models/{model}/versions/{version}/download",
            get(download),
        )
        .route("/admin/repository/rescan", post(rescan))
        .route("/admin/models/{model}/monitoring", get(monitoring))
        .route("/admin/models/{model}/monitoring/evaluate", post(evaluate))
        .route("/admin/models/{model}/monitoring/history", get(history))
        .route("/admin/models/{model}/audit", get(audit))
        .route("/admin/replicas", get(replicas))
        .route(
            "/admin/models/{model}/quality",
            get(super::feedback::quality),
        )
        .route(
            "/admin/models/{model}/promotion",
            put(super::feedback::set_promotion),
        )
        .route(
            "/admin/models/{model}/retrain",
            get(super::feedback::retrain).put(super::feedback::set_retrain),
        )
        .route("/v2/repository/models/{model}/load", post(load))
        .route("/v2/repository/models/{model}/unload", post(unload))
}

/// A model on the version board: its deployment and versions, and for a model that follows a
/// registry, what the registry says and when it was last read.
#[derive(Serialize)]
struct BoardModel {
    #[serde(flatten)]
    report: ModelReport,
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<SyncView>,
}

fn board_model(app: &AppState, state: &DeploymentState) -> BoardModel {
    BoardModel {
        report: ModelReport::of(state),
        registry: app
            .registry_sync()
            .filter(|_| app.registry().follows_registry(&state.model))
            .and_then(|sync| sync.view(&state.model, Some(state))),
    }
}

#[derive(Serialize)]
struct ModelList {
    models: Vec<BoardModel>,
    /// Every model the registry sync follows, by name, served or not yet (a model whose first
    /// sync failed is only here).
    #[serde(skip_serializing_if = "Option::is_none")]
    registry: Option<BTreeMap<String, SyncView>>,
}

async fn list_models(State(app): State<AppState>) -> Json<ModelList> {
    let models = app
        .registry()
        .models()
        .iter()
        .map(|m| board_model(&app, &m.deployment()))
        .collect();
    let registry = app.registry_sync().map(|sync| {
        sync.models()
            .into_iter()
            .filter_map(|name| {
                let state = app.registry().deployment(&name).ok();
                sync.view(&name, state.as_deref()).map(|view| (name, view))
            })
            .collect()
    });
    Json(ModelList { models, registry })
}

async fn show_model(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    let state = app.registry().deployment(&model)?;
    let mut response = Json(board_model(&app, &state)).into_response();
    response
        .headers_mut()
        .insert(header::ETAG, etag(state.revision));
    Ok(response)
}

/// The optional body of a change that takes nothing but `{"force": true}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct ForceRequest {
    #[serde(default)]
    force: bool,
}

/// `force` from an optional JSON body (an empty body is `false`).
async fn optional_force(app: &AppState, headers: &HeaderMap, body: Body) -> Result<bool, ApiError> {
    body::json_format(headers)?;
    let bytes = body::read_limited(headers, body, app.max_body_bytes()).await?;
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(false);
    }
    let request: ForceRequest = parse_json(&bytes)?;
    Ok(request.force)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ChampionRequest {
    version: String,
    #[serde(default)]
    force: bool,
}

async fn promote(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let request: ChampionRequest = body::json(&headers, body, app.max_body_bytes()).await?;
    check_registry(&app, &model, request.force)?;
    let report = app
        .registry()
        .promote(&model, &request.version, expected)
        .await?;
    Ok(deployment_response(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ShadowRequest {
    fraction: f64,
    #[serde(default)]
    force: bool,
}

async fn set_shadow(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let request: ShadowRequest = body::json(&headers, body, app.max_body_bytes()).await?;
    check_registry(&app, &model, request.force)?;
    let report = app
        .registry()
        .set_shadow(&model, &version, request.fraction, expected)
        .await?;
    Ok(deployment_response(report))
}

async fn remove_shadow(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    check_registry(&app, &model, optional_force(&app, &headers, body).await?)?;
    let report = app
        .registry()
        .remove_shadow(&model, &version, expected)
        .await?;
    Ok(deployment_response(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ThresholdRequest {
    threshold: f64,
}

async fn set_threshold(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let request: ThresholdRequest = body::json(&headers, body, app.max_body_bytes()).await?;
    let report = app
        .registry()
        .set_threshold(&model, request.threshold, expected)
        .await?;
    Ok(deployment_response(report))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PolicyRequest {
    policy: DeployPolicy,
}

async fn set_policy(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let request: PolicyRequest = body::json(&headers, body, app.max_body_bytes()).await?;
    let report = app
        .registry()
        .set_policy(&model, request.policy, expected)
        .await?;
    Ok(deployment_response(report))
}

async fn rollback(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    check_registry(&app, &model, optional_force(&app, &headers, body).await?)?;
    let report = app.registry().rollback(&model, expected).await?;
    Ok(deployment_response(report))
}

#[derive(Serialize)]
struct RescanResponse {
    found: Vec<ScanOutcome>,
}

/// Rescans the repository. It changes any number of models, so it takes no `If-Match`.
async fn rescan(
    State(app): State<AppState>,
    headers: HeaderMap,
) -> Result<Json<RescanResponse>, ApiError> {
    if headers.contains_key(header::IF_MATCH) {
        return Err(ApiError::bad_request(
            "If-Match",
            "a rescan changes any number of models; send If-Match with a change to one model",
        ));
    }
    Ok(Json(RescanResponse {
        found: app.registry().rescan().await?,
    }))
}

async fn monitoring(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMonitoring>, ApiError> {
    Ok(Json(app.registry().monitoring(&model)?))
}

/// The monitoring history of the model's served versions (points oldest first).
async fn history(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelHistory>, ApiError> {
    Ok(Json(app.registry().history(&model)?))
}

/// The replicas sharing the database: what each serves, how far behind it is, its heartbeat.
async fn replicas(State(app): State<AppState>) -> Result<Json<FleetView>, ApiError> {
    let replication = app.replication().ok_or(ApiError::NotReplicated)?;
    Ok(Json(
        replication.fleet().await.map_err(ServingError::State)?,
    ))
}

/// Audit entries answered at most (`?limit=`).
const AUDIT_LIMIT: usize = 1000;
/// Audit entries answered without `?limit=`.
const AUDIT_DEFAULT: usize = 50;

/// The model's audit log.
#[derive(Serialize)]
struct AuditView {
    model: String,
    entries: Vec<AuditEntry>,
}

/// The model's newest audited deployment changes, newest first (`?limit=`, 1–1000, default 50).
async fn audit(
    State(app): State<AppState>,
    Path(model): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Json<AuditView>, ApiError> {
    let mut limit = AUDIT_DEFAULT;
    for (key, value) in query
        .as_deref()
        .unwrap_or_default()
        .split('&')
        .filter(|pair| !pair.is_empty())
        .map(|pair| pair.split_once('=').unwrap_or((pair, "")))
    {
        match key {
            "limit" => {
                limit = value
                    .parse()
                    .ok()
                    .filter(|n| (1..=AUDIT_LIMIT).contains(n))
                    .ok_or_else(|| ApiError::BadRequest {
                        field: "limit".into(),
                        expected: format!("an integer from 1 to {AUDIT_LIMIT}, got `{value}`"),
                    })?;
            }
            other => {
                return Err(ApiError::BadRequest {
                    field: other.to_string(),
                    expected: "no such query parameter; the only one is `limit`".into(),
                });
            }
        }
    }
    let entries = app.registry().audit(&model, limit).await?;
    Ok(Json(AuditView { model, entries }))
}

/// Runs the drift evaluation of the model's served versions now, then answers the monitoring view.
async fn evaluate(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelMonitoring>, ApiError> {
    app.registry().evaluate_drift(Some(&model)).await?;
    Ok(Json(app.registry().monitoring(&model)?))
}

/// The repository extension's optional body: `{"parameters": {"version": "2"}}`.
#[derive(Deserialize, Default)]
struct RepositoryRequest {
    #[serde(default)]
    parameters: Option<RepositoryParameters>,
}

/// What a repository load or unload names, in either protocol.
#[derive(Deserialize, Default)]
pub(super) struct RepositoryParameters {
    /// The version to load or unload (a load without one retries every version that is not
    /// ready; an unload needs one).
    #[serde(default)]
    pub version: Option<String>,
    /// Change a model that follows a model registry anyway.
    #[serde(default)]
    pub force: bool,
}

/// A repository extension change.
#[derive(Clone, Copy)]
pub(super) enum RepositoryChange {
    /// Load a version, or retry the ones that are not ready.
    Load,
    /// Stop serving a version.
    Unload,
}

/// Applies a repository extension `change` to `model` through the registry check
/// (`parameters.force`) and the one change path, returning the deployment after it.
///
/// # Errors
/// [`ApiError`] from the registry check or the change.
pub(super) async fn change_repository(
    app: &AppState,
    model: &str,
    change: RepositoryChange,
    parameters: RepositoryParameters,
    expected: Option<u64>,
) -> Result<crate::serving::ModelReport, ApiError> {
    check_registry(app, model, parameters.force)?;
    let version = parameters.version.as_deref();
    Ok(match change {
        RepositoryChange::Load => app.registry().load_model(model, version, expected).await?,
        RepositoryChange::Unload => {
            app.registry()
                .unload_version(model, version, expected)
                .await?
        }
    })
}

/// `POST /v2/repository/models/{model}/load` and `/unload`.
async fn repository_route(
    app: AppState,
    model: String,
    change: RepositoryChange,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    body::json_format(&headers)?;
    let bytes = body::read_limited(&headers, body, app.max_body_bytes()).await?;
    let parameters = if bytes.iter().all(u8::is_ascii_whitespace) {
        RepositoryParameters::default()
    } else {
        let request: RepositoryRequest = parse_json(&bytes)?;
        request.parameters.unwrap_or_default()
    };
    let report = change_repository(&app, &model, change, parameters, expected).await?;
    Ok(deployment_response(report))
}

async fn load(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    repository_route(app, model, RepositoryChange::Load, headers, body).await
}

async fn unload(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    repository_route(app, model, RepositoryChange::Unload, headers, body).await
}

/// The version directory as a gzip-compressed tar archive `<model>-<version>/...`.
async fn download(
    State(app): State<AppState>,
    Path((model, version)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let state = app.registry().deployment(&model)?;
    let entry = state
        .entry(&version)
        .ok_or_else(|| ServingError::UnknownVersion {
            model: model.clone(),
            version: version.clone(),
        })?;
    let prefix = format!("{model}-{version}");
    let dir = entry.dir.path.clone();
    let archive_prefix = prefix.clone();
    let archive = tokio::task::spawn_blocking(move || -> std::io::Result<Vec<u8>> {
        let encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        let mut builder = tar::Builder::new(encoder);
        builder.follow_symlinks(false);
        builder.append_dir_all(&archive_prefix, &dir)?;
        builder.into_inner()?.finish()
    })
    .await
    .map_err(|e| ServingError::interrupted("archiving a version", &e))?
    .map_err(|e| ServingError::Archive {
        model: model.clone(),
        version: version.clone(),
        reason: e.to_string(),
    })?;
    let disposition = HeaderValue::from_str(&format!("attachment; filename=\"{prefix}.tar.gz\""))
        .unwrap_or(HeaderValue::from_static("attachment"));
    Ok((
        [
            (
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/gzip"),
            ),
            (header::CONTENT_DISPOSITION, disposition),
        ],
        archive,
    )
        .into_response())
}
