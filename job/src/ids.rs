//! Identifiers. A request id is chosen by the submitter (or generated); a job id is derived
//! from it and the job's index, so re-submitting a request always names the same jobs and the
//! ledger can key every job without a lookup table.

use std::fmt;

/// Longest request id accepted, in bytes.
pub const MAX_REQUEST_ID_LEN: usize = 64;
/// Longest job type name accepted, in bytes.
pub const MAX_JOB_TYPE_LEN: usize = 64;
/// Jobs per request: indices run from 0 to `MAX_JOBS_PER_REQUEST - 1` (nine decimal digits).
pub const MAX_JOBS_PER_REQUEST: u32 = 1_000_000_000;

/// Why an identifier was refused. The text is shown to whoever sent it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct IdError(String);

/// A request id: 1 to 64 characters of `A-Z a-z 0-9 _ -`.
pub fn validate_request_id(id: &str) -> Result<(), IdError> {
    if id.is_empty() || id.len() > MAX_REQUEST_ID_LEN {
        return Err(IdError(format!(
            "must be 1 to {MAX_REQUEST_ID_LEN} characters, got {}",
            id.len()
        )));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(IdError(format!(
            "may hold only letters, digits, '_' and '-', found {c:?}"
        )));
    }
    Ok(())
}

/// A job type: 1 to 64 characters of `A-Z a-z 0-9 _ . -`, starting with a letter or digit.
pub fn validate_job_type(name: &str) -> Result<(), IdError> {
    if name.is_empty() || name.len() > MAX_JOB_TYPE_LEN {
        return Err(IdError(format!(
            "must be 1 to {MAX_JOB_TYPE_LEN} characters, got {}",
            name.len()
        )));
    }
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(IdError("must start with a letter or a digit".into()));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-')))
    {
        return Err(IdError(format!(
            "may hold only letters, digits, '_', '.' and '-', found {c:?}"
        )));
    }
    Ok(())
}

/// A job id: `<request id>:<index>`, the index in decimal without leading zeros.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct JobId {
    request_id: String,
    index: u32,
}

impl JobId {
    /// The id of job `index` of `request_id`.
    pub fn new(request_id: &str, index: u32) -> Result<Self, IdError> {
        validate_request_id(request_id)?;
        if index >= MAX_JOBS_PER_REQUEST {
            return Err(IdError(format!(
                "job index {index} is over the limit of {}",
                MAX_JOBS_PER_REQUEST - 1
            )));
        }
        Ok(Self {
            request_id: request_id.to_owned(),
            index,
        })
    }

    /// Parses `<request id>:<index>`.
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let Some((request, index)) = s.rsplit_once(':') else {
            return Err(IdError(format!(
                "must be '<request id>:<index>', got {s:?}"
            )));
        };
        validate_request_id(request).map_err(|e| IdError(format!("request part {e}")))?;
        let digits_ok = !index.is_empty()
            && index.len() <= 9
            && index.bytes().all(|b| b.is_ascii_digit())
            && (index == "0" || !index.starts_with('0'));
        if !digits_ok {
            return Err(IdError(format!(
                "index must be 0 to 999999999 without leading zeros, got {index:?}"
            )));
        }
        let index = index
            .parse()
            .map_err(|_| IdError(format!("index {index:?} is not a number")))?;
        Self::new(request, index)
    }

    pub fn request_id(&self) -> &str {
        &self.request_id
    }

    pub fn index(&self) -> u32 {
        self.index
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.request_id, self.index)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_ids() {
        for ok in ["a", "req-2026_11", &"x".repeat(64)] {
            assert!(validate_request_id(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a b", "a:b", "é", &"x".repeat(65)] {
            assert!(validate_request_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_types() {
        for ok in ["resize", "csv.to-parquet_2", "9lives"] {
            assert!(validate_job_type(ok).is_ok(), "{ok}");
        }
        for bad in ["", "-x", ".x", "a/b", "a b", &"t".repeat(65)] {
            assert!(validate_job_type(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn job_ids_round_trip() {
        let id = JobId::new("req-1", 42).unwrap();
        assert_eq!(id.to_string(), "req-1:42");
        assert_eq!(JobId::parse("req-1:42").unwrap(), id);
        assert_eq!(JobId::parse("r:0").unwrap().index(), 0);
        assert_eq!(JobId::parse("r:999999999").unwrap().index(), 999_999_999);
    }

    #[test]
    fn job_ids_refused() {
        for bad in [
            "r",
            "r:",
            ":1",
            "r:01",
            "r:-1",
            "r:1a",
            "r:1000000000",
            "r r:1",
            "r:1:",
        ] {
            assert!(JobId::parse(bad).is_err(), "{bad}");
        }
    }
}
