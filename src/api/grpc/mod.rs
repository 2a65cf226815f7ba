//! The Open Inference Protocol over gRPC (`inference.GRPCInferenceService`, as tritonclient
//! speaks it): health, metadata, inference and the model repository extension, on its own
//! listener (`--grpc-addr`). Handlers are thin: they call the same `serving` paths, parameter
//! rules, output selection and request accounting as REST, and errors become status codes in
//! `api::error`.

mod connection;
mod infer;
pub mod proto {
    //! Messages, server and client generated from `proto/grpc_service.proto` (see `build.rs`).
    #![allow(missing_docs, clippy::all, clippy::pedantic, rustdoc::all)]
    include!(concat!(env!("OUT_DIR"), "/inference.rs"));
}
mod repository;

pub use self::infer::{DecodedInfer, decode_infer};

use self::connection::Connections;
use self::proto::grpc_inference_service_server::{
    GrpcInferenceService, GrpcInferenceServiceServer,
};
use self::proto::model_metadata_response::TensorMetadata;
use self::proto::{
    ModelInferRequest, ModelInferResponse, ModelMetadataRequest, ModelMetadataResponse,
    ModelReadyRequest, ModelReadyResponse, RepositoryIndexRequest, RepositoryIndexResponse,
    RepositoryModelLoadRequest, RepositoryModelLoadResponse, RepositoryModelUnloadRequest,
    RepositoryModelUnloadResponse, ServerLiveRequest, ServerLiveResponse, ServerMetadataRequest,
    ServerMetadataResponse, ServerReadyRequest, ServerReadyResponse,
};
use super::catalog::{MODEL_REPOSITORY_EXTENSION, PLATFORM, SERVER_NAME, ready_versions};
use super::observe::accounted;
use super::{ApiError, AppState};
use crate::engine::TensorSpec;
use crate::listener::Acceptor;
use crate::monitor::Protocol;
use crate::serving::ServingError;
use std::time::Duration;
use tokio::sync::watch;
use tonic::codec::CompressionEncoding;
use tonic::{Request, Response, Status};

/// The gRPC service over the gateway's shared state.
#[derive(Clone)]
pub struct InferenceService {
    app: AppState,
}

/// The version a request names: `None` when the field is empty (proto3's unset).
fn named_version(version: &str) -> Option<&str> {
    (!version.is_empty()).then_some(version)
}

/// The model a request names.
///
/// # Errors
/// [`ApiError::BadRequest`] naming `field` when it is empty.
fn named_model<'a>(model: &'a str, field: &str) -> Result<&'a str, ApiError> {
    if model.is_empty() {
        return Err(ApiError::bad_request(field, "expected a model name"));
    }
    Ok(model)
}

fn tensor_metadata(specs: &[TensorSpec]) -> Vec<TensorMetadata> {
    specs
        .iter()
        .map(|spec| TensorMetadata {
            name: spec.name.clone(),
            datatype: spec.dtype.protocol_name().to_string(),
            shape: spec.protocol_shape(),
        })
        .collect()
}

#[tonic::async_trait]
impl GrpcInferenceService for InferenceService {
    async fn server_live(
        &self,
        _: Request<ServerLiveRequest>,
    ) -> Result<Response<ServerLiveResponse>, Status> {
        Ok(Response::new(ServerLiveResponse { live: true }))
    }

    async fn server_ready(
        &self,
        _: Request<ServerReadyRequest>,
    ) -> Result<Response<ServerReadyResponse>, Status> {
        Ok(Response::new(ServerReadyResponse {
            ready: !self.app.is_draining(),
        }))
    }

    async fn model_ready(
        &self,
        request: Request<ModelReadyRequest>,
    ) -> Result<Response<ModelReadyResponse>, Status> {
        let request = request.into_inner();
        let model = named_model(&request.name, "name")?;
        let ready = match self
            .app
            .registry()
            .route(model, named_version(&request.version))
        {
            Ok(_) => !self.app.is_draining(),
            Err(ServingError::Unavailable { .. }) => false,
            Err(error) => return Err(ApiError::from(error).into()),
        };
        Ok(Response::new(ModelReadyResponse { ready }))
    }

    async fn server_metadata(
        &self,
        _: Request<ServerMetadataRequest>,
    ) -> Result<Response<ServerMetadataResponse>, Status> {
        Ok(Response::new(ServerMetadataResponse {
            name: SERVER_NAME.to_string(),
            version: env!("CARGO_PKG_VERSION").to_string(),
            extensions: vec![MODEL_REPOSITORY_EXTENSION.to_string()],
        }))
    }

