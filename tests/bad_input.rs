//! Bad input never crashes, hangs or gets a 500: a table of malformed requests, each answered with
//! the right 4xx and a JSON `{"error": ...}` naming the field, after which the gateway still
//! answers correctly.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::{TestGateway, models_dir};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use vigil::config::Config;

const MAX_BODY_BYTES: usize = 64 * 1024;
const MAX_ROWS: usize = 50;
const INFER: &str = "/v2/models/iris/versions/1/infer";

struct Case {
    name: &'static str,
    method: Method,
    path: &'static str,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
    status: StatusCode,
    fragment: &'static str,
}

fn json_case(
    name: &'static str,
    path: &'static str,
    body: Value,
    status: StatusCode,
    fragment: &'static str,
) -> Case {
    Case {
        name,
        method: Method::POST,
        path,
        headers: vec![("content-type", "application/json".into())],
        body: serde_json::to_vec(&body).expect("json"),
        status,
        fragment,
    }
}

fn raw_case(name: &'static str, body: &str, status: StatusCode, fragment: &'static str) -> Case {
    Case {
        name,
        method: Method::POST,
        path: INFER,
        headers: vec![("content-type", "application/json".into())],
        body: body.as_bytes().to_vec(),
        status,
        fragment,
    }
}

fn input(shape: Value, datatype: &str, data: Value) -> Value {
    json!({"inputs": [{"name": "float_input", "shape": shape, "datatype": datatype, "data": data}]})
}

fn binary_case(
    name: &'static str,
    header_len: String,
    header: Value,
    tail: Vec<u8>,
    fragment: &'static str,
) -> Case {
    let mut body = serde_json::to_vec(&header).expect("json");
    body.extend(tail);
    Case {
        name,
        method: Method::POST,
        path: INFER,
        headers: vec![("inference-header-content-length", header_len)],
        body,
        status: StatusCode::BAD_REQUEST,
        fragment,
    }
}

