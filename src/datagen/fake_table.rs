//! Realistic values for fields without annotations, chosen by field name.
//!
//! A field name is matched after lower-casing and dropping `_`, `-` and `.`,
//! so `first_name`, `firstName` and `FIRST-NAME` are all `firstname`. The
//! whole name must match one in [`TABLE`], or end with one of its names of
//! four letters or more (e.g. `billing_email` ends with `email`). Values come from the
//! `fake` crate's English locale, drawn from the generator's seeded RNG, so
//! they are as reproducible as the rest. Timestamps are drawn from a fixed
//! window, [`RECENT_FROM_MS`]..[`RECENT_TO_MS`], not from the clock, so that
//! a seed gives the same records whenever it runs.

use fake::Fake as _;
use fake::faker::address::en::{
    BuildingNumber, CityName, CountryCode, CountryName, Latitude, Longitude, StateAbbr, StreetName,
    StreetSuffix, ZipCode,
};
use fake::faker::company::en::CompanyName;
use fake::faker::creditcard::en::CreditCardNumber;
use fake::faker::currency::en::CurrencyCode;
use fake::faker::internet::en::{DomainSuffix, IPv4, IPv6, SafeEmail, UserAgent, Username};
use fake::faker::job::en::Title as JobTitle;
use fake::faker::lorem::en::{Sentence, Word};
use fake::faker::name::en::{FirstName, LastName, Name};
use fake::faker::phone_number::en::PhoneNumber;
use rand::RngExt;

/// Start of the window of timestamp-like values: 2024-01-01T00:00:00Z.
pub const RECENT_FROM_MS: i64 = 1_704_067_200_000;
/// End (exclusive) of the window of timestamp-like values: 2026-01-01T00:00:00Z.
pub const RECENT_TO_MS: i64 = 1_767_225_600_000;

/// What a recognised field name gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Fake {
    FullName,
    FirstName,
    LastName,
    Username,
    Email,
    Phone,
    City,
    Street,
    ZipCode,
    State,
    Country,
    CountryCode,
    Company,
    JobTitle,
    Ip,
    Ipv6,
    Url,
    UserAgent,
    CreditCard,
    Currency,
    Sentence,
    Word,
    /// A price: 0.01..1000.00 as a float/double, pennies as an int/long.
    Price,
    /// Small counts, 1..100.
    Quantity,
    /// Ages 18..90.
    Age,
    Latitude,
    Longitude,
    /// Epoch milliseconds in the recent window (longs only).
    EpochMillis,
}

/// Which kind of value a name can give.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Gives {
    Text,
    Integer,
    Number,
}

