//! The PostgreSQL deployment store against a real server: a change is saved with its audit
//! entry, a change from a revision that is no longer the saved one is refused as a conflict
//! (also between two stores on the same database, as two replicas), and the audit lists a model's
//! entries newest first.

#![allow(
    clippy::expect_used,
    clippy::unwrap_used,
    clippy::panic,
    reason = "test code fails loudly on broken expectations"
)]

mod common;

use common::postgres::Postgres;
use std::collections::BTreeMap;
use std::time::Duration;
use vigil::store::{
    Actor, AuditEntry, DeployPolicy, DeploymentRecord, DeploymentStore, PostgresStore, StoreError,
};

fn record(revision: u64, champion: &str) -> DeploymentRecord {
    DeploymentRecord {
        revision,
        champion: Some(champion.into()),
        shadows: BTreeMap::new(),
        threshold: 0.0,
        policy: DeployPolicy::Manual,
        history: vec![],
        known_versions: vec!["1".into(), "2".into()],
        promotion: Default::default(),
    }
}

fn change(model: &str, before: Option<(u64, &str)>, after: (u64, &str)) -> AuditEntry {
    AuditEntry::now(
        Actor::Admin,
        format!("promote {}", after.1),
        model,
        before.map(|(revision, champion)| record(revision, champion)),
        record(after.0, after.1),
    )
}

#[tokio::test]
async fn changes_are_saved_once_and_conflicts_refused_across_replicas() {
    let postgres = Postgres::start();
    let a = PostgresStore::connect(&common::postgres::settings(postgres.url()))
        .await
        .expect("replica A connects and migrates");
    let b = PostgresStore::connect(&common::postgres::settings(postgres.url()))
        .await
        .expect("replica B connects; the schema is already there");
    assert_eq!(
        postgres.sql("SELECT COUNT(*) = MAX(version) FROM vigil_schema"),
        "t",
        "every migration applied once, though two replicas started"
    );
    assert_eq!(a.load("iris").await.expect("load"), None);

    a.commit(&change("iris", None, (1, "1")))
        .await
        .expect("first deployment");
    let first_again = b.commit(&change("iris", None, (1, "2"))).await;
    assert!(
        matches!(first_again, Err(StoreError::Conflict { current: 1, .. })),
        "{first_again:?}"
    );
    assert_eq!(b.load("iris").await.expect("load"), Some(record(1, "1")));

    // Two replicas change revision 1 at once: exactly one wins.
    let (to_2, to_1) = (
        change("iris", Some((1, "1")), (2, "2")),
        change("iris", Some((1, "1")), (2, "1")),
    );
    let (from_a, from_b) = tokio::join!(a.commit(&to_2), b.commit(&to_1));
    assert_eq!(
        [from_a.is_ok(), from_b.is_ok()]
            .iter()
            .filter(|ok| **ok)
            .count(),
        1,
        "{from_a:?} {from_b:?}"
    );
    let loser = from_a.err().or(from_b.err());
    assert!(
        matches!(loser, Some(StoreError::Conflict { current: 2, .. })),
        "{loser:?}"
    );
    // A model's first change may start from an empty deployment at revision 0 (a model the
    // registry sync creates): it is saved like a first deployment.
    a.commit(&change("diabetes", Some((0, "1")), (1, "1")))
        .await
        .expect("another model, from revision 0");

    let audit = b.audit("iris", 10).await.expect("audit");
    assert_eq!(
        audit.iter().map(|e| e.revision).collect::<Vec<_>>(),
        [2, 1],
        "newest first, only iris, no entry for refused changes"
    );
    assert_eq!(b.audit("iris", 1).await.expect("audit").len(), 1);
    assert_eq!(
        a.revisions().await.expect("revisions"),
        BTreeMap::from([("diabetes".to_string(), 1), ("iris".to_string(), 2)])
    );
}

#[tokio::test]
async fn an_unreachable_database_is_refused_within_the_timeout() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("port");
    let started = std::time::Instant::now();
    let refused = PostgresStore::connect(&common::postgres::settings(format!(
        "postgres://vigil:secret@127.0.0.1:{port}/vigil"
    )))
    .await
    .expect_err("nothing listens there");
    assert!(started.elapsed() < Duration::from_secs(10));
    assert!(
        matches!(refused, StoreError::Unavailable { .. }),
        "{refused:?}"
    );
    let message = refused.to_string();
    assert!(message.contains(&format!("127.0.0.1:{port}")), "{message}");
    assert!(
        !message.contains("secret"),
        "the password is never shown: {message}"
    );
}
