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
    /// When it is live, and the jobs that started and ended it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<OfferSchedule>,
}

/// When an offer is live: linked to every location of its brand from `startsAt` (a
/// link-all, `SCHEDULED` until then), unlinked from every one at `endsAt` (an unlink-all
/// made when the start's job ends, `SCHEDULED` until its time); and the jobs that did it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OfferSchedule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub starts_at: Option<DateTime<Utc>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ends_at: Option<DateTime<Utc>>,
    /// The link-all its start made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_job_id: Option<JobId>,
    /// The unlink-all its end made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub end_job_id: Option<JobId>,
}

impl OfferSchedule {
    /// Whether the offer is live at `now`: its start has come (or it has none) and its end
    /// has not. A standing rule acts only while its offer is live.
    pub fn live_at(&self, now: DateTime<Utc>) -> bool {
        self.starts_at.is_none_or(|start| start <= now) && self.ends_at.is_none_or(|end| now < end)
    }

    /// The schedule's times, checked: an end after the start, and neither more than
    /// `max_days` ahead of `now`.
    pub fn checked(
        starts_at: Option<DateTime<Utc>>,
        ends_at: Option<DateTime<Utc>>,
        now: DateTime<Utc>,
        max_days: i64,
    ) -> Result<Option<Self>, String> {
        if let (Some(start), Some(end)) = (starts_at, ends_at) {
            if end <= start {
                return Err(format!(
                    "endsAt {} is not after startsAt {}",
                    end.to_rfc3339(),
                    start.to_rfc3339()
                ));
            }
        }
        for (name, at) in [("startsAt", starts_at), ("endsAt", ends_at)] {
            if at.is_some_and(|at| at > now + chrono::Duration::days(max_days)) {
                return Err(format!("{name} is more than {max_days} days ahead"));
            }
        }
        Ok(
            (starts_at.is_some() || ends_at.is_some()).then(|| OfferSchedule {
                starts_at,
                ends_at,
                ..Default::default()
            }),
        )
    }
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
    /// The brand's own id for the store: 1 to 100 characters, unique in the brand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    /// What the brand says of the store beyond its address (none on a location created
    /// before locations had attributes).
    #[serde(flatten)]
    pub attributes: LocationAttributes,
    /// `closed` when the store has closed: it carries no offer and no job links it.
    #[serde(default)]
    pub status: LocationStatus,
    /// When it was created; absent on a location created before this was kept.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<DateTime<Utc>>,
    /// When its address or attributes last changed (linking does not change it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub updated_at: Option<DateTime<Utc>>,
}

impl Location {
    /// A new location with an address and nothing else, created at `now`.
    pub fn new(id: LocationId, brand_id: BrandId, address: String, now: DateTime<Utc>) -> Self {
        Location {
            id,
            brand_id,
            address,
            has_offer: false,
            external_id: None,
            attributes: LocationAttributes::default(),
            status: LocationStatus::Active,
            created_at: Some(now),
            updated_at: Some(now),
        }
    }

    /// Whether `other` is this location as a client would send it again: the same id,
    /// brand, address and attributes (times and `hasOffer` are the store's).
    pub fn same_as_sent(&self, other: &Location) -> bool {
        self.id == other.id
            && self.brand_id == other.brand_id
            && self.address == other.address
            && self.external_id == other.external_id
            && self.attributes == other.attributes
            && self.status == other.status
    }

    pub fn is_active(&self) -> bool {
        self.status == LocationStatus::Active
    }

    /// This location with `change` applied at `now`; `None` if the change changes nothing
    /// (then `updatedAt` stays as it is).
    pub fn changed(&self, change: &LocationChange, now: DateTime<Utc>) -> Option<Location> {
        let mut next = self.clone();
        if let Some(address) = &change.address {
            next.address = address.clone();
        }
        let (to, from) = (&mut next.attributes, &change.attributes);
        for (field, value) in [
            (&mut to.name, &from.name),
            (&mut to.city, &from.city),
            (&mut to.region, &from.region),
            (&mut to.postcode, &from.postcode),
        ] {
            if let Some(value) = value {
                *field = value.clone();
            }
        }
        if let Some(country) = &from.country {
            to.country = *country;
        }
        if let Some(tags) = &from.tags {
            to.tags = tags.clone();
        }
        if let Some(status) = change.status {
            next.status = status;
        }
        if next.address == self.address
            && next.attributes == self.attributes
            && next.status == self.status
        {
            return None;
        }
        next.updated_at = Some(now);
        Some(next)
    }
}

