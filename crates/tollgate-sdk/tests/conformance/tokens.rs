//! The generator's license tokens: an origin key ring and region keys from
//! fixed seeds (Ed25519 signs deterministically, so the same claims give the
//! same token), valid tokens, and every way the verifier refuses one.

use super::checks::{NamedDataset, DAY, HOUR, NOW};
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use base64::Engine as _;
use ed25519_dalek::SigningKey;
use serde_json::{json, Value};
use tollgate_license::{
    certify, license_entitlements, region_issuer, Issuer, LicenseClaims, RandomId,
    RegionCertificate, ISSUER_ORIGIN,
};
use tollgate_model::{
    AccountId, Dataset, RevokedCertificate, RevokedLicense, SubjectId, UnixSeconds,
};
use tollgate_signing::{KeyId, KeyRing, PublicKeySet, Signed};

/// The product the verifier is built for.
pub const AUDIENCE: &str = "studio";
/// A device fingerprint (its UTF-8 bytes).
pub const DEVICE: &str = "device-fingerprint-0123456789abcdef";

/// One token case, before its expected outcome is computed.
pub struct TokenCase {
    pub name: &'static str,
    pub token: String,
    pub now: i64,
    pub revoked_licenses: Vec<RevokedLicense>,
    pub revoked_certificates: Vec<RevokedCertificate>,
    pub device_fingerprint: Option<String>,
}

pub struct Tokens {
    pub key_set: PublicKeySet,
    pub cases: Vec<TokenCase>,
}

fn secret(seed: u8) -> SigningKey {
    SigningKey::from_bytes(&[seed; 32])
}

fn kid(seed: u8) -> KeyId {
    KeyId::of(&secret(seed).verifying_key())
}

/// A key ring of `(seed, created_at, status)` keys, read back through the
/// ring file format (the only way to give a ring fixed keys).
fn ring(keys: &[(u8, i64, Value)]) -> KeyRing {
    let stored: Vec<Value> = keys
        .iter()
        .map(|(seed, created_at, status)| {
            json!({
                "kid": kid(*seed).as_str(),
                "created_at": created_at,
                "status": status,
                "secret": B64.encode([*seed; 32]),
            })
        })
        .collect();
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("ring.json");
    std::fs::write(&path, serde_json::to_vec(&stored).unwrap()).expect("the ring file is written");
    KeyRing::load(&path)
        .expect("the fixed ring loads")
        .expect("the ring file exists")
}

const ORIGIN: u8 = 0x01;
const OVERLAP: u8 = 0x02;
const RETIRED: u8 = 0x03;
const STRANGER: u8 = 0x09;
/// When the overlap key stops verifying.
const OVERLAP_UNTIL: i64 = NOW - DAY;

/// The origin's ring as verifiers know it: the active key, one replaced a
/// while ago whose overlap ended a day before [`NOW`], one retired.
fn origin_ring() -> KeyRing {
    ring(&[
        (RETIRED, NOW - 1200 * DAY, json!("retired")),
        (
            OVERLAP,
            NOW - 800 * DAY,
            json!({"overlap": {"until": OVERLAP_UNTIL}}),
        ),
        (ORIGIN, NOW - 400 * DAY, json!("active")),
    ])
}

/// A ring whose only (active) key is `seed`: to sign with a key the
/// verifier knows as overlapping or retired, or does not know at all.
fn signing_ring(seed: u8) -> KeyRing {
    ring(&[(seed, NOW - 400 * DAY, json!("active"))])
}

/// One account's part of `data`: what a token for it is resolved from.
fn account_data(data: &Dataset, account: &str) -> Dataset {
    let id: AccountId = account.parse().unwrap();
    let (subjects, entitlements) = data.of_account(&id);
    Dataset {
        catalog: data.catalog.clone(),
        accounts: data
            .accounts
            .iter()
            .filter(|a| a.id == id)
            .cloned()
            .collect(),
        subjects: subjects.cloned().collect(),
        entitlements: entitlements.cloned().collect(),
        ..Dataset::default()
    }
}

