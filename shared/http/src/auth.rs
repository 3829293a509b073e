//! Who is calling. Bearer JWTs are verified here (`bulklink serve`) or by API Gateway's JWT
//! authorizer (Lambda); either way they become one `Caller`, the only identity handlers see,
//! together with the rules of which brands a caller may touch.

use std::collections::HashMap;

use std::sync::Arc;
use std::time::Duration;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{header, StatusCode};
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Map, Value};

use crate::clock::Clock;
use crate::config::SettingsError;
use crate::domain::BrandId;
use crate::http::ApiError;

/// The scope that makes a caller an administrator of every brand.
pub const ADMIN_SCOPE: &str = "bulklink:admin";
/// The claim that names a caller's brand unless `BRAND_CLAIM` says otherwise.
pub const DEFAULT_BRAND_CLAIM: &str = "brand_id";
/// Issuer and audience of the tokens `bulklink token` mints.
pub const LOCAL_ISSUER: &str = "bulklink";
pub const LOCAL_AUDIENCE: &str = "bulklink";
/// How long after its `exp` a token is still accepted (clock skew between issuer and us).
pub const EXP_LEEWAY_SECS: i64 = 30;

/// What a caller may act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Role {
    /// One brand's caller: sees and changes that brand only.
    Brand(BrandId),
    /// `bulklink:admin`: every brand, naming it where a route needs one.
    Admin,
}

/// The verified identity of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Caller {
    /// The token's `sub`: idempotency keys are scoped by it.
    pub principal: String,
    pub role: Role,
}

impl Caller {
    pub fn admin(principal: impl Into<String>) -> Self {
        Caller {
            principal: principal.into(),
            role: Role::Admin,
        }
    }

    pub fn brand(&self) -> Option<BrandId> {
        match self.role {
            Role::Brand(brand) => Some(brand),
            Role::Admin => None,
        }
    }

    pub fn is_admin(&self) -> bool {
        self.role == Role::Admin
    }

    pub fn may_access(&self, brand: BrandId) -> bool {
        match self.role {
            Role::Admin => true,
            Role::Brand(own) => own == brand,
        }
    }

    /// Another brand's resource answers exactly as one that does not exist: 404 with the
    /// same detail, so its existence does not leak.
    pub fn check_owner(&self, owner: Option<BrandId>, missing: String) -> Result<(), ApiError> {
        match owner {
            Some(brand) if self.may_access(brand) => Ok(()),
            None if self.is_admin() => Ok(()),
            _ => Err(ApiError::not_found(missing)),
        }
    }

    /// The brand a create or list acts on: a brand's caller acts on its own (naming another
    /// is 403); an administrator must name one (`field` says where).
    pub fn acting_brand(
        &self,
        requested: Option<BrandId>,
        field: &str,
    ) -> Result<BrandId, ApiError> {
        match (&self.role, requested) {
            (Role::Admin, Some(brand)) => Ok(brand),
            (Role::Admin, None) => Err(ApiError::bad_request(format!(
                "{field} is required: an administrator must name the brand"
            ))),
            (Role::Brand(own), None) => Ok(*own),
            (Role::Brand(own), Some(brand)) if brand == *own => Ok(brand),
            (Role::Brand(own), Some(brand)) => Err(ApiError::new(
                StatusCode::FORBIDDEN,
                format!(
                    "{field} {brand} is not your brand ({own}); a token acts on its own brand only"
                ),
            )),
        }
    }
}

