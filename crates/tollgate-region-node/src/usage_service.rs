//! The usage service of a region node: usage reported on its own, and
//! floating seat leases (acquire, renew, release) through the region's log.

use crate::checker::{meter_status, Checker};
use std::sync::Arc;
use tollgate_model::{AccountId, EntitlementId, FeatureId, SeatMode, SubjectId, Verb};
use tollgate_proto::convert::{SeatAnswer, SeatHolder, SeatState, UsageAnswer, UsageReport};
use tollgate_proto::usage::v1 as pb;
use tollgate_proto::ConvertError;
use tollgate_region::{
    Counter, KeyVerdict, RegionCommand, RegionResponse, SeatAction, SeatOutcome,
};
use tonic::{Request, Response, Status};

/// How often an acquire waiting for a leased seat looks again.
const SEAT_POLL: std::time::Duration = std::time::Duration::from_millis(10);

pub(crate) struct UsageService {
    pub checker: Arc<Checker>,
}

/// A request that does not convert: the error names the field.
fn invalid(e: ConvertError) -> Status {
    Status::invalid_argument(e.to_string())
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
                at: self.checker.clock.now(),
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
        let answer = SeatAnswer {
            state: SeatState::NotHeld,
            entitlement: Some(entitlement.clone()),
            expires_at: None,
            used: 0,
            total: 0,
            holders: Vec::new(),
            answered_by: self.checker.name.clone(),
        };
        match outcome {
            SeatOutcome::Held {
                expires_at,
                used,
                total,
            } => SeatAnswer {
                state: SeatState::Held,
                expires_at: Some(expires_at),
                used,
                total,
                ..answer
            },
            SeatOutcome::Full { total, holders } => SeatAnswer {
                state: SeatState::Full,
                used: total,
                total,
                holders,
                ..answer
            },
            SeatOutcome::NotHeld | SeatOutcome::NoFloatingSeats => answer,
            SeatOutcome::Released => SeatAnswer {
                state: SeatState::Released,
                ..answer
            },
        }
        .into()
    }

    async fn seat_request(
        &self,
        request: Request<pb::SeatRequest>,
        action: SeatAction,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        let caller = self.checker.caller(&request)?;
        let SeatHolder {
            account,
            subject,
            feature,
        } = SeatHolder::try_from(request.into_inner()).map_err(invalid)?;
        caller.account(Verb::Seats, &account)?;
        caller.feature(&*self.checker.views.snapshot_catalog()?, &feature)?;
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
        let caller = self.checker.caller(&request)?;
        let UsageReport {
            account,
            feature,
            units,
            idempotency_key,
        } = UsageReport::try_from(request.into_inner()).map_err(invalid)?;
        caller.account(Verb::ReportUsage, &account)?;
        let (snapshot, view) = self.checker.account(&account).await?;
        let catalog = snapshot.catalog;
        caller.feature(&catalog, &feature)?;
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
            .key_at(self.checker.clock.now());
        let meter = &self.checker.meter;
        let mut counted = meter
            .verdict(&idempotency_key)
            .map_err(meter_status)?
            .is_none();
        if counted {
            let counter = Counter {
                account,
                feature,
                period,
            };
            // Answered once durable: a report the caller sees succeed is
            // billed, whatever happens to this node next. A key a check
            // was refused under first is not counted.
            counted = meter
                .consume(counter, units, Some(idempotency_key), false)
                .await
                .map_err(meter_status)?
                == KeyVerdict::Counted;
        }
        Ok(Response::new(UsageAnswer { counted, period }.into()))
    }

    async fn acquire_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request, SeatAction::Acquire).await
    }

    async fn renew_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request, SeatAction::Renew).await
    }

    async fn release_seat(
        &self,
        request: Request<pb::SeatRequest>,
    ) -> Result<Response<pb::SeatResponse>, Status> {
        self.seat_request(request, SeatAction::Release).await
    }
}
