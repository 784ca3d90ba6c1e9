//! Listings over sharded partitions (a request's job shards, the failed index's shards):
//! one page walks the shards in order from a cursor, both ledgers the same way.

use super::{LedgerError, Page};

/// What one read of one partition gave.
pub(crate) struct ShardRead<T> {
    pub items: Vec<T>,
    /// The sort position of the last item read.
    pub last: Option<String>,
    /// Whether the partition holds more items after `last`.
    pub more: bool,
}

/// A cursor: the position after the last item returned, as `<partition number>/<sort key>`
/// (an empty sort key: the partition from its start).
fn parse_cursor(cursor: Option<&str>) -> Result<(u32, Option<String>), LedgerError> {
    let Some(c) = cursor else {
        return Ok((0, None));
    };
    let malformed = || LedgerError::Malformed {
        key: "cursor".into(),
        message: format!("{c:?} is not a cursor this listing gave"),
    };
    let (p, sk) = c.split_once('/').ok_or_else(malformed)?;
    let p = p.parse().map_err(|_| malformed())?;
    Ok((p, Some(sk.to_owned()).filter(|sk| !sk.is_empty())))
}

/// Up to `limit` items from partitions `0..shards`, from `cursor` on. `read(shard, after,
/// want)` reads at most `want` items of one partition, those after the sort position
/// `after` (all with `None`).
pub(crate) async fn walk<T, F>(
    shards: u32,
    cursor: Option<&str>,
    limit: usize,
    mut read: impl FnMut(u32, Option<String>, usize) -> F,
) -> Result<Page<T>, LedgerError>
where
    F: Future<Output = Result<ShardRead<T>, LedgerError>>,
{
    let (mut shard, mut after) = parse_cursor(cursor)?;
    let shards = shards.max(1);
    let mut items = Vec::new();
    while shard < shards && items.len() < limit {
        let got = read(shard, after.take(), limit - items.len()).await?;
        items.extend(got.items);
        if items.len() >= limit {
            let next = match (got.more, got.last) {
                (true, Some(l)) => Some(format!("{shard}/{l}")),
                _ if shard + 1 < shards => Some(format!("{}/", shard + 1)),
                _ => None,
            };
            return Ok(Page { items, next });
        }
        shard += 1;
    }
    Ok(Page { items, next: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three shards of `n` items each, keyed `000`, `001`, … within a shard.
    async fn page_of(n: usize, cursor: Option<&str>, limit: usize) -> Page<String> {
        walk(3, cursor, limit, |shard, after, want| async move {
            let keys: Vec<String> = (0..n)
                .map(|i| format!("{i:03}"))
                .filter(|k| after.as_ref().is_none_or(|a| k > a))
                .collect();
            let items: Vec<String> = keys
                .iter()
                .take(want)
                .map(|k| format!("{shard}:{k}"))
                .collect();
            Ok(ShardRead {
                more: keys.len() > want,
                last: keys.get(items.len().wrapping_sub(1)).cloned(),
                items,
            })
        })
        .await
        .unwrap()
    }

    #[tokio::test]
    async fn pages_walk_every_shard_once_in_order() {
        for limit in [1, 2, 4, 5, 9, 10] {
            let mut seen = Vec::new();
            let mut cursor = None;
            loop {
                let page = page_of(3, cursor.as_deref(), limit).await;
                assert!(page.items.len() <= limit);
                seen.extend(page.items);
                match page.next {
                    Some(n) => cursor = Some(n),
                    None => break,
                }
            }
            let all: Vec<String> = (0..3)
                .flat_map(|s| (0..3).map(move |i| format!("{s}:{i:03}")))
                .collect();
            assert_eq!(seen, all, "limit {limit}");
        }
    }

    #[tokio::test]
    async fn a_cursor_that_no_listing_gave_is_refused() {
        for bad in ["nothing", "x/1"] {
            let err = walk(3, Some(bad), 5, |_, _, _| async {
                Ok(ShardRead::<()> {
                    items: vec![],
                    last: None,
                    more: false,
                })
            })
            .await
            .unwrap_err();
            assert!(matches!(err, LedgerError::Malformed { .. }), "{bad}: {err}");
        }
    }
}
