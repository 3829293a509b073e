//! Local tokens: what the CLI mints, the HTTP edge's verifier accepts, until it expires
//! by the verifier's clock; the TTLs `bulklink token --ttl` takes.

use std::time::Duration;

use bulklink::tokens::{mint_token, parse_ttl};
use bulklink_core::clock::Clock;
use bulklink_core::domain::BrandId;
use bulklink_http::auth::{AuthError, Role, Verifier, DEFAULT_BRAND_CLAIM, EXP_LEEWAY_SECS};

#[test]
fn a_minted_brand_token_verifies_as_that_brand() {
    let brand = BrandId::new_random();
    let token = mint_token(
        b"0123456789abcdef0123456789abcdef",
        "alice",
        &Role::Brand(brand),
        Duration::from_secs(60),
        DEFAULT_BRAND_CLAIM,
        &Clock::system(),
    )
    .unwrap();
    let verifier = Verifier::hs256(b"0123456789abcdef0123456789abcdef", DEFAULT_BRAND_CLAIM);
    let caller = verifier.verify(&token).unwrap();
    assert_eq!(caller.principal, "alice");
    assert_eq!(caller.role, Role::Brand(brand));
}

#[test]
fn a_token_expires_by_the_verifiers_clock_after_a_leeway() {
    let key = b"0123456789abcdef0123456789abcdef";
    let minted = chrono::TimeZone::with_ymd_and_hms(&chrono::Utc, 2031, 5, 6, 7, 8, 9).unwrap();
    let clock = Clock::manual(minted);
    let token = mint_token(
        key,
        "alice",
        &Role::Admin,
        Duration::from_secs(60),
        DEFAULT_BRAND_CLAIM,
        &clock,
    )
    .unwrap();
    let verifier = Verifier::hs256(key, DEFAULT_BRAND_CLAIM).with_clock(clock.clone());
    assert!(verifier.verify(&token).is_ok(), "valid when minted");
    clock.advance(chrono::Duration::seconds(60 + EXP_LEEWAY_SECS));
    assert!(
        verifier.verify(&token).is_ok(),
        "valid to the end of the leeway"
    );
    clock.advance(chrono::Duration::seconds(1));
    assert!(matches!(verifier.verify(&token), Err(AuthError::Expired)));
    // The machine's time (years before the token's) does not decide it.
    assert!(Verifier::hs256(key, DEFAULT_BRAND_CLAIM)
        .verify(&token)
        .is_ok());
}

#[test]
fn a_token_signed_with_another_key_is_refused() {
    let token = mint_token(
        b"another key another key another k",
        "mallory",
        &Role::Admin,
        Duration::from_secs(60),
        DEFAULT_BRAND_CLAIM,
        &Clock::system(),
    )
    .unwrap();
    let verifier = Verifier::hs256(b"0123456789abcdef0123456789abcdef", DEFAULT_BRAND_CLAIM);
    assert!(matches!(
        verifier.verify(&token),
        Err(AuthError::Invalid(_))
    ));
}

#[test]
fn ttls_parse_with_units() {
    assert_eq!(parse_ttl("24h").unwrap(), Duration::from_secs(86_400));
    assert_eq!(parse_ttl("90").unwrap(), Duration::from_secs(90));
    assert!(parse_ttl("3w").is_err());
    assert!(parse_ttl("0s").is_err());
}
