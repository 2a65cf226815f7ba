//! A closed-loop load generator for one single-row inference, over either protocol the gateway
//! speaks, so that REST and gRPC are measured by the same client: the same runtime, the same
//! timing and histogram, the same checks. `benches/grpc.sh` runs it against one gateway.
//!
//! - `rest`: `POST /v2/models/<model>/infer` with the v2 JSON body, one keep-alive HTTP/1
//!   connection per worker (hyper's connection-level client, as `open_loop.rs`); an answer counts
//!   when it is 200 and its JSON holds at least one output with `data`.
//! - `grpc`: `ModelInfer` with the row in `raw_input_contents` (as tritonclient sends it by
//!   default) over `--channels` HTTP/2 connections, workers spread round-robin over them; an
//!   answer counts when its `grpc-status` is OK and it holds at least one output with contents
//!   (raw or typed). `--grpc-client h2` (the default) sends through the `h2` crate's client, the
//!   message encoded once, HEADERS and DATA handed over together (as `ghz` does, and as hyper's
//!   HTTP/1 client sends REST); `--grpc-client tonic` through tonic's generated client, which
//!   costs more CPU per call.
//!
//! `--concurrency C` workers each keep one request in flight. The input's name is read from the
//! model's metadata first (REST `GET /v2/models/<model>`, gRPC `ModelMetadata`: the protocol
//! measured). Requests are sent for `--warmup` seconds, then `--duration` seconds are measured:
//! throughput is the answers completed in that window divided by its length, latency (send to
//! the whole answer decoded) is recorded for those answers (HdrHistogram, 3 significant digits).
//!
//! Usage: `grpc_vs_rest --protocol grpc|rest --addr 127.0.0.1:8081 [--concurrency 64]
//! [--duration 10] [--warmup 2] [--channels N] [--grpc-client h2|tonic] [--model iris]
//! [--threads T]`
//!
//! Prints one line, e.g. `grpc c=64: 12345 req/s p50 4100 us p99 9000 us errors 0 requests
//! 123450 connections 4`; `errors` counts failed requests over warm-up and measurement both
//! (transport errors, other statuses, answers without outputs). The first failure's message goes
//! to stderr. Exits 2 on bad arguments, 1 when the metadata cannot be read.

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use prost::Message;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpStream;
use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};
use vigil::api::grpc::proto::grpc_inference_service_client::GrpcInferenceServiceClient;
use vigil::api::grpc::proto::model_infer_request::InferInputTensor;
use vigil::api::grpc::proto::{ModelInferRequest, ModelInferResponse, ModelMetadataRequest};

/// The row sent: one iris flower.
const ROW: [f32; 4] = [5.1, 3.5, 1.4, 0.2];

#[derive(Clone, Copy, PartialEq)]
enum Protocol {
    Rest,
    Grpc,
}

struct Options {
    protocol: Protocol,
    addr: String,
    model: String,
    concurrency: usize,
    duration: Duration,
    warmup: Duration,
    channels: usize,
    threads: usize,
    grpc_client: GrpcClient,
}

/// Which gRPC client sends the calls.
#[derive(Clone, Copy, PartialEq)]
enum GrpcClient {
    /// tonic's generated client over its `Channel`.
    Tonic,
    /// The `h2` crate's client, with the request message encoded once: the gRPC counterpart of
    /// hyper's connection-level HTTP/1 client used for REST (as `ghz` sends a pre-encoded
    /// message).
    H2,
}

fn seconds(flag: &str, text: &str) -> Result<Duration, String> {
    let value: f64 = text.parse().map_err(|e| format!("{flag}: {e}"))?;
    if !(value >= 0.0 && value.is_finite()) {
        return Err(format!("{flag}: expected seconds ≥ 0, got {text}"));
    }
    Ok(Duration::from_secs_f64(value))
}

