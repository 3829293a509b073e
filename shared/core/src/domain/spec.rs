//! A job as data: what it does to each location (its action), which locations (its source)
//! and what it is shown as (its kind). Both backends store a job's `JobSpec` as one
//! serialized value, so a new source or kind needs no schema change. Every planning rule
//! (what a request makes, what may be derived from a job, one undo per job) is `plan`.

use std::fmt;

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::job::{Action, Job, JobKind, NotDerivable};
use super::{DomainError, Import, ImportFormat, ImportId, JobId, LocationFilter};

/// Where a job's location ids come from, as stored: `{"type": "<name>", …parameters}`. The
/// sources of this build's kinds are `Source`; a source the core does not define is read by
/// a reader registered in `Ports::sources` (`crate::kinds::SourceReader`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(try_from = "Map<String, Value>", into = "Map<String, Value>")]
pub struct SourceSpec(Map<String, Value>);

impl SourceSpec {
    /// A source named `name` with `params` (a struct, or `()` for none).
    pub fn new<T: Serialize>(name: &str, params: &T) -> Result<Self, DomainError> {
        let mut map = match serde_json::to_value(params) {
            Ok(Value::Object(map)) => map,
            Ok(Value::Null) => Map::new(),
            Ok(other) => {
                return Err(DomainError::BadMessage(format!(
                    "the parameters of source '{name}' must be an object, not {other}"
                )))
            }
            Err(e) => return Err(DomainError::BadMessage(e.to_string())),
        };
        map.insert("type".to_owned(), Value::String(name.to_owned()));
        Ok(SourceSpec(map))
    }

    /// The source's name (its `type`).
    pub fn name(&self) -> &str {
        self.0.get("type").and_then(Value::as_str).unwrap_or("")
    }

    /// The source's parameters as `T` (its `type` is ignored).
    pub fn params<T: DeserializeOwned>(&self) -> Result<T, DomainError> {
        let mut map = self.0.clone();
        map.remove("type");
        serde_json::from_value(Value::Object(map)).map_err(|e| {
            DomainError::Corrupt(format!("source '{}' has bad parameters: {e}", self.name()))
        })
    }

    /// The source as one this build's kinds use; `None` for another (a registered reader's).
    pub fn builtin(&self) -> Option<Source> {
        serde_json::from_value(Value::Object(self.0.clone())).ok()
    }
}

impl TryFrom<Map<String, Value>> for SourceSpec {
    type Error = String;

    fn try_from(map: Map<String, Value>) -> Result<Self, Self::Error> {
        match map.get("type") {
            Some(Value::String(name)) if !name.is_empty() => Ok(SourceSpec(map)),
            _ => Err("a job source needs a \"type\" naming it".to_owned()),
        }
    }
}

impl From<SourceSpec> for Map<String, Value> {
    fn from(spec: SourceSpec) -> Self {
        spec.0
    }
}

impl fmt::Display for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The sources this build's kinds read.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Source {
    /// Every location of the job's brand; with `where`, only those that match it.
    BrandLocations {
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<LocationFilter>,
    },
    /// Every location the job's offer is linked to; with `madeBy`, only the links that job
    /// made; with `where`, only the locations that match it.
    OfferLinks {
        #[serde(rename = "madeBy", default, skip_serializing_if = "Option::is_none")]
        made_by: Option<JobId>,
        #[serde(rename = "where", default, skip_serializing_if = "Option::is_none")]
        filter: Option<LocationFilter>,
    },
    /// The locations a job failed on.
    JobFailures { job: JobId },
    /// Every location of the job's brand, active ones first, then closed ones.
    BrandEstate,
    /// The rows of an uploaded file, then (with `closeMissing`) the brand's active locations
    /// the file did not name.
    Upload {
        import: ImportId,
        format: ImportFormat,
        #[serde(rename = "closeMissing", default)]
        close_missing: bool,
    },
}

impl From<Source> for SourceSpec {
    fn from(source: Source) -> Self {
        match serde_json::to_value(source) {
            Ok(Value::Object(map)) => SourceSpec(map),
            // An internally tagged enum always serializes to an object with its tag.
            _ => unreachable!("a Source serializes to an object"),
        }
    }
}

/// The whole of what a job is, stored as one value: its kind (shown as `type`), its action,
/// its source and the job it derives from.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct JobSpec {
    pub kind: JobKind,
    /// What is done to each id.
    pub action: Action,
    /// Which ids.
    pub source: SourceSpec,
    /// The job an undo or retry-failures job derives from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent_job_id: Option<JobId>,
    /// The job to make when this one ends (an offer's end, after its start's link-all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub then: Option<FollowUp>,
}

