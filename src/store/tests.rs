use super::files::Files;
use super::*;
use std::collections::BTreeMap;

fn record(revision: u64, threshold: f64) -> DeploymentRecord {
    DeploymentRecord {
        revision,
        champion: Some("2".into()),
        shadows: BTreeMap::from([("3".to_string(), 0.5)]),
        threshold,
        policy: DeployPolicy::BestValidation,
        history: vec!["1".into()],
        known_versions: vec!["1".into(), "2".into(), "3".into()],
        promotion: Default::default(),
    }
}

fn entry(revision: u64) -> AuditEntry {
    AuditEntry::now(
        Actor::Admin,
        format!("threshold {revision}"),
        "iris",
        Some(record(revision - 1, 0.1)),
        record(revision, 0.1 * revision as f64),
    )
}

#[test]
fn a_commit_is_in_the_state_file_and_the_audit_log() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Files::open(dir.path()).expect("open");
    assert_eq!(store.load("iris").expect("no state yet"), None);
    store.commit(&entry(1)).expect("commit");
    store.commit(&entry(2)).expect("commit");
    assert_eq!(store.load("iris").expect("load"), Some(entry(2).after));
    let log = std::fs::read_to_string(store.audit_path()).expect("log");
    let revisions: Vec<u64> = log
        .lines()
        .map(|l| {
            serde_json::from_str::<AuditEntry>(l)
                .expect("entry")
                .revision
        })
        .collect();
    assert_eq!(revisions, vec![1, 2]);
    assert!(!store.path("iris").with_extension("json.tmp").exists());
}

#[test]
fn a_corrupt_state_file_is_an_error_not_a_fresh_start() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Files::open(dir.path()).expect("open");
    std::fs::write(store.path("iris"), "{\"format\": 2, \"model\": ").expect("write");
    let err = store.load("iris").unwrap_err();
    assert!(err.to_string().contains("move it away"), "{err}");
    assert!(store.path("iris").exists(), "the file is left in place");
}

#[test]
fn an_audited_change_whose_state_file_was_not_written_is_completed_at_open() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Files::open(dir.path()).expect("open");
    store.commit(&entry(1)).expect("commit");
    // The process died after appending revision 2 to the log, before the state file.
    let mut audit = AuditLog::open(&store.audit_path()).expect("log");
    audit.append(&entry(2)).expect("append");
    drop(store);
    let reopened = Files::open(dir.path()).expect("reopen");
    assert_eq!(reopened.load("iris").expect("load"), Some(entry(2).after));
}

#[test]
fn a_state_file_that_cannot_be_replaced_leaves_no_audit_entry() {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = Files::open(dir.path()).expect("open");
    store.commit(&entry(1)).expect("commit");
    let before = std::fs::read_to_string(store.audit_path()).expect("log");
    // A directory where the temp file must go makes the state write fail for real.
    let temp = store.path("iris").with_extension("json.tmp");
    std::fs::create_dir(&temp).expect("block the temp file");
    let err = store.commit(&entry(2)).unwrap_err();
    assert!(err.to_string().contains("iris.json.tmp"), "{err}");
    assert_eq!(
        std::fs::read_to_string(store.audit_path()).expect("log"),
        before
    );
    assert_eq!(store.load("iris").expect("load"), Some(entry(1).after));
}

#[test]
fn a_format_1_state_file_is_split_per_model() {
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::write(
        dir.path().join(LEGACY_STATE_FILE),
        r#"{"format": 1, "models": {"iris": {"champion": "2", "shadows": {"3": 0.5},
            "threshold": 0.7, "policy": "shadow", "history": ["1"],
            "known_versions": ["1", "2", "3"]}}}"#,
    )
    .expect("write legacy");
    let store = Files::open(dir.path()).expect("open");
    let iris = store.load("iris").expect("load").expect("migrated");
    assert_eq!(iris.revision, 0);
    assert_eq!(iris.champion.as_deref(), Some("2"));
    assert_eq!(iris.policy, DeployPolicy::Shadow);
    assert!(!dir.path().join(LEGACY_STATE_FILE).exists());
    assert!(dir.path().join("deployments.json.migrated").exists());
}
