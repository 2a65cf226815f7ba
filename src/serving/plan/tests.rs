//! `plan` against real loaded versions (the bundled iris models on ONNX Runtime): every change
//! kind, and every refusal leaving the state as it was.

use super::*;
use crate::engine::{Engines, locate_library};
use crate::metrics::Metrics;
use crate::monitor::{MonitorSettings, ShadowStats};
use crate::repository::VersionDir;
use crate::serving::deployment::{DeploymentState, restore};
use crate::serving::{LoadContext, MirrorSettings};
use crate::store::DeploymentRecord;
use std::path::PathBuf;
use std::sync::OnceLock;
use std::time::Duration;

/// Iris versions 1, 2 and 3, loaded once for every test.
fn iris() -> &'static [VersionEntry] {
    static VERSIONS: OnceLock<Vec<VersionEntry>> = OnceLock::new();
    VERSIONS.get_or_init(|| {
        let library = locate_library(None).expect("ONNX Runtime (run `make setup`)");
        let context = LoadContext {
            engines: Engines::new(&library, 1).expect("ONNX Runtime loads"),
            metrics: Arc::new(Metrics::new()),
            monitor: MonitorSettings {
                enabled: true,
                window_rows: 100,
                alpha: 0.05,
                outlier_cut: 0.99,
            },
        };
        let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("models/iris");
        ["1", "2", "3"]
            .into_iter()
            .map(|version| {
                let entry = VersionEntry::load(
                    VersionDir {
                        model: "iris".into(),
                        version: version.into(),
                        path: root.join(version),
                    },
                    &context,
                );
                assert!(entry.ready().is_some(), "iris {version} loads");
                entry
            })
            .collect()
    })
}

fn entry(version: &str) -> VersionEntry {
    iris()
        .iter()
        .find(|v| v.version == version)
        .cloned()
        .expect("an iris version")
}

fn loaded(version: &str) -> Arc<LoadedVersion> {
    Arc::clone(entry(version).ready().expect("ready"))
}

fn failed(version: &str) -> VersionEntry {
    VersionEntry {
        status: VersionStatus::Failed("model.onnx is broken".into()),
        ..entry(version)
    }
}

fn mirror(version: &str) -> Arc<Mirror> {
    let settings = MirrorSettings {
        queue_capacity: 4,
        workers: 1,
        timeout: Duration::from_secs(1),
        max_batch_rows: 16,
    };
    Arc::new(Mirror::start(
        loaded(version),
        Arc::new(ShadowStats::default()),
        settings,
        None,
    ))
}

/// Iris with versions 1–3 deployed under `policy` (champion 3, threshold 0.5).
fn deployed(policy: DeployPolicy) -> DeploymentState {
    let empty = DeploymentState::empty("iris", 0.5, policy);
    plan(&empty, &Change::Deploy(iris().to_vec())).expect("deploys")
}

fn champion(state: &DeploymentState) -> Option<&str> {
    state.champion.as_ref().map(|c| &*c.version)
}

fn shadows(state: &DeploymentState) -> Vec<(String, f64)> {
    state
        .shadows
        .iter()
        .map(|s| (s.version().version.to_string(), s.fraction))
        .collect()
}

/// Plans `change`, expects a refusal matching `refused`, and checks nothing changed.
fn refused(
    state: &DeploymentState,
    change: Change,
    refused: impl Fn(&ServingError) -> bool,
) -> ServingError {
    let before = state.record();
    let error = plan(state, &change).expect_err("the change is refused");
    assert!(refused(&error), "unexpected refusal: {error}");
    assert_eq!(state.record(), before, "a refusal changes nothing");
    error
}

#[test]
fn a_first_deployment_serves_the_highest_ready_version_at_revision_one() {
    let state = deployed(DeployPolicy::Manual);
    assert_eq!(state.revision, 1);
    assert_eq!(champion(&state), Some("3"));
    assert_eq!(state.threshold, 0.5);
    assert!(state.history.is_empty() && state.shadows.is_empty());
    assert_eq!(state.record().known_versions, vec!["1", "2", "3"]);
    let partly_broken = plan(
        &DeploymentState::empty("iris", 0.0, DeployPolicy::Manual),
        &Change::Deploy(vec![entry("1"), entry("2"), failed("3")]),
    )
    .expect("deploys");
    assert_eq!(champion(&partly_broken), Some("2"));
}

