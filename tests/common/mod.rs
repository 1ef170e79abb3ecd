// Each test binary uses only part of the harness.
#![allow(dead_code)]

pub mod cluster;
pub mod models;
pub mod pg;
pub mod proxy;
pub mod sse;
