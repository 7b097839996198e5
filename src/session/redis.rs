//! The Redis backend (placeholder until written).