/// A job a job makes when it ends, whatever its end: one of `kind` on the same offer,
/// `SCHEDULED` until `not_before`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FollowUp {
    pub kind: JobKind,
    pub not_before: chrono::DateTime<chrono::Utc>,
}

impl JobSpec {
    /// A job with no parent.
    pub fn new(kind: JobKind, action: Action, source: impl Into<SourceSpec>) -> Self {
        JobSpec {
            kind,
            action,
            source: source.into(),
            parent_job_id: None,
            then: None,
        }
    }

    /// The stored form.
    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("a job spec serializes")
    }

    /// A stored spec read back.
    pub fn from_json(json: &str) -> Result<Self, DomainError> {
        serde_json::from_str(json)
            .map_err(|e| DomainError::Corrupt(format!("job spec '{json}' does not read: {e}")))
    }

    /// The spec of a job stored before specs (kind, action and parent in their own columns
    /// or attributes): its source follows from its kind.
    pub fn legacy(
        kind: JobKind,
        action: Action,
        parent: Option<JobId>,
    ) -> Result<Self, DomainError> {
        let needs_parent =
            || parent.ok_or_else(|| DomainError::Corrupt(format!("{kind} job has no parent")));
        let source = match kind {
            JobKind::LinkAllLocations => Source::BrandLocations { filter: None },
            JobKind::UnlinkAllLocations => Source::OfferLinks {
                made_by: None,
                filter: None,
            },
            JobKind::Undo => Source::OfferLinks {
                made_by: Some(needs_parent()?),
                filter: None,
            },
            JobKind::RetryFailures => Source::JobFailures {
                job: needs_parent()?,
            },
            JobKind::Reconcile => Source::BrandEstate,
            JobKind::ImportLocations => {
                return Err(DomainError::Corrupt(
                    "an import job is never stored without its spec".to_owned(),
                ))
            }
        };
        Ok(JobSpec {
            parent_job_id: parent,
            then: None,
            ..JobSpec::new(kind, action, source)
        })
    }

    /// The job this one must be the only one of its kind for (an undo's parent: one undo
    /// per job). The stores enforce it atomically with the job's creation.
    pub fn once_per_parent(&self) -> Option<JobId> {
        match self.kind {
            JobKind::Undo => self.parent_job_id,
            _ => None,
        }
    }
}

/// Plans a job: what a request for a job of `kind` makes, from `parent` for a kind derived
/// from another job. The one place the planning rules live: an offer-wide kind links every
/// location of the brand or unlinks every linked one; an undo removes exactly the links an
/// ended linking job made (one undo per job: `JobSpec::once_per_parent`); a retry repeats an
/// ended job's action on its failures.
impl JobSpec {
    /// This spec with its locations narrowed to those matching `filter`: an offer-wide
    /// job's only (an undo or a retry acts on exactly what its parent did).
    pub fn narrowed(mut self, filter: LocationFilter) -> Result<JobSpec, String> {
        let Some(source) = self.source.builtin() else {
            return Err(format!("a {} job cannot be narrowed", self.kind));
        };
        let narrowed = match source {
            Source::BrandLocations { filter: None } => Source::BrandLocations {
                filter: Some(filter),
            },
            Source::OfferLinks {
                made_by: None,
                filter: None,
            } if self.parent_job_id.is_none() => Source::OfferLinks {
                made_by: None,
                filter: Some(filter),
            },
            _ => {
                return Err(format!(
                    "where applies to link-all and unlink-all jobs only, not to a {} job",
                    self.kind
                ))
            }
        };
        self.source = narrowed.into();
        Ok(self)
    }

    /// The filter that narrows this job's locations, if one does.
    pub fn filter(&self) -> Option<LocationFilter> {
        match self.source.builtin()? {
            Source::BrandLocations { filter } | Source::OfferLinks { filter, .. } => filter,
            Source::JobFailures { .. } | Source::BrandEstate | Source::Upload { .. } => None,
        }
    }
}

impl JobSpec {
    /// The job that applies an import's file.
    pub fn import(import: &Import) -> JobSpec {
        JobSpec::new(
            JobKind::ImportLocations,
            Action::Import,
            Source::Upload {
                import: import.id,
                format: import.format,
                close_missing: import.close_missing,
            },
        )
    }
}

