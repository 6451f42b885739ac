//! Shared AWS plumbing: SDK config from the default chain with optional region and
//! endpoint overrides, and classification of SDK errors into retry decisions, described
//! in one line of plain words (service, operation, error code, message; the IAM action
//! to grant when access was denied).

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::{ProvideErrorMetadata, SdkError};

/// Longest one HTTP attempt of any AWS call may take (a GetRecords of 10 MB included).
pub const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest one AWS call may take, its retries included.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest a TCP + TLS connect may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// Timeouts on every Kinesis and DynamoDB call, so a hung call cannot hold a fetch loop
/// or the lease coordinator (the SDK sets none by default). Lease renewals and
/// checkpoints are bounded tighter still, by the holder's self-fence deadline.
pub fn timeouts() -> TimeoutConfig {
    TimeoutConfig::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .operation_attempt_timeout(ATTEMPT_TIMEOUT)
        .operation_timeout(OPERATION_TIMEOUT)
        .build()
}

/// SDK config: credentials and region from the default chain, with overrides, and
/// [`timeouts`].
pub async fn sdk_config(region: Option<&str>, endpoint: Option<&str>) -> aws_config::SdkConfig {
    let mut loader = aws_config::defaults(BehaviorVersion::latest()).timeout_config(timeouts());
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
    /// 5xx, timeouts, dropped connections: back off and retry.
    Transient,
    /// A service error with this code that the caller may handle specifically.
    Service(String),
    /// Construction failures, KMS key problems and other failures no retry fixes.
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
        SdkError::DispatchFailure(_) => format!("cannot connect: {}", root_cause(err)),
        SdkError::TimeoutError(_) => format!("timed out: {}", root_cause(err)),
        SdkError::ResponseError(_) => format!("unreadable response: {}", root_cause(err)),
        other => distinct_causes(other),
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
                    | "ServiceUnavailableException",
                ) => ErrorClass::Transient,
                // The stream's KMS key is disabled, missing, pending deletion or not
                // ours to use: no retry fixes that, an operator must.
                Some(
                    "KMSDisabledException"
                    | "KMSInvalidStateException"
                    | "KMSNotFoundException"
                    | "KMSOptInRequired"
                    | "KMSAccessDeniedException",
                ) => ErrorClass::Fatal,
                Some(code) if status < 500 => ErrorClass::Service(code.to_string()),
                _ if status >= 500 => ErrorClass::Transient,
                _ => ErrorClass::Fatal,
            }
        }
        _ => ErrorClass::Transient,
    };
    (class, message)
}

/// An AWS service, as messages and IAM actions name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Service {
    /// Amazon Kinesis Data Streams.
    Kinesis,
    /// Amazon DynamoDB.
    DynamoDb,
}

impl Service {
    fn name(self) -> &'static str {
        match self {
            Service::Kinesis => "Kinesis",
            Service::DynamoDb => "DynamoDB",
        }
    }

    fn iam_prefix(self) -> &'static str {
        match self {
            Service::Kinesis => "kinesis",
            Service::DynamoDb => "dynamodb",
        }
    }
}

/// [`classify`] a failed call of `operation`, its message prefixed with the service and
/// operation, and naming the IAM action to grant when access was denied.
pub fn classify_call<E: ProvideErrorMetadata + std::error::Error + 'static>(
    service: Service,
    operation: &str,
    err: &SdkError<E, HttpResponse>,
) -> (ErrorClass, String) {
    let (class, detail) = classify(err);
    let mut message = format!("{} {operation}: {detail}", service.name());
    if let ErrorClass::Service(code) = &class
        && matches!(
            code.as_str(),
            "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation"
        )
    {
        message.push_str(&format!(
            " (the credentials in use lack the IAM permission {}:{operation})",
            service.iam_prefix()
        ));
    }
    (class, message)
}

/// The innermost cause of an error (the SDK's wrappers only say which layer failed).
fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut cause = err;
    while let Some(next) = cause.source() {
        cause = next;
    }
    cause.to_string()
}

/// The messages of an error's chain, each said once (a wrapper often repeats its cause).
fn distinct_causes(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts: Vec<String> = Vec::new();
    let mut next = Some(err);
    while let Some(e) = next {
        let text = e.to_string();
        if !text.is_empty() && !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        next = e.source();
    }
    parts.join(": ")
}

/// A service error as the SDK would return it for an answer with `status` and error
/// `code` (message "from a test"), for the classification tests; `generic` makes the
/// operation's error type (e.g. `GetRecordsError::generic`).
#[cfg(test)]
pub(crate) fn test_service_error<E>(
    code: &str,
    status: u16,
    generic: impl FnOnce(aws_sdk_kinesis::error::ErrorMetadata) -> E,
) -> SdkError<E, HttpResponse> {
    let raw: HttpResponse = http::Response::builder()
        .status(status)
        .body("".into())
        .expect("response")
        .try_into()
        .expect("response");
    let error = aws_sdk_kinesis::error::ErrorMetadata::builder()
        .code(code)
        .message("from a test")
        .build();
    SdkError::service_error(generic(error), raw)
}

#[cfg(test)]
mod tests {
    use super::*;
    use aws_sdk_kinesis::operation::get_records::GetRecordsError;