    async fn model_metadata(
        &self,
        request: Request<ModelMetadataRequest>,
    ) -> Result<Response<ModelMetadataResponse>, Status> {
        let request = request.into_inner();
        let model = named_model(&request.name, "name")?;
        let version = named_version(&request.version);
        let route = self
            .app
            .registry()
            .route(model, version)
            .map_err(ApiError::from)?;
        let versions = match version {
            Some(version) => vec![version.to_string()],
            None => ready_versions(&route.deployment)
                .into_iter()
                .map(str::to_string)
                .collect(),
        };
        Ok(Response::new(ModelMetadataResponse {
            name: model.to_string(),
            versions,
            platform: PLATFORM.to_string(),
            inputs: tensor_metadata(&route.version.signature().inputs),
            outputs: tensor_metadata(&route.version.served_outputs),
        }))
    }

    async fn model_infer(
        &self,
        request: Request<ModelInferRequest>,
    ) -> Result<Response<ModelInferResponse>, Status> {
        let (metadata, _, mut message) = request.into_parts();
        let model = std::mem::take(&mut message.model_name);
        let version = std::mem::take(&mut message.model_version);
        let route = match named_model(&model, "model_name") {
            Ok(model) => self.app.registry().route(model, named_version(&version)),
            Err(error) => return Err(error.into()),
        };
        let app = &self.app;
        let response = accounted(app, Protocol::Grpc, &model, route, |route| {
            infer::run(app, route, metadata.as_ref(), message)
        })
        .await?;
        Ok(Response::new(response))
    }

    async fn repository_index(
        &self,
        request: Request<RepositoryIndexRequest>,
    ) -> Result<Response<RepositoryIndexResponse>, Status> {
        Ok(Response::new(repository::index(
            &self.app,
            request.into_inner(),
        )?))
    }

    async fn repository_model_load(
        &self,
        request: Request<RepositoryModelLoadRequest>,
    ) -> Result<Response<RepositoryModelLoadResponse>, Status> {
        repository::load(&self.app, request).await?;
        Ok(Response::new(RepositoryModelLoadResponse {}))
    }

    async fn repository_model_unload(
        &self,
        request: Request<RepositoryModelUnloadRequest>,
    ) -> Result<Response<RepositoryModelUnloadResponse>, Status> {
        repository::unload(&self.app, request).await?;
        Ok(Response::new(RepositoryModelUnloadResponse {}))
    }
}

/// Rewrites tonic's own answers to a message over the size limit (OUT_OF_RANGE "decoded message
/// length too large", or RESOURCE_EXHAUSTED "size limit ... exceeded while decompressing") into
/// the gateway's: RESOURCE_EXHAUSTED, as gRPC's own libraries answer it, with REST's message.
fn size_limit_status<B>(
    mut response: axum::http::Response<B>,
    limit: usize,
) -> axum::http::Response<B> {
    let headers = response.headers_mut();
    let too_large = Status::from_header_map(headers).is_some_and(|status| match status.code() {
        tonic::Code::OutOfRange => status.message().contains("message length too large"),
        tonic::Code::ResourceExhausted => status.message().contains("size limit"),
        _ => false,
    });
    if too_large {
        let status = Status::from(ApiError::BodyTooLarge {
            limit,
            drained: true,
        });
        if let Err(error) = status.add_header(headers) {
            tracing::warn!(%error, "cannot write the size-limit status");
        }
    }
    response
}

/// Serves the gRPC service on the connections of `acceptor` until `stop` turns true (or its sender is dropped);
/// then stops accepting and lets in-flight calls finish, up to `grace`. Messages larger than the
/// HTTP body limit are refused.
///
/// # Errors
/// The transport's error when serving fails.
pub async fn serve(
    acceptor: Acceptor,
    app: AppState,
    stop: watch::Receiver<bool>,
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let stopped = |mut stop: watch::Receiver<bool>| async move {
        // An error means the sender is gone: nothing will tell us to keep serving.
        let _ = stop.wait_for(|&stop| stop).await;
    };
    let limit = app.max_body_bytes();
    // Compressed messages are taken (gzip, deflate) and answered compressed when the client
    // asks; the size limit applies to the decompressed message.
    let service = GrpcInferenceServiceServer::new(InferenceService { app })
        .max_decoding_message_size(limit)
        .accept_compressed(CompressionEncoding::Gzip)
        .accept_compressed(CompressionEncoding::Deflate)
        .send_compressed(CompressionEncoding::Gzip)
        .send_compressed(CompressionEncoding::Deflate);
    let mut server = tonic::transport::Server::builder().layer(tower::util::MapResponseLayer::new(
        move |response: axum::http::Response<tonic::body::Body>| size_limit_status(response, limit),
    ));
    let connections = Connections::new();
    let served = server
        .add_service(service)
        .serve_with_incoming_shutdown(connections.incoming(acceptor), stopped(stop.clone()));
    tokio::pin!(served);
    let result = tokio::select! {
        result = &mut served => result,
        () = async { stopped(stop).await; tokio::time::sleep(grace).await } => {
            tracing::warn!(?grace, "grace period over; closing remaining gRPC calls");
            Ok(())
        }
    };
    connections.closed().await;
    result
}
