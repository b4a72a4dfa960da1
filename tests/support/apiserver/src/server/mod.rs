//! TODO: owned by the core-server helper. Placeholder types so the crate compiles.
#![allow(missing_docs)]

/// Identities the server authenticates by bearer token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Identity {
    Admin,
    Driftguard,
    Hpa,
    GarbageCollector,
    NamespaceController,
    User,
}

/// Options.
#[derive(Debug, Clone, Default)]
pub struct ServerOptions {}

/// A running server.
pub struct TestApiServer {}
