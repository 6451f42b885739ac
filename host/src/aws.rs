//! Shared AWS plumbing: SDK config from the default chain with optional region and
//! endpoint overrides, and classification of SDK errors into retry decisions.

use aws_config::BehaviorVersion;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};

/// SDK config: credentials and region from the default chain, with overrides.
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest());
    if let Some(region) = region {
        loader = loader.region(aws_config::Region::new(region.to_string()));
    }
    if let Some(endpoint) = endpoint {
        loader = loader.endpoint_url(endpoint);
    }
    loader.load().await
}

/// How the caller should react to an SDK error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ErrorClass {
    /// Throttled (including KMS throttling): back off.
    Throttled,
    /// 5xx, timeouts, dropped connections, KMS availability: back off and retry.
    Transient,
    /// A service error with this code that the caller may handle specifically.
    Service(String),
    /// Construction or other non-retryable failures.
    Fatal,
}

/// Classify an SDK error; `message` is a one-line description for logs.
pub fn classify<E: ProvideErrorMetadata + std::error::Error + 'static>(
    err: &SdkError<E, HttpResponse>,
) -> (ErrorClass, String) {
    let message = match err {
        SdkError::ServiceError(ctx) => {
            let e = ctx.err();
            format!(
                "{}: {}",
                e.code().unwrap_or("service error"),
                e.message().unwrap_or("")
            )
        }
        other => format!("{}", DisplayErrorContext(other)),
    };
    let class = match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            ErrorClass::Transient
        }
        SdkError::ConstructionFailure(_) => ErrorClass::Fatal,
        SdkError::ServiceError(ctx) => {
            let status = ctx.raw().status().as_u16();
            match ctx.err().code() {
                Some(
                    "ProvisionedThroughputExceededException"
                    | "LimitExceededException"
                    | "ThrottlingException"
                    | "Throttling"
                    | "RequestLimitExceeded"
                    | "KMSThrottlingException",
                ) => ErrorClass::Throttled,
                Some(
                    "InternalFailureException"
                    | "InternalServerError"
                    | "ServiceUnavailable"
                    | "ServiceUnavailableException"
                    | "KMSDisabledException"
                    | "KMSInvalidStateException"
                    | "KMSNotFoundException"
                    | "KMSOptInRequired"
                    | "KMSAccessDeniedException",
                ) => ErrorClass::Transient,
                Some(code) if status < 500 => ErrorClass::Service(code.to_string()),
                _ if status >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Fatal,
            }
        }
        _ => ErrorClass::Transient,
    };
    (class, message)
}