#[test]
fn a_first_deployment_under_best_validation_serves_the_best_score() {
    let empty = DeploymentState::empty("iris", 0.0, DeployPolicy::BestValidation);
    let state = plan(&empty, &Change::Deploy(vec![entry("2"), entry("1")])).expect("deploys");
    assert_eq!(champion(&state), Some("1"), "accuracy 0.933 beats 0.9");
    assert_eq!(
        state
            .versions
            .iter()
            .map(|v| v.version.as_str())
            .collect::<Vec<_>>(),
        vec!["1", "2"],
        "versions are kept in version order"
    );
}

#[test]
fn promote_moves_the_champion_to_the_history_and_ends_its_shadowing() {
    let state = deployed(DeployPolicy::Manual);
    let shadowed = plan(
        &state,
        &Change::Shadow {
            mirror: mirror("1"),
            fraction: 0.5,
        },
    )
    .expect("shadow");
    let next = plan(&shadowed, &Change::Promote(loaded("1"))).expect("promote");
    assert_eq!(next.revision, shadowed.revision + 1);
    assert_eq!(champion(&next), Some("1"));
    assert_eq!(next.history, vec!["3"]);
    assert!(next.shadows.is_empty());
    assert_eq!(next.role("1"), VersionRole::Champion);
    assert_eq!(next.role("3"), VersionRole::Idle);
    let again = plan(&next, &Change::Promote(loaded("1"))).expect("promote again");
    assert!(
        again.is_same_as(&next),
        "promoting the champion changes nothing"
    );
}

#[test]
fn promote_reloads_a_version_that_was_unloaded() {
    let state = deployed(DeployPolicy::Manual);
    let unloaded = plan(&state, &Change::Unload("2".into())).expect("unload");
    assert!(matches!(
        unloaded.entry("2").map(|e| &e.status),
        Some(VersionStatus::Unloaded)
    ));
    let next = plan(&unloaded, &Change::Promote(loaded("2"))).expect("promote");
    assert!(next.entry("2").and_then(VersionEntry::ready).is_some());
    assert_eq!(champion(&next), Some("2"));
}

#[test]
fn the_history_keeps_the_last_hundred_champions() {
    let mut state = deployed(DeployPolicy::Manual);
    for round in 0..120 {
        let version = if round % 2 == 0 { "1" } else { "2" };
        state = plan(&state, &Change::Promote(loaded(version))).expect("promote");
    }
    assert_eq!(state.history.len(), HISTORY_LIMIT);
    assert_eq!(state.history.last().map(String::as_str), Some("1"));
    assert_eq!(state.revision, 121);
}

#[test]
fn shadows_are_added_changed_and_removed() {
    let state = deployed(DeployPolicy::Manual);
    let two = mirror("2");
    let one = plan(
        &state,
        &Change::Shadow {
            mirror: Arc::clone(&two),
            fraction: 0.25,
        },
    )
    .expect("shadow 2");
    let both = plan(
        &one,
        &Change::Shadow {
            mirror: mirror("1"),
            fraction: 1.0,
        },
    )
    .expect("shadow 1");
    assert_eq!(
        shadows(&both),
        vec![("1".to_string(), 1.0), ("2".to_string(), 0.25)],
        "in version order"
    );
    let changed = plan(
        &both,
        &Change::Shadow {
            mirror: Arc::clone(&two),
            fraction: 0.75,
        },
    )
    .expect("new fraction");
    assert_eq!(shadows(&changed)[1], ("2".to_string(), 0.75));
    assert!(Arc::ptr_eq(
        &changed.shadow("2").expect("shadow").mirror,
        &two
    ));
    let removed = plan(&changed, &Change::Unshadow("1".into())).expect("unshadow");
    assert_eq!(shadows(&removed), vec![("2".to_string(), 0.75)]);
    assert_eq!(removed.record().shadows.len(), 1);
}