/// Claims builder: an account (or subject) token, issued an hour before
/// [`NOW`], valid a day.
#[derive(Clone)]
struct Claims {
    iss: String,
    account: &'static str,
    subject: Option<&'static str>,
    aud: &'static str,
    iat: i64,
    nbf: i64,
    exp: i64,
    jti: u8,
    device_bound: bool,
}

impl Claims {
    fn origin(jti: u8) -> Claims {
        Claims {
            iss: ISSUER_ORIGIN.to_owned(),
            account: "acme",
            subject: None,
            aud: AUDIENCE,
            iat: NOW - HOUR,
            nbf: NOW - HOUR,
            exp: NOW + DAY,
            jti,
            device_bound: false,
        }
    }

    /// A region token: issued an hour before [`NOW`], valid 12 hours
    /// (certificates allow a day).
    fn region(region: &str, jti: u8) -> Claims {
        Claims {
            iss: region_issuer(region),
            exp: NOW + 11 * HOUR,
            ..Claims::origin(jti)
        }
    }

    fn times(mut self, iat: i64, nbf: i64, exp: i64) -> Claims {
        self.iat = iat;
        self.nbf = nbf;
        self.exp = exp;
        self
    }

    fn build(&self, data: &Dataset) -> LicenseClaims {
        let account: AccountId = self.account.parse().unwrap();
        let subject: Option<SubjectId> = self.subject.map(|s| s.parse().unwrap());
        let data = account_data(data, self.account);
        LicenseClaims {
            iss: self.iss.clone(),
            sub: LicenseClaims::subject_of(&account, subject.as_ref()),
            aud: self.aud.to_owned(),
            iat: UnixSeconds(self.iat),
            nbf: UnixSeconds(self.nbf),
            exp: UnixSeconds(self.exp),
            jti: RandomId::from_bytes([self.jti; 16]),
            account,
            revision: 42,
            device_bound: self.device_bound,
            entitlements: license_entitlements(&data, subject.as_ref(), UnixSeconds(self.iat)),
            subject,
        }
    }
}

/// Signs anything, past every check [`Issuer`] makes: how a faulty issuer
/// or an attacker holding a key would make a token.
fn sign_raw(key: &SigningKey, message: &[u8], footer: &Value) -> String {
    let footer = serde_json::to_vec(footer).unwrap();
    tollgate_token::sign(key, message, &footer, b"").expect("fits the size limit")
}

/// The parts of a token: the message, the signature and the footer.
fn split(token: &str) -> (Vec<u8>, Vec<u8>, Vec<u8>) {
    let body = token.strip_prefix("v4.public.").unwrap();
    let (payload, footer) = body.split_once('.').unwrap_or((body, ""));
    let mut message = B64.decode(payload).unwrap();
    let signature = message.split_off(message.len() - 64);
    (message, signature, B64.decode(footer).unwrap())
}

fn join(message: &[u8], signature: &[u8], footer: &[u8]) -> String {
    let mut payload = message.to_vec();
    payload.extend_from_slice(signature);
    let mut token = format!("v4.public.{}", B64.encode(payload));
    if !footer.is_empty() {
        token.push('.');
        token.push_str(&B64.encode(footer));
    }
    token
}

/// A region: its key, and the origin's certificate for it.
struct Region {
    key: SigningKey,
    cert: RegionCertificate,
    signed: Signed,
}

impl Region {
    /// Region `name` with key `seed`, certified by `ring` (the origin's
    /// active key) for `not_before..not_after`, tokens up to a day.
    fn new(
        name: &str,
        seed: u8,
        serial: u8,
        not_before: i64,
        not_after: i64,
        ring: &KeyRing,
    ) -> Region {
        let key = secret(seed);
        let cert = RegionCertificate::new(
            RandomId::from_bytes([serial; 16]),
            name,
            &key.verifying_key(),
            UnixSeconds(not_before),
            UnixSeconds(not_after),
            DAY as u64,
        );
        let signed = certify(ring, &cert).expect("the fixture certificate is valid");
        Region { key, cert, signed }
    }

