//! Imports' files in S3: the client PUTs its file to a presigned URL (API Gateway's 10 MB
//! limit never sees it); the bucket's event on the fanout queue starts the job
//! (`bulklink_core::uploads`); fanout and workers read ranges of the object.

use async_trait::async_trait;
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::operation::get_object::GetObjectError;
use aws_sdk_s3::operation::head_object::HeadObjectError;
use aws_sdk_s3::presigning::PresigningConfig;
use aws_sdk_s3::Client;

use crate::clock::Clock;
use crate::domain::{Import, ImportId};
use crate::error::{StoreError, StoreResult};
use crate::ports::{ByteStream, Uploads};
use crate::sdk_error::classify;

pub struct S3Uploads {
    s3: Client,
    bucket: String,
    clock: Clock,
}

impl S3Uploads {
    pub fn new(s3: Client, bucket: &str, clock: Clock) -> Self {
        S3Uploads {
            s3,
            bucket: bucket.to_owned(),
            clock,
        }
    }
}

#[async_trait]
impl Uploads for S3Uploads {
    /// A presigned PUT of the import's object, valid until the import expires.
    async fn upload_url(&self, import: &Import, _token: Option<&str>) -> StoreResult<String> {
        let left = (import.expires_at - self.clock.now())
            .to_std()
            .map_err(|_| StoreError::Invalid(format!("import {} has expired", import.id)))?;
        let presigning = PresigningConfig::builder()
            .start_time(self.clock.now().into())
            .expires_in(left)
            .build()
            .map_err(|e| StoreError::internal(format!("presigning: {e}")))?;
        let request = self
            .s3
            .put_object()
            .bucket(&self.bucket)
            .key(Import::file_key(import.id))
            .presigned(presigning)
            .await
            .map_err(|e| StoreError::internal(format!("presigning PutObject: {e}")))?;
        Ok(request.uri().to_owned())
    }

    async fn receive(&self, id: ImportId, _body: ByteStream, _limit: u64) -> StoreResult<u64> {
        Err(StoreError::Invalid(format!(
            "import {id}'s file goes to S3 (its presigned uploadUrl), not to the API"
        )))
    }

    /// Copies the uploaded object to the key the job reads (`taken/<id>`, outside the
    /// prefix whose events start jobs), unless it was taken already.
    async fn take(&self, id: ImportId) -> StoreResult<()> {
        if self.size(id).await?.is_some() {
            return Ok(());
        }
        self.s3
            .copy_object()
            .bucket(&self.bucket)
            .copy_source(format!("{}/{}", self.bucket, Import::file_key(id)))
            .key(taken_key(id))
            .send()
            .await
            .map_err(|e| classify("CopyObject", e))?;
        Ok(())
    }

    async fn size(&self, id: ImportId) -> StoreResult<Option<u64>> {
        let result = self
            .s3
            .head_object()
            .bucket(&self.bucket)
            .key(taken_key(id))
            .send()
            .await;
        match result {
            Ok(out) => Ok(Some(out.content_length.unwrap_or(0).max(0) as u64)),
            Err(SdkError::ServiceError(e)) if matches!(e.err(), HeadObjectError::NotFound(_)) => {
                Ok(None)
            }
            Err(e) => Err(classify("HeadObject", e)),
        }
    }

    async fn read(&self, id: ImportId, start: u64, end: u64) -> StoreResult<Vec<u8>> {
        if end <= start {
            return Ok(Vec::new());
        }
        let result = self
            .s3
            .get_object()
            .bucket(&self.bucket)
            .key(taken_key(id))
            .range(format!("bytes={start}-{}", end - 1))
            .send()
            .await;
        let out = match result {
            Ok(out) => out,
            Err(SdkError::ServiceError(e)) if matches!(e.err(), GetObjectError::NoSuchKey(_)) => {
                return Err(StoreError::Invalid(format!(
                    "import {id}'s file is not there"
                )))
            }
            // A range that begins at or past the file's end: S3 answers 416; none of its bytes.
            Err(SdkError::ServiceError(e)) if e.err().code() == Some("InvalidRange") => {
                return Ok(Vec::new())
            }
            Err(e) => return Err(classify("GetObject", e)),
        };
        let bytes = out
            .body
            .collect()
            .await
            .map_err(|e| StoreError::unavailable(format!("reading import {id}'s file: {e}")))?;
        Ok(bytes.into_bytes().to_vec())
    }

    async fn delete(&self, id: ImportId) -> StoreResult<()> {
        for key in [Import::file_key(id), taken_key(id)] {
            self.s3
                .delete_object()
                .bucket(&self.bucket)
                .key(key)
                .send()
                .await
                .map_err(|e| classify("DeleteObject", e))?;
        }
        Ok(())
    }
}

/// Where the file an import's job reads is kept.
fn taken_key(id: ImportId) -> String {
    format!("taken/{id}")
}
