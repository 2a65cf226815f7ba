//! How to reach the shared database: its address, password, timeouts and how changes are
//! followed; and its address as shown (without the password).

use std::time::Duration;

/// The PostgreSQL database shared by replicas.
#[derive(Clone, PartialEq)]
pub struct DatabaseSettings {
    /// `postgres://…` (or a libpq key=value string), as given.
    pub url: String,
    /// The password from `database_password_file` or `PGPASSWORD`, used when the URL has none.
    pub password: Option<String>,
    /// Bound on connecting and on waiting for a pooled connection.
    pub timeout: Duration,
    /// Interval of the fallback check for changes made elsewhere.
    pub poll: Duration,
    /// Follow changes as the database notifies them (else only by the poll).
    pub notifications: bool,
    /// How this replica is reached, for `GET /admin/replicas` (`None`: the listen address).
    pub advertise_address: Option<String>,
}

impl std::fmt::Debug for DatabaseSettings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DatabaseSettings")
            .field("url", &redact_url(&self.url))
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .field("timeout", &self.timeout)
            .field("poll", &self.poll)
            .field("notifications", &self.notifications)
            .field("advertise_address", &self.advertise_address)
            .finish()
    }
}

/// `url` with any password replaced by `***`, for logs and errors.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url
            .split_whitespace()
            .map(|pair| match pair.split_once('=') {
                Some(("password", _)) => "password=***".to_string(),
                _ => pair.to_string(),
            })
            .collect::<Vec<_>>()
            .join(" ");
    };
    let (authority, path) = rest
        .split_once('/')
        .map_or((rest, None), |(a, p)| (a, Some(p)));
    let authority = match authority.rsplit_once('@') {
        Some((credentials, host)) => match credentials.split_once(':') {
            Some((user, _)) => format!("{user}:***@{host}"),
            None => format!("{credentials}@{host}"),
        },
        None => authority.to_string(),
    };
    match path {
        Some(path) => format!("{scheme}://{authority}/{path}"),
        None => format!("{scheme}://{authority}"),
    }
}