#[test]
fn shadow_refusals_change_nothing() {
    let state = deployed(DeployPolicy::Manual);
    for fraction in [-0.1, 1.5, f64::NAN] {
        refused(
            &state,
            Change::Shadow {
                mirror: mirror("2"),
                fraction,
            },
            |e| matches!(e, ServingError::InvalidInput { field, .. } if field == "fraction"),
        );
    }
    let error = refused(
        &state,
        Change::Shadow {
            mirror: mirror("3"),
            fraction: 1.0,
        },
        |e| matches!(e, ServingError::Conflict(_)),
    );
    assert!(error.to_string().contains("champion"), "{error}");
    refused(
        &state,
        Change::Unshadow("2".into()),
        |e| matches!(e, ServingError::Conflict(m) if m.contains("not a shadow")),
    );
}

#[test]
fn thresholds_from_zero_to_one_only() {
    let state = deployed(DeployPolicy::Manual);
    let next = plan(&state, &Change::Threshold(0.8)).expect("threshold");
    assert_eq!(next.threshold, 0.8);
    assert_eq!(next.record().threshold, 0.8);
    for bad in [-0.01, 1.01, f64::INFINITY, f64::NAN] {
        refused(
            &state,
            Change::Threshold(bad),
            |e| matches!(e, ServingError::InvalidInput { field, .. } if field == "threshold"),
        );
    }
    let same = plan(&next, &Change::Threshold(0.8)).expect("same threshold");
    assert!(same.is_same_as(&next));
}

#[test]
fn policies_change_what_later_versions_do() {
    let state = deployed(DeployPolicy::Manual);
    let next = plan(&state, &Change::Policy(DeployPolicy::Champion)).expect("policy");
    assert_eq!(next.policy, DeployPolicy::Champion);
    assert_eq!(next.revision, 2);
}

#[test]
fn rollback_restores_the_previous_champion_and_cuts_the_history() {
    let state = deployed(DeployPolicy::Manual);
    let to_one = plan(&state, &Change::Promote(loaded("1"))).expect("promote 1");
    let to_two = plan(&to_one, &Change::Promote(loaded("2"))).expect("promote 2");
    assert_eq!(to_two.history, vec!["3", "1"]);
    let back = plan(&to_two, &Change::Rollback(loaded("1"))).expect("rollback");
    assert_eq!(champion(&back), Some("1"));
    assert_eq!(back.history, vec!["3"]);
    let further = plan(&back, &Change::Rollback(loaded("3"))).expect("rollback");
    assert_eq!(champion(&further), Some("3"));
    assert!(further.history.is_empty());
    refused(
        &further,
        Change::Rollback(loaded("2")),
        |e| matches!(e, ServingError::Conflict(m) if m.contains("not a previous champion")),
    );
}

#[test]
fn load_replaces_entries_and_gives_a_model_without_champion_one() {
    let empty = DeploymentState::empty("iris", 0.0, DeployPolicy::Manual);
    let broken = plan(&empty, &Change::Deploy(vec![failed("1"), failed("2")])).expect("deploy");
    assert_eq!(champion(&broken), None);
    let next = plan(&broken, &Change::Load(vec![entry("2")])).expect("load");
    assert_eq!(champion(&next), Some("2"));
    assert!(!next.is_same_as(&broken));
    refused(
        &broken,
        Change::Load(vec![entry("3")]),
        |e| matches!(e, ServingError::UnknownVersion { version, .. } if version == "3"),
    );
}

#[test]
fn unload_takes_idle_versions_only() {
    let state = deployed(DeployPolicy::Manual);
    let shadowed = plan(
        &state,
        &Change::Shadow {
            mirror: mirror("2"),
            fraction: 1.0,
        },
    )
    .expect("shadow");
    refused(
        &shadowed,
        Change::Unload("3".into()),
        |e| matches!(e, ServingError::Conflict(m) if m.contains("promote another version first")),
    );
    refused(
        &shadowed,
        Change::Unload("2".into()),
        |e| matches!(e, ServingError::Conflict(m) if m.contains("remove the shadow first")),
    );
    refused(&shadowed, Change::Unload("9".into()), |e| {
        matches!(e, ServingError::UnknownVersion { .. })
    });
    let next = plan(&shadowed, &Change::Unload("1".into())).expect("unload");
    assert!(matches!(
        next.ready("1"),
        Err(ServingError::Unavailable { reason, .. }) if reason == "unloaded"
    ));
}

