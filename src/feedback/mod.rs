//! The feedback loop: ground truth by request id, live quality per version, champion-versus-
//! shadow evidence and the promotion rule, and the retraining trigger.

pub mod evidence;
pub mod statistics;

pub use self::evidence::{EvidenceState, EvidenceView, Pair, PairedEvidence};
