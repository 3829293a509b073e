//! bulklink's HTTP edge, shared by the job-api and status routers: how callers are
//! authenticated, the one place errors become `application/problem+json`, the response
//! views and the OpenAPI document's shared parts.
// Unit tests may read the machine's time; production code reads bulklink_core::clock::Clock.
#![cfg_attr(test, allow(clippy::disallowed_methods))]

pub mod auth;
pub mod http;
pub mod openapi;
pub mod views;

use std::sync::Arc;

// The core's modules, under the paths this crate's code names them by.
use bulklink_core::{budget, clock, config, domain, error, ports, Ports, Settings};
use bulklink_egress as egress;

use crate::auth::Authenticator;
use crate::config::SettingsError;
use crate::http::ApiState;

/// An HTTP API Lambda function's edge: its state, how callers are authenticated
/// (`AUTH_MODE`, `BRAND_CLAIM`) and where webhooks may go (`WEBHOOK_*`), from the
/// environment Terraform sets.
pub struct LambdaApi {
    pub state: ApiState,
    pub auth: Arc<Authenticator>,
}

impl LambdaApi {
    pub fn from_env(ports: ports::Ports, settings: Settings) -> Result<Self, SettingsError> {
        let lookup = |name: &str| std::env::var(name).ok();
        let auth = Arc::new(Authenticator::from_lambda_env(lookup)?);
        let egress = egress::Egress::from_env(lookup)?;
        Ok(LambdaApi {
            state: ApiState {
                ports,
                egress,
                settings,
                live_rates: Default::default(),
            },
            auth,
        })
    }

    /// The function's router (`routes` given this state), finished as every API is.
    pub fn finish(self, routes: impl FnOnce(ApiState) -> axum::Router) -> axum::Router {
        let settings = self.state.settings.clone();
        http::finish_router(routes(self.state), self.auth, &settings)
    }
}
