//! Fuzz target bodies (compiled for tests and `cargo fuzz` only).
