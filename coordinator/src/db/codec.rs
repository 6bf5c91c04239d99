//! Every conversion between Rust values and column values, in one place: hex for addresses
//! and hashes, decimal text for U256, `BIGINT` for counts and times, and the state columns.
//!
//! The state enums have exactly one string form each: [`as_str`](TaskState::as_str) is what
//! the database stores (its CHECK constraints, migration 0003, list the same strings), what
//! [`FromStr`] accepts and what serde writes. Job states are
//! [`JobState`](gleaner_protocol::api::JobState), which is on the wire.

use std::fmt::{Display, LowerHex};
use std::str::FromStr;

use sqlx::Row;
use sqlx::any::AnyRow;

use crate::error::{Error, Result};

/// Defines a state enum with one string form per variant, `FromStr`, `Display` and serde.
macro_rules! state_enum {
    ($(#[$doc:meta])* $name:ident { $($(#[$vdoc:meta])* $variant:ident => $text:literal,)+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        pub enum $name {
            $($(#[$vdoc])* $variant,)+
        }

        impl $name {
            /// Every state.
            pub const ALL: &[Self] = &[$(Self::$variant,)+];

            /// The one string form (database, JSON, logs).
            pub const fn as_str(&self) -> &'static str {
                match self {
                    $(Self::$variant => $text,)+
                }
            }
        }

        impl FromStr for $name {
            type Err = Error;

            fn from_str(s: &str) -> Result<Self> {
                Self::ALL
                    .iter()
                    .copied()
                    .find(|v| v.as_str() == s)
                    .ok_or_else(|| {
                        Error::Internal(format!(concat!("unknown ", stringify!($name), " {:?}"), s))
                    })
            }
        }

        impl Display for $name {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl serde::Serialize for $name {
            fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
                s.serialize_str(self.as_str())
            }
        }

        impl<'de> serde::Deserialize<'de> for $name {
            fn deserialize<D: serde::Deserializer<'de>>(
                d: D,
            ) -> std::result::Result<Self, D::Error> {
                let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
                s.parse().map_err(serde::de::Error::custom)
            }
        }
    };
}

state_enum! {
    /// A task's decision state.
    TaskState {
        /// Waiting for replicas or for the verifier.
        Open => "open",
        /// The verifier accepted a result.
        Accepted => "accepted",
        /// The verifier gave up on it.
        Failed => "failed",
    }
}

state_enum! {
    /// A replica's (lease's) state.
    ReplicaState {
        /// Leased to a worker until `expires_at`.
        Leased => "leased",
        /// The worker submitted a signed result.
        Submitted => "submitted",
        /// The lease ran out: the replica went back to the queue.
        Expired => "expired",
        /// The worker gave the lease back.
        Released => "released",
    }
}

/// The states that hold a replica slot: a task needs `replicas_needed` of these.
pub(crate) const LIVE: [ReplicaState; 2] = [ReplicaState::Leased, ReplicaState::Submitted];

/// `('leased', 'submitted')`: [`LIVE`] as an SQL list (the strings are ours, not input).
pub(crate) fn live_list() -> String {
    sql_list(LIVE.iter().map(ReplicaState::as_str))
}

/// `('a', 'b')` from known identifiers (never from input: no escaping is done).
pub(crate) fn sql_list<'a>(items: impl IntoIterator<Item = &'a str>) -> String {
    let quoted: Vec<String> = items.into_iter().map(|s| format!("'{s}'")).collect();
    format!("({})", quoted.join(", "))
}

/// Hex of an address or hash, lowercase, 0x-prefixed: the one form stored.
pub(crate) fn to_hex<T: LowerHex>(value: &T) -> String {
    format!("{value:#x}")
}

/// A stored text column parsed into `T` (a corrupt value is our fault: 500).
pub(crate) fn parse_stored<T: FromStr>(text: &str, what: &str) -> Result<T>
where
    T::Err: Display,
{
    text.parse()
        .map_err(|e| Error::Internal(format!("stored {what} {text:?} is corrupt: {e}")))
}

/// A text column of `row` parsed into `T`.
pub(crate) fn column<T: FromStr>(row: &AnyRow, name: &str) -> Result<T>
where
    T::Err: Display,
{
    parse_stored(&row.try_get::<String, _>(name)?, name)
}

/// A nullable text column of `row` parsed into `T`.
pub(crate) fn optional_column<T: FromStr>(row: &AnyRow, name: &str) -> Result<Option<T>>
where
    T::Err: Display,
{
    row.try_get::<Option<String>, _>(name)?
        .map(|text| parse_stored(&text, name))
        .transpose()
}

