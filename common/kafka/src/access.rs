//! The start-up check of a process's Kafka credentials: a broker that
//! refuses them (a wrong SASL password, an unknown user) ends the process
//! at once with an error that says so, instead of leaving it retrying the
//! connection forever, never ready, with only librdkafka's warnings in its
//! log.
//!
//! librdkafka treats an authentication failure like any connection failure:
//! it reports it to the client's error callback and connects again. The
//! check makes one client, asks for metadata until the broker answers, an
//! authentication failure is reported, or the bound passes; only the
//! authentication failure is an error. An unreachable broker is not (the
//! stages wait for it as before).

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rdkafka::ClientContext;
use rdkafka::error::KafkaError;
use rdkafka::producer::{BaseProducer, DeliveryResult, Producer, ProducerContext};
use rdkafka::types::RDKafkaErrorCode;

use crate::settings::{KafkaSettings, SecurityProtocol};

/// How long the check waits for the broker's first answer.
const BOUND: Duration = Duration::from_secs(20);

/// A failed check.
#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// The broker refused the credentials.
    #[error(
        "Kafka at {bootstrap} refused the credentials of user {user:?} ({mechanism}): {detail}; \
         check kafka.options.\"sasl.username\" and kafka.options.\"sasl.password\" \
         (SHOAL__KAFKA__OPTIONS__SASL_USERNAME / SHOAL__KAFKA__OPTIONS__SASL_PASSWORD)"
    )]
    Authentication {
        /// `kafka.bootstrap_servers`.
        bootstrap: String,
        /// `sasl.username` (never the password).
        user: String,
        /// `sasl.mechanism`.
        mechanism: String,
        /// librdkafka's description of the failure.
        detail: String,
    },
    /// The check's client could not be created.
    #[error("cannot create the Kafka client that checks the credentials: {0}")]
    Client(#[source] KafkaError),
}

/// Records the first authentication failure librdkafka reports.
#[derive(Default, Clone)]
struct Watch {
    refused: Arc<Mutex<Option<String>>>,
}

impl ClientContext for Watch {
    fn error(&self, error: KafkaError, reason: &str) {
        if is_authentication_failure(&error) {
            let mut refused = self.refused.lock().unwrap_or_else(|p| p.into_inner());
            refused.get_or_insert_with(|| reason.to_string());
        } else {
            tracing::debug!(%error, reason, "kafka error during the credentials check");
        }
    }
}

impl ProducerContext for Watch {
    type DeliveryOpaque = ();

    fn delivery(&self, _: &DeliveryResult<'_>, _: Self::DeliveryOpaque) {}
}

/// Whether `error` is the broker refusing the client's identity (SASL) —
/// not a network failure, which is retried.
pub fn is_authentication_failure(error: &KafkaError) -> bool {
    matches!(
        error.rdkafka_error_code(),
        Some(RDKafkaErrorCode::Authentication | RDKafkaErrorCode::SaslAuthenticationFailed)
    )
}

/// Checks that the broker accepts the configured SASL credentials (nothing
/// to check without SASL). Blocking: call from `spawn_blocking`.
pub fn check_credentials_blocking(kafka: &KafkaSettings) -> Result<(), AccessError> {
    if !matches!(kafka.security_protocol, SecurityProtocol::SaslPlaintext | SecurityProtocol::SaslSsl) {
        return Ok(());
    }
    let watch = Watch::default();
    // A producer that never produces: the lightest client whose error
    // callback is served by polling it.
    let client: BaseProducer<Watch> = crate::client_config(kafka, "shoal-credentials-check")
        .create_with_context(watch.clone())
        .map_err(AccessError::Client)?;
    let deadline = Instant::now() + BOUND;
    while Instant::now() < deadline {
        if client.client().fetch_metadata(None, Duration::from_millis(500)).is_ok() {
            return Ok(());
        }
        client.poll(Duration::ZERO);
        let refused = watch.refused.lock().unwrap_or_else(|p| p.into_inner()).clone();
        if let Some(detail) = refused {
            let option = |key: &str| {
                kafka.normalised_options().find(|(k, _)| k == key).map_or_else(String::new, |(_, v)| v.to_string())
            };
            let mechanism = Some(option("sasl.mechanism")).filter(|m| !m.is_empty()).unwrap_or_else(|| "GSSAPI".into());
            return Err(AccessError::Authentication {
                bootstrap: kafka.bootstrap_servers.clone(),
                user: option("sasl.username"),
                mechanism,
                detail,
            });
        }
    }
    tracing::warn!(bootstrap = %kafka.bootstrap_servers, bound_s = BOUND.as_secs(), "Kafka did not answer the credentials check; going on (the stages wait for the broker)");
    Ok(())
}

/// [`check_credentials_blocking`] off the async threads.
pub async fn check_credentials(kafka: &KafkaSettings) -> Result<(), AccessError> {
    let kafka = kafka.clone();
    match tokio::task::spawn_blocking(move || check_credentials_blocking(&kafka)).await {
        Ok(result) => result,
        Err(join) => std::panic::resume_unwind(join.into_panic()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_identity_refusals_count_as_authentication_failures() {
        assert!(is_authentication_failure(&KafkaError::Global(RDKafkaErrorCode::Authentication)));
        assert!(is_authentication_failure(&KafkaError::Global(RDKafkaErrorCode::SaslAuthenticationFailed)));
        assert!(!is_authentication_failure(&KafkaError::Global(RDKafkaErrorCode::BrokerTransportFailure)));
        assert!(!is_authentication_failure(&KafkaError::Global(RDKafkaErrorCode::AllBrokersDown)));
    }

    #[test]
    fn without_sasl_there_is_nothing_to_check() {
        // Port 1 refuses every connection: a check that connected would
        // wait out its bound instead of answering at once.
        let kafka = KafkaSettings { bootstrap_servers: "127.0.0.1:1".into(), ..KafkaSettings::default() };
        let started = Instant::now();
        assert!(check_credentials_blocking(&kafka).is_ok());
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[test]
    fn the_error_names_the_user_and_the_keys_but_never_the_password() {
        let error = AccessError::Authentication {
            bootstrap: "127.0.0.1:9192".into(),
            user: "worker".into(),
            mechanism: "SCRAM-SHA-512".into(),
            detail: "SASL authentication error: Authentication failed".into(),
        };
        let text = error.to_string();
        assert!(text.contains("\"worker\"") && text.contains("SCRAM-SHA-512") && text.contains("sasl.password"));
    }
}