/// The field names recognised: (names, what it gives, the Avro types it
/// applies to). A field also matches when its name ends with one of the
/// names of four letters or more.
///
/// The README's table is this one; a unit test keeps them equal.
pub(crate) const TABLE: &[(&[&str], Fake, &str)] = &[
    (
        &["name", "fullname", "customername"],
        Fake::FullName,
        "string",
    ),
    (&["firstname", "givenname"], Fake::FirstName, "string"),
    (
        &["lastname", "surname", "familyname"],
        Fake::LastName,
        "string",
    ),
    (&["username", "login", "handle"], Fake::Username, "string"),
    (&["email", "emailaddress", "mail"], Fake::Email, "string"),
    (
        &["phone", "phonenumber", "mobile", "cell"],
        Fake::Phone,
        "string",
    ),
    (&["city", "town"], Fake::City, "string"),
    (
        &["street", "streetaddress", "address", "address1"],
        Fake::Street,
        "string",
    ),
    (
        &["zip", "zipcode", "postcode", "postalcode"],
        Fake::ZipCode,
        "string",
    ),
    (&["state", "province", "region"], Fake::State, "string"),
    (&["country", "countryname"], Fake::Country, "string"),
    (&["countrycode"], Fake::CountryCode, "string"),
    (
        &["company", "companyname", "employer"],
        Fake::Company,
        "string",
    ),
    (&["jobtitle", "job", "position"], Fake::JobTitle, "string"),
    (&["ip", "ipaddress", "ipv4", "clientip"], Fake::Ip, "string"),
    (&["ipv6"], Fake::Ipv6, "string"),
    (
        &["url", "uri", "website", "homepage", "referrer", "link"],
        Fake::Url,
        "string",
    ),
    (
        &["useragent", "agent", "browser"],
        Fake::UserAgent,
        "string",
    ),
    (
        &["creditcard", "creditcardnumber", "cardnumber", "ccnumber"],
        Fake::CreditCard,
        "string",
    ),
    (&["currency", "currencycode"], Fake::Currency, "string"),
    (
        &["description", "comment", "message", "text", "review"],
        Fake::Sentence,
        "string",
    ),
    (&["word", "tag", "keyword"], Fake::Word, "string"),
    (
        &["price", "amount", "cost", "total", "unitprice"],
        Fake::Price,
        "int, long, float, double",
    ),
    (
        &["quantity", "qty", "count", "units"],
        Fake::Quantity,
        "int, long",
    ),
    (&["age"], Fake::Age, "int, long"),
    (&["latitude", "lat"], Fake::Latitude, "float, double"),
    (
        &["longitude", "lon", "lng"],
        Fake::Longitude,
        "float, double",
    ),
    (
        &[
            "timestamp",
            "time",
            "ts",
            "createdat",
            "updatedat",
            "eventtime",
            "registertime",
        ],
        Fake::EpochMillis,
        "long",
    ),
];

/// The kind of Avro value a field holds, as far as the table cares.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Slot {
    String,
    Int,
    Long,
    Float,
    Double,
}

