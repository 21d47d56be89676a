//! A set of disjoint, sorted byte ranges: which parts of a partial blob are on disk.

use std::ops::Range;

use serde::{Deserialize, Serialize};

/// Disjoint, non-adjacent, sorted half-open ranges.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RangeSet(Vec<(u64, u64)>);

impl RangeSet {
    /// Whether any byte of `range` is already in the set.
    pub fn overlaps(&self, range: &Range<u64>) -> bool {
        self.0
            .iter()
            .any(|&(s, e)| s < range.end && range.start < e)
    }

    /// Adds `range`, merging it with neighbours it touches.
    pub fn insert(&mut self, range: Range<u64>) {
        if range.is_empty() {
            return;
        }
        let (mut start, mut end) = (range.start, range.end);
        self.0.retain(|&(s, e)| {
            let touches = s <= end && start <= e;
            if touches {
                start = start.min(s);
                end = end.max(e);
            }
            !touches
        });
        let at = self.0.partition_point(|&(s, _)| s < start);
        self.0.insert(at, (start, end));
    }

    /// Whether the ranges are what `insert` builds: sorted, disjoint, not touching,
    /// non-empty, and within `size` (a sidecar from disk is checked with this).
    pub fn is_valid(&self, size: u64) -> bool {
        self.0.iter().all(|&(s, e)| s < e && e <= size)
            && self.0.windows(2).all(|w| w[0].1 < w[1].0)
    }

    /// The end of the range that starts at 0, or 0 when byte 0 is missing.
    pub fn prefix_end(&self) -> u64 {
        match self.0.first() {
            Some(&(0, end)) => end,
            _ => 0,
        }
    }

    /// Total number of bytes in the set.
    pub fn len(&self) -> u64 {
        self.0.iter().map(|&(s, e)| e - s).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The gaps between 0 and `size` that the set does not cover.
    pub fn holes(&self, size: u64) -> Vec<Range<u64>> {
        let mut holes = Vec::new();
        let mut at = 0;
        for &(s, e) in &self.0 {
            if s > at {
                holes.push(at..s.min(size));
            }
            at = at.max(e);
        }
        if at < size {
            holes.push(at..size);
        }
        holes.retain(|r| !r.is_empty());
        holes
    }

    /// Drops everything at or beyond `len` (bytes a file no longer holds).
    pub fn truncate(&mut self, len: u64) {
        self.0.retain(|&(s, _)| s < len);
        if let Some(last) = self.0.last_mut() {
            last.1 = last.1.min(len);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merges_and_reports_holes() {
        let mut set = RangeSet::default();
        set.insert(10..20);
        set.insert(30..40);
        assert_eq!(set.prefix_end(), 0);
        assert_eq!(set.holes(50), vec![0..10, 20..30, 40..50]);
        set.insert(0..10);
        assert_eq!(set.prefix_end(), 20);
        set.insert(20..30);
        assert_eq!(set.prefix_end(), 40);
        assert_eq!(set.holes(40), vec![]);
        assert_eq!(set.len(), 40);
    }

    #[test]
    fn overlap_and_truncate() {
        let mut set = RangeSet::default();
        set.insert(0..10);
        set.insert(20..30);
        assert!(set.overlaps(&(5..15)));
        assert!(!set.overlaps(&(10..20)));
        set.truncate(25);
        assert_eq!(set.len(), 15);
        set.truncate(5);
        assert_eq!(set.holes(10), vec![5..10]);
    }
}
