//! The admin API client behind `vigil admin`: calls a running gateway and renders its answers
//! as readable tables.

use reqwest::Method;
use serde_json::{Value, json};

/// A failed admin call.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The gateway could not be reached.
    #[error("cannot reach {url}: {reason}")]
    Unreachable {
        /// The URL called.
        url: String,
        /// Why.
        reason: String,
    },
    /// The gateway answered with an error.
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: u16,
        /// The gateway's `error` text.
        message: String,
    },
}

/// A client of one gateway's admin API.
pub struct AdminClient {
    base: String,
    token: Option<String>,
    if_revision: Option<u64>,
    http: reqwest::Client,
}

impl AdminClient {
    /// A client for the gateway at `base` (e.g. `http://127.0.0.1:8080`).
    pub fn new(base: &str, token: Option<String>) -> AdminClient {
        AdminClient {
            base: base.trim_end_matches('/').to_string(),
            token,
            if_revision: None,
            http: reqwest::Client::new(),
        }
    }

    /// Makes every change conditional on the model's deployment being at `revision`
    /// (`If-Match`): a change made meanwhile by someone else is refused instead of overwritten.
    pub fn if_revision(mut self, revision: Option<u64>) -> AdminClient {
        self.if_revision = revision;
        self
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, ClientError> {
        let url = format!("{}{path}", self.base);
        let changes = method != Method::GET;
        let mut request = self.http.request(method, &url);
        if let Some(token) = &self.token {
            request = request.bearer_auth(token);
        }
        if let Some(revision) = self.if_revision.filter(|_| changes) {
            request = request.header(reqwest::header::IF_MATCH, format!("\"{revision}\""));
        }
        if let Some(body) = body {
            request = request.json(&body);
        }
        let unreachable = |e: reqwest::Error| ClientError::Unreachable {
            url: url.clone(),
            reason: e.to_string(),
        };
        let response = request.send().await.map_err(unreachable)?;
        let status = response.status();
        let value: Value = response.json().await.map_err(unreachable)?;
        if status.is_success() {
            Ok(value)
        } else {
            Err(ClientError::Refused {
                status: status.as_u16(),
                message: value["error"]
                    .as_str()
                    .unwrap_or("(no message)")
                    .to_string(),
            })
        }
    }

    /// `GET /admin/models`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn models(&self) -> Result<Value, ClientError> {
        self.call(Method::GET, "/admin/models", None).await
    }

    /// `GET /admin/models/{model}`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn model(&self, model: &str) -> Result<Value, ClientError> {
        self.call(Method::GET, &format!("/admin/models/{model}"), None)
            .await
    }

    /// `PUT /admin/models/{model}/champion`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn promote(&self, model: &str, version: &str) -> Result<Value, ClientError> {
        let path = format!("/admin/models/{model}/champion");
        self.call(Method::PUT, &path, Some(json!({"version": version})))
            .await
    }

    /// `PUT /admin/models/{model}/shadows/{version}`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn shadow(
        &self,
        model: &str,
        version: &str,
        fraction: f64,
    ) -> Result<Value, ClientError> {
        let path = format!("/admin/models/{model}/shadows/{version}");
        self.call(Method::PUT, &path, Some(json!({"fraction": fraction})))
            .await
    }

    /// `DELETE /admin/models/{model}/shadows/{version}`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn unshadow(&self, model: &str, version: &str) -> Result<Value, ClientError> {
        let path = format!("/admin/models/{model}/shadows/{version}");
        self.call(Method::DELETE, &path, None).await
    }

    /// `PUT /admin/models/{model}/threshold`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn threshold(&self, model: &str, threshold: f64) -> Result<Value, ClientError> {
        let path = format!("/admin/models/{model}/threshold");
        self.call(Method::PUT, &path, Some(json!({"threshold": threshold})))
            .await
    }

    /// `POST /admin/models/{model}/rollback`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn rollback(&self, model: &str) -> Result<Value, ClientError> {
        self.call(
            Method::POST,
            &format!("/admin/models/{model}/rollback"),
            None,
        )
        .await
    }

    /// `POST /admin/repository/rescan`.
    ///
    /// # Errors
    /// [`ClientError`] when the call fails.
    pub async fn rescan(&self) -> Result<Value, ClientError> {
        self.call(Method::POST, "/admin/repository/rescan", None)
            .await
    }
}