fn parse_args() -> Result<Options, String> {
    let mut args = std::env::args().skip(1);
    let mut protocol = None;
    let mut addr = None;
    let mut model = "iris".to_string();
    let mut concurrency = 1;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(2);
    let mut channels = None;
    let mut threads = None;
    let mut grpc_client = GrpcClient::H2;
    while let Some(flag) = args.next() {
        let mut value = || args.next().ok_or(format!("{flag} needs a value"));
        match flag.as_str() {
            "--protocol" => {
                protocol = Some(match value()?.as_str() {
                    "rest" => Protocol::Rest,
                    "grpc" => Protocol::Grpc,
                    other => return Err(format!("--protocol {other}: expected grpc or rest")),
                });
            }
            "--addr" => addr = Some(value()?),
            "--model" => model = value()?,
            "--concurrency" => {
                concurrency = value()?
                    .parse()
                    .map_err(|e| format!("--concurrency: {e}"))?;
            }
            "--duration" => duration = seconds("--duration", &value()?)?,
            "--warmup" => warmup = seconds("--warmup", &value()?)?,
            "--channels" => {
                channels = Some(value()?.parse().map_err(|e| format!("--channels: {e}"))?);
            }
            "--grpc-client" => {
                grpc_client = match value()?.as_str() {
                    "tonic" => GrpcClient::Tonic,
                    "h2" => GrpcClient::H2,
                    other => return Err(format!("--grpc-client {other}: expected h2 or tonic")),
                };
            }
            "--threads" => {
                threads = Some(value()?.parse().map_err(|e| format!("--threads: {e}"))?);
            }
            other => return Err(format!("unknown argument {other}")),
        }
    }
    let concurrency: usize = concurrency.max(1);
    if duration.is_zero() {
        return Err("--duration must be positive".into());
    }
    Ok(Options {
        protocol: protocol.ok_or("--protocol grpc|rest is needed")?,
        addr: addr.ok_or("--addr is needed")?,
        model,
        concurrency,
        duration,
        warmup,
        // One HTTP/2 connection per 16 in-flight calls by default (see benches/README.md).
        channels: channels
            .unwrap_or_else(|| concurrency.div_ceil(16))
            .clamp(1, concurrency),
        // The cores this process may run on (taskset's affinity included).
        threads: threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1),
        grpc_client,
    })
}

fn histogram() -> Histogram<u64> {
    // 1 µs to 100 s, 3 significant digits.
    Histogram::new_with_bounds(1, 100_000_000, 3).unwrap_or_else(|e| {
        eprintln!("grpc_vs_rest: histogram: {e}");
        std::process::exit(2)
    })
}

/// What one worker saw.
struct Tally {
    /// Answers completed inside the measured window, with their latencies.
    latency: Histogram<u64>,
    /// Failed requests, warm-up included.
    errors: u64,
    /// The first failure's description.
    first_error: Option<String>,
}

/// The measured window, shared by the workers.
#[derive(Clone, Copy)]
struct Window {
    start: Instant,
    end: Instant,
}

impl Tally {
    fn new() -> Tally {
        Tally {
            latency: histogram(),
            errors: 0,
            first_error: None,
        }
    }