/// Whether a store trades. A closed location has left every offer it carried and no job
/// links it until it is `active` again; it keeps its id, external id and attributes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "lowercase")]
pub enum LocationStatus {
    #[default]
    Active,
    Closed,
}

/// Which of a brand's locations a job acts on: a location matches when, for every field
/// given, its value is one of those listed (AND across fields, OR within a list); `tags`
/// matches a location carrying any of the tags. Values compare exactly as stored. A field
/// left out or given as `[]` does not narrow.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[cfg_attr(
    feature = "openapi",
    schema(example = json!({ "country": ["GB"], "city": ["London"], "tags": ["drive-thru"] }))
)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
pub struct LocationFilter {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub country: Vec<Country>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub city: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub region: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub postcode: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub tags: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[cfg_attr(feature = "openapi", schema(max_items = 1000))]
    pub external_ids: Vec<String>,
}

impl LocationFilter {
    /// Most values one field may list.
    pub const MAX_VALUES: usize = 1000;

    /// Why the filter cannot be used, if it cannot: a field listing more than
    /// [`Self::MAX_VALUES`] values.
    pub fn problem(&self) -> Option<String> {
        let lengths = [
            ("country", self.country.len()),
            ("city", self.city.len()),
            ("region", self.region.len()),
            ("postcode", self.postcode.len()),
            ("tags", self.tags.len()),
            ("externalIds", self.external_ids.len()),
        ];
        lengths
            .into_iter()
            .find(|(_, n)| *n > Self::MAX_VALUES)
            .map(|(field, n)| {
                format!(
                    "where.{field} lists {n} values; at most {}",
                    Self::MAX_VALUES
                )
            })
    }

    /// Whether the location matches every field given.
    pub fn matches(&self, location: &Location) -> bool {
        fn one_of<T: PartialEq>(listed: &[T], value: Option<&T>) -> bool {
            listed.is_empty() || value.is_some_and(|v| listed.contains(v))
        }
        let a = &location.attributes;
        one_of(&self.country, a.country.as_ref())
            && one_of(&self.city, a.city.as_ref())
            && one_of(&self.region, a.region.as_ref())
            && one_of(&self.postcode, a.postcode.as_ref())
            && one_of(&self.external_ids, location.external_id.as_ref())
            && (self.tags.is_empty() || a.tags.iter().any(|t| self.tags.contains(t)))
    }
}

/// A standing rule: the offer is to be linked to exactly the brand's active locations
/// that match `where` (`{}`: every active location).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct OfferRule {
    pub offer_id: OfferId,
    pub brand_id: BrandId,
    #[serde(rename = "where")]
    pub filter: LocationFilter,
    /// When it was last set.
    pub set_at: DateTime<Utc>,
}

/// The offer's links against its rule, counted exactly at the time of reading.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
pub struct Drift {
    /// Active locations the rule matches that do not carry the offer.
    pub missing: u64,
    /// Locations carrying the offer that the rule does not want (closed, or not matching).
    pub extra: u64,
}

impl Drift {
    pub fn is_none(&self) -> bool {
        self.missing == 0 && self.extra == 0
    }
}

/// What the drift watch last saw of a rule: since when its links have disagreed with it
/// (`None`: they agreed), and whether its brand was told of that stretch (`offer.drift`).
/// Setting the rule again starts it afresh.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DriftWatch {
    pub since: Option<DateTime<Utc>>,
    pub notified: bool,
}

