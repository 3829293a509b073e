//! Offers, locations and the links between them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::{BrandId, DomainError, JobId, LocationId, OfferId};

/// A brand's offer, with how many locations carry it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Offer {
    pub id: OfferId,
    pub brand_id: BrandId,
    pub name: String,
    pub locations_total: u64,
}

/// A brand's store location, and whether it carries any offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Location {
    pub id: LocationId,
    pub brand_id: BrandId,
    pub address: String,
    pub has_offer: bool,
}

/// Who created a link: a job, or a direct `PUT /offers/{o}/locations/{l}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkedBy {
    Job(JobId),
    Direct,
}

impl LinkedBy {
    pub fn to_attr(self) -> String {
        match self {
            LinkedBy::Job(id) => id.to_string(),
            LinkedBy::Direct => "direct".to_owned(),
        }
    }

    pub fn from_attr(s: &str) -> Result<Self, DomainError> {
        if s == "direct" {
            Ok(LinkedBy::Direct)
        } else {
            s.parse().map(LinkedBy::Job)
        }
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for LinkedBy {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "`direct` (PUT /offers/{offerId}/locations/{locationId}) or the id of the job that made the link",
            ))
            .pattern(Some(
                "^(direct|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
            ))
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for LinkedBy {}

impl Serialize for LinkedBy {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_attr())
    }
}

impl<'de> Deserialize<'de> for LinkedBy {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        LinkedBy::from_attr(&s).map_err(serde::de::Error::custom)
    }
}

/// A location carrying the offer: who linked it and when.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct Link {
    pub offer_id: OfferId,
    pub location_id: LocationId,
    pub linked_by: LinkedBy,
    pub linked_at: DateTime<Utc>,
}

/// What linking one location to an offer did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum LinkOutcome {
    /// This caller created the link (or created it on an earlier delivery of the same chunk).
    Linked,
    /// The link already existed, made by someone else.
    AlreadyLinked,
    /// The location does not exist, or belongs to another brand.
    NotFound,
    /// This caller removed the link (or removed it on an earlier delivery of the same chunk).
    Unlinked,
    /// There was no link this caller could remove.
    NotLinked,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linked_by_round_trips_through_its_attribute() {
        let job = LinkedBy::Job(JobId::new_v7());
        assert_eq!(LinkedBy::from_attr(&job.to_attr()).unwrap(), job);
        assert_eq!(LinkedBy::from_attr("direct").unwrap(), LinkedBy::Direct);
        assert!(LinkedBy::from_attr("someone").is_err());
    }
}
