//! Health checks of backends, like keepalived's real-server checks or
//! HAProxy's `check inter 2s rise 2 fall 3`.
//!
//! [`state`] decides, without I/O, when probe results flip a backend up or
//! down; [`probe`] runs one probe of any kind; [`Monitor`] runs a task per
//! checked backend and reports each [`Transition`].

mod dns;
pub mod monitor;
pub mod probe;
mod random;
pub mod state;
mod tls;

pub use monitor::{CheckHandle, CheckId, CheckStatus, Monitor, Transition};
