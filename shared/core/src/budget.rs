//! The live write budget: catalog writes per second across all workers, a setting operators
//! change while jobs run (`PUT /admin/write-budget`). Stored with the jobs
//! (`ports::WRITE_BUDGET_SETTING`); until one is stored, `WRITE_BUDGET_PER_SEC` applies.
//! Every worker re-reads it at most every `Settings::budget_refresh` and spends its share.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::ports::{RuntimeSettings, WRITE_BUDGET_SETTING};
use crate::{Settings, StoreError, StoreResult};

/// A budget as stored: writes per second, 0 = unlimited.
pub fn parse(value: &str) -> StoreResult<Option<f64>> {
    let writes: f64 = value.trim().parse().map_err(|_| {
        StoreError::internal(format!("the stored write budget '{value}' is not a number"))
    })?;
    if !writes.is_finite() || writes < 0.0 {
        return Err(StoreError::internal(format!(
            "the stored write budget {writes} is not ≥ 0"
        )));
    }
    Ok((writes > 0.0).then_some(writes))
}

/// The budget in force: the stored one, else the configured default. `(budget, stored)`.
pub async fn current(
    store: &dyn RuntimeSettings,
    settings: &Settings,
) -> StoreResult<(Option<f64>, bool)> {
    match store.get_setting(WRITE_BUDGET_SETTING).await? {
        Some(value) => Ok((parse(&value)?, true)),
        None => Ok((settings.write_budget_per_sec, false)),
    }
}

/// The budget a worker spends, re-read from the store at most every `every`.
pub struct BudgetWatch {
    store: Arc<dyn RuntimeSettings>,
    settings: Settings,
    every: Duration,
    last: Mutex<Option<(Instant, Option<f64>)>>,
}

impl BudgetWatch {
    pub fn new(store: Arc<dyn RuntimeSettings>, settings: &Settings) -> Self {
        BudgetWatch {
            store,
            settings: settings.clone(),
            every: settings.budget_refresh,
            last: Mutex::new(None),
        }
    }

    /// This worker's share of the budget in force (`None`: unlimited); reads the store when
    /// the last read is older than the refresh interval. A failed read keeps the last value.
    pub async fn share(&self) -> Option<f64> {
        let cached = *self.last.lock().unwrap_or_else(|p| p.into_inner());
        let budget = match cached {
            Some((at, budget)) if at.elapsed() < self.every => budget,
            _ => match current(self.store.as_ref(), &self.settings).await {
                Ok((budget, _)) => {
                    *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), budget));
                    budget
                }
                Err(e) => {
                    tracing::warn!(error = %e, "reading the write budget failed; keeping the last one");
                    let fallback = cached.map_or(self.settings.write_budget_per_sec, |c| c.1);
                    *self.last.lock().unwrap_or_else(|p| p.into_inner()) =
                        Some((Instant::now(), fallback));
                    fallback
                }
            },
        };
        budget.map(|b| b / self.settings.worker_concurrency as f64)
    }
}

/// The rates workers of this process write at now, by worker name (`GET
/// /admin/write-budget` on the embedded backend). Empty where workers run elsewhere (Lambda:
/// each instance reports its rate in its metrics).
#[derive(Clone, Debug, Default)]
pub struct LiveRates(Arc<Mutex<BTreeMap<String, Option<f64>>>>);

impl LiveRates {
    pub fn set(&self, worker: &str, rate: Option<f64>) {
        let mut rates = self.0.lock().unwrap_or_else(|p| p.into_inner());
        // Called once per chunk: no new key (an allocation) once the worker is known.
        match rates.get_mut(worker) {
            Some(known) => *known = rate,
            None => {
                rates.insert(worker.to_owned(), rate);
            }
        }
    }

    pub fn snapshot(&self) -> BTreeMap<String, Option<f64>> {
        self.0.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_budget_is_a_non_negative_number_and_zero_is_unlimited() {
        assert_eq!(parse("1000").unwrap(), Some(1000.0));
        assert_eq!(parse(" 0 ").unwrap(), None);
        assert!(parse("-1").is_err());
        assert!(parse("fast").is_err());
        assert!(parse("inf").is_err());
    }
}
