//! The feedback API: `POST /v1/models/{m}/feedback` with one item
//! (`{"id", "label" | "value", "row", "replace"}`) or `{"items": [...]}` (at most 1,000), behind
//! the feedback token (or the admin token); and the admin views and settings of the loop:
//! `GET /admin/models/{m}/quality`, `PUT /admin/models/{m}/promotion`,
//! `GET`/`PUT /admin/models/{m}/retrain`.

use super::auth::bearer_matches;
use super::revision::{deployment_response, expected_revision};
use super::v2_types::{json_error, parse_json};
use super::{ApiError, AppState, body};
use crate::feedback::{
    Feedback, FeedbackError, GivenLabel, ItemError, ItemStatus, LabelItem, MAX_ITEMS, ModelQuality,
};
use crate::store::feedback::RetrainSettings;
use crate::store::{PromotionMode, PromotionSettings};
use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use std::sync::Arc;

/// One item as sent.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ItemBody {
    id: String,
    #[serde(default)]
    row: u32,
    #[serde(default)]
    label: Option<LabelBody>,
    #[serde(default)]
    value: Option<f64>,
    #[serde(default)]
    replace: bool,
}

/// A class name or a class index.
#[derive(Deserialize)]
#[serde(untagged)]
enum LabelBody {
    Index(u64),
    Name(String),
}

impl ItemBody {
    fn into_item(self) -> Result<LabelItem, ApiError> {
        let label = match (self.label, self.value) {
            (Some(LabelBody::Name(name)), None) => GivenLabel::Name(name),
            (Some(LabelBody::Index(index)), None) => GivenLabel::Index(index),
            (None, Some(value)) => GivenLabel::Value(value),
            (Some(_), Some(_)) => {
                return Err(ApiError::bad_request(
                    "label",
                    "give either \"label\" (a class name or index) or \"value\" (a number), not both",
                ));
            }
            (None, None) => {
                return Err(ApiError::bad_request(
                    "label",
                    "missing: give \"label\" (a class name or index) or \"value\" (a number)",
                ));
            }
        };
        Ok(LabelItem {
            id: self.id,
            row: self.row,
            label,
            replace: self.replace,
        })
    }
}

/// The feedback loop, if this caller may use it.
///
/// # Errors
/// 403 when the feedback API is disabled (no token, or no inference log), 401 for a missing or
/// wrong token.
fn authorised<'a>(app: &'a AppState, headers: &HeaderMap) -> Result<&'a Arc<Feedback>, ApiError> {
    let tokens: Vec<&str> = [app.feedback_token(), app.admin_token()]
        .into_iter()
        .flatten()
        .collect();
    if tokens.is_empty() {
        return Err(ApiError::FeedbackDisabled(
            "feedback API disabled: start the gateway with VIGIL_FEEDBACK_TOKEN (or \
             VIGIL_ADMIN_TOKEN) set",
        ));
    }
    bearer_matches(headers, &tokens, "wrong feedback token")?;
    app.feedback().ok_or(ApiError::FeedbackDisabled(
        "feedback API disabled: the inference log is off (--inference-log false) or the \
         gateway runs without a state directory",
    ))
}

#[derive(Serialize)]
struct ItemAnswer<'a> {
    id: Option<&'a str>,
    row: Option<u32>,
    status: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

#[derive(Serialize, Default)]
struct Counts {
    accepted: usize,
    duplicate: usize,
    error: usize,
}

#[derive(Serialize)]
struct BatchAnswer<'a> {
    results: Vec<ItemAnswer<'a>>,
    counts: Counts,
}

fn status_word(status: &ItemStatus) -> &'static str {
    match status {
        ItemStatus::Accepted => "accepted",
        ItemStatus::Duplicate => "duplicate",
    }
}