/// The resources a route touches, each found only if the caller may see it: another
/// brand's answers the same 404 as a missing one.
impl Caller {
    pub async fn visible_offer(
        &self,
        ports: &crate::Ports,
        id: crate::domain::OfferId,
    ) -> Result<crate::domain::Offer, ApiError> {
        let missing = || format!("offer {id} does not exist");
        let offer = ports
            .catalog
            .get_offer(id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        self.check_owner(Some(offer.brand_id), missing())?;
        Ok(offer)
    }

    pub async fn visible_job(
        &self,
        ports: &crate::Ports,
        id: crate::domain::JobId,
    ) -> Result<crate::domain::Job, ApiError> {
        let missing = || format!("job {id} does not exist");
        let job = ports
            .jobs
            .get_job(id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        self.check_owner(Some(job.brand_id), missing())?;
        Ok(job)
    }

    pub async fn visible_import(
        &self,
        ports: &crate::Ports,
        id: crate::domain::ImportId,
    ) -> Result<crate::domain::Import, ApiError> {
        let missing = || format!("import {id} does not exist");
        let import = ports
            .imports
            .get_import(id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        self.check_owner(Some(import.brand_id), missing())?;
        Ok(import)
    }

    pub async fn visible_location(
        &self,
        ports: &crate::Ports,
        id: crate::domain::LocationId,
    ) -> Result<crate::domain::Location, ApiError> {
        let missing = || format!("location {id} does not exist");
        let location = ports
            .catalog
            .get_location(id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        self.check_owner(Some(location.brand_id), missing())?;
        Ok(location)
    }

    pub async fn visible_subscription(
        &self,
        ports: &crate::Ports,
        id: crate::domain::SubscriptionId,
    ) -> Result<crate::domain::Subscription, ApiError> {
        let missing = || format!("webhook {id} does not exist");
        let subscription = ports
            .webhooks
            .get_subscription(id)
            .await?
            .ok_or_else(|| ApiError::not_found(missing()))?;
        self.check_owner(Some(subscription.brand_id), missing())?;
        Ok(subscription)
    }
}

/// Why a request carries no usable identity. Every variant is a 401.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AuthError {
    #[error("this route needs a bearer token: send Authorization: Bearer <JWT>")]
    Missing,
    #[error("the Authorization header is not a bearer token")]
    NotBearer,
    #[error("the bearer token is not valid: {0}")]
    Invalid(String),
    #[error("the bearer token has expired")]
    Expired,
    #[error("the request carries no verified claims (is the API Gateway JWT authorizer off? set AUTH_MODE=none to run without one)")]
    NoGatewayClaims,
    #[error("the token's {claim} claim is not a brand id: {value}")]
    BadBrandClaim { claim: String, value: String },
    #[error(
        "the token names no brand: it carries neither a {0} claim nor the bulklink:admin scope"
    )]
    NoBrand(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        let challenge = match e {
            AuthError::Missing => r#"Bearer realm="bulklink""#.to_owned(),
            _ => r#"Bearer realm="bulklink", error="invalid_token""#.to_owned(),
        };
        ApiError::new(StatusCode::UNAUTHORIZED, e.to_string()).with_challenge(challenge)
    }
}

/// One verification key with the algorithm it is for.
struct Key {
    kid: Option<String>,
    algorithm: Algorithm,
    key: DecodingKey,
}

/// Verifies tokens in this process: HS256 with a local key, or RS256/ES256 against a JWKS.
pub struct Verifier {
    keys: Vec<Key>,
    issuer: String,
    audience: String,
    brand_claim: String,
    /// `exp` is checked against this clock.
    clock: Clock,
}

impl Verifier {
    /// HS256 tokens signed with `secret`, issued by `bulklink token`.
    pub fn hs256(secret: &[u8], brand_claim: &str) -> Self {
        Verifier {
            keys: vec![Key {
                kid: None,
                algorithm: Algorithm::HS256,
                key: DecodingKey::from_secret(secret),
            }],
            issuer: LOCAL_ISSUER.to_owned(),
            audience: LOCAL_AUDIENCE.to_owned(),
            brand_claim: brand_claim.to_owned(),
            clock: Clock::system(),
        }
    }

