//! Runner registration, verification, unregistration and token reset
//! (runner-protocol.md §2).

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;

use crate::instance::Inner;
use crate::state::{RegisteredVia, RunnerRecord, random_token};
use crate::web::{bad_json, json, json_message, parse_body, token_from};

/// The `info` object every runner request carries (only what we keep).
#[derive(Deserialize, Default, Debug)]
#[serde(default)]
pub(crate) struct RunnerInfoBody {
    pub version: Option<String>,
    pub executor: Option<String>,
    pub features: Option<BTreeMap<String, serde_json::Value>>,
}

impl RunnerInfoBody {
    /// Apply to a runner record (features only when announced).
    pub fn apply(&self, r: &mut RunnerRecord) {
        if let Some(v) = self.version.as_ref().filter(|v| !v.is_empty()) {
            r.version = Some(v.clone());
        }
        if let Some(e) = self.executor.as_ref().filter(|e| !e.is_empty()) {
            r.executor = Some(e.clone());
        }
        if let Some(f) = &self.features {
            r.features = f
                .iter()
                .filter_map(|(k, v)| v.as_bool().map(|b| (k.clone(), b)))
                .collect();
        }
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct RegisterBody {
    token: Option<String>,
    description: Option<String>,
    tag_list: Option<String>,
    run_untagged: Option<bool>,
    info: Option<RunnerInfoBody>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub(crate) struct TokenBody {
    token: Option<String>,
    system_id: Option<String>,
    info: Option<RunnerInfoBody>,
}

fn forbidden() -> Response {
    json_message(StatusCode::FORBIDDEN, "403 Forbidden")
}

fn token_reply(status: StatusCode, id: u64, token: &str) -> Response {
    // `token_expires_at: null` keeps `gitlab-runner run` from rotating tokens.
    json(
        status,
        &serde_json::json!({ "id": id, "token": token, "token_expires_at": null }),
    )
}

/// `POST /runners`: legacy registration with the instance registration token.
pub(crate) async fn register(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<RegisterBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return forbidden();
    };
    if !crate::web::ct_eq(&token, &inner.registration_token) {
        return forbidden();
    }
    let tags: Vec<String> = b
        .tag_list
        .as_deref()
        .unwrap_or("")
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_string)
        .collect();
    // A runner without tags must be allowed to pick untagged jobs, else it
    // could never run anything.
    let run_untagged = b.run_untagged.unwrap_or(true) || tags.is_empty();
    let mut record = RunnerRecord {
        id: 0,
        description: b.description.unwrap_or_default(),
        tags,
        run_untagged,
        registered_via: RegisteredVia::Legacy,
        system_ids: BTreeSet::new(),
        features: BTreeMap::new(),
        version: None,
        executor: None,
        poll_count: 0,
        last_poll: None,
        long_polls: 0,
        verify_count: 0,
        removed: false,
    };
    if let Some(info) = &b.info {
        info.apply(&mut record);
    }
    let (id, token) = inner.add_runner(record);
    tracing::info!(runner = id, "runner registered (legacy registration token)");
    token_reply(StatusCode::CREATED, id, &token)
}

/// `POST /runners/verify`: checks a token; records the runner manager.
pub(crate) async fn verify(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<TokenBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return forbidden();
    };
    let mut st = inner.lock();
    let Some(r) = st.runner_by_token_mut(&token) else {
        return forbidden();
    };
    r.record.verify_count += 1;
    if let Some(s) = b.system_id.filter(|s| !s.is_empty()) {
        r.record.system_ids.insert(s);
    }
    if let Some(info) = &b.info {
        info.apply(&mut r.record);
    }
    let id = r.record.id;
    drop(st);
    tracing::info!(runner = id, "runner verified");
    token_reply(StatusCode::OK, id, &token)
}

/// `DELETE /runners`: removes the runner.
pub(crate) async fn unregister(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<TokenBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return forbidden();
    };
    let mut st = inner.lock();
    let Some(r) = st.runner_by_token_mut(&token) else {
        return forbidden();
    };
    r.record.removed = true;
    let id = r.record.id;
    st.runner_by_token.remove(&token);
    drop(st);
    tracing::info!(runner = id, "runner unregistered");
    StatusCode::NO_CONTENT.into_response()
}

/// `DELETE /runners/managers`: removes one runner manager (system_id).
pub(crate) async fn unregister_manager(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<TokenBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return forbidden();
    };
    let Some(system_id) = b.system_id.filter(|s| !s.is_empty()) else {
        return json(
            StatusCode::BAD_REQUEST,
            &serde_json::json!({"error": "system_id is missing"}),
        );
    };
    let mut st = inner.lock();
    let Some(r) = st.runner_by_token_mut(&token) else {
        return forbidden();
    };
    r.record.system_ids.remove(&system_id);
    let id = r.record.id;
    drop(st);
    tracing::info!(runner = id, "runner manager unregistered");
    StatusCode::NO_CONTENT.into_response()
}

/// `POST /runners/reset_authentication_token`: issues a new token; the old
/// one stops working.
pub(crate) async fn reset_token(
    State(inner): State<Arc<Inner>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(b) = parse_body::<TokenBody>(&body) else {
        return bad_json();
    };
    let Some(token) = token_from(b.token.as_deref(), &headers, "RUNNER-TOKEN") else {
        return forbidden();
    };
    let mut st = inner.lock();
    let Some(id) = st.runner_by_token(&token).map(|r| r.record.id) else {
        return forbidden();
    };
    let prefix = match st.runners.get(&id).map(|r| r.record.registered_via) {
        Some(RegisteredVia::Legacy) => "",
        _ => "glrt-",
    };
    let new_token = random_token(prefix, 20);
    st.runner_by_token.remove(&token);
    st.runner_by_token.insert(new_token.clone(), id);
    if let Some(r) = st.runners.get_mut(&id) {
        r.token = new_token.clone();
    }
    drop(st);
    tracing::info!(runner = id, "runner token reset");
    token_reply(StatusCode::CREATED, id, &new_token)
}
