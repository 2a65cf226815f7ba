//! The tract backend (feature `tract`): placeholder replaced below.
