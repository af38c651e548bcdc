//! The runner API under `/api/v4` (and the REST subset for test drivers): the route
//! handlers. The router that assembles them, records requests and applies faults is
//! [`crate::server`]'s.

pub mod artifacts;
pub mod jobs;
pub mod rest;
pub mod runners;
pub mod trace;