    /// RS256 / ES256 tokens of an OIDC issuer, checked as API Gateway's JWT authorizer checks
    /// them: signature by a key of the set, `iss`, `aud`, `exp`.
    pub fn jwks(
        jwks_json: &str,
        issuer: &str,
        audience: &str,
        brand_claim: &str,
    ) -> Result<Self, String> {
        let set: jsonwebtoken::jwk::JwkSet =
            serde_json::from_str(jwks_json).map_err(|e| format!("not a JWKS document: {e}"))?;
        let mut keys = Vec::new();
        for jwk in &set.keys {
            let algorithm = match &jwk.algorithm {
                jsonwebtoken::jwk::AlgorithmParameters::RSA(_) => Algorithm::RS256,
                jsonwebtoken::jwk::AlgorithmParameters::EllipticCurve(ec)
                    if ec.curve == jsonwebtoken::jwk::EllipticCurve::P256 =>
                {
                    Algorithm::ES256
                }
                // Symmetric keys in a public key set would let anyone holding the set sign.
                _ => continue,
            };
            let key = DecodingKey::from_jwk(jwk).map_err(|e| format!("unusable key: {e}"))?;
            keys.push(Key {
                kid: jwk.common.key_id.clone(),
                algorithm,
                key,
            });
        }
        if keys.is_empty() {
            return Err("the JWKS holds no RS256 or ES256 (P-256) key".into());
        }
        Ok(Verifier {
            keys,
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            brand_claim: brand_claim.to_owned(),
            clock: Clock::system(),
        })
    }

    /// The same verifier, checking `exp` against `clock`.
    pub fn with_clock(mut self, clock: Clock) -> Self {
        self.clock = clock;
        self
    }

    pub fn verify(&self, token: &str) -> Result<Caller, AuthError> {
        let header =
            jsonwebtoken::decode_header(token).map_err(|e| AuthError::Invalid(e.to_string()))?;
        // The key decides the algorithm, never the token: a token cannot pick HS256 against
        // a public key, or `none`.
        let key = self
            .keys
            .iter()
            .find(|k| {
                k.algorithm == header.alg
                    && (header.kid.is_none() || k.kid.is_none() || k.kid == header.kid)
            })
            .ok_or_else(|| {
                AuthError::Invalid(format!(
                    "no key for algorithm {:?}{}",
                    header.alg,
                    header
                        .kid
                        .as_deref()
                        .map(|kid| format!(" and key id {kid}"))
                        .unwrap_or_default()
                ))
            })?;
        let mut validation = Validation::new(key.algorithm);
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "sub", "iss", "aud"]);
        // `exp` is checked below against this process's clock, not the library's reading
        // of the system time.
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Map<String, Value>>(token, &key.key, &validation)
            .map_err(|e| AuthError::Invalid(e.to_string()))?;
        let exp = data
            .claims
            .get("exp")
            .and_then(Value::as_f64)
            .ok_or_else(|| AuthError::Invalid("the exp claim is not a number".into()))?;
        if exp < (self.clock.now_secs() - EXP_LEEWAY_SECS) as f64 {
            return Err(AuthError::Expired);
        }
        let claims: HashMap<String, String> = data
            .claims
            .into_iter()
            .map(|(name, value)| {
                let text = match value {
                    Value::String(s) => s,
                    Value::Array(items) => items
                        .iter()
                        .filter_map(Value::as_str)
                        .collect::<Vec<_>>()
                        .join(" "),
                    other => other.to_string(),
                };
                (name, text)
            })
            .collect();
        caller_from_claims(&claims, &[], &self.brand_claim)
    }
}

/// Turns verified claims into a caller: `sub`, the brand claim and `scope` (space-separated;
/// API Gateway also lists the authorized scopes apart, in `scopes`).
pub fn caller_from_claims(
    claims: &HashMap<String, String>,
    extra_scopes: &[String],
    brand_claim: &str,
) -> Result<Caller, AuthError> {
    let principal = claims
        .get("sub")
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| AuthError::Invalid("the token has no sub claim".into()))?
        .clone();
    let mut scopes: Vec<&str> = ["scope", "scp"]
        .iter()
        .filter_map(|name| claims.get(*name))
        .flat_map(|s| s.trim_matches(['[', ']']).split([' ', ',']))
        .collect();
    scopes.extend(extra_scopes.iter().map(String::as_str));
    if scopes.contains(&ADMIN_SCOPE) {
        return Ok(Caller {
            principal,
            role: Role::Admin,
        });
    }
    let raw = claims
        .get(brand_claim)
        .ok_or_else(|| AuthError::NoBrand(brand_claim.to_owned()))?;
    let brand = raw.parse().map_err(|_| AuthError::BadBrandClaim {
        claim: brand_claim.to_owned(),
        value: raw.chars().take(80).collect(),
    })?;
    Ok(Caller {
        principal,
        role: Role::Brand(brand),
    })
}

