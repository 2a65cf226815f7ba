//! Admin authentication on real gateways: the admin API is disabled without a token (403) and
//! every admin route asks for the right bearer token (401) with one.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::admin::{TOKEN, admin_gateway, iris_rows, report};
use common::{TestGateway, models_dir, v2_body};
use reqwest::{Method, StatusCode, header};
use serde_json::{Value, json};

#[tokio::test]
async fn admin_api_is_disabled_without_a_token_and_guarded_with_one() {
    let open = TestGateway::start(&models_dir()).await;
    for (method, path) in [
        (Method::GET, "/admin/models"),
        (Method::POST, "/v2/repository/models/iris/load"),
        (Method::PUT, "/admin/models/iris/champion"),
    ] {
        // Even a bearer token does not open a gateway that has none configured.
        for token in [None, Some(TOKEN)] {
            let mut request = open.client.request(method.clone(), open.url(path));
            if let Some(token) = token {
                request = request.bearer_auth(token);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(response.status(), StatusCode::FORBIDDEN, "{method} {path}");
            let body: Value = response.json().await.expect("JSON error");
            assert!(
                body["error"]
                    .as_str()
                    .expect("error text")
                    .starts_with("admin API disabled"),
                "{body}"
            );
        }
    }
    let (status, _) = open
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    open.stop().await;

    let gateway = admin_gateway(&models_dir()).await;
    for (method, path) in [
        (Method::GET, "/admin/models"),
        (Method::POST, "/v2/repository/models/iris/load"),
        (Method::POST, "/admin/models/iris/rollback"),
    ] {
        let cases: [(&str, Option<String>, &str); 4] = [
            ("missing header", None, "Authorization"),
            (
                "wrong token",
                Some(format!("Bearer {TOKEN}x")),
                "wrong admin token",
            ),
            (
                "token prefix",
                Some(format!("Bearer {}", &TOKEN[..3])),
                "wrong admin token",
            ),
            (
                "other scheme",
                Some(format!("Basic {TOKEN}")),
                "Authorization",
            ),
        ];
        for (case, authorization, fragment) in cases {
            let mut request = gateway.client.request(method.clone(), gateway.url(path));
            if let Some(authorization) = authorization {
                request = request.header(header::AUTHORIZATION, authorization);
            }
            let response = request.send().await.expect("sent");
            assert_eq!(
                response.status(),
                StatusCode::UNAUTHORIZED,
                "{case}: {method} {path}"
            );
            assert_eq!(
                response
                    .headers()
                    .get(header::WWW_AUTHENTICATE)
                    .map(|v| v.to_str().expect("ascii")),
                Some("Bearer"),
                "{case}"
            );
            let body: Value = response.json().await.expect("JSON error");
            assert!(
                body["error"].as_str().expect("error").contains(fragment),
                "{case}: {body}"
            );
        }
    }
    // Nothing was rolled back by the refused calls.
    let iris = report(&gateway, "iris").await;
    assert_eq!(iris["champion"], "3");

    let (status, list) = gateway.admin(Method::GET, "/admin/models", None).await;
    assert_eq!(status, StatusCode::OK, "{list}");
    assert!(list["models"].is_array());
    let (status, _) = gateway
        .admin(Method::POST, "/v2/repository/models/iris/load", None)
        .await;
    assert_eq!(status, StatusCode::OK);

    // Inference and the public routes stay open.
    let (status, body) = gateway
        .post_json(
            "/v2/models/iris/infer",
            &v2_body("float_input", &iris_rows()),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, body) = gateway
        .post_json(
            "/v1/models/iris:predict",
            &json!({"instances": [[5.1, 3.5, 1.4, 0.2]]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _) = gateway.get_json("/v2/models/iris").await;
    assert_eq!(status, StatusCode::OK);
    let (status, _) = gateway.post_json("/v2/repository/index", &json!({})).await;
    assert_eq!(status, StatusCode::OK);
    gateway.stop().await;
}