    fn issue(&self, claims: &LicenseClaims) -> String {
        Issuer::region(self.key.clone(), self.signed.clone())
            .expect("a region issuer")
            .issue(claims, None)
            .expect("the region issues")
    }

    fn footer(&self) -> Value {
        json!({"kid": self.cert.kid.as_str(), "cert": self.signed})
    }
}

fn case(name: &'static str, token: String, now: i64) -> TokenCase {
    TokenCase {
        name,
        token,
        now,
        revoked_licenses: Vec::new(),
        revoked_certificates: Vec::new(),
        device_fingerprint: None,
    }
}

impl TokenCase {
    fn device(mut self, fingerprint: &str) -> TokenCase {
        self.device_fingerprint = Some(fingerprint.to_owned());
        self
    }
}

fn revoked_license(claims: &LicenseClaims) -> RevokedLicense {
    RevokedLicense {
        id: claims.jti.as_str().to_owned(),
        account: claims.account.clone(),
        expires_at: claims.exp,
        revoked_at: UnixSeconds(NOW - 600),
    }
}

fn revoked_certificate(region: &Region) -> RevokedCertificate {
    RevokedCertificate {
        serial: region.cert.serial.as_str().to_owned(),
        region: region.cert.region.clone(),
        not_after: region.cert.not_after,
        revoked_at: UnixSeconds(NOW - 600),
    }
}