/// How requests are authenticated, set once per process.
pub enum Authenticator {
    /// Tokens are verified in this process (`bulklink serve`).
    Verify(Verifier),
    /// API Gateway's JWT authorizer verified the token; the claims come from the request
    /// context `lambda_http` attaches. No claims → 401.
    Gateway { brand_claim: String },
    /// No authentication: every request acts as an administrator. Experiments only.
    Disabled,
}

impl Authenticator {
    /// The Lambda functions' authenticator: `AUTH_MODE` (`gateway`, the default, or `none`)
    /// and `BRAND_CLAIM`.
    pub fn from_lambda_env(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, SettingsError> {
        let brand_claim = brand_claim_from(&lookup)?;
        match lookup("AUTH_MODE").as_deref().map(str::trim) {
            None | Some("") | Some("gateway") => Ok(Authenticator::Gateway { brand_claim }),
            Some("none") => Ok(Authenticator::Disabled),
            Some(other) => Err(SettingsError {
                name: "AUTH_MODE",
                value: other.to_owned(),
                why: "must be gateway (API Gateway verified the token) or none",
            }),
        }
    }

    pub fn authenticate(&self, parts: &Parts) -> Result<Caller, AuthError> {
        match self {
            Authenticator::Disabled => Ok(Caller::admin("anonymous")),
            Authenticator::Verify(verifier) => verifier.verify(bearer_token(parts)?),
            Authenticator::Gateway { brand_claim } => {
                let (claims, scopes) = gateway_claims(parts).ok_or(AuthError::NoGatewayClaims)?;
                caller_from_claims(&claims, &scopes, brand_claim)
            }
        }
    }
}

/// `BRAND_CLAIM`, default `brand_id`.
pub fn brand_claim_from(lookup: impl Fn(&str) -> Option<String>) -> Result<String, SettingsError> {
    match lookup("BRAND_CLAIM") {
        None => Ok(DEFAULT_BRAND_CLAIM.to_owned()),
        Some(v) if !v.trim().is_empty() && !v.contains(char::is_whitespace) => {
            Ok(v.trim().to_owned())
        }
        Some(v) => Err(SettingsError {
            name: "BRAND_CLAIM",
            value: v,
            why: "must be a claim name without spaces",
        }),
    }
}

fn bearer_token(parts: &Parts) -> Result<&str, AuthError> {
    let value = parts
        .headers
        .get(header::AUTHORIZATION)
        .ok_or(AuthError::Missing)?
        .to_str()
        .map_err(|_| AuthError::NotBearer)?;
    let (scheme, token) = value.split_once(' ').ok_or(AuthError::NotBearer)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(AuthError::NotBearer);
    }
    Ok(token.trim())
}

fn gateway_claims(parts: &Parts) -> Option<(HashMap<String, String>, Vec<String>)> {
    let lambda_http::request::RequestContext::ApiGatewayV2(context) =
        parts
            .extensions
            .get::<lambda_http::request::RequestContext>()?
    else {
        return None;
    };
    let jwt = context.authorizer.as_ref()?.jwt.as_ref()?;
    if jwt.claims.is_empty() {
        return None;
    }
    Some((jwt.claims.clone(), jwt.scopes.clone().unwrap_or_default()))
}

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, Self::Rejection> {
        let Some(auth) = parts.extensions.get::<Arc<Authenticator>>() else {
            // A router served without `finish_router`: fail closed.
            tracing::error!("no authenticator on this router; refusing the request");
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                "authentication is not configured on this server",
            ));
        };
        let caller = auth.authenticate(parts)?;
        if let (Role::Brand(brand), Some(limiter)) =
            (&caller.role, parts.extensions.get::<Arc<BrandLimiter>>())
        {
            limiter.check(*brand)?;
        }
        Ok(caller)
    }
}