/// An integer column, clamped into `T` (a negative or huge count is treated as its bound).
pub(crate) fn int_column<T: TryFrom<i64> + Bounded>(row: &AnyRow, name: &str) -> Result<T> {
    let v: i64 = row.try_get(name)?;
    Ok(T::try_from(v).unwrap_or(if v < 0 { T::MIN } else { T::MAX }))
}

/// The integer types read from columns.
pub(crate) trait Bounded {
    /// Smallest value.
    const MIN: Self;
    /// Largest value.
    const MAX: Self;
}

macro_rules! bounded {
    ($($t:ty),*) => {$(impl Bounded for $t { const MIN: Self = <$t>::MIN; const MAX: Self = <$t>::MAX; })*};
}
bounded!(u16, u32, u64);

/// A `u64` as a `BIGINT` parameter (values above `i64::MAX` are refused).
pub(crate) fn to_bigint(value: u64) -> Result<i64> {
    i64::try_from(value).map_err(|_| Error::BadRequest(format!("{value} is out of range")))
}

/// 32 random bytes as hex (session tokens, spot-check secrets; see [`lease_id`]), from `rand`'s
/// thread-local CSPRNG (ChaCha seeded from the OS). Drawing them as a fresh signing key's bytes,
/// as before, also computed its public key: one elliptic-curve multiplication per lease id,
/// ~14% of the coordinator's CPU under a batched-lease load.
pub(crate) fn random_hex() -> String {
    hex::encode(rand08::random::<[u8; 32]>())
}

/// A lease id: 8 bytes of wall-clock nanoseconds, strictly increasing within this process,
/// then 24 random bytes, as 64 hex digits. Ids taken later sort later, so each new replica's
/// entry lands at the right edge of the `lease_id` index instead of on a random page of it: a
/// batch of 64 random ids dirtied about 64 index pages, each written whole to the WAL on commit.
/// The random part keeps ids from different coordinators (or a clock set back) distinct.
pub(crate) fn lease_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static LAST: AtomicU64 = AtomicU64::new(0);
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_nanos()).unwrap_or(u64::MAX));
    let next = |last: u64| now.max(last.saturating_add(1));
    // The closure never refuses, so `fetch_update` returns the value it replaced.
    let stamp = next(
        LAST.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |last| {
            Some(next(last))
        })
        .unwrap_or_else(|last| last),
    );
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&stamp.to_be_bytes());
    bytes[8..].copy_from_slice(&rand08::random::<[u8; 24]>());
    hex::encode(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn states_have_one_string_form() {
        for st in TaskState::ALL {
            let json = serde_json::to_string(st).unwrap();
            assert_eq!(json, format!("\"{st}\""));
            assert_eq!(serde_json::from_str::<TaskState>(&json).unwrap(), *st);
            assert_eq!(st.as_str().parse::<TaskState>().unwrap(), *st);
        }
        for st in ReplicaState::ALL {
            let json = serde_json::to_string(st).unwrap();
            assert_eq!(json, format!("\"{st}\""));
            assert_eq!(serde_json::from_str::<ReplicaState>(&json).unwrap(), *st);
            assert_eq!(st.as_str().parse::<ReplicaState>().unwrap(), *st);
        }
        assert!("Open".parse::<TaskState>().is_err());
        assert!("live".parse::<ReplicaState>().is_err());
        assert_eq!(live_list(), "('leased', 'submitted')");
    }

    #[test]
    fn values_round_trip_through_their_column_form() {
        let h = alloy::primitives::B256::repeat_byte(0xab);
        assert_eq!(
            parse_stored::<alloy::primitives::B256>(&to_hex(&h), "h").unwrap(),
            h
        );
        let a = alloy::primitives::Address::repeat_byte(0xcd);
        assert_eq!(to_hex(&a), format!("0x{}", "cd".repeat(20)));
        assert!(parse_stored::<alloy::primitives::B256>("0x12", "h").is_err());
        assert_eq!(to_bigint(7).unwrap(), 7);
        assert!(to_bigint(u64::MAX).is_err());
        assert_eq!(random_hex().len(), 64);
        assert_ne!(random_hex(), random_hex());
    }

    #[test]
    fn lease_ids_sort_in_the_order_they_were_taken() {
        let ids: Vec<String> = (0..1000).map(|_| lease_id()).collect();
        assert!(
            ids.iter()
                .all(|id| id.len() == 64 && hex::decode(id).is_ok())
        );
        assert!(ids.windows(2).all(|w| w[0] < w[1]), "ids out of order");
        // The random tails differ even where two ids share a clock reading.
        let tails: std::collections::HashSet<&str> = ids.iter().map(|id| &id[16..]).collect();
        assert_eq!(tails.len(), ids.len());
    }
}
