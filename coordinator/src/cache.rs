//! A small bounded map: the coordinator's cache of parsed job manifests.
//!
//! At most `capacity` entries; inserting into a full cache evicts the least recently used one,
//! so the memory held does not grow with the number of jobs ever served.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::Mutex;

/// A least-recently-used map with a fixed capacity, safe to share between handlers.
#[derive(Debug)]
pub struct BoundedCache<K, V> {
    capacity: usize,
    inner: Mutex<Entries<K, V>>,
}

#[derive(Debug)]
struct Entries<K, V> {
    /// Value and the tick of its last use.
    map: HashMap<K, (V, u64)>,
    tick: u64,
}

impl<K: Eq + Hash + Clone, V: Clone> BoundedCache<K, V> {
    /// An empty cache holding at most `capacity` entries (0 caches nothing).
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity,
            inner: Mutex::new(Entries {
                map: HashMap::new(),
                tick: 0,
            }),
        }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, Entries<K, V>> {
        // A panic while holding the lock leaves a consistent map: keep using it.
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The value under `key`, marking it used.
    pub fn get(&self, key: &K) -> Option<V> {
        let mut entries = self.entries();
        entries.tick += 1;
        let tick = entries.tick;
        entries.map.get_mut(key).map(|(value, used)| {
            *used = tick;
            value.clone()
        })
    }

    /// Stores `value` under `key`, evicting the least recently used entry when full.
    pub fn insert(&self, key: K, value: V) {
        if self.capacity == 0 {
            return;
        }
        let mut entries = self.entries();
        entries.tick += 1;
        let tick = entries.tick;
        if !entries.map.contains_key(&key) && entries.map.len() >= self.capacity {
            // O(capacity) eviction: the cache is small and misses parse a whole manifest anyway.
            let oldest = entries
                .map
                .iter()
                .min_by_key(|(_, (_, used))| *used)
                .map(|(k, _)| k.clone());
            if let Some(oldest) = oldest {
                entries.map.remove(&oldest);
            }
        }
        entries.map.insert(key, (value, tick));
    }

    /// Number of entries held.
    pub fn len(&self) -> usize {
        self.entries().map.len()
    }

    /// Whether nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stays_bounded_and_evicts_the_least_recently_used() {
        let cache = BoundedCache::new(3);
        for key in 0..1_000u32 {
            cache.insert(key, key * 2);
            assert!(cache.len() <= 3);
        }
        assert_eq!(cache.len(), 3);
        assert_eq!(cache.get(&999), Some(1998));
        assert_eq!(cache.get(&0), None);
        // 997 is the least recently used now: 998 and 999 were touched later.
        cache.get(&998);
        cache.insert(5, 10);
        assert_eq!(cache.get(&997), None);
        assert_eq!(
            (cache.get(&998), cache.get(&999), cache.get(&5)),
            (Some(1996), Some(1998), Some(10))
        );
        // Re-inserting a present key evicts nothing.
        cache.insert(5, 11);
        assert_eq!((cache.len(), cache.get(&5)), (3, Some(11)));
        let none = BoundedCache::new(0);
        none.insert(1, 1);
        assert!(none.is_empty());
    }
}