/// A standing rule with what the drift watch last saw of it.
#[derive(Clone, Debug, PartialEq)]
pub struct WatchedRule {
    pub rule: OfferRule,
    pub watch: DriftWatch,
}

impl OfferRule {
    /// Whether the rule wants the offer on this location now.
    pub fn wants(&self, location: &Location) -> bool {
        location.is_active() && self.filter.matches(location)
    }
}

/// Longest external id, in characters.
pub const MAX_EXTERNAL_ID_LEN: usize = 100;

/// What an upsert by external id did, and the location after it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Upserted {
    Created(Location),
    Updated(Location),
    /// The location was already exactly as sent (`updatedAt` unchanged).
    Unchanged(Location),
}

impl Upserted {
    pub fn location(&self) -> &Location {
        match self {
            Upserted::Created(l) | Upserted::Updated(l) | Upserted::Unchanged(l) => l,
        }
    }
}

impl LocationChange {
    /// The change that makes a location's address and attributes exactly `to`'s (an
    /// attribute `to` lacks is removed): what an upsert applies to an existing location.
    pub fn replacing_with(to: &Location) -> Self {
        let a = &to.attributes;
        LocationChange {
            address: Some(to.address.clone()),
            status: Some(to.status),
            attributes: AttributesChange {
                name: Some(a.name.clone()),
                city: Some(a.city.clone()),
                region: Some(a.region.clone()),
                postcode: Some(a.postcode.clone()),
                country: Some(a.country),
                tags: Some(a.tags.clone()),
            },
        }
    }
}

/// Most tags a location may carry.
pub const MAX_TAGS: usize = 20;
/// Longest tag, in characters.
pub const MAX_TAG_LEN: usize = 50;
/// Longest name, city, region or postcode, in characters.
pub const MAX_ATTRIBUTE_LEN: usize = 200;

/// What a brand says of a store beyond its address. Every field is optional.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(utoipa::ToSchema))]
#[serde(rename_all = "camelCase")]
pub struct LocationAttributes {
    /// The store's name.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub city: Option<String>,
    /// A state, county or province.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub postcode: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub country: Option<Country>,
    /// Up to 20 distinct tags of 1 to 50 characters, in the order given.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
}

/// A change to a location: each field absent is left as it is; `Some(None)` removes an
/// attribute (JSON `null`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LocationChange {
    pub address: Option<String>,
    /// Closing (`Some(Closed)` on an active location) leaves every offer it carried.
    pub status: Option<LocationStatus>,
    pub attributes: AttributesChange,
}

/// The attributes part of a [`LocationChange`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AttributesChange {
    pub name: Option<Option<String>>,
    pub city: Option<Option<String>>,
    pub region: Option<Option<String>>,
    pub postcode: Option<Option<String>>,
    pub country: Option<Option<Country>>,
    /// `Some(vec![])` removes every tag.
    pub tags: Option<Vec<String>>,
}

impl AttributesChange {
    /// The attributes this change gives a location that has none.
    pub fn into_attributes(self) -> LocationAttributes {
        LocationAttributes {
            name: self.name.flatten(),
            city: self.city.flatten(),
            region: self.region.flatten(),
            postcode: self.postcode.flatten(),
            country: self.country.flatten(),
            tags: self.tags.unwrap_or_default(),
        }
    }
}

/// An ISO 3166-1 alpha-2 country code, upper case (`GB`, `US`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Country([u8; 2]);

/// Every officially assigned ISO 3166-1 alpha-2 code (249).
const ALPHA2: &str = "AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ \
BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ BR BS BT BV BW BY BZ \
CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM DO DZ \
EC EE EG EH ER ES ET FI FJ FK FM FO FR \
GA GB GD GE GF GG GH GI GL GM GN GP GQ GR GS GT GU GW GY HK HM HN HR HT HU \
ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM KN KP KR KW KY KZ \
LA LB LC LI LK LR LS LT LU LV LY \
MA MC MD ME MF MG MH MK ML MM MN MO MP MQ MR MS MT MU MV MW MX MY MZ \
NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL PM PN PR PS PT PW PY QA \
RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST SV SX SY SZ \
TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ \
VA VC VE VG VI VN VU WF WS YE YT ZA ZM ZW";

