//! Fault injectors that wrap a real port (never a fake of one): what the tests use to make
//! link writes fail or halt, and what `serve --fail-links-to` uses to give a real server
//! jobs with failures (for trying out failure handling, e.g. in the console's tests).

use std::future::pending;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use async_trait::async_trait;
use bulklink_core::domain::{BrandId, JobId, Link, LinkOutcome, LinkedBy, Location, LocationId};
use bulklink_core::domain::{
    DriftWatch, LocationChange, LocationFilter, LocationStatus, Offer, OfferId, OfferRule,
    Upserted, WatchedRule,
};
use bulklink_core::ports::{Catalog, Cursor, Page};
use bulklink_core::{StoreError, StoreResult};
use tokio::sync::Notify;

/// A halt point: the wrapped call stops forever once reached, and says so.
#[derive(Default)]
pub struct Halt {
    pub reached: AtomicBool,
    pub notify: Notify,
}

impl Halt {
    pub async fn stop_here(&self) -> ! {
        self.reached.store(true, Ordering::SeqCst);
        self.notify.notify_waiters();
        pending::<()>().await;
        unreachable!()
    }

    pub async fn wait(&self) {
        loop {
            let notified = self.notify.notified();
            if self.reached.load(Ordering::SeqCst) {
                return;
            }
            notified.await;
        }
    }
}

/// Decides which link batches a `FaultyCatalog` refuses.
pub type LinkFault = Box<dyn Fn(&[LocationId]) -> bool + Send + Sync>;

/// Wraps a real catalog: link calls can fail (per predicate), or halt after writing.
pub struct FaultyCatalog {
    pub inner: Arc<dyn Catalog>,
    /// `link_locations` fails for a batch this returns true for.
    pub fail_link: LinkFault,
    /// `existing_links` fails this many times before it works.
    pub fail_existing: AtomicUsize,
    /// The n-th `link_locations` call (1-based) halts after its writes committed.
    pub halt_on_call: Option<(usize, Arc<Halt>)>,
    pub link_calls: AtomicUsize,
}

impl FaultyCatalog {
    pub fn new(inner: Arc<dyn Catalog>) -> Self {
        FaultyCatalog {
            inner,
            fail_link: Box::new(|_| false),
            fail_existing: AtomicUsize::new(0),
            halt_on_call: None,
            link_calls: AtomicUsize::new(0),
        }
    }
}

/// Link (and unlink) writes fail for every batch holding one of `ids`: those locations
/// end as the job's failures, with the reason, once their chunk's deliveries are used up.
pub fn failing_links_to(inner: Arc<dyn Catalog>, ids: Vec<LocationId>) -> FaultyCatalog {
    let mut catalog = FaultyCatalog::new(inner);
    let ids: std::collections::HashSet<LocationId> = ids.into_iter().collect();
    catalog.fail_link = Box::new(move |batch| batch.iter().any(|id| ids.contains(id)));
    catalog
}

