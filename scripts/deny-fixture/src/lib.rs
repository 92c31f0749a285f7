//! Empty: only the dependency matters (see Cargo.toml).
