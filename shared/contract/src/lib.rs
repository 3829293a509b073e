//! The port contract suite lives in `tests/`.