/// Requests per brand: a token bucket per brand (`BRAND_RATE_PER_SEC`, `BRAND_RATE_BURST`),
/// taken when a request's caller is known. Administrators are not limited. Per process: on
/// Lambda each instance keeps its own buckets (docs/scaling.md).
pub struct BrandLimiter {
    limiter: governor::DefaultKeyedRateLimiter<BrandId>,
    checks: std::sync::atomic::AtomicU64,
}

/// Buckets are pruned of brands that are full again every this many checks.
const PRUNE_EVERY: u64 = 10_000;

impl BrandLimiter {
    pub fn new(settings: &crate::Settings) -> Self {
        let period = Duration::from_secs_f64(1.0 / settings.brand_rate_per_sec);
        let burst = std::num::NonZeroU32::new(settings.brand_rate_burst)
            .unwrap_or(std::num::NonZeroU32::MIN);
        let quota = governor::Quota::with_period(period)
            .unwrap_or_else(|| governor::Quota::per_second(std::num::NonZeroU32::MAX))
            .allow_burst(burst);
        BrandLimiter {
            limiter: governor::RateLimiter::keyed(quota),
            checks: Default::default(),
        }
    }

    /// Takes one request from the brand's bucket, or answers 429 with when to come back.
    pub fn check(&self, brand: BrandId) -> Result<(), ApiError> {
        use governor::clock::Clock as _;
        let n = self
            .checks
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        if n % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(&brand).map_err(|not_until| {
            let wait = not_until.wait_time_from(governor::clock::DefaultClock::default().now());
            let secs = wait.as_secs_f64().ceil().max(1.0) as u32;
            ApiError::new(
                StatusCode::TOO_MANY_REQUESTS,
                format!("brand {brand} is over its request rate; retry after {secs} s"),
            )
            .with_retry_after(secs)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts_with(auth: Option<&str>) -> Parts {
        let mut builder = axum::http::Request::builder().uri("/jobs");
        if let Some(value) = auth {
            builder = builder.header(header::AUTHORIZATION, value);
        }
        builder.body(()).unwrap().into_parts().0
    }

    #[test]
    fn the_admin_scope_wins_over_a_brand_claim() {
        let claims = HashMap::from([
            ("sub".to_owned(), "ops".to_owned()),
            ("scope".to_owned(), "openid bulklink:admin".to_owned()),
            ("brand_id".to_owned(), BrandId::new_random().to_string()),
        ]);
        let caller = caller_from_claims(&claims, &[], DEFAULT_BRAND_CLAIM).unwrap();
        assert!(caller.is_admin());
    }

    #[test]
    fn claims_without_a_brand_or_with_a_bad_one_are_refused() {
        let mut claims = HashMap::from([("sub".to_owned(), "x".to_owned())]);
        assert_eq!(
            caller_from_claims(&claims, &[], "tenant"),
            Err(AuthError::NoBrand("tenant".into()))
        );
        claims.insert("tenant".into(), "not-a-uuid".into());
        assert!(matches!(
            caller_from_claims(&claims, &[], "tenant"),
            Err(AuthError::BadBrandClaim { .. })
        ));
    }

    #[test]
    fn only_bearer_authorization_is_read() {
        assert_eq!(bearer_token(&parts_with(None)), Err(AuthError::Missing));
        assert_eq!(
            bearer_token(&parts_with(Some("Basic dXNlcjpwYXNz"))),
            Err(AuthError::NotBearer)
        );
        assert_eq!(bearer_token(&parts_with(Some("Bearer abc"))), Ok("abc"));
    }

    #[test]
    fn acting_brand_follows_the_rules() {
        let own = BrandId::new_random();
        let other = BrandId::new_random();
        let brand = Caller {
            principal: "b".into(),
            role: Role::Brand(own),
        };
        assert_eq!(brand.acting_brand(None, "brandId").unwrap(), own);
        assert_eq!(
            brand
                .acting_brand(Some(other), "brandId")
                .unwrap_err()
                .status,
            StatusCode::FORBIDDEN
        );
        let admin = Caller::admin("ops");
        assert_eq!(
            admin.acting_brand(None, "brandId").unwrap_err().status,
            StatusCode::BAD_REQUEST
        );
        assert_eq!(admin.acting_brand(Some(other), "brandId").unwrap(), other);
    }
}