/// Renders rows as left-aligned columns separated by two spaces.
pub fn table(rows: &[Vec<String>]) -> String {
    let columns = rows.iter().map(Vec::len).max().unwrap_or(0);
    let widths: Vec<usize> = (0..columns)
        .map(|c| {
            rows.iter()
                .map(|r| r.get(c).map_or(0, |cell| cell.chars().count()))
                .max()
                .unwrap_or(0)
        })
        .collect();
    let mut out = String::new();
    for row in rows {
        let cells: Vec<String> = row
            .iter()
            .zip(&widths)
            .map(|(cell, width)| format!("{cell:<width$}"))
            .collect();
        out.push_str(cells.join("  ").trim_end());
        out.push('\n');
    }
    out
}

fn text(value: &Value) -> String {
    match value {
        Value::Null => "-".to_string(),
        Value::String(s) => s.clone(),
        Value::Number(n) => n
            .as_f64()
            .map_or_else(|| n.to_string(), |x| format!("{}", (x * 1e4).round() / 1e4)),
        other => other.to_string(),
    }
}

/// One table of every version of the models in `report` (a model report or `{"models": [...]}`).
pub fn render_models(report: &Value) -> String {
    let models: Vec<&Value> = match report.get("models").and_then(Value::as_array) {
        Some(models) => models.iter().collect(),
        None => vec![report],
    };
    let mut rows = vec![
        [
            "MODEL",
            "VERSION",
            "ROLE",
            "STATUS",
            "HIGHLIGHT",
            "VALIDATION",
            "TEST",
            "CREATED",
            "RUN",
        ]
        .map(String::from)
        .to_vec(),
    ];
    for model in &models {
        for version in model["versions"].as_array().into_iter().flatten() {
            let highlight = version["highlight"].as_str().unwrap_or("");
            let best = model["best_validation"] == version["version"];
            rows.push(vec![
                text(&model["name"]),
                text(&version["version"]),
                text(&version["role"]),
                text(&version["status"]),
                if highlight.is_empty() {
                    "-".into()
                } else {
                    format!("{highlight}{}", if best { " (best)" } else { "" })
                },
                text(&version["metrics"]["validation"][highlight]),
                text(&version["metrics"]["test"][highlight]),
                text(&version["created_at"]),
                text(&version["run"]),
            ]);
        }
    }
    let mut out = table(&rows);
    for model in &models {
        out.push_str(&format!(
            "\n{}: champion {}, threshold {}, policy {}, revision {}, history [{}]\n",
            text(&model["name"]),
            text(&model["champion"]),
            text(&model["threshold"]),
            text(&model["policy"]),
            text(&model["revision"]),
            model["history"]
                .as_array()
                .map(|h| h.iter().map(text).collect::<Vec<_>>().join(", "))
                .unwrap_or_default()
        ));
        let shadows = model["shadows"].as_array().cloned().unwrap_or_default();
        if !shadows.is_empty() {
            let mut rows = vec![
                [
                    "SHADOW",
                    "FRACTION",
                    "MIRRORED",
                    "DROPPED",
                    "FAILED",
                    "TIMED OUT",
                    "AGREEMENT",
                    "MEAN |Δ|",
                    "SHADOW p50 s",
                    "CHAMPION p50 s",
                ]
                .map(String::from)
                .to_vec(),
            ];
            for shadow in &shadows {
                let c = &shadow["comparison"];
                rows.push(vec![
                    text(&shadow["version"]),
                    text(&shadow["fraction"]),
                    text(&c["mirrored"]),
                    text(&c["dropped"]),
                    text(&c["failed"]),
                    text(&c["timed_out"]),
                    text(&c["agreement_rate"]),
                    text(&c["mean_abs_difference"]),
                    text(&c["shadow_latency_p50"]),
                    text(&c["champion_latency_p50"]),
                ]);
            }
            out.push_str(&table(&rows));
        }
    }
    out
}

/// The outcome of a rescan as a table.
pub fn render_rescan(report: &Value) -> String {
    let mut rows = vec![
        ["MODEL", "VERSION", "STATUS", "DEPLOYED AS", "REASON"]
            .map(String::from)
            .to_vec(),
    ];
    for found in report["found"].as_array().into_iter().flatten() {
        rows.push(vec![
            text(&found["model"]),
            text(&found["version"]),
            text(&found["status"]),
            text(&found["deployed_as"]),
            text(&found["reason"]),
        ]);
    }
    if rows.len() == 1 {
        return "no new versions\n".to_string();
    }
    table(&rows)
}
