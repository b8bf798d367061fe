#!/usr/bin/env python3
"""Holds template.yaml to the least-privilege and safety rules cfn-lint and checkov do not know.

Fails (exit 1), naming the resource, the Sid and what is wrong, on:
- a DynamoDB statement without a `dynamodb:LeadingKeys` condition (ForAllValues:...);
- a statement granting `dynamodb:Scan` (a Scan has no leading key to restrict);
- a poll or write role able to read Dock secrets (`dock/`, or a wildcard covering it);
- a role reaching state it never uses: the webhook's cursors and snapshots, a poll role's
  ledger, links and webhook registrations, the write role's anything but tenants and ledger;
- a KMS grant without a `kms:ViaService` condition (the key policy's own AccountAdministers
  aside, and service principals, which the key policy limits by encryption context);
- an endpoint parameter without an `AllowedPattern` starting `^https://`;
- an alarm without `AlarmActions`; a DynamoDB table without deletion protection;
- the write function without `KAREO_DOCK_DIRECT_INVOKE` from `WriteDirectInvoke` (default
  `disabled`).

    python3 tools/check_template.py               # check template.yaml
    python3 tools/check_template.py --self-test   # prove each rule fails on a broken copy

Needs PyYAML (pinned in tools/requirements.txt; scripts/test runs it with that venv's python).
"""

import copy
import fnmatch
import sys
from pathlib import Path

try:
    import yaml
except ImportError:
    sys.exit("check_template.py needs PyYAML: run it with ~/.cache/kareo-dock/venv/bin/python")

TEMPLATE = Path(__file__).resolve().parent.parent / "template.yaml"
ENDPOINTS = ["KareoEndpoint", "DockApiUrl", "DockAuthUrl"]
SECRET_ARN = "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:${SecretPrefix}"
# Partition keys a role must not reach (sample values of each item kind: shared/aws/src/lib.rs).
CURSOR, SNAP = "cursor#acme#patients", "snap#acme#patients"
LEDGER = ["ledger#task#e1#rule", "ledger#write#acme#c-1", "ledger#webhook#acme#e1"]
LINK, HOOK, BREAKER = "link#acme#kareo-patient#1", "hook", "breaker"
FORBIDDEN_KEYS = [
    ("WebhookRole", [CURSOR, SNAP]),
    ("Poll*Role", LEDGER + [LINK, HOOK]),
    ("WriteRole", [CURSOR, SNAP, LINK, HOOK, BREAKER, LEDGER[0], LEDGER[2]]),
]
NO_DOCK_SECRETS = ["Poll*Role", "WriteRole"]


class Loader(yaml.SafeLoader):
    """YAML with CloudFormation's short-form tags, read as their long forms."""


