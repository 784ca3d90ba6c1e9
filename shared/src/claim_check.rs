//! The claim-check of large payloads and results: the references, their reading and
//! writing ([`fleet_job::claim_check`], which the job runtime uses too), and the removal of a
//! finished request's objects.

use aws_sdk_s3::error::DisplayErrorContext;

pub use fleet_job::claim_check::*;

use crate::s3::S3Uri;

/// Deletes every object under `prefix` (a request's payloads); the number deleted.
pub async fn delete_prefix(s3: &aws_sdk_s3::Client, prefix: &S3Uri) -> Result<u64, String> {
    use aws_sdk_s3::types::{Delete, ObjectIdentifier};
    let mut deleted = 0;
    loop {
        // List from the start each time: the previous page's objects are gone.
        let page = s3
            .list_objects_v2()
            .bucket(&prefix.bucket)
            .prefix(&prefix.key)
            .max_keys(1000)
            .send()
            .await
            .map_err(|e| format!("listing {prefix}: {}", DisplayErrorContext(e)))?;
        let keys: Vec<ObjectIdentifier> = page
            .contents()
            .iter()
            .filter_map(|o| o.key())
            .filter_map(|k| ObjectIdentifier::builder().key(k).build().ok())
            .collect();
        if keys.is_empty() {
            return Ok(deleted);
        }
        let n = keys.len() as u64;
        let delete = Delete::builder()
            .set_objects(Some(keys))
            .quiet(true)
            .build()
            .map_err(|e| e.to_string())?;
        let out = s3
            .delete_objects()
            .bucket(&prefix.bucket)
            .delete(delete)
            .send()
            .await
            .map_err(|e| format!("deleting under {prefix}: {}", DisplayErrorContext(e)))?;
        if let Some(err) = out.errors().first() {
            return Err(format!(
                "deleting {}: {}",
                err.key().unwrap_or("?"),
                err.message().unwrap_or("error")
            ));
        }
        deleted += n;
    }
}