    /// Records one request sent at `sent` and finished now.
    fn record(&mut self, window: Window, sent: Instant, outcome: Result<(), String>) {
        let done = Instant::now();
        match outcome {
            Ok(()) => {
                if done >= window.start && done <= window.end {
                    let micros = u64::try_from((done - sent).as_micros()).unwrap_or(u64::MAX);
                    let _ = self.latency.record(micros.max(1));
                }
            }
            Err(error) => {
                self.errors += 1;
                if self.first_error.is_none() {
                    self.first_error = Some(error);
                }
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// REST

async fn connect_http1(addr: &str) -> Result<SendRequest<Full<Bytes>>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(|e| format!("HTTP/1 handshake with {addr}: {e}"))?;
    tokio::spawn(connection);
    Ok(sender)
}

/// Sends `request` and returns the answer's body when it is 200 OK.
async fn exchange(
    sender: &mut SendRequest<Full<Bytes>>,
    request: hyper::Request<Full<Bytes>>,
) -> Result<Bytes, String> {
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("send: {e}"))?;
    let status = response.status();
    let body = response
        .into_body()
        .collect()
        .await
        .map_err(|e| format!("body: {e}"))?
        .to_bytes();
    if status != hyper::StatusCode::OK {
        return Err(format!(
            "status {status}: {}",
            String::from_utf8_lossy(&body)
        ));
    }
    Ok(body)
}

/// The model's first input and its datatype, from `GET /v2/models/<model>`.
async fn rest_input(options: &Options) -> Result<(String, String), String> {
    let mut sender = connect_http1(&options.addr).await?;
    let path = format!("/v2/models/{}", options.model);
    let request = hyper::Request::get(path.as_str())
        .header(hyper::header::HOST, options.addr.as_str())
        .body(Full::new(Bytes::new()))
        .map_err(|e| e.to_string())?;
    let body = exchange(&mut sender, request)
        .await
        .map_err(|e| format!("GET {path}: {e}"))?;
    let metadata: serde_json::Value =
        serde_json::from_slice(&body).map_err(|e| format!("GET {path}: {e}"))?;
    let input = &metadata["inputs"][0];
    match (input["name"].as_str(), input["datatype"].as_str()) {
        (Some(name), Some(datatype)) => Ok((name.to_string(), datatype.to_string())),
        _ => Err(format!(
            "GET {path}: no inputs[0].name/datatype in {metadata}"
        )),
    }
}

/// What a REST answer must hold: at least one output with data.
#[derive(serde::Deserialize)]
struct RestAnswer {
    outputs: Vec<RestOutput>,
}

#[derive(serde::Deserialize)]
struct RestOutput {
    #[expect(dead_code, reason = "only its presence is checked")]
    data: serde::de::IgnoredAny,
}

async fn rest_once(
    sender: &mut SendRequest<Full<Bytes>>,
    options: &Options,
    path: &str,
    body: &Bytes,
) -> Result<(), String> {
    let request = hyper::Request::post(path)
        .header(hyper::header::HOST, options.addr.as_str())
        .header(hyper::header::CONTENT_TYPE, "application/json")
        .body(Full::new(body.clone()))
        .map_err(|e| e.to_string())?;
    let body = exchange(sender, request).await?;
    let answer: RestAnswer = serde_json::from_slice(&body)
        .map_err(|e| format!("answer: {e}: {}", String::from_utf8_lossy(&body)))?;
    if answer.outputs.is_empty() {
        return Err("answer without outputs".into());
    }
    Ok(())
}

async fn rest_worker(
    options: Arc<Options>,
    body: Bytes,
    window: Window,
    tallies: Arc<Mutex<Vec<Tally>>>,
) {
    let path = format!("/v2/models/{}/infer", options.model);
    let mut tally = Tally::new();
    let mut sender = connect_http1(&options.addr).await.ok();
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        if sender.is_none() {
            match connect_http1(&options.addr).await {
                Ok(open) => sender = Some(open),
                Err(error) => {
                    // Do not spin on a server that refuses connections.
                    tokio::time::sleep(Duration::from_millis(10)).await;
                    tally.record(window, sent, Err(error));
                    continue;
                }
            }
        }
        let outcome = match sender.as_mut() {
            Some(open) => rest_once(open, &options, &path, &body).await,
            None => Err("no connection".to_string()),
        };
        if outcome.is_err() {
            // The connection may be unusable; open a new one for the next request.
            sender = None;
        }
        tally.record(window, sent, outcome);
    }
    if let Ok(mut tallies) = tallies.lock() {
        tallies.push(tally);
    }
}

// ---------------------------------------------------------------------------------------------
// gRPC

async fn grpc_channel(addr: &str) -> Result<Channel, String> {
    Endpoint::from_shared(format!("http://{addr}"))
        .map_err(|e| format!("{addr}: {e}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .map_err(|e| format!("connect {addr}: {e}"))
}

/// The model's first input and its datatype, from `ModelMetadata`.
async fn grpc_input(
    client: &mut GrpcInferenceServiceClient<Channel>,
    model: &str,
) -> Result<(String, String), String> {
    let metadata = client
        .model_metadata(ModelMetadataRequest {
            name: model.to_string(),
            version: String::new(),
        })
        .await
        .map_err(|status| format!("ModelMetadata: {status}"))?
        .into_inner();
    let input = metadata
        .inputs
        .first()
        .ok_or(format!("ModelMetadata of {model}: no inputs"))?;
    Ok((input.name.clone(), input.datatype.clone()))
}

fn check_grpc(answer: &ModelInferResponse) -> Result<(), String> {
    let Some(first) = answer.outputs.first() else {
        return Err("answer without outputs".into());
    };
    let raw = answer
        .raw_output_contents
        .first()
        .is_some_and(|b| !b.is_empty());
    if raw || first.contents.is_some() {
        Ok(())
    } else {
        Err(format!("output {} without contents", first.name))
    }
}

/// Keeps one call in flight until the window ends: `call` sends one and checks its answer.
async fn closed_loop(
    window: Window,
    tallies: Arc<Mutex<Vec<Tally>>>,
    mut call: impl AsyncFnMut() -> Result<(), String>,
) {
    let mut tally = Tally::new();
    loop {
        let sent = Instant::now();
        if sent >= window.end {
            break;
        }
        let outcome = call().await;
        tally.record(window, sent, outcome);
    }
    if let Ok(mut tallies) = tallies.lock() {
        tallies.push(tally);
    }
}

/// One `ModelInfer` through tonic's client.
async fn tonic_once(
    client: &mut GrpcInferenceServiceClient<Channel>,
    request: &ModelInferRequest,
) -> Result<(), String> {
    match client.model_infer(request.clone()).await {
        Ok(answer) => check_grpc(answer.get_ref()),
        Err(status) => Err(format!("status {status}")),
    }
}

/// One HTTP/2 connection of the `h2` client.
async fn h2_connection(addr: &str) -> Result<h2::client::SendRequest<Bytes>, String> {
    let stream = TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connect {addr}: {e}"))?;
    let _ = stream.set_nodelay(true);
    let (client, connection) = h2::client::handshake(stream)
        .await
        .map_err(|e| format!("HTTP/2 handshake with {addr}: {e}"))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(client)
}

/// `message` as one length-prefixed, uncompressed gRPC message.
fn grpc_frame(message: &ModelInferRequest) -> Bytes {
    let encoded = message.encode_to_vec();
    let length = u32::try_from(encoded.len()).unwrap_or(u32::MAX);
    let mut frame = Vec::with_capacity(5 + encoded.len());
    frame.push(0);
    frame.extend_from_slice(&length.to_be_bytes());
    frame.extend_from_slice(&encoded);
    Bytes::from(frame)
}

/// One `ModelInfer` through the `h2` client: HEADERS and the encoded message, then the answer
/// read whole, its `grpc-status` checked and its message decoded.
async fn h2_once(
    client: &h2::client::SendRequest<Bytes>,
    uri: &hyper::Uri,
    frame: &Bytes,
) -> Result<(), String> {
    let mut client = client
        .clone()
        .ready()
        .await
        .map_err(|e| format!("connection: {e}"))?;
    let request = hyper::Request::post(uri.clone())
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(())
        .map_err(|e| e.to_string())?;
    let (response, mut send) = client
        .send_request(request, false)
        .map_err(|e| format!("send: {e}"))?;
    send.send_data(frame.clone(), true)
        .map_err(|e| format!("send: {e}"))?;
    let (head, mut body) = response
        .await
        .map_err(|e| format!("response: {e}"))?
        .into_parts();
    if head.status != hyper::StatusCode::OK {
        return Err(format!("HTTP status {}", head.status));
    }
    let mut message = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.map_err(|e| format!("body: {e}"))?;
        let _ = body.flow_control().release_capacity(chunk.len());
        message.extend_from_slice(&chunk);
    }
    let trailers = body
        .trailers()
        .await
        .map_err(|e| format!("trailers: {e}"))?
        .unwrap_or_default();
    // A trailers-only answer (an error) carries its status in the headers.
    let status = trailers
        .get("grpc-status")
        .or_else(|| head.headers.get("grpc-status"));
    if status.map(hyper::header::HeaderValue::as_bytes) != Some(b"0") {
        let message = trailers
            .get("grpc-message")
            .or_else(|| head.headers.get("grpc-message"));
        return Err(format!("grpc-status {status:?}: {message:?}"));
    }
    let answer = match message.as_slice() {
        [0, length @ ..] if length.len() >= 4 => {
            let (prefix, encoded) = length.split_at(4);
            let declared = u32::from_be_bytes([prefix[0], prefix[1], prefix[2], prefix[3]]);
            if usize::try_from(declared).ok() != Some(encoded.len()) {
                return Err("answer is not exactly one message".into());
            }
            ModelInferResponse::decode(encoded).map_err(|e| format!("answer: {e}"))?
        }
        _ => return Err("answer is not one uncompressed message".into()),
    };
    check_grpc(&answer)
}

// ---------------------------------------------------------------------------------------------

async fn run(options: Options) -> Result<(), String> {
    let options = Arc::new(options);
    let tallies = Arc::new(Mutex::new(Vec::new()));
    let mut workers = Vec::with_capacity(options.concurrency);
    let connections;
    // Everything is connected and the metadata read before the clock starts.
    let begin = |warmup: Duration, duration: Duration| {
        let start = Instant::now() + warmup;
        Window {
            start,
            end: start + duration,
        }
    };
    match options.protocol {
        Protocol::Rest => {
            let (input, datatype) = rest_input(&options).await?;
            check_input(&options, &input, &datatype);
            let body = Bytes::from(format!(
                "{{\"inputs\":[{{\"name\":{},\"shape\":[1,{}],\"datatype\":\"FP32\",\"data\":[{}]}}]}}",
                serde_json::Value::from(input),
                ROW.len(),
                ROW.map(|v| v.to_string()).join(",")
            ));
            connections = options.concurrency;
            let window = begin(options.warmup, options.duration);
            for _ in 0..options.concurrency {
                workers.push(tokio::spawn(rest_worker(
                    Arc::clone(&options),
                    body.clone(),
                    window,
                    Arc::clone(&tallies),
                )));
            }
        }
        Protocol::Grpc => {
            let mut channels = Vec::with_capacity(options.channels);
            for _ in 0..options.channels {
                channels.push(grpc_channel(&options.addr).await?);
            }
            connections = channels.len();
            let mut client = GrpcInferenceServiceClient::new(channels[0].clone());
            let (input, datatype) = grpc_input(&mut client, &options.model).await?;
            check_input(&options, &input, &datatype);
            let raw: Vec<u8> = ROW.iter().flat_map(|v| v.to_le_bytes()).collect();
            let request = ModelInferRequest {
                model_name: options.model.clone(),
                inputs: vec![InferInputTensor {
                    name: input,
                    datatype: "FP32".to_string(),
                    shape: vec![1, ROW.len() as i64],
                    ..InferInputTensor::default()
                }],
                raw_input_contents: vec![Bytes::from(raw)],
                ..ModelInferRequest::default()
            };
            let window = begin(options.warmup, options.duration);
            match options.grpc_client {
                GrpcClient::Tonic => {
                    for worker in 0..options.concurrency {
                        let mut client = GrpcInferenceServiceClient::new(
                            channels[worker % channels.len()].clone(),
                        );
                        let request = request.clone();
                        workers.push(tokio::spawn(closed_loop(
                            window,
                            Arc::clone(&tallies),
                            async move || tonic_once(&mut client, &request).await,
                        )));
                    }
                }
                GrpcClient::H2 => {
                    let mut connections = Vec::with_capacity(options.channels);
                    for _ in 0..options.channels {
                        connections.push(h2_connection(&options.addr).await?);
                    }
                    let uri: hyper::Uri = format!(
                        "http://{}/inference.GRPCInferenceService/ModelInfer",
                        options.addr
                    )
                    .parse()
                    .map_err(|e| format!("{}: {e}", options.addr))?;
                    let frame = grpc_frame(&request);
                    for worker in 0..options.concurrency {
                        let client = connections[worker % connections.len()].clone();
                        let (uri, frame) = (uri.clone(), frame.clone());
                        workers.push(tokio::spawn(closed_loop(
                            window,
                            Arc::clone(&tallies),
                            async move || h2_once(&client, &uri, &frame).await,
                        )));
                    }
                }
            }
        }
    }
    for worker in workers {
        worker.await.map_err(|e| format!("a worker failed: {e}"))?;
    }
    let tallies = tallies
        .lock()
        .map_err(|_| "a worker panicked".to_string())?;
    let mut latency = histogram();
    let mut errors = 0;
    let mut first_error = None;
    for tally in tallies.iter() {
        let _ = latency.add(&tally.latency);
        errors += tally.errors;
        if first_error.is_none() {
            first_error.clone_from(&tally.first_error);
        }
    }
    if let Some(error) = first_error {
        eprintln!("grpc_vs_rest: {errors} failed requests; the first: {error}");
    }
    let quantile = |q: f64| {
        if latency.is_empty() {
            0
        } else {
            latency.value_at_quantile(q)
        }
    };
    eprintln!(
        "grpc_vs_rest: latency mean {:.0} us, p90 {} us, p99.9 {} us, max {} us",
        latency.mean(),
        quantile(0.9),
        quantile(0.999),
        latency.max()
    );
    let name = match options.protocol {
        Protocol::Rest => "rest",
        Protocol::Grpc => "grpc",
    };
    println!(
        "{name} c={}: {:.0} req/s p50 {} us p99 {} us errors {errors} requests {} connections {connections}",
        options.concurrency,
        latency.len() as f64 / options.duration.as_secs_f64(),
        quantile(0.5),
        quantile(0.99),
        latency.len(),
    );
    Ok(())
}

/// The row is four FP32 features: the model's first input must take them.
fn check_input(options: &Options, input: &str, datatype: &str) {
    if datatype != "FP32" {
        eprintln!(
            "grpc_vs_rest: {}'s input {input} is {datatype}; this client sends FP32",
            options.model
        );
        std::process::exit(1);
    }
}

fn main() {
    let options = match parse_args() {
        Ok(options) => options,
        Err(error) => {
            eprintln!("grpc_vs_rest: {error}");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.threads)
        .enable_all()
        .build();
    let result = match runtime {
        Ok(runtime) => runtime.block_on(run(options)),
        Err(error) => Err(format!("runtime: {error}")),
    };
    if let Err(error) = result {
        eprintln!("grpc_vs_rest: {error}");
        std::process::exit(1);
    }
}
