//! S3 addresses (`s3://bucket/key-or-prefix`), used by request sources, the claim-check of
//! large payloads and the demo job, and the S3 client as Fleet makes it.

use std::fmt;

/// A bucket and a key (or a key prefix, which may be empty).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct S3Uri {
    pub bucket: String,
    pub key: String,
}

impl S3Uri {
    /// Parses `s3://bucket/key`. The key may be empty (`s3://bucket` or `s3://bucket/`).
    pub fn parse(s: &str) -> Result<S3Uri, String> {
        let rest = s
            .strip_prefix("s3://")
            .ok_or_else(|| format!("must start with s3://, got {s:?}"))?;
        let (bucket, key) = rest.split_once('/').unwrap_or((rest, ""));
        let valid_bucket = (3..=63).contains(&bucket.len())
            && bucket
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
            && bucket.as_bytes()[0].is_ascii_alphanumeric()
            && bucket.as_bytes()[bucket.len() - 1].is_ascii_alphanumeric();
        if !valid_bucket {
            return Err(format!(
                "{bucket:?} is not a valid bucket name (3 to 63 characters: lowercase letters, digits, '.' and '-')"
            ));
        }
        if key.len() > 1024 {
            return Err(format!("the key is {} bytes, over S3's 1024", key.len()));
        }
        Ok(S3Uri {
            bucket: bucket.to_owned(),
            key: key.to_owned(),
        })
    }

    /// This prefix joined with a relative key.
    pub fn join(&self, rel: &str) -> S3Uri {
        S3Uri {
            bucket: self.bucket.clone(),
            key: format!("{}{rel}", self.key),
        }
    }
}

impl fmt::Display for S3Uri {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

/// An S3 client. With a custom endpoint (`AWS_ENDPOINT_URL_S3` or `AWS_ENDPOINT_URL`, as the
/// local stack sets), requests use path-style addresses (`http://host/bucket/key`), since a
/// local endpoint has no per-bucket host names.
pub fn client(sdk: &aws_config::SdkConfig) -> aws_sdk_s3::Client {
    let custom_endpoint = sdk.endpoint_url().is_some()
        || std::env::var_os("AWS_ENDPOINT_URL_S3").is_some()
        || std::env::var_os("AWS_ENDPOINT_URL").is_some();
    let config = aws_sdk_s3::config::Builder::from(sdk)
        .force_path_style(custom_endpoint)
        .build();
    aws_sdk_s3::Client::from_conf(config)
}

/// An S3 client from the default AWS chain (region, credentials, `AWS_ENDPOINT_URL*`).
pub async fn client_from_env() -> aws_sdk_s3::Client {
    client(
        &aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_and_prints() {
        let u = S3Uri::parse("s3://my-bucket/in/a.csv").unwrap();
        assert_eq!(
            (u.bucket.as_str(), u.key.as_str()),
            ("my-bucket", "in/a.csv")
        );
        assert_eq!(u.to_string(), "s3://my-bucket/in/a.csv");
        assert_eq!(S3Uri::parse("s3://bkt").unwrap().key, "");
        assert_eq!(
            S3Uri::parse("s3://bkt/out/").unwrap().join("x.parquet").key,
            "out/x.parquet"
        );
        for bad in ["http://b/k", "s3://", "s3://B/k", "s3://ab/k", "s3://-ab/k"] {
            assert!(S3Uri::parse(bad).is_err(), "{bad}");
        }
    }
}
