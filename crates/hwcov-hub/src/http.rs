//! The HTTP side: the agents (timeouts, so that a stalled server ends in an error rather than a
//! hang) and what a failed request means to a user.

use std::time::Duration;

use hwcov_core::Error;

use crate::{ModelId, Settings, hub_error};

/// An agent that follows redirects (to the Hub's storage); ureq drops the token on a redirect to
/// another host.
pub fn agent() -> ureq::Agent {
    builder().build()
}

/// An agent that returns redirects as they are: the Hub's headers of a file are on the first answer.
pub fn head_agent() -> ureq::Agent {
    builder().redirects(0).build()
}

fn builder() -> ureq::AgentBuilder {
    ureq::AgentBuilder::new()
        .timeout_connect(Duration::from_secs(15))
        .timeout_read(Duration::from_secs(60))
        .try_proxy_from_env(true)
}

/// What a failed request for `what` (a file, or the repository's listing) of `id` means.
pub fn refused(id: &ModelId, settings: &Settings, what: &str, e: ureq::Error) -> Error {
    match e {
        ureq::Error::Status(code, response) => {
            // The Hub says why in X-Error-Code (huggingface_hub reads it the same way).
            let kind = response.header("X-Error-Code").unwrap_or_default().to_string();
            let token = if settings.token.is_some() {
                "the token in HF_TOKEN (or the token file) has no access to it"
            } else {
                "no token was sent: set HF_TOKEN to a token of an account with access"
            };
            let message = match (code, kind.as_str()) {
                (_, "RepoNotFound") => format!(
                    "no repository {} at {} (HTTP {code}); if it is private, {token}",
                    id.repo, settings.endpoint
                ),
                (_, "RevisionNotFound") => format!("the repository has no revision {} (HTTP {code})", id.revision),
                (_, "EntryNotFound") => format!("the repository has no file {what} (HTTP {code})"),
                (_, "GatedRepo") | (401 | 403, _) => format!(
                    "access to {what} was denied (HTTP {code}): the repository is gated or private; accept its \
                     terms on its Hub page with your account, then {token}"
                ),
                (404, _) => format!("{what} was not found at {} (HTTP 404)", settings.endpoint),
                _ => format!("{what}: the Hub answered HTTP {code}"),
            };
            hub_error(id, message)
        }
        ureq::Error::Transport(t) => hub_error(
            id,
            format!(
                "{what}: cannot reach {} ({t}); check the network and HF_ENDPOINT, or set HF_HUB_OFFLINE=1 to use the cache only",
                settings.endpoint
            ),
        ),
    }
}
