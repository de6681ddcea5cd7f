//! `tollgate.license.v1` <-> `tollgate-license`'s requests and answers.

use super::{AtField, ConvertError};
use crate::license::v1 as pb;
use tollgate_license::{IssueRequest, IssuedToken, Verification, VerifyRequest, TOKEN_BYTES_MAX};
use tollgate_model::{AccountId, SubjectId};

/// An empty string is an absent value in these messages (proto3 strings).
fn present(s: String) -> Option<String> {
    (!s.is_empty()).then_some(s)
}

impl TryFrom<pb::IssueLicenseRequest> for IssueRequest {
    type Error = ConvertError;

    fn try_from(r: pb::IssueLicenseRequest) -> Result<Self, ConvertError> {
        Ok(IssueRequest {
            account: AccountId::new(r.account_id).at("account_id")?,
            subject: present(r.subject_id)
                .map(|s| SubjectId::new(s).at("subject_id"))
                .transpose()?,
            audience: r.audience,
            ttl_seconds: (r.ttl_seconds > 0).then_some(r.ttl_seconds),
            device_fingerprint: present(r.device_fingerprint),
        })
    }
}

impl From<IssueRequest> for pb::IssueLicenseRequest {
    fn from(r: IssueRequest) -> Self {
        pb::IssueLicenseRequest {
            account_id: r.account.into(),
            subject_id: r.subject.map(Into::into).unwrap_or_default(),
            audience: r.audience,
            ttl_seconds: r.ttl_seconds.unwrap_or(0),
            device_fingerprint: r.device_fingerprint.unwrap_or_default(),
        }
    }
}

impl From<IssuedToken> for pb::IssueLicenseResponse {
    fn from(t: IssuedToken) -> Self {
        pb::IssueLicenseResponse {
            id: t.id,
            token: t.token,
            kid: t.kid,
            issuer: t.issuer,
            issued_at: t.issued_at.0,
            not_before: t.not_before.0,
            expires_at: t.expires_at.0,
            entitlements_revision: t.entitlements_revision,
        }
    }
}

impl TryFrom<pb::VerifyLicenseRequest> for VerifyRequest {
    type Error = ConvertError;

    fn try_from(r: pb::VerifyLicenseRequest) -> Result<Self, ConvertError> {
        // Refused before any parsing, as the token crate would refuse it.
        if r.token.len() > TOKEN_BYTES_MAX {
            return Err(ConvertError::out_of_range(
                "token",
                format!("is over {TOKEN_BYTES_MAX} bytes"),
            ));
        }
        Ok(VerifyRequest {
            token: r.token,
            audience: r.audience,
            device_fingerprint: present(r.device_fingerprint),
        })
    }
}

impl From<VerifyRequest> for pb::VerifyLicenseRequest {
    fn from(r: VerifyRequest) -> Self {
        pb::VerifyLicenseRequest {
            token: r.token,
            audience: r.audience,
            device_fingerprint: r.device_fingerprint.unwrap_or_default(),
        }
    }
}

impl From<Verification> for pb::VerifyLicenseResponse {
    fn from(v: Verification) -> Self {
        match v.outcome {
            Ok(license) => pb::VerifyLicenseResponse {
                valid: true,
                // Claims that verified serialise; should they not, the
                // answer is still "valid", without them.
                claims_json: license
                    .claims()
                    .to_json()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default(),
                revision: v.revision,
                ..Default::default()
            },
            Err(e) => pb::VerifyLicenseResponse {
                valid: false,
                error_code: e.code().to_string(),
                error_message: e.to_string(),
                revision: v.revision,
                ..Default::default()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tollgate_license::LicenseError;
    use tollgate_model::UnixSeconds;

    #[test]
    fn an_issue_request_survives_the_round_trip() {
        let request = IssueRequest {
            account: AccountId::new("acme").unwrap(),
            subject: Some(SubjectId::new("alice").unwrap()),
            audience: "desktop".into(),
            ttl_seconds: Some(600),
            device_fingerprint: Some("fp-1".into()),
        };
        let wire = pb::IssueLicenseRequest::from(request.clone());
        assert_eq!(IssueRequest::try_from(wire).unwrap(), request);
    }

    #[test]
    fn empty_strings_and_zero_are_absent() {
        let wire = pb::IssueLicenseRequest {
            account_id: "acme".into(),
            audience: "desktop".into(),
            ..Default::default()
        };
        let request = IssueRequest::try_from(wire).unwrap();
        assert_eq!(request.subject, None);
        assert_eq!(request.ttl_seconds, None);
        assert_eq!(request.device_fingerprint, None);
    }

    #[test]
    fn an_issue_request_with_a_bad_id_names_the_field() {
        let rows = [
            ("bad id!", "", "account_id"),
            ("acme", "bad id!", "subject_id"),
        ];
        for (account_id, subject_id, field) in rows {
            let wire = pb::IssueLicenseRequest {
                account_id: account_id.into(),
                subject_id: subject_id.into(),
                ..Default::default()
            };
            let error = IssueRequest::try_from(wire).unwrap_err();
            assert_eq!(error.field(), field, "{error}");
        }
    }

    #[test]
    fn an_oversized_token_is_refused_before_verifying() {
        let wire = pb::VerifyLicenseRequest {
            token: "x".repeat(TOKEN_BYTES_MAX + 1),
            ..Default::default()
        };
        assert_eq!(VerifyRequest::try_from(wire).unwrap_err().field(), "token");
        let wire = pb::VerifyLicenseRequest {
            token: "v4.public.x".into(),
            audience: "desktop".into(),
            device_fingerprint: String::new(),
        };
        let request = VerifyRequest::try_from(wire.clone()).unwrap();
        assert_eq!(request.device_fingerprint, None);
        assert_eq!(pb::VerifyLicenseRequest::from(request), wire);
    }

    #[test]
    fn a_refusal_travels_with_its_stable_code() {
        let wire = pb::VerifyLicenseResponse::from(Verification {
            outcome: Err(LicenseError::BadSignature),
            revision: 7,
        });
        assert!(!wire.valid);
        assert_eq!(wire.error_code, "license_bad_signature");
        assert_eq!(wire.error_message, LicenseError::BadSignature.to_string());
        assert_eq!(wire.revision, 7);
        assert!(wire.claims_json.is_empty());
    }

    #[test]
    fn an_issued_token_keeps_every_field() {
        let wire = pb::IssueLicenseResponse::from(IssuedToken {
            id: "0123".into(),
            token: "v4.public.x".into(),
            kid: "ed25519-1".into(),
            issuer: "tollgate-origin".into(),
            issued_at: UnixSeconds(10),
            not_before: UnixSeconds(11),
            expires_at: UnixSeconds(12),
            entitlements_revision: 5,
        });
        assert_eq!(
            (wire.issued_at, wire.not_before, wire.expires_at),
            (10, 11, 12)
        );
        assert_eq!(wire.issuer, "tollgate-origin");
        assert_eq!(wire.entitlements_revision, 5);
    }
}
