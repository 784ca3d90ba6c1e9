//! An item's size as DynamoDB measures it, the capacity units it costs, and the size of its
//! index entries.

use super::*;

/// Size of a number as DynamoDB counts it: about one byte per two significant digits, plus
/// one.
fn number_size(v: &str) -> usize {
    let digits = v
        .trim_start_matches('-')
        .trim_start_matches('0')
        .chars()
        .filter(char::is_ascii_digit)
        .count()
        .max(1);
    digits.div_ceil(2) + 1
}

/// The size of one attribute value in bytes, by DynamoDB's rules.
pub fn value_size(v: &AttributeValue) -> usize {
    match v {
        AttributeValue::S(s) => s.len(),
        AttributeValue::N(x) => number_size(x),
        AttributeValue::B(b) => b.as_ref().len(),
        AttributeValue::Bool(_) | AttributeValue::Null(_) => 1,
        AttributeValue::Ss(v) => v.iter().map(String::len).sum(),
        AttributeValue::Ns(v) => v.iter().map(|x| number_size(x)).sum(),
        AttributeValue::Bs(v) => v.iter().map(|b| b.as_ref().len()).sum(),
        AttributeValue::L(l) => 3 + l.iter().map(|e| 1 + value_size(e)).sum::<usize>(),
        AttributeValue::M(m) => {
            3 + m
                .iter()
                .map(|(k, e)| 1 + k.len() + value_size(e))
                .sum::<usize>()
        }
        _ => 0,
    }
}

/// An item's size in bytes, by DynamoDB's rules (attribute names count).
pub fn item_size(item: &Item) -> usize {
    item.iter().map(|(k, v)| k.len() + value_size(v)).sum()
}

/// Write units of a write that replaces an item of `old` bytes by one of `new` bytes.
pub fn write_units(old: usize, new: usize) -> u64 {
    (old.max(new).max(1)).div_ceil(1024) as u64
}

/// Read units of reading `bytes` (strongly consistent; half when eventually consistent).
pub fn read_units(bytes: usize, consistent: bool) -> f64 {
    let units = (bytes.max(1)).div_ceil(4096) as f64;
    if consistent { units } else { units / 2.0 }
}

/// What the due index holds of an item (partition, sort key, and the entry's size: keys,
/// projected attributes and DynamoDB's 100 bytes of overhead).
pub fn due_entry(item: &Item) -> Option<(String, usize)> {
    index_entry(item, attr::DUE_KEY, attr::DUE_AT, super::DUE_PROJECTED)
}

/// What the failed index holds of an item.
pub fn failed_entry(item: &Item) -> Option<(String, usize)> {
    index_entry(
        item,
        attr::FAILED_KEY,
        attr::FAILED_INDEX_SK,
        super::FAILED_PROJECTED,
    )
}

/// What the requests index holds of an item (its keys).
pub fn requests_entry(item: &Item) -> Option<(String, usize)> {
    index_entry(item, attr::LIST_KEY, attr::LIST_AT, &[])
}

fn index_entry(item: &Item, pk: &str, sk: &str, projected: &[&str]) -> Option<(String, usize)> {
    let part = item.get(pk)?.as_s().ok()?.clone();
    item.get(sk)?;
    let size = [attr::PK, attr::SK, pk, sk]
        .iter()
        .chain(projected)
        .filter_map(|a| item.get(*a).map(|v| a.len() + value_size(v)))
        .sum::<usize>()
        + 100;
    Some((part, size))
}
