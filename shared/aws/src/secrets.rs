//! Secrets from AWS Secrets Manager.

use aws_sdk_secretsmanager::Client;
use domain::ports::{SecretError, SecretSource, SecretValue};

use crate::error::describe;

/// Secrets by name from Secrets Manager (`GetSecretValue`, current version). No cache here:
/// wrap it in `domain::invocation::CachedSecrets`.
#[derive(Clone, Debug)]
pub struct SecretsManagerSource {
    /// The Secrets Manager client.
    pub client: Client,
}

impl SecretsManagerSource {
    /// A source over `client`.
    pub fn new(client: Client) -> SecretsManagerSource {
        SecretsManagerSource { client }
    }
}

impl SecretsManagerSource {
    /// Stores `value` as the secret's new current version (`PutSecretValue`: running functions
    /// read it on their next cold start or cache expiry), or creates the secret
    /// (`CreateSecret`, encrypted with `kms_key` when given) when there is none. Returns
    /// whether it was created. Errors name the secret and the failure, never the value.
    pub async fn put(
        &self,
        name: &str,
        value: &str,
        kms_key: Option<&str>,
    ) -> Result<bool, SecretError> {
        let fail = |call: &str, label: String| {
            tracing::warn!(secret = name, error = %label, "{call} failed");
            SecretError::Unavailable(format!("{call} {name}: {label}"))
        };
        match self
            .client
            .put_secret_value()
            .secret_id(name)
            .secret_string(value)
            .send()
            .await
        {
            Ok(_) => return Ok(false),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) => {}
            Err(e) => return Err(fail("PutSecretValue", describe(&e).label())),
        }
        self.client
            .create_secret()
            .name(name)
            .secret_string(value)
            .set_kms_key_id(kms_key.map(str::to_string))
            .description("Kareo API credentials (kareo-dock onboard)")
            .send()
            .await
            .map_err(|e| fail("CreateSecret", describe(&e).label()))?;
        Ok(true)
    }
}

impl SecretsManagerSource {
    /// Schedules the secret's deletion (`DeleteSecret`, the shortest recovery window, 7 days:
    /// a mistaken purge can still be undone with `RestoreSecret`). Returns whether it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, SecretError> {
        match self
            .client
            .delete_secret()
            .secret_id(name)
            .recovery_window_in_days(7)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                Ok(false)
            }
            Err(e) => {
                let label = describe(&e).label();
                tracing::warn!(secret = name, error = %label, "DeleteSecret failed");
                Err(SecretError::Unavailable(format!(
                    "DeleteSecret {name}: {label}"
                )))
            }
        }
    }
}

impl SecretSource for SecretsManagerSource {
    async fn get(&self, name: &str) -> Result<SecretValue, SecretError> {
        let out = match self.client.get_secret_value().secret_id(name).send().await {
            Ok(out) => out,
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_resource_not_found_exception()) =>
            {
                return Err(SecretError::NotFound(name.to_string()));
            }
            Err(e) => {
                let label = describe(&e).label();
                tracing::warn!(secret = name, error = %label, "GetSecretValue failed");
                return Err(SecretError::Unavailable(format!(
                    "GetSecretValue {name}: {label}"
                )));
            }
        };
        if let Some(text) = out.secret_string {
            return Ok(SecretValue(text));
        }
        match out.secret_binary.map(|b| String::from_utf8(b.into_inner())) {
            Some(Ok(text)) => Ok(SecretValue(text)),
            _ => Err(SecretError::Malformed {
                name: name.to_string(),
                reason: "the secret has no text value".into(),
            }),
        }
    }
}