fn cases() -> Vec<Case> {
    let bad = StatusCode::BAD_REQUEST;
    let row = json!([5.1, 3.5, 1.4, 0.2]);
    let deep = format!(
        "{{\"inputs\":[{{\"name\":\"float_input\",\"shape\":[1,4],\"datatype\":\"FP32\",\"data\":{}1{}}}]}}",
        "[".repeat(40),
        "]".repeat(40)
    );
    let binary_header = json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32",
        "parameters": {"binary_data_size": 16}}]});
    let header_len = serde_json::to_vec(&binary_header).expect("json").len();
    let too_many: Vec<Value> = (0..=MAX_ROWS).map(|_| row.clone()).collect();
    let oversized = vec![b' '; MAX_BODY_BYTES + 1];
    vec![
        raw_case("malformed json", "{\"inputs\": [", bad, "malformed JSON"),
        raw_case("not json at all", "hello", bad, "malformed JSON"),
        raw_case("array instead of object", "[1, 2]", bad, "invalid type"),
        raw_case("trailing garbage", "{\"inputs\": []} x", bad, "malformed JSON"),
        json_case("missing inputs", INFER, json!({}), bad, "missing field `inputs`"),
        json_case("id not a string", INFER,
            json!({"id": 42, "inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
            bad, "id: invalid type: integer `42`, expected a string"),
        json_case("id an object", INFER,
            json!({"id": {"n": 1}, "inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
            bad, "id: invalid type: map"),
        json_case("inputs not a list", INFER, json!({"inputs": 5}), bad, "inputs"),
        json_case("empty inputs", INFER, json!({"inputs": []}), bad, "at least one input"),
        json_case("missing input name", INFER,
            json!({"inputs": [{"shape": [1, 4], "datatype": "FP32", "data": row}]}), bad, "missing field `name`"),
        json_case("unknown input name", INFER,
            json!({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": row}]}), bad, "inputs[0].name"),
        json_case("input given twice", INFER,
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row},
                              {"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}]}),
            bad, "more than once"),
        json_case("element count mismatch", INFER, input(json!([2, 4]), "FP32", row.clone()), bad, "needs 8 elements"),
        json_case("ragged nested rows", INFER, input(json!([2, 4]), "FP32", json!([[1, 2, 3, 4], [1, 2, 3]])), bad, "inputs[0].data"),
        json_case("wrong feature width", INFER, input(json!([1, 5]), "FP32", json!([1, 2, 3, 4, 5])), bad, "inputs[0].shape"),
        json_case("wrong rank", INFER, input(json!([4]), "FP32", row.clone()), bad, "expects shape [-1, 4]"),
        json_case("negative dimension", INFER, input(json!([-1, 4]), "FP32", row.clone()), bad, "inputs[0].shape[0]"),
        json_case("absurd shape overflows", INFER, input(json!([4_611_686_018_427_387_904u64, 4]), "FP32", row.clone()), bad, "overflows"),
        json_case("absurd shape, few elements", INFER, input(json!([1_000_000_000, 4]), "FP32", row.clone()), bad, "needs 4000000000 elements"),
        json_case("shape not numbers", INFER, input(json!(["a", 4]), "FP32", row.clone()), bad, "inputs[0].shape"),
        json_case("unknown datatype", INFER, input(json!([1, 4]), "FP8", row.clone()), bad, "inputs[0].datatype"),
        json_case("datatype not a string", INFER, input(json!([1, 4]), "FP32", row.clone()).pointer("/inputs/0").map(|_| {
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": 32, "data": row}]})
        }).expect("body"), bad, "inputs[0].datatype"),
        json_case("string for FP32", INFER, input(json!([1, 4]), "FP32", json!(["a", 1, 2, 3])), bad, "inputs[0].data[0]"),
        json_case("null element", INFER, input(json!([1, 4]), "FP32", json!([null, 1, 2, 3])), bad, "null"),
        json_case("object element", INFER, input(json!([1, 4]), "FP32", json!([{"a": 1}, 1, 2, 3])), bad, "objects are not tensor elements"),
        json_case("fraction for INT64", INFER, input(json!([1, 4]), "INT64", json!([1.5, 1, 2, 3])), bad, "inputs[0].data[0]"),
        json_case("out of range UINT8", INFER, input(json!([1, 4]), "UINT8", json!([300, 1, 2, 3])), bad, "inputs[0].data[0]"),
        json_case("FP32 overflow is not finite", INFER, input(json!([1, 4]), "FP32", json!([1e39, 1, 2, 3])), bad, "finite"),
        json_case("integer too large for FP32", INFER, input(json!([1, 4]), "INT64", json!([33_554_433, 1, 2, 3])), bad, "exactly"),
        json_case("text for a float model", INFER, input(json!([1, 4]), "BYTES", json!(["a", "b", "c", "d"])), bad, "text cannot be converted"),
        raw_case("deep nesting", &deep, bad, "nested deeper than"),
        json_case("empty batch", INFER, input(json!([0, 4]), "FP32", json!([])), bad, "empty batch"),
        json_case("too many rows", INFER, input(json!([MAX_ROWS + 1, 4]), "FP32", json!(too_many)),
            StatusCode::PAYLOAD_TOO_LARGE, "exceed the limit of 50 rows"),
        json_case("missing data", INFER,
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32"}]}), bad, "inputs[0].data"),
        json_case("unknown output", INFER,
            json!({"inputs": [{"name": "float_input", "shape": [1, 4], "datatype": "FP32", "data": row}],
                   "outputs": [{"name": "logits"}]}), bad, "outputs[0].name"),
        json_case("unknown model", "/v2/models/nope/infer", input(json!([1, 4]), "FP32", row.clone()),
            StatusCode::NOT_FOUND, "unknown model `nope`"),
        json_case("unknown version", "/v2/models/iris/versions/9/infer", input(json!([1, 4]), "FP32", row.clone()),
            StatusCode::NOT_FOUND, "no version `9`"),
        Case {
            name: "wrong content type",
            method: Method::POST,
            path: INFER,
            headers: vec![("content-type", "text/plain".into())],
            body: serde_json::to_vec(&input(json!([1, 4]), "FP32", row.clone())).expect("json"),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            fragment: "text/plain",
        },
        Case {
            name: "compressed body",
            method: Method::POST,
            path: INFER,
            headers: vec![("content-type", "application/json".into()), ("content-encoding", "gzip".into())],
            body: b"\x1f\x8b".to_vec(),
            status: StatusCode::UNSUPPORTED_MEDIA_TYPE,
            fragment: "gzip",
        },
        Case {
            name: "oversized body",
            method: Method::POST,
            path: INFER,
            headers: vec![("content-type", "application/json".into())],
            body: oversized,
            status: StatusCode::PAYLOAD_TOO_LARGE,
            fragment: "limit of 65536 bytes",
        },
        binary_case("binary header length not a number", "abc".into(), binary_header.clone(), vec![0; 16], "Inference-Header-Content-Length"),
        binary_case("binary header longer than body", "100000".into(), binary_header.clone(), vec![0; 16], "Inference-Header-Content-Length"),
        binary_case("binary data too short", header_len.to_string(), binary_header.clone(), vec![0; 12], "binary_data_size"),
        binary_case("binary data too long", header_len.to_string(), binary_header.clone(), vec![0; 20], "binary bytes follow"),
        binary_case("binary NaN", header_len.to_string(), binary_header.clone(),
            [f32::NAN, 1.0, 2.0, 3.0].iter().flat_map(|x| x.to_le_bytes()).collect(), "finite"),
        json_case("v1 missing instances", "/v1/models/iris:predict", json!({"rows": []}), bad, "missing field `instances`"),
        json_case("v1 empty instances", "/v1/models/iris:predict", json!({"instances": []}), bad, "at least one instance"),
        json_case("v1 wrong width", "/v1/models/iris:predict", json!({"instances": [[1, 2, 3]]}), bad, "instances[0]: expected 4 numbers"),
        json_case("v1 non-numeric cell", "/v1/models/iris:predict", json!({"instances": [[1, "x", 3, 4]]}), bad, "instances[0][1]"),
        json_case("v1 unknown feature", "/v1/models/iris:predict",
            json!({"instances": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1, "petal_width": 1, "colour": 2}]}),
            bad, "instances[0].colour"),
        json_case("v1 missing feature", "/v1/models/iris:predict",
            json!({"instances": [{"sepal_length": 1, "sepal_width": 1, "petal_length": 1}]}), bad, "instances[0].petal_width"),
        json_case("v1 unknown model", "/v1/models/nope:predict", json!({"instances": [[1, 2, 3, 4]]}),
            StatusCode::NOT_FOUND, "unknown model"),
        json_case("v1 unknown verb", "/v1/models/iris:explain", json!({"instances": [[1, 2, 3, 4]]}),
            StatusCode::NOT_FOUND, "no route"),
        Case {
            name: "GET on an inference route",
            method: Method::GET,
            path: INFER,
            headers: vec![],
            body: vec![],
            status: StatusCode::METHOD_NOT_ALLOWED,
            fragment: "GET",
        },
        Case {
            name: "unknown route",
            method: Method::GET,
            path: "/v3/everything",
            headers: vec![],
            body: vec![],
            status: StatusCode::NOT_FOUND,
            fragment: "/v3/everything",
        },
    ]
}

#[tokio::test]
async fn malformed_requests_get_clear_4xx_errors_and_the_gateway_keeps_serving() {
    let mut config = Config::for_models(models_dir());
    config.max_body_bytes = MAX_BODY_BYTES;
    config.max_batch_rows = MAX_ROWS;
    let gateway = TestGateway::start_with(config).await;
    let table = cases();
    assert!(table.len() >= 30, "the table covers at least 30 cases");
    for case in table {
        let mut request = gateway
            .client
            .request(case.method.clone(), gateway.url(case.path));
        for (name, value) in &case.headers {
            request = request.header(*name, value.as_str());
        }
        let response = request.body(case.body).send().await.expect("request sent");
        let status = response.status();
        let bytes = response.bytes().await.expect("body read");
        let body: Value = serde_json::from_slice(&bytes).unwrap_or_else(|_| {
            panic!(
                "{}: body is not JSON: {}",
                case.name,
                String::from_utf8_lossy(&bytes)
            )
        });
        assert_eq!(status, case.status, "{}: {body}", case.name);
        let error = body["error"]
            .as_str()
            .unwrap_or_else(|| panic!("{}: no error field: {body}", case.name));
        assert!(
            error.contains(case.fragment),
            "{}: `{error}` should mention `{}`",
            case.name,
            case.fragment
        );
    }

    // Still serving, and serving correctly.
    let (status, body) = gateway
        .post_json(
            INFER,
            &common::v2_body("float_input", &[vec![5.1, 3.5, 1.4, 0.2]]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["outputs"][0]["data"], json!([0]));
    let (status, _) = gateway.get_json("/v2/health/ready").await;
    assert_eq!(status, StatusCode::OK);
    gateway.stop().await;
}

#[tokio::test]
async fn a_version_that_fails_to_load_is_reported_not_fatal() {
    let repo = tempfile::tempdir().expect("tempdir");
    common::copy_version(repo.path(), "iris", "1", "");
    let broken = repo.path().join("iris/2");
    std::fs::create_dir_all(&broken).expect("mkdir");
    std::fs::write(broken.join("model.onnx"), b"not an onnx file").expect("write");
    std::fs::write(broken.join("model.toml"), "task = \"classification\"\n").expect("write");
    let bad_meta = repo.path().join("iris/3");
    std::fs::create_dir_all(&bad_meta).expect("mkdir");
    std::fs::write(bad_meta.join("model.toml"), "task = \"clustering\"\n").expect("write");

    let gateway = TestGateway::start(repo.path()).await;
    let (_, index) = gateway.post_json("/v2/repository/index", &json!({})).await;
    let states: Vec<(String, String)> = index
        .as_array()
        .expect("list")
        .iter()
        .map(|v| {
            (
                v["version"].as_str().expect("v").to_string(),
                v["state"].as_str().expect("s").to_string(),
            )
        })
        .collect();
    assert_eq!(
        states,
        vec![
            ("1".into(), "READY".into()),
            ("2".into(), "UNAVAILABLE".into()),
            ("3".into(), "UNAVAILABLE".into())
        ]
    );
    assert!(
        index[2]["reason"]
            .as_str()
            .expect("reason")
            .contains("clustering"),
        "{index}"
    );
    let (_, ready_only) = gateway
        .post_json("/v2/repository/index", &json!({"ready": true}))
        .await;
    assert_eq!(ready_only.as_array().expect("list").len(), 1);

    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/versions/2/infer",
            &common::v2_body("float_input", &[vec![1.0; 4]]),
        )
        .await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    // The unversioned route falls back to the highest version that loaded.
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &common::v2_body("float_input", &[vec![1.0; 4]]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["model_version"], "1");
    gateway.stop().await;
}

/// Sends `head` and then all of `body` before reading anything, as Python's `http.client` does,
/// then reads the whole answer. Panics when the connection breaks before the answer is read.
fn write_all_then_read(address: std::net::SocketAddr, head: &str, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).expect("connect");
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(30)))
        .expect("read timeout");
    stream.write_all(head.as_bytes()).expect("head sent");
    stream
        .write_all(body)
        .expect("the whole body is taken: the gateway reads what it refuses");
    stream.flush().expect("flush");
    let mut answer = Vec::new();
    let mut buffer = [0u8; 8192];
    loop {
        match stream.read(&mut buffer) {
            Ok(0) => break,
            Ok(n) => {
                answer.extend_from_slice(&buffer[..n]);
                let text = String::from_utf8_lossy(&answer);
                if let Some((headers, rest)) = text.split_once("\r\n\r\n")
                    && let Some(length) = headers
                        .lines()
                        .find_map(|l| l.strip_prefix("content-length: "))
                        .and_then(|n| n.trim().parse::<usize>().ok())
                    && rest.len() >= length
                {
                    break;
                }
            }
            Err(error) => panic!(
                "the connection broke before the answer was read: {error}; read so far: {}",
                String::from_utf8_lossy(&answer)
            ),
        }
    }
    String::from_utf8_lossy(&answer).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_oversized_body_gets_a_413_even_a_client_that_writes_it_all_first_can_read() {
    let mut config = Config::for_models(models_dir());
    config.max_body_bytes = MAX_BODY_BYTES;
    let gateway = TestGateway::start_with(config).await;
    let address = gateway.addr;
    // Far more than the socket buffers hold: a gateway that answers without reading the rest
    // would reset the connection under the writing client.
    let body = vec![b' '; 16 << 20];
    let declared = format!(
        "POST {INFER} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    let chunked_body: Vec<u8> = body
        .chunks(1 << 20)
        .flat_map(|chunk| {
            let mut framed = format!("{:x}\r\n", chunk.len()).into_bytes();
            framed.extend_from_slice(chunk);
            framed.extend_from_slice(b"\r\n");
            framed
        })
        .chain(b"0\r\n\r\n".iter().copied())
        .collect();
    let chunked = format!(
        "POST {INFER} HTTP/1.1\r\nHost: {address}\r\nContent-Type: application/json\r\n\
         Transfer-Encoding: chunked\r\n\r\n"
    );
    for (name, head, body) in [
        ("declared", declared, body),
        ("chunked", chunked, chunked_body),
    ] {
        let answer =
            tokio::task::spawn_blocking(move || write_all_then_read(address, &head, &body))
                .await
                .expect("client thread");
        assert!(answer.starts_with("HTTP/1.1 413"), "{name}: {answer}");
        let json = answer.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
        let error: Value =
            serde_json::from_str(json).unwrap_or_else(|_| panic!("{name}: {answer}"));
        assert!(
            error["error"]
                .as_str()
                .is_some_and(|e| e.contains("limit of 65536 bytes")),
            "{name}: {error}"
        );
    }
    let (status, body) = gateway
        .post_json(
            INFER,
            &common::v2_body("float_input", &[vec![5.1, 3.5, 1.4, 0.2]]),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "still serving: {body}");
    gateway.stop().await;
}