/// `POST /v1/models/{m}/feedback`.
pub async fn submit(
    app: &AppState,
    model: &str,
    headers: &HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let feedback = authorised(app, headers)?;
    app.registry().model(model)?;
    body::json_format(headers)?;
    let bytes = body::read_limited(headers, body, app.max_body_bytes()).await?;
    let value: Value = serde_json::from_slice(&bytes).map_err(|e| json_error(String::new(), &e))?;
    let Some(items) = value.get("items") else {
        let item = parse_json::<ItemBody>(&bytes)?.into_item()?;
        let (id, row) = (item.id.clone(), item.row);
        let results = feedback.submit(model, vec![item]).await?;
        let status = results
            .into_iter()
            .next()
            .ok_or(FeedbackError::Unanswered {
                sent: 1,
                answered: 0,
            })?
            .map_err(ApiError::Item)?;
        return Ok(Json(ItemAnswer {
            id: Some(&id),
            row: Some(row),
            status: status_word(&status),
            error: None,
        })
        .into_response());
    };
    if value.as_object().is_some_and(|o| o.len() > 1) {
        return Err(ApiError::bad_request(
            "items",
            "a batch is {\"items\": [...]} alone; put id and label inside each item",
        ));
    }
    let items = items
        .as_array()
        .ok_or_else(|| ApiError::bad_request("items", "expected an array of feedback items"))?;
    if items.len() > MAX_ITEMS {
        return Err(ApiError::TooManyItems {
            items: items.len(),
            max: MAX_ITEMS,
        });
    }
    // Items that do not decode are answered as errors; the others are stored.
    let decoded: Vec<Result<LabelItem, String>> = items
        .iter()
        .enumerate()
        .map(|(index, item)| {
            serde_path_to_error::deserialize::<_, ItemBody>(item.clone())
                .map_err(|e| {
                    let path = e.path().to_string();
                    let field = if path.is_empty() || path == "." {
                        format!("items[{index}]")
                    } else {
                        format!("items[{index}].{path}")
                    };
                    format!("{field}: {}", e.inner())
                })
                .and_then(|body| body.into_item().map_err(|e| format!("items[{index}].{e}")))
        })
        .collect();
    let valid: Vec<LabelItem> = decoded
        .iter()
        .filter_map(|d| d.as_ref().ok().cloned())
        .collect();
    let mut stored = feedback.submit(model, valid).await?.into_iter();
    let mut counts = Counts::default();
    let results: Vec<ItemAnswer<'_>> = decoded
        .iter()
        .zip(items)
        .enumerate()
        .map(|(index, (decoded, raw))| {
            let (id, row) = (raw.get("id").and_then(Value::as_str), raw.get("row"));
            let row = row.map_or(Some(0), |r| r.as_u64().and_then(|r| u32::try_from(r).ok()));
            let result: Result<ItemStatus, String> = match decoded {
                Err(message) => Err(message.clone()),
                Ok(_) => match stored.next() {
                    Some(result) => result.map_err(|e: ItemError| match e {
                        ItemError::Invalid { .. } => format!("items[{index}].{e}"),
                        other => other.to_string(),
                    }),
                    None => Err("the feedback intake did not answer this item".to_string()),
                },
            };
            match result {
                Ok(status) => {
                    match status {
                        ItemStatus::Accepted => counts.accepted += 1,
                        ItemStatus::Duplicate => counts.duplicate += 1,
                    }
                    ItemAnswer {
                        id,
                        row,
                        status: status_word(&status),
                        error: None,
                    }
                }
                Err(error) => {
                    counts.error += 1;
                    ItemAnswer {
                        id,
                        row,
                        status: "error",
                        error: Some(error),
                    }
                }
            }
        })
        .collect();
    Ok(Json(BatchAnswer { results, counts }).into_response())
}

/// The feedback loop for the admin views, or why there is none.
fn feedback_loop(app: &AppState) -> Result<&Arc<Feedback>, ApiError> {
    app.feedback().ok_or(ApiError::FeedbackDisabled(
        "the feedback loop is off: the inference log is off (--inference-log false) or the \
         gateway runs without a state directory",
    ))
}

/// `GET /admin/models/{m}/quality`: live quality per version and the promotion evidence.
pub async fn quality(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Json<ModelQuality>, ApiError> {
    app.registry().model(&model)?;
    Ok(Json(feedback_loop(&app)?.quality(&model)?))
}

/// The promotion rule as sent: every field optional (missing ones keep their value).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PromotionBody {
    #[serde(default)]
    mode: Option<PromotionMode>,
    #[serde(default)]
    alpha: Option<f64>,
    #[serde(default)]
    min_labels: Option<u64>,
    #[serde(default)]
    max_labels: Option<u64>,
    /// Automatic promotion of a model that follows a registry, knowingly.
    #[serde(default)]
    force: bool,
}

/// `PUT /admin/models/{m}/promotion`: a deployment change (audited, with a revision). Automatic
/// promotion of a model that follows a model registry needs `"force": true`: it would change
/// the champion the registry's aliases name.
pub async fn set_promotion(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    let expected = expected_revision(&headers)?;
    let request: PromotionBody = body::json(&headers, body, app.max_body_bytes()).await?;
    let current: PromotionSettings = app.registry().deployment(&model)?.promotion;
    let settings = PromotionSettings {
        mode: request.mode.unwrap_or(current.mode),
        alpha: request.alpha.unwrap_or(current.alpha),
        min_labels: request.min_labels.unwrap_or(current.min_labels),
        max_labels: request.max_labels.unwrap_or(current.max_labels),
    };
    if settings.mode == PromotionMode::Auto {
        super::registry_guard::check_registry(&app, &model, request.force)?;
    }
    let report = app
        .registry()
        .set_promotion(&model, settings, expected)
        .await?;
    Ok(deployment_response(report))
}

/// Retraining settings as answered: the secret is never shown.
#[derive(Serialize)]
struct RetrainAnswer {
    model: String,
    every_labels: u64,
    command: Option<Vec<String>>,
    webhook: Option<String>,
    secret_set: bool,
}

fn retrain_answer(model: &str, settings: Option<RetrainSettings>) -> Response {
    match settings {
        Some(s) => Json(RetrainAnswer {
            model: model.to_string(),
            every_labels: s.every_labels,
            command: s.command,
            webhook: s.webhook,
            secret_set: s.secret.is_some(),
        })
        .into_response(),
        None => Json(serde_json::json!({"model": model, "every_labels": null})).into_response(),
    }
}

/// `GET /admin/models/{m}/retrain`: the retraining settings in force (the model's own, else the
/// configured defaults).
pub async fn retrain(
    State(app): State<AppState>,
    Path(model): Path<String>,
) -> Result<Response, ApiError> {
    app.registry().model(&model)?;
    let settings = feedback_loop(&app)?.retrain_settings(&model);
    Ok(retrain_answer(&model, settings))
}

/// `PUT /admin/models/{m}/retrain`: the model's own retraining settings.
pub async fn set_retrain(
    State(app): State<AppState>,
    Path(model): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Result<Response, ApiError> {
    app.registry().model(&model)?;
    let feedback = feedback_loop(&app)?;
    let settings: RetrainSettings = body::json(&headers, body, app.max_body_bytes()).await?;
    feedback
        .set_retrain_settings(&model, settings.clone())
        .await?;
    Ok(retrain_answer(&model, Some(settings)))
}
