//! The distribution spec's pagination of `/v2/_catalog` and tag lists: sorted names
//! after `last`, at most `n` of them, and a `Link` header naming the next page when
//! more follow. `n` is capped at [`MAX_PAGE`] (and a request without `n` gets that
//! many): the reference registry once let one `n` exhaust its memory
//! (CVE-2023-2253), and a catalog of ten thousand repositories should not go out in
//! one answer to a client that did not ask for it. Clients that list everything
//! (skopeo, crane) follow the `Link` header.

use std::collections::BTreeMap;
use std::ops::Bound;

/// The most names one page holds.
pub(super) const MAX_PAGE: usize = 1000;

/// One page of `items`' keys, and what the next page's link should ask for.
pub(super) fn page<'a, V>(
    items: &'a BTreeMap<String, V>,
    query: &str,
) -> (Vec<&'a str>, Option<(usize, &'a str)>) {
    let mut n = MAX_PAGE;
    let mut last = None;
    for pair in query.split('&') {
        match pair.split_once('=') {
            Some(("n", value)) => n = value.parse::<usize>().map_or(MAX_PAGE, |n| n.min(MAX_PAGE)),
            Some(("last", value)) => last = Some(value),
            _ => {}
        }
    }
    let start = match last {
        Some(last) => Bound::Excluded(last),
        None => Bound::Unbounded,
    };
    let mut after = items
        .range::<str, _>((start, Bound::Unbounded))
        .map(|(k, _)| k.as_str());
    let page: Vec<&str> = after.by_ref().take(n).collect();
    let next = match (after.next(), page.last()) {
        (Some(_), Some(last)) => Some((n, *last)),
        _ => None,
    };
    (page, next)
}

#[cfg(test)]
mod tests {
    use super::{page, MAX_PAGE};
    use std::collections::BTreeMap;

    fn items(n: usize) -> BTreeMap<String, ()> {
        (0..n).map(|i| (format!("r{i:05}"), ())).collect()
    }

    #[test]
    fn pages_follow_last_and_stop_with_no_link() {
        let all = items(5);
        let (first, next) = page(&all, "n=2");
        assert_eq!(first, ["r00000", "r00001"]);
        assert_eq!(next, Some((2, "r00001")));
        let (second, next) = page(&all, "n=2&last=r00001");
        assert_eq!(second, ["r00002", "r00003"]);
        assert_eq!(next, Some((2, "r00003")));
        let (third, next) = page(&all, "n=2&last=r00003");
        assert_eq!(third, ["r00004"]);
        assert_eq!(next, None);
        // Exactly n left: no link to an empty page.
        assert_eq!(page(&all, "n=5").1, None);
    }

    #[test]
    fn n_is_capped_and_a_missing_n_is_the_cap() {
        let all = items(MAX_PAGE + 5);
        let (capped, next) = page(&all, "n=1000000000");
        assert_eq!(capped.len(), MAX_PAGE);
        assert_eq!(next.map(|(n, _)| n), Some(MAX_PAGE));
        assert_eq!(page(&all, "").0.len(), MAX_PAGE);
        assert_eq!(page(&all, "n=junk").0.len(), MAX_PAGE);
        assert!(page(&all, "n=0").0.is_empty());
    }
}
