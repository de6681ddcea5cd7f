//! The usage service of a region node: usage reported on its own, and
//! floating seat leases (acquire, renew, release) through the region's log.

use crate::checker::Checker;
use std::sync::Arc;
use tollgate_model::{AccountId, EntitlementId, FeatureId, SeatMode, SubjectId};
use tollgate_proto::convert::valid_idempotency_key;
use tollgate_proto::usage::v1 as pb;
use tollgate_region::{Counter, RegionCommand, RegionResponse, SeatAction, SeatOutcome};
use tollgate_server::clock::now;
use tonic::{Request, Response, Status};

/// How often an acquire waiting for a leased seat looks again.
const SEAT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

/// Most units one report may carry (as a check's `consume`).
const UNITS_MAX: u64 = tollgate_engine::CONSUME_MAX;

pub(crate) struct UsageService {
    pub checker: Arc<Checker>,
}

fn id<T>(field: &str, value: String) -> Result<T, Status>
where
    T: TryFrom<String, Error = tollgate_model::ModelError>,
{
    T::try_from(value).map_err(|e| Status::invalid_argument(format!("{field}: {e}")))
}

impl UsageService {
    /// The account's entitlements that grant `feature` with floating seats.
    async fn floating(
        &self,
        account: &AccountId,
        feature: &FeatureId,
    ) -> Result<Vec<EntitlementId>, Status> {
        let (_, view) = self.checker.account(account).await?;
        let view =
            view.ok_or_else(|| Status::not_found(format!("account {account} is unknown here")))?;
        let mut found: Vec<EntitlementId> = Vec::new();
        for grant in view.grants_for(feature.as_str()) {
            let ent = &view.entitlements[grant.entitlement];
            let floating = matches!(
                ent.seats.as_ref().map(|s| &s.mode),
                Some(SeatMode::Floating { .. })
            );
            if floating && !found.contains(&ent.id) {
                found.push(ent.id.clone());
            }
        }
        if found.is_empty() {
            return Err(Status::failed_precondition(format!(
                "no entitlement of {account} grants {feature} with floating seats"
            )));
        }
        Ok(found)
    }

    async fn seat(
        &self,
        action: SeatAction,
        entitlement: &EntitlementId,
        subject: &SubjectId,
    ) -> Result<SeatOutcome, Status> {
        let outcome = self
            .checker
            .node
            .write(RegionCommand::Seat {
                action,
                entitlement: entitlement.clone(),
                subject: subject.clone(),
                at: now(),
            })
            .await
            .map_err(|e| {
                Status::unavailable(format!("the region could not record the seat: {e}"))
            })?;
        match outcome.response {
            RegionResponse::Seat(outcome) => Ok(outcome),
            other => Err(Status::internal(format!("unexpected answer: {other:?}"))),
        }
    }

    fn respond(&self, entitlement: &EntitlementId, outcome: SeatOutcome) -> pb::SeatResponse {
        let mut r = pb::SeatResponse {
            entitlement_id: entitlement.to_string(),
            answered_by: self.checker.name.clone(),
            ..Default::default()
        };
        let status = match outcome {
            SeatOutcome::Held {
                expires_at,
                used,
                total,
            } => {
                r.expires_at = expires_at.0;
                r.used = used;
                r.total = total;
                pb::SeatStatus::Held
            }
            SeatOutcome::Full { total, holders } => {
                r.used = total;
                r.total = total;
                r.holders = holders.into_iter().map(Into::into).collect();
                pb::SeatStatus::Full
            }
            SeatOutcome::NotHeld | SeatOutcome::NoFloatingSeats => pb::SeatStatus::NotHeld,
            SeatOutcome::Released => pb::SeatStatus::Released,
        };
        r.set_status(status);
        r
    }

