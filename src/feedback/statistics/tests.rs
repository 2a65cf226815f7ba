use super::*;

#[test]
fn the_published_check_value_holds() {
    let lambda = discordant_log_evidence(20, 5, 1.0).exp();
    assert!((lambda - 48.520_452_0).abs() < 1e-6, "{lambda}");
}