/// The token cases: claims resolved from the `studio` data set, and from
/// `others` (geo rules, offline policies, roles) for a few valid tokens.
pub fn tokens(studio: &NamedDataset, others: &[&NamedDataset]) -> Tokens {
    let data = &studio.data;
    let origin = origin_ring();
    let issuer = Issuer::origin(&origin);
    let issue = |claims: &Claims| {
        issuer
            .issue(&claims.build(data), None)
            .expect("the origin issues")
    };
    let origin_key = secret(ORIGIN);
    let origin_footer = json!({"kid": kid(ORIGIN).as_str()});

    let eu = Region::new("eu-west", 0x07, 0xce, NOW - DAY, NOW + 30 * DAY, &origin);
    let us = Region::new("us-east", 0x08, 0xcf, NOW - DAY, NOW + 30 * DAY, &origin);
    let old = Region::new(
        "ap-south",
        0x0a,
        0xd0,
        NOW - 40 * DAY,
        NOW - 10 * DAY,
        &origin,
    );
    let early = Region::new(
        "sa-east",
        0x0b,
        0xd1,
        NOW + 10 * DAY,
        NOW + 40 * DAY,
        &origin,
    );
    let stranger_ring = signing_ring(STRANGER);
    let forged = Region::new(
        "eu-west",
        0x0c,
        0xd2,
        NOW - DAY,
        NOW + 30 * DAY,
        &stranger_ring,
    );
    let mut webhook_cert = RegionCertificate::new(
        RandomId::from_bytes([0xd3; 16]),
        "eu-north",
        &secret(0x0d).verifying_key(),
        UnixSeconds(NOW - DAY),
        UnixSeconds(NOW + 30 * DAY),
        DAY as u64,
    );
    webhook_cert.may_sign = vec!["webhook".to_owned()];
    let webhook_signed = certify(&origin, &webhook_cert).expect("a certificate for webhooks");

    let account = Claims::origin(0x11);
    let account_token = issue(&account);
    let subject = Claims {
        subject: Some("alice"),
        ..Claims::origin(0x12)
    };
    let rich = Claims {
        account: "wayne",
        ..Claims::origin(0x13)
    };
    let elsewhere: Vec<String> = [("atlas-co", 0x1a), ("field", 0x1b), ("contoso", 0x1c)]
        .into_iter()
        .map(|(account, jti)| {
            let other = others
                .iter()
                .find(|d| d.data.accounts.iter().any(|a| a.id.as_str() == account))
                .unwrap_or_else(|| panic!("no data set holds account {account}"));
            let claims = Claims {
                account,
                ..Claims::origin(jti)
            };
            issuer.issue(&claims.build(&other.data), None).unwrap()
        })
        .collect();
    let device = Claims {
        subject: Some("kiosk-1"),
        device_bound: true,
        ..Claims::origin(0x14)
    };
    let device_token = issuer
        .issue(&device.build(data), Some(DEVICE.as_bytes()))
        .expect("a device-bound token");
    let revoked = Claims::origin(0x15);
    let revoked_claims = revoked.build(data);
    let revoked_token = issue(&revoked);
    let revoked_expired = Claims::origin(0x16).times(NOW - 2 * DAY, NOW - 2 * DAY, NOW - DAY);
    let revoked_expired_claims = revoked_expired.build(data);
    let eu_token = eu.issue(&Claims::region("eu-west", 0x21).build(data));
    let eu_subject_token = eu.issue(
        &Claims {
            subject: Some("bob"),
            ..Claims::region("eu-west", 0x22)
        }
        .build(data),
    );
    let us_token = us.issue(&Claims::region("us-east", 0x23).build(data));

    let (message, signature, footer) = split(&account_token);
    let mut tampered_message = message.clone();
    let at = tampered_message
        .windows(6)
        .position(|w| w == b"\"acme\"")
        .expect("the claims name the account")
        + 4;
    tampered_message[at] = b'f';
    let mut tampered_signature = signature.clone();
    tampered_signature[63] ^= 0x01;
    let spaced_footer = String::from_utf8(footer.clone())
        .unwrap()
        .replace("\"kid\":", "\"kid\": ");
    let payload_b64 = account_token
        .strip_prefix("v4.public.")
        .unwrap()
        .split('.')
        .next()
        .unwrap()
        .to_owned();
    let footer_b64 = B64.encode(&footer);

    let cases = vec![
        // ---- Valid ----
        case(
            "origin: an account token verifies",
            account_token.clone(),
            NOW,
        ),
        case(
            "origin: a token for one subject verifies",
            issue(&subject),
            NOW,
        ),
        case(
            "origin: a token with several entitlements (grace, cap overrides, add-ons) verifies",
            issue(&rich),
            NOW,
        ),
        case(
            "origin: a token whose entitlements carry geo rules verifies",
            elsewhere[0].clone(),
            NOW,
        ),
        case(
            "origin: a token whose entitlements carry offline policies verifies",
            elsewhere[1].clone(),
            NOW,
        ),
        case(
            "origin: a token whose entitlements carry seats verifies",
            elsewhere[2].clone(),
            NOW,
        ),
        case(
            "origin: a token expired 30 s ago is accepted within the 60 s leeway",
            issue(&Claims::origin(0x17).times(NOW - DAY, NOW - DAY, NOW - 30)),
            NOW,
        ),
        case(
            "origin: a token valid from 30 s ahead is accepted within the 60 s leeway",
            issue(&Claims::origin(0x18).times(NOW + 30, NOW + 30, NOW + DAY)),
            NOW,
        ),
        case(
            "origin: a token signed by a key in its overlap window verifies",
            Issuer::origin(&signing_ring(OVERLAP))
                .issue(
                    &Claims::origin(0x19)
                        .times(
                            OVERLAP_UNTIL - DAY,
                            OVERLAP_UNTIL - DAY,
                            OVERLAP_UNTIL + DAY,
                        )
                        .build(data),
                    None,
                )
                .unwrap(),
            OVERLAP_UNTIL - HOUR,
        ),
        case(
            "region: a token signed by a certified region key verifies",
            eu_token.clone(),
            NOW,
        ),
        case(
            "region: a subject token signed by a region verifies",
            eu_subject_token,
            NOW,
        ),
        case(
            "device: a device-bound token verifies with its device's fingerprint",
            device_token.clone(),
            NOW,
        )
        .device(DEVICE),
        case(
            "device: a token not bound to a device verifies with a fingerprint given",
            account_token.clone(),
            NOW,
        )
        .device(DEVICE),
        // ---- Time ----
        case(
            "time: a token expired an hour ago is refused",
            issue(&Claims::origin(0x31).times(NOW - DAY, NOW - DAY, NOW - HOUR)),
            NOW,
        ),
        case(
            "time: a token expired exactly the leeway ago is refused",
            issue(&Claims::origin(0x32).times(NOW - DAY, NOW - DAY, NOW - 60)),
            NOW,
        ),
        case(
            "time: a valid token verified after its expiry is refused",
            account_token.clone(),
            NOW + 2 * DAY,
        ),
        case(
            "time: a token not valid for another hour is refused",
            issue(&Claims::origin(0x33).times(NOW, NOW + HOUR, NOW + DAY)),
            NOW,
        ),
        // ---- Audience ----
        case(
            "audience: a token for another product is refused",
            issue(&Claims {
                aud: "other-app",
                ..Claims::origin(0x34)
            }),
            NOW,
        ),
        // ---- Tampering ----
        case(
            "tamper: a changed byte in the claims breaks the signature",
            join(&tampered_message, &signature, &footer),
            NOW,
        ),
        case(
            "tamper: a changed bit in the signature is refused",
            join(&message, &tampered_signature, &footer),
            NOW,
        ),
        case(
            "tamper: a footer re-spelled (same key id) breaks the signature",
            join(&message, &signature, spaced_footer.as_bytes()),
            NOW,
        ),
        case(
            "tamper: a footer that is not JSON is refused",
            join(&message, &signature, b"not json"),
            NOW,
        ),
        case(
            "tamper: a footer without a key id is refused",
            join(&message, &signature, b"{}"),
            NOW,
        ),
        case(
            "tamper: a token without a footer is refused",
            join(&message, &signature, b""),
            NOW,
        ),
        case(
            "tamper: claims that are not license claims (signed by the origin) are refused",
            sign_raw(
                &origin_key,
                br#"{"iss":"tollgate-origin","admin":true}"#,
                &origin_footer,
            ),
            NOW,
        ),
        // ---- Origin keys ----
        case(
            "keys: a token signed by a key the origin never published is refused",
            Issuer::origin(&stranger_ring)
                .issue(&account.build(data), None)
                .unwrap(),
            NOW,
        ),
        case(
            "keys: a token signed by a retired origin key is refused",
            Issuer::origin(&signing_ring(RETIRED))
                .issue(&Claims::origin(0x35).build(data), None)
                .unwrap(),
            NOW,
        ),
        case(
            "keys: a token signed by a key whose overlap window ended is refused",
            Issuer::origin(&signing_ring(OVERLAP))
                .issue(&Claims::origin(0x36).build(data), None)
                .unwrap(),
            NOW,
        ),
        case(
            "keys: a region key cannot sign as the origin",
            sign_raw(
                &eu.key,
                &serde_json::to_vec(&Claims::origin(0x37).build(data)).unwrap(),
                &eu.footer(),
            ),
            NOW,
        ),
        // ---- Revocation ----
        TokenCase {
            revoked_licenses: vec![revoked_license(&revoked_claims)],
            ..case(
                "revocation: a revoked license is refused",
                revoked_token.clone(),
                NOW,
            )
        },
        TokenCase {
            revoked_licenses: vec![revoked_license(&revoked_expired_claims)],
            ..case(
                "revocation: a revoked license that also expired is refused as expired",
                issue(&revoked_expired),
                NOW,
            )
        },
        TokenCase {
            revoked_licenses: vec![revoked_license(&revoked_claims)],
            ..case(
                "revocation: another token's revocation does not touch this one",
                account_token.clone(),
                NOW,
            )
        },
        TokenCase {
            revoked_certificates: vec![revoked_certificate(&us)],
            ..case(
                "revocation: a token signed under a revoked region certificate is refused",
                us_token.clone(),
                NOW,
            )
        },
        TokenCase {
            revoked_certificates: vec![revoked_certificate(&us)],
            ..case(
                "revocation: another region's revoked certificate does not touch this one",
                eu_token.clone(),
                NOW,
            )
        },
        // ---- Region certificates ----
        case(
            "certificate: a token under an expired region certificate is refused",
            old.issue(
                &Claims::region("ap-south", 0x41)
                    .times(NOW - 20 * DAY, NOW - 20 * DAY, NOW - 20 * DAY + HOUR)
                    .build(data),
            ),
            NOW,
        ),
        case(
            "certificate: a token under a region certificate not valid yet is refused",
            early.issue(
                &Claims::region("sa-east", 0x42)
                    .times(NOW + 10 * DAY, NOW + 10 * DAY, NOW + 10 * DAY + HOUR)
                    .build(data),
            ),
            NOW,
        ),
        case(
            "certificate: a footer naming one key with another key's certificate is refused",
            sign_raw(
                &eu.key,
                &serde_json::to_vec(&Claims::region("us-east", 0x43).build(data)).unwrap(),
                &json!({"kid": eu.cert.kid.as_str(), "cert": us.signed}),
            ),
            NOW,
        ),
        case(
            "certificate: a certificate not signed by an origin key is refused",
            forged.issue(&Claims::region("eu-west", 0x44).build(data)),
            NOW,
        ),
        case(
            "certificate: a key certified for webhooks only cannot sign licenses",
            sign_raw(
                &secret(0x0d),
                &serde_json::to_vec(&Claims::region("eu-north", 0x45).build(data)).unwrap(),
                &json!({"kid": webhook_cert.kid.as_str(), "cert": webhook_signed}),
            ),
            NOW,
        ),
        case(
            "certificate: a region cannot sign as another region",
            sign_raw(
                &eu.key,
                &serde_json::to_vec(&Claims::region("us-east", 0x46).build(data)).unwrap(),
                &eu.footer(),
            ),
            NOW,
        ),
        case(
            "certificate: a region token living longer than its certificate allows is refused",
            sign_raw(
                &eu.key,
                &serde_json::to_vec(
                    &Claims::region("eu-west", 0x47)
                        .times(NOW - HOUR, NOW - HOUR, NOW + 2 * DAY)
                        .build(data),
                )
                .unwrap(),
                &eu.footer(),
            ),
            NOW,
        ),
        // ---- Devices ----
        case(
            "device: a device-bound token without a fingerprint is refused",
            device_token.clone(),
            NOW,
        ),
        case(
            "device: a device-bound token with another device's fingerprint is refused",
            device_token.clone(),
            NOW,
        )
        .device("another-device"),
        case("device: an empty fingerprint is refused", device_token, NOW).device(""),
        // ---- Format ----
        case("format: the empty string is refused", String::new(), NOW),
        case(
            "format: another PASETO version is refused",
            account_token.replacen("v4.", "v3.", 1),
            NOW,
        ),
        case(
            "format: a local (encrypted) token is refused",
            account_token.replacen(".public.", ".local.", 1),
            NOW,
        ),
        case(
            "format: an upper-case header is refused",
            account_token.replacen("v4.public.", "V4.PUBLIC.", 1),
            NOW,
        ),
        case(
            "format: a payload that is not base64url is refused",
            format!("v4.public.{}*.{footer_b64}", &payload_b64[1..]),
            NOW,
        ),
        case(
            "format: padded base64 is refused",
            format!("v4.public.{payload_b64}==.{footer_b64}"),
            NOW,
        ),
        case(
            "format: a payload too short to hold a signature is refused",
            format!("v4.public.{}.{footer_b64}", B64.encode([0u8; 63])),
            NOW,
        ),
        case(
            "format: an empty footer section is refused",
            format!("v4.public.{payload_b64}."),
            NOW,
        ),
        case(
            "format: a footer that is not base64url is refused",
            format!("v4.public.{payload_b64}.{{\"kid\"}}"),
            NOW,
        ),
        case(
            "format: a fourth section is refused",
            format!("{account_token}.{footer_b64}"),
            NOW,
        ),
        case(
            "format: a token over 64 KiB is refused",
            format!("v4.public.{}", "A".repeat(64 * 1024)),
            NOW,
        ),
    ];
    Tokens {
        key_set: origin.public_set(),
        cases,
    }
}