impl Fake {
    fn gives(self) -> &'static [Gives] {
        match self {
            Self::Price => &[Gives::Integer, Gives::Number],
            Self::Quantity | Self::Age | Self::EpochMillis => &[Gives::Integer],
            Self::Latitude | Self::Longitude => &[Gives::Number],
            _ => &[Gives::Text],
        }
    }

    /// The recognised generator for a field of this name and kind, if any.
    pub(crate) fn for_field(name: &str, slot: Slot) -> Option<Self> {
        let key: String = name
            .chars()
            .filter(|c| !matches!(c, '_' | '-' | '.'))
            .flat_map(char::to_lowercase)
            .collect();
        let gives = match slot {
            Slot::String => Gives::Text,
            Slot::Int | Slot::Long => Gives::Integer,
            Slot::Float | Slot::Double => Gives::Number,
        };
        let fits = |fake: Fake| {
            fake.gives().contains(&gives) && (fake != Fake::EpochMillis || slot == Slot::Long)
        };
        // An exact name first, then the longest name the field ends with
        // (`billingemail` → email), so that `ipv6` never reads as `ip`.
        let exact = TABLE
            .iter()
            .find(|(names, fake, _)| names.contains(&key.as_str()) && fits(*fake));
        if let Some((_, fake, _)) = exact {
            return Some(*fake);
        }
        TABLE
            .iter()
            .flat_map(|(names, fake, _)| names.iter().map(move |n| (*n, *fake)))
            .filter(|(n, fake)| n.len() >= 4 && key.ends_with(n) && fits(*fake))
            .max_by_key(|(n, _)| n.len())
            .map(|(_, fake)| fake)
    }

    /// A string value.
    pub(crate) fn string<R: RngExt + ?Sized>(self, rng: &mut R) -> String {
        match self {
            Self::FullName => Name().fake_with_rng(rng),
            Self::FirstName => FirstName().fake_with_rng(rng),
            Self::LastName => LastName().fake_with_rng(rng),
            Self::Username => Username().fake_with_rng(rng),
            Self::Email => SafeEmail().fake_with_rng(rng),
            Self::Phone => PhoneNumber().fake_with_rng(rng),
            Self::City => CityName().fake_with_rng(rng),
            Self::Street => {
                let number: String = BuildingNumber().fake_with_rng(rng);
                let street: String = StreetName().fake_with_rng(rng);
                let suffix: String = StreetSuffix().fake_with_rng(rng);
                format!("{number} {street} {suffix}")
            }
            Self::ZipCode => ZipCode().fake_with_rng(rng),
            Self::State => StateAbbr().fake_with_rng(rng),
            Self::Country => CountryName().fake_with_rng(rng),
            Self::CountryCode => CountryCode().fake_with_rng(rng),
            Self::Company => CompanyName().fake_with_rng(rng),
            Self::JobTitle => JobTitle().fake_with_rng(rng),
            Self::Ip => IPv4().fake_with_rng(rng),
            Self::Ipv6 => IPv6().fake_with_rng(rng),
            Self::Url => {
                let host: String = Word().fake_with_rng(rng);
                let suffix: String = DomainSuffix().fake_with_rng(rng);
                let page: String = Word().fake_with_rng(rng);
                format!("https://www.{host}.{suffix}/{page}")
            }
            Self::UserAgent => UserAgent().fake_with_rng(rng),
            Self::CreditCard => CreditCardNumber().fake_with_rng(rng),
            Self::Currency => CurrencyCode().fake_with_rng(rng),
            Self::Sentence => Sentence(3..10).fake_with_rng(rng),
            // Word, and the kinds that are not text (never chosen for strings).
            _ => Word().fake_with_rng(rng),
        }
    }

    /// An integer value (int or long).
    pub(crate) fn integer<R: RngExt + ?Sized>(self, rng: &mut R) -> i64 {
        match self {
            Fake::Price => rng.random_range(1..100_000),
            Fake::Quantity => rng.random_range(1..100),
            Fake::Age => rng.random_range(18..90),
            Fake::EpochMillis => rng.random_range(RECENT_FROM_MS..RECENT_TO_MS),
            _ => rng.random_range(0..1000),
        }
    }

    /// A floating-point value (float or double).
    pub(crate) fn number<R: RngExt + ?Sized>(self, rng: &mut R) -> f64 {
        match self {
            Fake::Price => rng.random_range(1..100_000) as f64 / 100.0,
            Fake::Latitude => Latitude().fake_with_rng::<f64, _>(rng),
            Fake::Longitude => Longitude().fake_with_rng::<f64, _>(rng),
            _ => rng.random_range(0.0..1.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand::rngs::ChaCha8Rng;

    #[test]
    fn names_match_after_normalising() {
        assert_eq!(
            Fake::for_field("first_name", Slot::String),
            Some(Fake::FirstName)
        );
        assert_eq!(
            Fake::for_field("FirstName", Slot::String),
            Some(Fake::FirstName)
        );
        assert_eq!(
            Fake::for_field("billing_email", Slot::String),
            Some(Fake::Email)
        );
        assert_eq!(Fake::for_field("ipv6", Slot::String), Some(Fake::Ipv6));
        assert_eq!(
            Fake::for_field("created_at", Slot::Long),
            Some(Fake::EpochMillis)
        );
        assert_eq!(Fake::for_field("created_at", Slot::Int), None);
        assert_eq!(Fake::for_field("price", Slot::Double), Some(Fake::Price));
        assert_eq!(Fake::for_field("email", Slot::Int), None);
        assert_eq!(Fake::for_field("side", Slot::String), None);
    }

    #[test]
    fn fake_values_are_reproducible_from_the_rng() {
        let draw = |seed| {
            let mut rng = ChaCha8Rng::seed_from_u64(seed);
            TABLE
                .iter()
                .map(|(_, fake, _)| {
                    format!(
                        "{} {} {}",
                        fake.string(&mut rng),
                        fake.integer(&mut rng),
                        fake.number(&mut rng)
                    )
                })
                .collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
        let mut rng = ChaCha8Rng::seed_from_u64(3);
        assert!(Fake::Email.string(&mut rng).contains('@'));
        let ts = Fake::EpochMillis.integer(&mut rng);
        assert!((RECENT_FROM_MS..RECENT_TO_MS).contains(&ts));
    }
}