#[async_trait]
impl Catalog for FaultyCatalog {
    async fn create_offer(&self, offer: &Offer) -> StoreResult<()> {
        self.inner.create_offer(offer).await
    }
    async fn get_offer(&self, id: OfferId) -> StoreResult<Option<Offer>> {
        self.inner.get_offer(id).await
    }
    async fn create_locations(&self, locations: &[Location]) -> StoreResult<()> {
        self.inner.create_locations(locations).await
    }
    async fn get_location(&self, id: LocationId) -> StoreResult<Option<Location>> {
        self.inner.get_location(id).await
    }
    async fn page_brand_offers(
        &self,
        brand: BrandId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Offer>> {
        self.inner.page_brand_offers(brand, after, limit).await
    }
    async fn page_brand_locations(
        &self,
        brand: BrandId,
        status: Option<LocationStatus>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        self.inner
            .page_brand_locations(brand, status, after, limit)
            .await
    }
    async fn link_locations(
        &self,
        offer: OfferId,
        brand: BrandId,
        by: LinkedBy,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let call = self.link_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if (self.fail_link)(ids) {
            return Err(StoreError::unavailable(
                "injected fault: catalog write refused",
            ));
        }
        let outcomes = self.inner.link_locations(offer, brand, by, ids).await?;
        if let Some((n, halt)) = &self.halt_on_call {
            if call == *n {
                halt.stop_here().await;
            }
        }
        Ok(outcomes)
    }
    async fn link_direct(&self, offer: &Offer, location: LocationId) -> StoreResult<LinkOutcome> {
        self.inner.link_direct(offer, location).await
    }
    async fn rename_offer(&self, id: OfferId, name: &str) -> StoreResult<Option<Offer>> {
        self.inner.rename_offer(id, name).await
    }
    async fn locations_matching(
        &self,
        brand: BrandId,
        ids: &[LocationId],
        filter: &LocationFilter,
    ) -> StoreResult<Vec<Location>> {
        self.inner.locations_matching(brand, ids, filter).await
    }
    async fn set_offer_schedule(
        &self,
        id: OfferId,
        schedule: &bulklink_core::domain::OfferSchedule,
    ) -> StoreResult<bool> {
        self.inner.set_offer_schedule(id, schedule).await
    }
    async fn external_ids(&self, ids: &[LocationId]) -> StoreResult<Vec<Option<String>>> {
        self.inner.external_ids(ids).await
    }
    async fn find_by_external_id(
        &self,
        brand: BrandId,
        external_id: &str,
    ) -> StoreResult<Option<Location>> {
        self.inner.find_by_external_id(brand, external_id).await
    }
    async fn upsert_by_external_id(&self, location: &Location) -> StoreResult<Upserted> {
        self.inner.upsert_by_external_id(location).await
    }
    async fn update_location(
        &self,
        id: LocationId,
        change: &LocationChange,
    ) -> StoreResult<Option<Location>> {
        self.inner.update_location(id, change).await
    }
    async fn delete_location(&self, id: LocationId) -> StoreResult<Option<Vec<OfferId>>> {
        self.inner.delete_location(id).await
    }
    async fn put_rule(&self, rule: &OfferRule) -> StoreResult<()> {
        self.inner.put_rule(rule).await
    }
    async fn get_rule(&self, offer: OfferId) -> StoreResult<Option<OfferRule>> {
        self.inner.get_rule(offer).await
    }
    async fn delete_rule(&self, offer: OfferId) -> StoreResult<bool> {
        self.inner.delete_rule(offer).await
    }
    async fn brand_rules(&self, brand: BrandId) -> StoreResult<Vec<OfferRule>> {
        self.inner.brand_rules(brand).await
    }
    async fn page_rules(
        &self,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<WatchedRule>> {
        self.inner.page_rules(after, limit).await
    }
    async fn note_drift(
        &self,
        rule: &OfferRule,
        was: DriftWatch,
        now: DriftWatch,
    ) -> StoreResult<bool> {
        self.inner.note_drift(rule, was, now).await
    }
    async fn follow_rule(
        &self,
        rule: &OfferRule,
        ids: &[LocationId],
        by: LinkedBy,
    ) -> StoreResult<Vec<LinkOutcome>> {
        self.inner.follow_rule(rule, ids, by).await
    }
    /// Faults and halts as `link_locations` (they share the call count).
    async fn unlink_locations(
        &self,
        offer: OfferId,
        by: JobId,
        only_by: Option<JobId>,
        ids: &[LocationId],
    ) -> StoreResult<Vec<LinkOutcome>> {
        let call = self.link_calls.fetch_add(1, Ordering::SeqCst) + 1;
        if (self.fail_link)(ids) {
            return Err(StoreError::unavailable(
                "injected fault: catalog write refused",
            ));
        }
        let outcomes = self.inner.unlink_locations(offer, by, only_by, ids).await?;
        if let Some((n, halt)) = &self.halt_on_call {
            if call == *n {
                halt.stop_here().await;
            }
        }
        Ok(outcomes)
    }
    async fn unlinked_by(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<JobId>>> {
        self.inner.unlinked_by(offer, ids).await
    }
    async fn page_offer_link_ids(
        &self,
        offer: OfferId,
        made_by: Option<LinkedBy>,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<LocationId>> {
        self.inner
            .page_offer_link_ids(offer, made_by, after, limit)
            .await
    }
    async fn existing_links(
        &self,
        offer: OfferId,
        ids: &[LocationId],
    ) -> StoreResult<Vec<Option<LinkedBy>>> {
        let left = self.fail_existing.load(Ordering::SeqCst);
        if left > 0 {
            self.fail_existing.store(left - 1, Ordering::SeqCst);
            return Err(StoreError::unavailable(
                "injected fault: catalog read refused",
            ));
        }
        self.inner.existing_links(offer, ids).await
    }
    async fn page_offer_links(
        &self,
        offer: OfferId,
        after: Option<&Cursor>,
        limit: usize,
    ) -> StoreResult<Page<Link>> {
        self.inner.page_offer_links(offer, after, limit).await
    }
}
