//! The agent's TOML configuration.

pub mod model;
