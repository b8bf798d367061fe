//! Who may send a tenant's write commands to the write function's URL: the tenant's
//! `writers:`, a list of IAM principal ARNs. The Function URL (auth `AWS_IAM`) proves the
//! caller; this list decides whether that caller may write to *this* practice's Kareo.
//!
//! An entry is matched exactly, except a role (`arn:aws:iam::123456789012:role/path/Name`),
//! which also matches every session of it (`arn:aws:sts::123456789012:assumed-role/Name/…`:
//! what the Function URL names when a role signs the request; STS drops the role's path).
//! No wildcards: a list names principals, not patterns. An empty or absent list lets no one
//! write over the URL.

/// One allowed principal.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Principal {
    /// An IAM role: itself, and its sessions.
    Role {
        partition: String,
        account: String,
        name: String,
        arn: String,
    },
    /// Any other principal (user, one assumed-role session, the account root): itself.
    Exact(String),
}

/// The principals allowed to write for a tenant (`writers:`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Writers(Vec<Principal>);

/// The parts of an IAM or STS ARN: `arn:<partition>:<iam|sts>::<account>:<resource>`.
fn parts(arn: &str) -> Option<(&str, &str, &str, &str)> {
    let mut it = arn.splitn(6, ':');
    let (Some("arn"), Some(partition), Some(service), Some(""), Some(account), Some(resource)) = (
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
        it.next(),
    ) else {
        return None;
    };
    let partition_ok = !partition.is_empty()
        && partition
            .chars()
            .all(|c| c.is_ascii_lowercase() || c == '-');
    let account_ok = account.len() == 12 && account.chars().all(|c| c.is_ascii_digit());
    (partition_ok && matches!(service, "iam" | "sts") && account_ok && !resource.is_empty())
        .then_some((partition, service, account, resource))
}

impl Writers {
    /// Reads the list; the error names the entry by position (never its text: an operator may
    /// paste a secret by mistake).
    pub fn parse<'a>(arns: impl IntoIterator<Item = &'a str>) -> Result<Writers, String> {
        let mut out = Vec::new();
        for (i, arn) in arns.into_iter().enumerate() {
            let Some((partition, service, account, resource)) = parts(arn) else {
                return Err(format!(
                    "writers[{i}]: expected an IAM principal ARN \
                     (arn:aws:iam::<account>:role/<name>, …:user/<name>, or an \
                     arn:aws:sts::<account>:assumed-role/<name>/<session>)"
                ));
            };
            let role = resource
                .strip_prefix("role/")
                .filter(|_| service == "iam")
                .and_then(|path| path.rsplit('/').next())
                .filter(|name| !name.is_empty());
            out.push(match role {
                Some(name) => Principal::Role {
                    partition: partition.to_string(),
                    account: account.to_string(),
                    name: name.to_string(),
                    arn: arn.to_string(),
                },
                None => Principal::Exact(arn.to_string()),
            });
        }
        Ok(Writers(out))
    }

    /// Whether `caller` (the Function URL's `requestContext.authorizer.iam.userArn`) may write.
    pub fn allows(&self, caller: &str) -> bool {
        let session = parts(caller).and_then(|(partition, service, account, resource)| {
            let rest = resource.strip_prefix("assumed-role/")?;
            let (name, session) = rest.split_once('/')?;
            (service == "sts" && !session.is_empty()).then_some((partition, account, name))
        });
        self.0.iter().any(|p| match p {
            Principal::Exact(arn) => arn == caller,
            Principal::Role {
                partition,
                account,
                name,
                arn,
            } => arn == caller || session == Some((partition, account, name)),
        })
    }

    /// Whether the list is empty (no one may write over the URL).
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// How many principals are listed.
    pub fn len(&self) -> usize {
        self.0.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ROLE: &str = "arn:aws:iam::123456789012:role/apps/front-desk";

    #[test]
    fn a_role_allows_itself_and_its_sessions_and_nothing_near_it() {
        let w = Writers::parse([ROLE, "arn:aws:iam::123456789012:user/ops"]).unwrap();
        assert!(w.allows(ROLE));
        assert!(w.allows("arn:aws:sts::123456789012:assumed-role/front-desk/i-0abc"));
        assert!(w.allows("arn:aws:iam::123456789012:user/ops"));
        for other in [
            "arn:aws:sts::123456789012:assumed-role/front-desk-2/s",
            "arn:aws:sts::999999999999:assumed-role/front-desk/s",
            "arn:aws-cn:sts::123456789012:assumed-role/front-desk/s",
            "arn:aws:sts::123456789012:assumed-role/front-desk/",
            "arn:aws:iam::123456789012:role/front-desk",
            "arn:aws:iam::123456789012:user/ops2",
            "arn:aws:iam::123456789012:root",
            "",
        ] {
            assert!(!w.allows(other), "{other}");
        }
        assert!(!Writers::default().allows(ROLE));
    }

    #[test]
    fn a_malformed_entry_is_named_by_position_not_by_text() {
        for bad in [
            "front-desk",
            "arn:aws:s3:::bucket",
            "arn:aws:iam::12345:role/x",
            "arn:aws:iam:us-east-1:123456789012:role/x",
            "arn:aws:iam::123456789012:",
        ] {
            let e = Writers::parse([ROLE, bad]).unwrap_err();
            assert!(
                e.starts_with("writers[1]: expected an IAM principal ARN"),
                "{e}"
            );
            assert!(!bad.is_empty() && !e.contains(bad), "{e}");
        }
    }
}