pub fn plan(kind: JobKind, parent: Option<&Job>) -> Result<JobSpec, NotDerivable> {
    match (kind, parent) {
        (JobKind::LinkAllLocations, None) => Ok(JobSpec::new(
            kind,
            Action::Link,
            Source::BrandLocations { filter: None },
        )),
        (JobKind::UnlinkAllLocations, None) => Ok(JobSpec::new(
            kind,
            Action::Unlink { only_by: None },
            Source::OfferLinks {
                made_by: None,
                filter: None,
            },
        )),
        (JobKind::Reconcile, None) => {
            Ok(JobSpec::new(kind, Action::Reconcile, Source::BrandEstate))
        }
        (
            JobKind::LinkAllLocations | JobKind::UnlinkAllLocations | JobKind::Reconcile,
            Some(parent),
        ) => Err(NotDerivable::NotDerivedKind(parent.id, kind)),
        (JobKind::Undo | JobKind::RetryFailures, None) => Err(NotDerivable::NeedsParent(kind)),
        (JobKind::ImportLocations, _) => Err(NotDerivable::MadeByUpload(kind)),
        (_, Some(parent)) if !parent.status.is_terminal() => {
            Err(NotDerivable::NotEnded(parent.id, parent.status))
        }
        (JobKind::Undo, Some(parent)) if parent.spec.action != Action::Link => {
            Err(NotDerivable::NothingToUndo(parent.id, parent.spec.kind))
        }
        (JobKind::Undo, Some(parent)) => Ok(JobSpec {
            parent_job_id: Some(parent.id),
            then: None,
            ..JobSpec::new(
                kind,
                Action::Unlink {
                    only_by: Some(parent.id),
                },
                Source::OfferLinks {
                    made_by: Some(parent.id),
                    filter: None,
                },
            )
        }),
        // An import's failures are rows of its file: the file, mended, is imported again.
        (JobKind::RetryFailures, Some(parent)) if parent.spec.action == Action::Import => {
            Err(NotDerivable::NotDerivedKind(parent.id, kind))
        }
        (JobKind::RetryFailures, Some(parent)) if parent.counters.failed == 0 => {
            Err(NotDerivable::NoFailures(parent.id))
        }
        (JobKind::RetryFailures, Some(parent)) => Ok(JobSpec {
            parent_job_id: Some(parent.id),
            then: None,
            ..JobSpec::new(
                kind,
                parent.spec.action,
                Source::JobFailures { job: parent.id },
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sources_are_stored_as_a_named_object_and_read_back() {
        let job = JobId::new_v7();
        let london = LocationFilter {
            city: vec!["London".into()],
            ..Default::default()
        };
        for source in [
            Source::BrandLocations { filter: None },
            Source::BrandLocations {
                filter: Some(london.clone()),
            },
            Source::OfferLinks {
                made_by: None,
                filter: None,
            },
            Source::OfferLinks {
                made_by: None,
                filter: Some(london.clone()),
            },
            Source::OfferLinks {
                made_by: Some(job),
                filter: None,
            },
            Source::JobFailures { job },
        ] {
            let spec = SourceSpec::from(source.clone());
            let json = serde_json::to_string(&spec).unwrap();
            let back: SourceSpec = serde_json::from_str(&json).unwrap();
            assert_eq!(back.builtin(), Some(source), "{json}");
        }
        assert_eq!(
            serde_json::to_string(&SourceSpec::from(Source::OfferLinks {
                made_by: Some(job),
                filter: None
            }))
            .unwrap(),
            format!(r#"{{"madeBy":"{job}","type":"offer-links"}}"#)
        );
        // What earlier releases stored for a link-all reads as the unnarrowed source.
        let stored: SourceSpec = serde_json::from_str(r#"{"type":"brand-locations"}"#).unwrap();
        assert_eq!(
            stored.builtin(),
            Some(Source::BrandLocations { filter: None })
        );
        assert_eq!(
            serde_json::to_string(&SourceSpec::from(Source::BrandLocations {
                filter: Some(london)
            }))
            .unwrap(),
            r#"{"type":"brand-locations","where":{"city":["London"]}}"#
        );
        let other = SourceSpec::new("these-ids", &serde_json::json!({"ids": []})).unwrap();
        assert_eq!(other.name(), "these-ids");
        assert_eq!(other.builtin(), None);
        assert!(serde_json::from_str::<SourceSpec>(r#"{"ids": []}"#).is_err());
    }

    #[test]
    fn legacy_rows_get_the_spec_their_kind_implies() {
        let parent = JobId::new_v7();
        for kind in JobKind::ALL
            .into_iter()
            .filter(|k| *k != JobKind::ImportLocations)
        {
            let action = match kind {
                JobKind::LinkAllLocations => Action::Link,
                JobKind::Undo => Action::Unlink {
                    only_by: Some(parent),
                },
                _ => Action::Unlink { only_by: None },
            };
            let derived = matches!(kind, JobKind::Undo | JobKind::RetryFailures);
            let spec = JobSpec::legacy(kind, action, derived.then_some(parent)).unwrap();
            assert_eq!(JobSpec::from_json(&spec.to_json()).unwrap(), spec);
            assert_eq!(spec.once_per_parent().is_some(), kind == JobKind::Undo);
            if derived {
                assert!(JobSpec::legacy(kind, action, None).is_err(), "{kind}");
            }
        }
    }
}
