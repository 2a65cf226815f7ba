//! Monitoring of served versions. For now: the shadow-versus-champion comparison, recorded by
//! shadow workers off the request path and read by the admin API.

mod compare;
mod latency;

pub use self::compare::{ShadowComparison, ShadowStats};
pub use self::latency::LatencyWindow;
