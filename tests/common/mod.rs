//! Shared helpers for the behaviour tests: engines, the clients that connect to them, and
//! bounded waits. Every test binary compiles all of them and uses a few, hence the `allow`s.
#![allow(dead_code, unreachable_pub)]

mod connect;
mod engine;
mod pipe;
mod programs;
#[cfg(feature = "metrics")]
mod prometheus;
mod raw;
mod read;
mod record;
#[cfg(feature = "cli")]
pub mod serve;
mod wait;
mod watch;

#[allow(unused_imports)]
pub use self::{
    connect::*, engine::*, pipe::*, programs::*, raw::*, read::*, record::*, wait::*, watch::*,
};

#[cfg(feature = "metrics")]
#[allow(unused_imports)]
pub use prometheus::*;