    async fn seat_request(
        &self,
        request: pb::SeatRequest,
        action: SeatAction,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        let account: AccountId = id("account_id", request.account_id)?;
        let subject: SubjectId = id("subject_id", request.subject_id)?;
        let feature: FeatureId = id("feature_id", request.feature_id)?;
        let candidates = self.floating(&account, &feature).await?;
        // Renew and release go to the entitlement whose seat the subject
        // holds; acquire takes the first with a free seat. When the region
        // holds fewer seats than the entitlement has, the leader leases one
        // from the origin meanwhile: acquire waits for it, within bounds.
        let held = |checker: &Checker| -> u64 {
            candidates
                .iter()
                .map(|e| {
                    tollgate_region::seats::seat_slice(&checker.view, e).map_or(0, |s| s.held())
                })
                .sum()
        };
        let deadline = tokio::time::Instant::now() + self.checker.meter_config.slice_wait;
        loop {
            let before = held(&self.checker);
            let (entitlement, outcome) = self.try_seats(&candidates, &subject, action).await?;
            if action != SeatAction::Acquire || !matches!(outcome, SeatOutcome::Full { .. }) {
                return Ok(Response::new(self.respond(&entitlement, outcome)));
            }
            let grew = loop {
                if held(&self.checker) > before {
                    break true;
                }
                if tokio::time::Instant::now() >= deadline {
                    break false;
                }
                tokio::time::sleep(SEAT_POLL).await;
            };
            if !grew {
                return Ok(Response::new(self.respond(&entitlement, outcome)));
            }
        }
    }

    /// Tries each candidate in turn; the first that holds, or the last
    /// outcome.
    async fn try_seats(
        &self,
        candidates: &[EntitlementId],
        subject: &SubjectId,
        action: SeatAction,
    ) -> Result<(EntitlementId, SeatOutcome), Status> {
        let mut last = None;
        for entitlement in candidates {
            let outcome = self.seat(action, entitlement, subject).await?;
            if matches!(outcome, SeatOutcome::Held { .. }) {
                return Ok((entitlement.clone(), outcome));
            }
            last = Some((entitlement.clone(), outcome));
        }
        Ok(last.expect("at least one candidate"))
    }
}

#[tonic::async_trait]
impl pb::usage_server::Usage for UsageService {
    async fn report_usage(
        &self,
        request: Request<pb::ReportUsageRequest>,
    ) -> Result<Response<pb::ReportUsageResponse>, Status> {
        let r = request.into_inner();
        let account: AccountId = id("account_id", r.account_id)?;
        let feature: FeatureId = id("feature_id", r.feature_id)?;
        if r.units == 0 || r.units > UNITS_MAX {
            return Err(Status::invalid_argument(format!(
                "units: must be 1..={UNITS_MAX}"
            )));
        }
        if !valid_idempotency_key(&r.idempotency_key) {
            return Err(Status::invalid_argument(
                "idempotency_key: required, 1..=128 bytes of [A-Za-z0-9._:@-]",
            ));
        }
        let (snapshot, view) = self.checker.account(&account).await?;
        let catalog = snapshot.catalog;
        if view.is_none() {
            return Err(Status::not_found(format!(
                "account {account} is unknown here"
            )));
        }
        let period = catalog
            .features
            .get(&feature)
            .ok_or_else(|| Status::not_found(format!("feature {feature} is unknown here")))?
            .period()
            .ok_or_else(|| Status::invalid_argument(format!("feature {feature} is not metered")))?
            .key_at(now());
        if self.checker.meter.backed_up() {
            return Err(Status::unavailable(
                "usage reports are not reaching the region's log; try another node",
            ));
        }
        let counted = !self.checker.meter.seen(&r.idempotency_key);
        if counted {
            let counter = Counter {
                account,
                feature,
                period,
            };
            self.checker
                .meter
                .record(counter, r.units, Some(r.idempotency_key), false);
        }
        Ok(Response::new(pb::ReportUsageResponse {
            counted,
            period: period.to_string(),
        }))
    }

    async fn acquire_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request.into_inner(), SeatAction::Acquire)
            .await
    }

    async fn renew_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request.into_inner(), SeatAction::Renew)
            .await
    }

    async fn release_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request.into_inner(), SeatAction::Release)
            .await
    }
}
