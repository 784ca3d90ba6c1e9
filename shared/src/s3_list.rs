//! Listing the objects under an S3 prefix (ListObjectsV2, every page), for requests whose
//! jobs come from a `source` prefix. The producer reaches S3's listing only through
//! [`list_objects`], as it reaches the claim-check objects through `claim_check`.

use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Error;

use crate::s3::S3Uri;

/// One object under a prefix, as the listing gave it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    /// The object's ETag, without its quotes.
    pub etag: String,
}

/// Why a prefix could not be listed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ListError {
    /// The prefix's bucket does not exist: the caller's mistake, not S3's.
    #[error("no bucket {0:?}")]
    NoSuchBucket(String),
    /// The prefix holds more objects than the caller accepts; the listing stopped there.
    #[error("more than {max} objects under {prefix}")]
    TooMany { prefix: S3Uri, max: usize },
    /// S3 failed or refused the listing.
    #[error("listing {prefix}: {message}")]
    Failed { prefix: S3Uri, message: String },
}

/// The objects under `prefix`, in key order, folder markers (empty keys ending in `/`) left
/// out; more than `max` of them is an error (checked after each page of up to 1,000).
pub async fn list_objects(
    s3: &aws_sdk_s3::Client,
    prefix: &S3Uri,
    max: usize,
) -> Result<Vec<S3Object>, ListError> {
    let mut pages = s3
        .list_objects_v2()
        .bucket(&prefix.bucket)
        .prefix(&prefix.key)
        .into_paginator()
        .send();
    let mut objects = Vec::new();
    while let Some(page) = pages.next().await {
        let page = page.map_err(|e| match e.as_service_error() {
            Some(ListObjectsV2Error::NoSuchBucket(_)) => {
                ListError::NoSuchBucket(prefix.bucket.clone())
            }
            _ => ListError::Failed {
                prefix: prefix.clone(),
                message: DisplayErrorContext(e).to_string(),
            },
        })?;
        objects.extend(page.contents().iter().filter_map(listed));
        if objects.len() > max {
            return Err(ListError::TooMany {
                prefix: prefix.clone(),
                max,
            });
        }
    }
    Ok(objects)
}

/// An object of a listing page, or `None` for a folder marker or an entry without a key.
fn listed(o: &aws_sdk_s3::types::Object) -> Option<S3Object> {
    let key = o.key()?;
    let size = o.size().unwrap_or(0);
    if key.ends_with('/') && size == 0 {
        return None;
    }
    Some(S3Object {
        key: key.to_owned(),
        size: size.max(0) as u64,
        etag: o.e_tag().unwrap_or("").trim_matches('"').to_owned(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_s3::types::Object;

    #[test]
    fn folder_markers_are_left_out_and_etags_lose_their_quotes() {
        let o = Object::builder()
            .key("in/a.csv")
            .size(12)
            .e_tag("\"abc\"")
            .build();
        assert_eq!(
            listed(&o),
            Some(S3Object {
                key: "in/a.csv".into(),
                size: 12,
                etag: "abc".into(),
            })
        );
        assert_eq!(listed(&Object::builder().key("in/").size(0).build()), None);
        assert_eq!(listed(&Object::builder().size(3).build()), None);
        // A non-empty object whose key ends in `/` is an object.
        let dir = Object::builder().key("in/x/").size(5).build();
        assert_eq!(listed(&dir).map(|o| o.size), Some(5));
    }

    #[test]
    fn errors_say_what_and_where() {
        let prefix = S3Uri::parse("s3://bkt/in/").unwrap();
        assert_eq!(
            ListError::NoSuchBucket("bkt".into()).to_string(),
            "no bucket \"bkt\""
        );
        assert_eq!(
            ListError::TooMany {
                prefix: prefix.clone(),
                max: 5
            }
            .to_string(),
            "more than 5 objects under s3://bkt/in/"
        );
        assert_eq!(
            ListError::Failed {
                prefix,
                message: "timeout".into()
            }
            .to_string(),
            "listing s3://bkt/in/: timeout"
        );
    }
}
