//! The in-process backend (placeholder until written).