impl Country {
    pub fn as_str(&self) -> &str {
        std::str::from_utf8(&self.0).unwrap_or("??")
    }
}

impl std::str::FromStr for Country {
    type Err = DomainError;

    /// Exactly two upper-case letters of an assigned code: `gb` is refused, not guessed.
    fn from_str(s: &str) -> Result<Self, DomainError> {
        let bytes = s.as_bytes();
        if bytes.len() == 2 && ALPHA2.split_ascii_whitespace().any(|code| code == s) {
            Ok(Country([bytes[0], bytes[1]]))
        } else {
            Err(DomainError::InvalidCountry(s.chars().take(20).collect()))
        }
    }
}

impl std::fmt::Display for Country {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Serialize for Country {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

impl<'de> Deserialize<'de> for Country {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(feature = "openapi")]
impl utoipa::PartialSchema for Country {
    fn schema() -> utoipa::openapi::RefOr<utoipa::openapi::schema::Schema> {
        use utoipa::openapi::schema::{ObjectBuilder, Type};
        ObjectBuilder::new()
            .schema_type(Type::String)
            .description(Some(
                "An ISO 3166-1 alpha-2 country code in upper case (an assigned one)",
            ))
            .enum_values(Some(ALPHA2.split_ascii_whitespace()))
            .examples([serde_json::json!("GB")])
            .into()
    }
}

#[cfg(feature = "openapi")]
impl utoipa::ToSchema for Country {}

/// Who created a link: a job, a direct `PUT /offers/{o}/locations/{l}`, or the offer's
/// standing rule following a change to the location.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkedBy {
    Job(JobId),
    Direct,
    Rule,
}

impl LinkedBy {
    pub fn to_attr(self) -> String {
        match self {
            LinkedBy::Job(id) => id.to_string(),
            LinkedBy::Direct => "direct".to_owned(),
            LinkedBy::Rule => "rule".to_owned(),
        }
    }