    fn service_error(code: &str, status: u16) -> SdkError<GetRecordsError, HttpResponse> {
        test_service_error(code, status, GetRecordsError::generic)
    }

    /// A KMS key that is disabled, missing or not ours is for an operator to fix: the
    /// consumer stops rather than retrying forever. KMS throttling is retried.
    #[test]
    fn kms_key_problems_are_fatal_and_kms_throttling_is_retried() {
        for code in [
            "KMSDisabledException",
            "KMSNotFoundException",
            "KMSAccessDeniedException",
            "KMSInvalidStateException",
            "KMSOptInRequired",
        ] {
            let (class, message) = classify(&service_error(code, 400));
            assert_eq!(class, ErrorClass::Fatal, "{code}");
            assert!(message.contains(code), "{message}");
        }
        assert_eq!(
            classify(&service_error("KMSThrottlingException", 400)).0,
            ErrorClass::Throttled
        );
        assert_eq!(
            classify(&service_error("InternalFailure", 500)).0,
            ErrorClass::Transient
        );
        assert_eq!(
            classify(&service_error("AccessDeniedException", 400)).0,
            ErrorClass::Service("AccessDeniedException".into())
        );
    }

    #[test]
    fn a_denied_call_names_the_service_operation_code_and_iam_permission() {
        let (_, message) = classify_call(
            Service::Kinesis,
            "GetRecords",
            &service_error("AccessDeniedException", 400),
        );
        assert_eq!(
            message,
            "Kinesis GetRecords: AccessDeniedException: from a test (the credentials in use lack the IAM permission kinesis:GetRecords)"
        );
    }

    /// An unreachable endpoint is one line of plain words: no Debug dump of the SDK's
    /// error types, the cause said once.
    #[tokio::test]
    async fn an_unreachable_endpoint_is_described_in_plain_words() {
        // Nothing listens on a port just released.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .expect("bind")
            .local_addr()
            .expect("addr")
            .port();
        let config = aws_sdk_kinesis::Config::builder()
            .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
            .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
            .credentials_provider(aws_sdk_kinesis::config::Credentials::for_tests())
            .endpoint_url(format!("http://127.0.0.1:{port}"))
            .retry_config(aws_sdk_kinesis::config::retry::RetryConfig::disabled())
            .build();
        let err = aws_sdk_kinesis::Client::from_conf(config)
            .list_shards()
            .stream_name("s")
            .send()
            .await
            .expect_err("nothing listens");
        let (class, message) = classify_call(Service::Kinesis, "ListShards", &err);
        assert_eq!(class, ErrorClass::Transient);
        assert!(
            message.starts_with("Kinesis ListShards: cannot connect: ")
                && message.contains("Connection refused"),
            "{message}"
        );
        assert!(
            !message.contains('{') && !message.contains("DispatchFailure"),
            "{message}"
        );
        assert_eq!(
            message.matches("Connection refused").count(),
            1,
            "{message}"
        );
    }
}

/// The minimal IAM policy shipped in `docs/iam-policy.json` grants every Kinesis and
/// DynamoDB operation shoal calls, and nothing else: read off the calls in the source.
#[cfg(test)]
mod iam_policy {
    fn called_operations(source: &str, prefix: &str) -> Vec<String> {
        let mut operations: Vec<String> = source
            .split("()")
            .filter_map(|before| before.rsplit(['.', ' ', '\n']).next())
            .filter(|name| {
                [
                    "list_shards",
                    "get_shard_iterator",
                    "get_records",
                    "describe_table",
                    "create_table",
                    "scan",
                    "query",
                    "get_item",
                    "put_item",
                    "update_item",
                    "delete_item",
                    "batch_write_item",
                    "register_stream_consumer",
                    "describe_stream_consumer",
                    "list_stream_consumers",
                    "subscribe_to_shard",
                    "describe_stream",
                    "describe_stream_summary",
                ]
                .contains(name)
            })
            .map(|snake| {
                let camel: String = snake
                    .split('_')
                    .map(|w| {
                        let mut c = w.chars();
                        c.next()
                            .map(|f| f.to_ascii_uppercase().to_string() + c.as_str())
                            .unwrap_or_default()
                    })
                    .collect();
                format!("{prefix}:{camel}")
            })
            .collect();
        operations.sort();
        operations.dedup();
        operations
    }

    #[test]
    fn the_shipped_policy_grants_exactly_the_operations_shoal_calls() {
        let policy: serde_json::Value =
            serde_json::from_str(include_str!("../../docs/iam-policy.json")).expect("policy JSON");
        let mut granted: Vec<String> = policy["Statement"]
            .as_array()
            .expect("statements")
            .iter()
            .flat_map(|s| s["Action"].as_array().expect("actions").clone())
            .map(|a| a.as_str().expect("action").to_string())
            .filter(|a| !a.starts_with("kms:"))
            .collect();
        granted.sort();
        let mut called = called_operations(include_str!("source/kinesis.rs"), "kinesis");
        called.extend(called_operations(
            include_str!("source/kinesis_http.rs"),
            "kinesis",
        ));
        called.extend(called_operations(
            include_str!("source/fanout.rs"),
            "kinesis",
        ));
        called.extend(called_operations(
            include_str!("lease/dynamo.rs"),
            "dynamodb",
        ));
        called.sort();
        called.dedup();
        assert_eq!(granted, called);
    }
}
