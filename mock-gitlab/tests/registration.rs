//! Registration flows: legacy registration token and created (`glrt-`) runners.

mod common;

use common::{Lab, header};
use mock_gitlab::{RegisteredVia, RunnerSpec};
use reqwest::StatusCode;
use serde_json::{Value, json};

#[tokio::test]
async fn legacy_registration() {
    let lab = Lab::start().await;

    let r = lab.post("/runners", json!({"token": "wrong"})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = lab
        .post(
            "/runners",
            json!({"token": "reg-token-123", "description": "legacy", "tag_list": "a, b",
                   "run_untagged": false, "locked": true, "paused": false,
                   "info": {"version": "19.4.0", "features": {}}}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    assert!(
        header(&r, "content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert!(v["id"].as_u64().unwrap() > 0);
    // GitLab gives legacy-registered runners tokens without the glrt- prefix
    // (the runner picks its unregister endpoint by that prefix).
    let legacy_token = v["token"].as_str().unwrap();
    assert!(!legacy_token.starts_with("glrt-"));
    assert_eq!(legacy_token.len(), 20);
    assert!(v["token_expires_at"].is_null());
    assert!(v.as_object().unwrap().contains_key("token_expires_at"));

    let runners = lab.mock.runners();
    assert_eq!(runners.len(), 1);
    assert_eq!(runners[0].registered_via, RegisteredVia::Legacy);
    assert_eq!(runners[0].tags, vec!["a", "b"]);
    assert!(!runners[0].run_untagged);
    assert_eq!(runners[0].description, "legacy");

    // The token obtained this way works for verify.
    let token = v["token"].as_str().unwrap();
    let r = lab
        .post(
            "/runners/verify",
            json!({"token": token, "system_id": "s_aaaaaaaaaaaa"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
}

#[tokio::test]
async fn glrt_verify_unregister_and_reset() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec {
        description: "ui".into(),
        tags: vec![],
        run_untagged: true,
    });
    assert!(runner.token.starts_with("glrt-"));
    assert!(
        !format!("{runner:?}").contains(&runner.token),
        "token leaked in Debug"
    );

    let r = lab
        .post(
            "/runners/verify",
            json!({"token": "glrt-unknown", "system_id": "s_000000000000"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = lab
        .post(
            "/runners/verify",
            json!({"token": runner.token, "system_id": "s_0123456789ab"}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::OK);
    assert!(
        header(&r, "content-type")
            .unwrap_or_default()
            .starts_with("application/json")
    );
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["id"].as_u64(), Some(runner.id));
    assert_ne!(v["id"].as_u64(), Some(0));
    assert_eq!(v["token"].as_str(), Some(runner.token.as_str()));
    assert!(v["token_expires_at"].is_null());

    // RUNNER-TOKEN header instead of the body token (17.11+ runners send both).
    let r = lab
        .http
        .post(lab.url("/runners/verify"))
        .header("RUNNER-TOKEN", &runner.token)
        .json(&json!({"system_id": "s_bbbbbbbbbbbb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK);

    let rec = lab.mock.runners().into_iter().next().unwrap();
    assert_eq!(rec.registered_via, RegisteredVia::Glrt);
    assert!(rec.system_ids.contains("s_0123456789ab"));
    assert!(rec.system_ids.contains("s_bbbbbbbbbbbb"));
    assert_eq!(rec.verify_count, 2);

    // Unregister one manager (DELETE with a JSON body).
    let r = lab
        .http
        .delete(lab.url("/runners/managers"))
        .json(&json!({"token": runner.token, "system_id": "s_bbbbbbbbbbbb"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let rec = lab.mock.runners().into_iter().next().unwrap();
    assert!(!rec.system_ids.contains("s_bbbbbbbbbbbb"));

    // Reset: new token works, old one does not.
    let r = lab
        .post(
            "/runners/reset_authentication_token",
            json!({"token": runner.token}),
        )
        .await;
    assert_eq!(r.status(), StatusCode::CREATED);
    let v: Value = r.json().await.unwrap();
    let new_token = v["token"].as_str().unwrap().to_string();
    assert_ne!(new_token, runner.token);
    assert!(v["token_expires_at"].is_null());
    let r = lab
        .post("/runners/verify", json!({"token": runner.token}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab
        .post("/runners/verify", json!({"token": new_token}))
        .await;
    assert_eq!(r.status(), StatusCode::OK);

    // Unregister the runner: afterwards its token is rejected everywhere.
    let r = lab
        .http
        .delete(lab.url("/runners"))
        .json(&json!({"token": new_token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let r = lab
        .post("/runners/verify", json!({"token": new_token}))
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab.request_job(&new_token, None).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
}

#[tokio::test]
async fn requests_are_recorded_without_tokens() {
    let lab = Lab::start().await;
    let runner = lab.mock.create_runner(RunnerSpec::default());
    let r = lab
        .http
        .post(lab.url("/jobs/request?private_token=zzz&x=1"))
        .header("RUNNER-TOKEN", &runner.token)
        .header("User-Agent", "gitlab-runner 19.4.0 (test)")
        .json(&json!({"token": runner.token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    let recs = lab.mock.requests();
    let rec = recs.last().unwrap();
    assert_eq!(rec.method, "POST");
    assert_eq!(rec.path, "/api/v4/jobs/request");
    assert_eq!(rec.query.as_deref(), Some("x=1"));
    assert_eq!(rec.status, 204);
    assert!(rec.runner_token_header);
    assert_eq!(
        rec.user_agent.as_deref(),
        Some("gitlab-runner 19.4.0 (test)")
    );
    let dump = format!("{recs:?}");
    assert!(!dump.contains(&runner.token));
    assert!(!dump.contains("zzz"));
}

#[tokio::test]
async fn bad_bodies_are_client_errors() {
    let lab = Lab::start().await;
    for path in ["/runners", "/runners/verify", "/jobs/request"] {
        let r = lab
            .http
            .post(lab.url(path))
            .header("Content-Type", "application/json")
            .body("{not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{path}");
    }
    let r = lab.post("/runners/verify", json!({})).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = lab.post("/no/such/endpoint", json!({})).await;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
}
