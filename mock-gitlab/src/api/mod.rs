//! The runner API under `/api/v4` (and the REST subset for test drivers), and git over
//! HTTP outside it: the route handlers. The router that assembles them, records requests
//! and applies faults is [`crate::server`]'s.

pub mod artifacts;
pub(crate) mod git_http;
pub mod jobs;
pub mod rest;
pub mod runners;
pub mod trace;
