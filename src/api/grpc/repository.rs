//! The model repository extension over gRPC: the index (open, as over REST) and load/unload
//! (the admin token in `authorization: Bearer …` metadata), through the same change path as
//! `POST /v2/repository/models/{m}/load` and `/unload`.

use super::named_model;
use super::proto::model_repository_parameter::ParameterChoice;
use super::proto::repository_index_response::ModelIndex;
use super::proto::{
    ModelRepositoryParameter, RepositoryIndexRequest, RepositoryIndexResponse,
    RepositoryModelLoadRequest, RepositoryModelUnloadRequest,
};
use crate::api::admin::{RepositoryChange, RepositoryParameters, change_repository};
use crate::api::auth::require_admin_token;
use crate::api::catalog::index_entries;
use crate::api::{ApiError, AppState};
use std::collections::HashMap;
use tonic::Request;

/// Refuses a repository name: the gateway serves one repository.
fn one_repository(name: &str) -> Result<(), ApiError> {
    if name.is_empty() {
        Ok(())
    } else {
        Err(ApiError::bad_request(
            "repository_name",
            format!("this gateway serves one model repository; leave it empty, not `{name}`"),
        ))
    }
}

/// `RepositoryIndex`: every version with `READY`/`UNAVAILABLE` and the reason (`ready`: only
/// ready ones).
///
/// # Errors
/// [`ApiError::BadRequest`] for a repository name.
pub(super) fn index(
    app: &AppState,
    request: RepositoryIndexRequest,
) -> Result<RepositoryIndexResponse, ApiError> {
    one_repository(&request.repository_name)?;
    let deployments = app.registry().deployments();
    let models = index_entries(&deployments, request.ready)
        .into_iter()
        .map(|entry| ModelIndex {
            name: entry.name.to_string(),
            version: entry.version.to_string(),
            state: entry.state.to_string(),
            reason: entry.reason.to_string(),
        })
        .collect();
    Ok(RepositoryIndexResponse { models })
}

/// The load/unload parameters REST takes as `{"parameters": {"version", "force"}}`: `version` as
/// a string or an integer, `force` as a boolean. `unload_dependents` is accepted (a version has
/// no dependents); Triton's `config` and `file:` overrides are refused, since versions come only
/// from the repository.
fn repository_parameters(
    parameters: HashMap<String, ModelRepositoryParameter>,
) -> Result<RepositoryParameters, ApiError> {
    let mut settled = RepositoryParameters::default();
    for (name, value) in parameters {
        let field = format!("parameters.{name}");
        match (name.as_str(), value.parameter_choice) {
            ("version", Some(ParameterChoice::StringParam(version))) => {
                settled.version = Some(version);
            }
            ("version", Some(ParameterChoice::Int64Param(version))) => {
                settled.version = Some(version.to_string());
            }
            ("version", _) => {
                return Err(ApiError::bad_request(
                    field,
                    "expected the version as a string or an integer",
                ));
            }
            ("force", Some(ParameterChoice::BoolParam(force))) => settled.force = force,
            ("force", _) => return Err(ApiError::bad_request(field, "expected true or false")),
            ("config", _) => {
                return Err(ApiError::bad_request(
                    field,
                    "configuration overrides are not supported: versions load from the model \
                     repository as they are",
                ));
            }
            (name, _) if name.starts_with("file:") => {
                return Err(ApiError::bad_request(
                    field,
                    "file overrides are not supported: add the version to the model repository",
                ));
            }
            _ => {}
        }
    }
    Ok(settled)
}

async fn change(
    app: &AppState,
    request: Request<(String, String, HashMap<String, ModelRepositoryParameter>)>,
    change: RepositoryChange,
) -> Result<(), ApiError> {
    require_admin_token(app, request.metadata().as_ref())?;
    let (repository, model, parameters) = request.into_inner();
    one_repository(&repository)?;
    let model = named_model(&model, "model_name")?;
    let parameters = repository_parameters(parameters)?;
    change_repository(app, model, change, parameters, None).await?;
    Ok(())
}

/// `RepositoryModelLoad` (admin): loads the named version, or retries those not ready.
///
/// # Errors
/// [`ApiError`] for a missing or wrong token, bad parameters, or the change refused.
pub(super) async fn load(
    app: &AppState,
    request: Request<RepositoryModelLoadRequest>,
) -> Result<(), ApiError> {
    let request = request.map(|r| (r.repository_name, r.model_name, r.parameters));
    change(app, request, RepositoryChange::Load).await
}

/// `RepositoryModelUnload` (admin): stops serving the named version.
///
/// # Errors
/// [`ApiError`] for a missing or wrong token, bad parameters, or the change refused.
pub(super) async fn unload(
    app: &AppState,
    request: Request<RepositoryModelUnloadRequest>,
) -> Result<(), ApiError> {
    let request = request.map(|r| (r.repository_name, r.model_name, r.parameters));
    change(app, request, RepositoryChange::Unload).await
}
