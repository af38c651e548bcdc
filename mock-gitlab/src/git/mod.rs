//! Git: fixture projects as bare repositories, and smart HTTP through the real
//! `git http-backend` run as a CGI program (who is let in: see `api::git_http`).

mod fixtures;
pub(crate) mod http;
pub(crate) mod lfs;
mod repo;

pub use fixtures::{
    BareRepo, FIXTURE_GITATTRIBUTES, Gitlink, MERGE_REQUESTS_DIR, SUBMODULES_DIR, create_bare_repo,
};
pub use http::MAX_GIT_BODY;
pub use lfs::{LFS_POINTER_VERSION, lfs_pointer, lfs_store};
pub use repo::{
    COMMIT_AUTHOR_EMAIL, COMMIT_AUTHOR_NAME, COMMIT_DATE, COMMIT_MESSAGE, create_tag, list_files,
    merge_message, read_file_at, repos_root, resolve, resolve_branch, resolve_commit,
    resolve_named, validate_project_path, validate_ref,
};