def _tag(loader, suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if suffix == "Ref":
        return {"Ref": value}
    if suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    return {f"Fn::{suffix}": value}


Loader.add_multi_constructor("!", _tag)


def load(path=TEMPLATE):
    return yaml.load(path.read_text(), Loader=Loader)


def as_list(v):
    return v if isinstance(v, list) else [v]


def text(v):
    """A resource or value as text: a `Fn::Sub` string as written, `*` as itself."""
    if isinstance(v, str):
        return v
    if isinstance(v, dict) and "Fn::Sub" in v:
        sub = v["Fn::Sub"]
        return sub if isinstance(sub, str) else sub[0]
    if isinstance(v, dict) and "Fn::GetAtt" in v:
        return "GetAtt:" + ".".join(v["Fn::GetAtt"])
    if isinstance(v, dict) and "Ref" in v:
        return "Ref:" + v["Ref"]
    return repr(v)


def grants(stmt, action):
    """Whether an Allow statement's actions cover `action` (IAM wildcards, case-insensitive)."""
    if stmt.get("Effect") != "Allow":
        return False
    return any(fnmatch.fnmatchcase(action.lower(), str(a).lower()) for a in as_list(stmt.get("Action", [])))


def grants_service(stmt, service):
    if stmt.get("Effect") != "Allow":
        return False
    return any(str(a) == "*" or str(a).lower().startswith(service + ":")
               for a in as_list(stmt.get("Action", [])))


def leading_keys(stmt):
    """The `dynamodb:LeadingKeys` patterns of a ForAllValues condition, or None."""
    for op, keys in (stmt.get("Condition") or {}).items():
        if op.startswith("ForAllValues:") and "dynamodb:LeadingKeys" in keys:
            patterns = as_list(keys["dynamodb:LeadingKeys"])
            return [str(p) for p in patterns] if patterns else None
    return None


def role_statements(t):
    for name, res in t["Resources"].items():
        if res.get("Type") != "AWS::IAM::Role":
            continue
        for policy in res["Properties"].get("Policies", []):
            for stmt in as_list(policy["PolicyDocument"]["Statement"]):
                yield name, stmt


def check(t):
    """Every broken rule, as (rule, message)."""
    out = []
    bad = lambda rule, where, sid, what: out.append((rule, f"{where} {sid or '(no Sid)'}: {what}"))
    resources = t["Resources"]

    for role, stmt in role_statements(t):
        sid = stmt.get("Sid")
        if grants_service(stmt, "dynamodb"):
            keys = leading_keys(stmt)
            if not keys or "*" in keys:
                bad("leading-keys", role, sid, "a DynamoDB statement without a dynamodb:LeadingKeys condition")
            else:
                for pattern, forbidden in FORBIDDEN_KEYS:
                    if fnmatch.fnmatchcase(role, pattern):
                        for key in forbidden:
                            if any(fnmatch.fnmatchcase(key, k) for k in keys):
                                bad("state-kinds", role, sid, f"reaches items it never uses ({key!r} matches {keys})")
        if grants(stmt, "dynamodb:Scan"):
            bad("scan", role, sid, "grants dynamodb:Scan (it cannot be limited by leading keys)")
        if grants(stmt, "secretsmanager:GetSecretValue") and any(
                fnmatch.fnmatchcase(role, p) for p in NO_DOCK_SECRETS):
            dock = SECRET_ARN + "dock/acme-AbCdEf"
            for r in as_list(stmt.get("Resource", [])):
                if fnmatch.fnmatchcase(dock, text(r)):
                    bad("dock-secrets", role, sid, f"can read Dock secrets ({text(r)})")
        if grants_service(stmt, "kms") and "kms:ViaService" not in str(stmt.get("Condition")):
            bad("kms-via", role, sid, "a KMS grant without a kms:ViaService condition")

    for name, res in resources.items():
        props = res.get("Properties") or {}
        kind = res.get("Type")
        if kind == "AWS::KMS::Key":
            for stmt in as_list(props.get("KeyPolicy", {}).get("Statement", [])):
                principal = stmt.get("Principal")
                by_service = isinstance(principal, dict) and set(principal) == {"Service"}
                if (stmt.get("Sid") != "AccountAdministers" and not by_service
                        and grants_service(stmt, "kms")
                        and "kms:ViaService" not in str(stmt.get("Condition"))):
                    bad("kms-via", name, stmt.get("Sid"), "a KMS grant without a kms:ViaService condition")
        if kind == "AWS::CloudWatch::Alarm" and not props.get("AlarmActions"):
            bad("alarm-actions", name, None, "an alarm without AlarmActions")
        if kind == "AWS::DynamoDB::Table" and props.get("DeletionProtectionEnabled") is not True:
            bad("deletion-protection", name, None, "DeletionProtectionEnabled is not true")

    params = t.get("Parameters", {})
    for p in ENDPOINTS:
        pattern = str((params.get(p) or {}).get("AllowedPattern", ""))
        if not pattern.startswith("^https://"):
            bad("https", f"parameter {p}", None, f"AllowedPattern {pattern!r} does not start with ^https://")
    direct = params.get("WriteDirectInvoke") or {}
    if direct.get("Default") != "disabled" or sorted(direct.get("AllowedValues", [])) != ["disabled", "enabled"]:
        bad("direct-invoke", "parameter WriteDirectInvoke", None, "must allow disabled/enabled, default disabled")
    env = (((resources.get("WriteFunction") or {}).get("Properties") or {}).get("Environment") or {}).get("Variables") or {}
    if env.get("KAREO_DOCK_DIRECT_INVOKE") != {"Ref": "WriteDirectInvoke"}:
        bad("direct-invoke", "WriteFunction", None, "KAREO_DOCK_DIRECT_INVOKE is not !Ref WriteDirectInvoke")
    return out


def statement(t, role, sid):
    for name, stmt in role_statements(t):
        if name == role and stmt.get("Sid") == sid:
            return stmt
    raise KeyError(f"{role} {sid}")


def _set(path, value):
    def apply(t):
        node = t
        for k in path[:-1]:
            node = node[k]
        if value is None:
            del node[path[-1]]
        else:
            node[path[-1]] = value
    return apply


# (rule the mutation must trip, what it does, the mutation of a parsed template)
MUTATIONS = [
    ("leading-keys", "drop LeadingKeys from PollPatientsRole StateCursors",
     lambda t: statement(t, "PollPatientsRole", "StateCursors").pop("Condition")),
    ("leading-keys", "LeadingKeys ['*'] on TaskRole StateLedger",
     lambda t: statement(t, "TaskRole", "StateLedger")["Condition"]["ForAllValues:StringLike"]
     .update({"dynamodb:LeadingKeys": ["*"]})),
    ("scan", "add dynamodb:Scan to WriteRole StateTenants",
     lambda t: statement(t, "WriteRole", "StateTenants")["Action"].append("dynamodb:Scan")),
    ("scan", "dynamodb:* on WebhookRole StateLinks",
     lambda t: statement(t, "WebhookRole", "StateLinks").update({"Action": ["dynamodb:*"]})),
    ("dock-secrets", "widen PollPatientsRole Secrets to ${SecretPrefix}*",
     lambda t: statement(t, "PollPatientsRole", "Secrets").update(
         {"Resource": {"Fn::Sub": SECRET_ARN + "*"}})),
    ("dock-secrets", "add dock/* to WriteRole Secrets",
     lambda t: statement(t, "WriteRole", "Secrets").update(
         {"Resource": [{"Fn::Sub": SECRET_ARN + "kareo/*"}, {"Fn::Sub": SECRET_ARN + "dock/*"}]})),
    ("dock-secrets", "Resource * on PollChargesRole Secrets",
     lambda t: statement(t, "PollChargesRole", "Secrets").update({"Resource": "*"})),
    ("state-kinds", "let WebhookRole StateLinks reach snap#*",
     lambda t: statement(t, "WebhookRole", "StateLinks")["Condition"]["ForAllValues:StringLike"]
     ["dynamodb:LeadingKeys"].append("snap#*")),
    ("state-kinds", "let WebhookRole StateTenants reach cursor#*",
     lambda t: statement(t, "WebhookRole", "StateTenants")["Condition"]["ForAllValues:StringLike"]
     ["dynamodb:LeadingKeys"].append("*cursor*")),
    ("state-kinds", "let PollPaymentsRole StateSnapshots reach ledger#*",
     lambda t: statement(t, "PollPaymentsRole", "StateSnapshots")["Condition"]["ForAllValues:StringLike"]
     ["dynamodb:LeadingKeys"].append("ledger#*")),
    ("kms-via", "drop kms:ViaService from TaskRole DataKey",
     lambda t: statement(t, "TaskRole", "DataKey").pop("Condition")),
    ("kms-via", "a kms:Decrypt statement without ViaService in WebhookRole",
     lambda t: t["Resources"]["WebhookRole"]["Properties"]["Policies"][0]["PolicyDocument"]["Statement"]
     .append({"Sid": "Extra", "Effect": "Allow", "Action": "kms:Decrypt", "Resource": "*"})),
    ("kms-via", "a key-policy grant to an AWS principal without ViaService",
     lambda t: t["Resources"]["DataKey"]["Properties"]["KeyPolicy"]["Statement"].append(
         {"Sid": "Other", "Effect": "Allow", "Principal": {"AWS": "arn:aws:iam::123456789012:root"},
          "Action": ["kms:Decrypt"], "Resource": "*"})),
    ("https", "drop AllowedPattern from DockAuthUrl", _set(["Parameters", "DockAuthUrl", "AllowedPattern"], None)),
    ("https", "KareoEndpoint AllowedPattern ^http", _set(["Parameters", "KareoEndpoint", "AllowedPattern"], "^https?://.+$")),
    ("alarm-actions", "drop AlarmActions from TaskErrors",
     _set(["Resources", "TaskErrors", "Properties", "AlarmActions"], None)),
    ("deletion-protection", "DeletionProtectionEnabled false",
     _set(["Resources", "StateTable", "Properties", "DeletionProtectionEnabled"], False)),
    ("deletion-protection", "drop DeletionProtectionEnabled",
     _set(["Resources", "StateTable", "Properties", "DeletionProtectionEnabled"], None)),
    ("direct-invoke", "drop KAREO_DOCK_DIRECT_INVOKE from WriteFunction",
     _set(["Resources", "WriteFunction", "Properties", "Environment", "Variables", "KAREO_DOCK_DIRECT_INVOKE"], None)),
    ("direct-invoke", "WriteDirectInvoke default enabled", _set(["Parameters", "WriteDirectInvoke", "Default"], "enabled")),
]


def self_test(t):
    failed = 0
    if check(t):
        print("self-test: template.yaml itself fails the check", file=sys.stderr)
        failed += 1
    for rule, what, mutate in MUTATIONS:
        m = copy.deepcopy(t)
        mutate(m)
        rules = {r for r, _ in check(m)}
        if rule not in rules:
            print(f"self-test: not caught by rule {rule}: {what} (found: {sorted(rules) or 'nothing'})",
                  file=sys.stderr)
            failed += 1
    if failed:
        sys.exit(1)
    print(f"check_template self-test: {len(MUTATIONS)} broken copies, each caught")


def main():
    t = load()
    if "--self-test" in sys.argv:
        self_test(t)
        return
    problems = check(t)
    for rule, message in problems:
        print(f"template.yaml: {message} [{rule}]", file=sys.stderr)
    if problems:
        sys.exit(1)


if __name__ == "__main__":
    main()
