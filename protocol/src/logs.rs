//! Reading event logs in bounded block ranges, as every reader of the chain must: RPC nodes
//! refuse (or time out on) `eth_getLogs` over unbounded ranges.

use alloy::providers::Provider;
use alloy::rpc::types::{Filter, Log};

use crate::{Error, Result};

/// Blocks per `eth_getLogs` request (common provider limits are 2,000 to 10,000).
pub const LOG_RANGE: u64 = 2_000;

/// The block ranges `[from, to]` is read in, `range` blocks each (at least 1).
pub fn ranges(from: u64, to: u64, range: u64) -> impl Iterator<Item = (u64, u64)> {
    let range = range.max(1);
    let mut next = Some(from).filter(|&f| f <= to);
    std::iter::from_fn(move || {
        let start = next?;
        let end = start.saturating_add(range - 1).min(to);
        next = end.checked_add(1).filter(|&n| n <= to);
        Some((start, end))
    })
}

/// Every log `filter` matches in blocks `from..=to`, read `range` blocks at a time, in order.
pub async fn get_logs<P: Provider>(
    provider: &P,
    filter: &Filter,
    from: u64,
    to: u64,
    range: u64,
) -> Result<Vec<Log>> {
    let mut logs = Vec::new();
    for (start, end) in ranges(from, to, range) {
        let chunk = provider
            .get_logs(&filter.clone().from_block(start).to_block(end))
            .await
            .map_err(|e| Error::Chain(format!("eth_getLogs {start}..={end}: {e}")))?;
        logs.extend(chunk);
    }
    Ok(logs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ranges_cover_each_block_once() {
        let r: Vec<_> = ranges(0, 4_500, 2_000).collect();
        assert_eq!(r, [(0, 1_999), (2_000, 3_999), (4_000, 4_500)]);
        assert_eq!(ranges(7, 7, 10).collect::<Vec<_>>(), [(7, 7)]);
        assert_eq!(ranges(8, 7, 10).count(), 0);
        assert_eq!(
            ranges(0, 2, 0).collect::<Vec<_>>(),
            [(0, 0), (1, 1), (2, 2)]
        );
        let top: Vec<_> = ranges(u64::MAX - 1, u64::MAX, 5).collect();
        assert_eq!(top, [(u64::MAX - 1, u64::MAX)]);
    }
}
