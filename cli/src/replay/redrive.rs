//! How a dead letter is delivered again — the port [`Redrive`] and its two adapters: task
//! creation in this process ([`InProcess`], over the local state) and a synchronous `Invoke` of
//! the task function ([`Invoke`]).

use std::path::PathBuf;

use aws_sdk_lambda::error::ProvideErrorMetadata;
use domain::local::LocalStore;
use domain::ports::SystemClock;
use domain::TenantConfig;
use kareo::{ClientConfig, KareoClient};
use serde_json::{json, Value};
use tasks::deliver::{deliver_batch, Delivery};
use tasks::dock::DockTasks;

use super::letters::{Fail, Letter};
use crate::common::{self, Exit, Secrets};

/// What a successful redrive did (in-process only: a function's answer carries no counts).
#[derive(Debug, Default, Clone, Copy)]
pub struct Counts {
    /// Tasks created.
    pub tasks: usize,
    /// Workflows deployed.
    pub workflows: usize,
    /// Already done.
    pub duplicates: usize,
}

impl std::ops::AddAssign for Counts {
    fn add_assign(&mut self, o: Counts) {
        self.tasks += o.tasks;
        self.workflows += o.workflows;
        self.duplicates += o.duplicates;
    }
}

/// How letters are delivered again.
///
/// Contract: [`target`](Redrive::target) is pure (a dry run calls it); [`prepare`](Redrive::prepare)
/// opens what a redrive needs and is called once, only when something will be redriven;
/// [`redrive`](Redrive::redrive) delivers one letter's events through the exactly-once task
/// creation, so a letter delivered twice creates nothing twice.
pub trait Redrive {
    /// Where the letter would go (the function), or why it cannot go anywhere.
    fn target(&self, letter: &Letter) -> Result<Option<String>, Fail>;
    /// Opens the clients, the tenants and the secrets.
    async fn prepare(&mut self) -> Result<(), Exit>;
    /// Delivers the letter again.
    async fn redrive(&self, letter: &Letter) -> Result<Counts, Fail>;
}

/// Task creation in this process, over a local state directory.
pub struct InProcess {
    dir: PathBuf,
    configs: Vec<PathBuf>,
    secrets_file: Option<PathBuf>,
    ready: Option<Ready>,
}

struct Ready {
    store: LocalStore,
    tenants: Vec<TenantConfig>,
    secrets: Secrets,
    kareo: KareoClient,
    dock: DockTasks,
}

impl InProcess {
    /// Over the state in `dir`, with these tenant configs (none: the stored ones) and secrets.
    pub fn new(dir: PathBuf, configs: Vec<PathBuf>, secrets_file: Option<PathBuf>) -> InProcess {
        InProcess {
            dir,
            configs,
            secrets_file,
            ready: None,
        }
    }
}

impl Redrive for InProcess {
    fn target(&self, _: &Letter) -> Result<Option<String>, Fail> {
        Ok(None)
    }

    async fn prepare(&mut self) -> Result<(), Exit> {
        let store = common::open_store(Some(&self.dir), None).await?;
        let tenants = common::tenants(&self.configs, Some(&store), None).await?;
        let common::Store::Local(store, _) = store else {
            unreachable!("a directory opens a local store")
        };
        let secrets = common::open_secrets(self.secrets_file.as_deref(), false).await?;
        let kareo = KareoClient::new(ClientConfig::from_env())
            .map_err(|e| Exit(common::USAGE, e.to_string()))?;
        let dock = DockTasks::new(
            dock::DockClient::new(dock::DockConfig::from_env())
                .map_err(|e| Exit(common::USAGE, e.to_string()))?,
        );
        self.ready = Some(Ready {
            store,
            tenants,
            secrets,
            kareo,
            dock,
        });
        Ok(())
    }

    async fn redrive(&self, letter: &Letter) -> Result<Counts, Fail> {
        let r = self.ready.as_ref().expect("prepare() before redrive()");
        let delivery = Delivery {
            dock: &r.dock,
            ledger: &r.store,
            kareo: &r.kareo,
            clock: &SystemClock,
            owner: format!("cli-replay-{}", std::process::id()),
            lease: std::time::Duration::from_secs(300),
        };
        let d = deliver_batch(&delivery, &r.secrets, &r.tenants, &letter.events).await;
        // The letter's rule, or a failure of the whole event (no rule).
        let mine = d.failures.iter().find(|f| {
            f.rule.is_empty() || letter.rule.as_deref().is_none_or(|rule| rule == f.rule)
        });
        match mine {
            Some(f) => Err(Fail {
                class: f.class.to_string(),
                reason: f.reason.clone(),
                permanent: f.permanent,
            }),
            None => Ok(Counts {
                tasks: d.tasks,
                workflows: d.workflows,
                duplicates: d.duplicates,
            }),
        }
    }
}

/// A synchronous `Invoke` of the task function: `--function`, else the letter's own.
pub struct Invoke {
    lambda: Option<aws_sdk_lambda::Client>,
    function: Option<String>,
}

impl Invoke {
    /// To `function`, else to each letter's.
    pub fn new(function: Option<String>) -> Invoke {
        Invoke {
            lambda: None,
            function,
        }
    }
}

impl Redrive for Invoke {
    fn target(&self, letter: &Letter) -> Result<Option<String>, Fail> {
        self.function
            .clone()
            .or_else(|| letter.function.clone())
            .map(Some)
            .ok_or_else(|| {
                Fail::new(
                    "no_function",
                    "the record names no function: give --function",
                )
            })
    }

    async fn prepare(&mut self) -> Result<(), Exit> {
        let sdk = aws::sdk_config().await;
        self.lambda = Some(aws_sdk_lambda::Client::new(&sdk));
        Ok(())
    }

    async fn redrive(&self, letter: &Letter) -> Result<Counts, Fail> {
        let lambda = self.lambda.as_ref().expect("prepare() before redrive()");
        let function = self.target(letter)?.unwrap_or_default();
        let payload = letter
            .payload
            .clone()
            .unwrap_or_else(|| json!({ "events": letter.events }));
        let invoked = lambda
            .invoke()
            .function_name(&function)
            .invocation_type(aws_sdk_lambda::types::InvocationType::RequestResponse)
            .payload(aws_sdk_lambda::primitives::Blob::new(
                serde_json::to_vec(&payload).unwrap_or_default(),
            ))
            .send()
            .await;
        match invoked {
            Ok(out) if out.function_error().is_none() && out.status_code() / 100 == 2 => {
                Ok(Counts::default())
            }
            Ok(out) => {
                let err: Value = out
                    .payload()
                    .and_then(|p| serde_json::from_slice(p.as_ref()).ok())
                    .unwrap_or(Value::Null);
                let class = err
                    .get("errorType")
                    .and_then(Value::as_str)
                    .or(out.function_error())
                    .unwrap_or("function_error");
                let message = err
                    .get("errorMessage")
                    .and_then(Value::as_str)
                    .unwrap_or("");
                Err(Fail::new(class, clip(message, 500)))
            }
            Err(e) => Err(Fail::new(
                "invoke",
                format!(
                    "Invoke {function}: {}",
                    e.code()
                        .map(str::to_string)
                        .unwrap_or_else(|| "no answer".into())
                ),
            )),
        }
    }
}

/// At most `max` bytes of `text` (on a character boundary), `…` when cut.
fn clip(text: &str, max: usize) -> String {
    if text.len() <= max {
        return text.to_string();
    }
    let mut cut = max;
    while !text.is_char_boundary(cut) {
        cut -= 1;
    }
    format!("{}…", &text[..cut])
}