/// Iris with versions 1 and 2 deployed under `policy` (champion 2), ready for version 3.
fn before_three(policy: DeployPolicy) -> DeploymentState {
    let empty = DeploymentState::empty("iris", 0.0, policy);
    let mut state = plan(&empty, &Change::Deploy(vec![entry("1"), entry("2")])).expect("deploy");
    if policy == DeployPolicy::BestValidation {
        state = plan(&state, &Change::Promote(loaded("2"))).expect("promote 2");
    }
    state
}

#[test]
fn a_new_version_gets_the_deploy_policy() {
    let add = |mirror| Change::AddVersion {
        entry: Box::new(entry("3")),
        mirror,
    };
    let manual = plan(&before_three(DeployPolicy::Manual), &add(None)).expect("manual");
    assert_eq!(manual.role("3"), VersionRole::Idle);
    assert_eq!(add(None).action(&manual), "new version 3: idle");

    let shadow_state = before_three(DeployPolicy::Shadow);
    let entry_three = entry("3");
    assert!(needs_mirror(&shadow_state, &entry_three));
    let shadow = plan(&shadow_state, &add(Some(mirror("3")))).expect("shadow");
    assert_eq!(shadows(&shadow), vec![("3".to_string(), 1.0)]);
    refused(
        &shadow_state,
        add(None),
        |e| matches!(e, ServingError::Conflict(m) if m.contains("no mirror")),
    );

    let champion_policy =
        plan(&before_three(DeployPolicy::Champion), &add(None)).expect("champion");
    assert_eq!(champion(&champion_policy), Some("3"));
    assert_eq!(champion_policy.history, vec!["2"]);

    let best = plan(&before_three(DeployPolicy::BestValidation), &add(None)).expect("best");
    assert_eq!(champion(&best), Some("3"), "accuracy 1.0 beats 0.9");
    let state = before_three(DeployPolicy::BestValidation);
    let worse = plan(
        &plan(&state, &Change::Promote(loaded("1"))).expect("promote 1"),
        &Change::AddVersion {
            entry: Box::new(entry("2")),
            mirror: None,
        },
    );
    assert!(
        matches!(worse, Err(ServingError::Conflict(ref m)) if m.contains("already known")),
        "a known version cannot be added twice"
    );
}

#[test]
fn a_new_version_of_a_model_without_champion_becomes_champion() {
    let empty = DeploymentState::empty("iris", 0.0, DeployPolicy::Manual);
    let broken = plan(&empty, &Change::Deploy(vec![failed("1")])).expect("deploy");
    let next = plan(
        &broken,
        &Change::AddVersion {
            entry: Box::new(entry("2")),
            mirror: None,
        },
    )
    .expect("add");
    assert_eq!(champion(&next), Some("2"));
    assert!(next.history.is_empty());
}

fn saved(champion: &str, shadows: &[(&str, f64)]) -> DeploymentRecord {
    DeploymentRecord {
        revision: 7,
        champion: Some(champion.into()),
        shadows: shadows.iter().map(|(v, f)| (v.to_string(), *f)).collect(),
        threshold: 0.6,
        policy: DeployPolicy::Shadow,
        history: vec!["1".into()],
        known_versions: vec!["1".into(), "2".into(), "3".into()],
        promotion: Default::default(),
    }
}

#[test]
fn a_restart_restores_the_saved_deployment_at_its_revision() {
    let record = saved("2", &[("3", 0.5)]);
    let restored = restore("iris", &record, iris().to_vec(), &[mirror("3")]);
    assert!(restored.substitutions.is_empty());
    assert_eq!(restored.state.record(), record);
}

#[test]
fn a_restart_without_the_saved_champion_or_shadow_is_one_change() {
    let record = saved("3", &[("2", 0.5)]);
    let versions = vec![entry("1"), failed("2"), failed("3")];
    let restored = restore("iris", &record, versions, &[]);
    assert_eq!(
        champion(&restored.state),
        Some("1"),
        "the only ready version"
    );
    assert!(restored.state.shadows.is_empty());
    assert_eq!(restored.state.revision, 8);
    assert_eq!(
        restored.substitutions,
        vec![
            "champion 3 unavailable; best available version serves (1)".to_string(),
            "shadow 2 unavailable; removed".to_string()
        ]
    );
}
