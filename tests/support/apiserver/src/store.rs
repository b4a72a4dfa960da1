//! TODO: owned by the core-server helper.