    pub fn from_attr(s: &str) -> Result<Self, DomainError> {
        match s {
            "direct" => Ok(LinkedBy::Direct),
            "rule" => Ok(LinkedBy::Rule),
            _ => s.parse().map(LinkedBy::Job),
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
                "`direct` (PUT /offers/{offerId}/locations/{locationId}), `rule` (the offer's standing rule, following a change to the location) or the id of the job that made the link",
            ))
            .pattern(Some(
                "^(direct|rule|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$",
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
    fn a_filter_ands_its_fields_ors_each_list_and_matches_any_tag() {
        let now: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let mut soho = store_at(now);
        soho.attributes.country = Some("GB".parse().unwrap());
        soho.attributes.tags = vec!["drive-thru".into(), "24h".into()];
        soho.external_id = Some("S-1".into());
        let filter =
            |json: serde_json::Value| -> LocationFilter { serde_json::from_value(json).unwrap() };
        for (json, expected) in [
            (serde_json::json!({}), true),
            (serde_json::json!({ "country": [] }), true),
            (serde_json::json!({ "country": ["GB", "IE"] }), true),
            (serde_json::json!({ "country": ["IE"] }), false),
            (
                serde_json::json!({ "country": ["GB"], "city": ["Leeds"] }),
                false,
            ),
            (
                serde_json::json!({ "country": ["GB"], "city": ["London"] }),
                true,
            ),
            (serde_json::json!({ "tags": ["kiosk", "24h"] }), true),
            (serde_json::json!({ "tags": ["kiosk"] }), false),
            (serde_json::json!({ "region": ["Greater London"] }), false),
            (serde_json::json!({ "externalIds": ["S-2", "S-1"] }), true),
            (serde_json::json!({ "externalIds": ["S-2"] }), false),
        ] {
            assert_eq!(filter(json.clone()).matches(&soho), expected, "{json}");
        }
        assert!(
            serde_json::from_value::<LocationFilter>(serde_json::json!({ "town": ["x"] })).is_err()
        );
        assert!(
            serde_json::from_value::<LocationFilter>(serde_json::json!({ "country": ["UK"] }))
                .is_err()
        );
        let too_many = LocationFilter {
            city: vec!["x".into(); 1001],
            ..Default::default()
        };
        assert!(too_many
            .problem()
            .unwrap()
            .contains("where.city lists 1001"));
    }

    #[test]
    fn only_assigned_upper_case_alpha2_codes_are_countries() {
        assert_eq!(ALPHA2.split_ascii_whitespace().count(), 249);
        for code in ["GB", "US", "DE", "SS", "ZW", "AD"] {
            assert_eq!(code.parse::<Country>().unwrap().to_string(), code);
        }
        for code in ["gb", "UK", "XK", "G", "GBR", "", "G\u{301}"] {
            assert!(code.parse::<Country>().is_err(), "{code}");
        }
    }

    fn store_at(now: DateTime<Utc>) -> Location {
        let mut location = Location::new(
            LocationId::new_random(),
            BrandId::new_random(),
            "1 High St".into(),
            now,
        );
        location.attributes.city = Some("London".into());
        location.attributes.tags = vec!["drive-thru".into()];
        location
    }

    #[test]
    fn a_change_leaves_absent_fields_and_removes_null_ones() {
        let created: DateTime<Utc> = "2026-01-01T00:00:00Z".parse().unwrap();
        let later: DateTime<Utc> = "2026-02-01T00:00:00Z".parse().unwrap();
        let location = store_at(created);
        let change = LocationChange {
            address: None,
            status: None,
            attributes: AttributesChange {
                name: Some(Some("Soho".into())),
                city: Some(None),
                country: Some(Some("GB".parse().unwrap())),
                ..Default::default()
            },
        };
        let changed = location.changed(&change, later).expect("it changes");
        assert_eq!(changed.address, "1 High St");
        assert_eq!(changed.attributes.name.as_deref(), Some("Soho"));
        assert_eq!(changed.attributes.city, None);
        assert_eq!(changed.attributes.tags, vec!["drive-thru".to_owned()]);
        assert_eq!(changed.created_at, Some(created));
        assert_eq!(changed.updated_at, Some(later));
        assert_eq!(
            changed.changed(&change, later),
            None,
            "the same change again changes nothing"
        );
        assert_eq!(location.changed(&LocationChange::default(), later), None);

        let closing = LocationChange {
            status: Some(LocationStatus::Closed),
            ..Default::default()
        };
        let closed = location
            .changed(&closing, later)
            .expect("closing is a change");
        assert!(!closed.is_active());
        assert_eq!(closed.attributes, location.attributes);
        assert_eq!(closed.changed(&closing, later), None);
        assert!(
            !closed.same_as_sent(&location),
            "the status is part of what is sent"
        );
    }

    #[test]
    fn attributes_absent_from_json_are_none_and_left_out_of_it() {
        let old = serde_json::json!({
            "id": LocationId::new_random(), "brandId": BrandId::new_random(),
            "address": "1 High St", "hasOffer": false
        });
        let location: Location = serde_json::from_value(old.clone()).unwrap();
        assert_eq!(location.attributes, LocationAttributes::default());
        assert_eq!(location.status, LocationStatus::Active);
        let mut written = old;
        written["status"] = "active".into();
        assert_eq!(serde_json::to_value(&location).unwrap(), written);
    }

    #[test]
    fn linked_by_round_trips_through_its_attribute() {
        let job = LinkedBy::Job(JobId::new_v7());
        assert_eq!(LinkedBy::from_attr(&job.to_attr()).unwrap(), job);
        assert_eq!(LinkedBy::from_attr("direct").unwrap(), LinkedBy::Direct);
        assert_eq!(LinkedBy::from_attr("rule").unwrap(), LinkedBy::Rule);
        assert!(LinkedBy::from_attr("someone").is_err());
    }
}
