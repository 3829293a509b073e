"""Wiring of the Terraform deployment, read from the HCL itself (python-hcl2), not from
its text: the numbers that must agree come from one variable, queues outlive their
consumers' timeouts, every function is pointed at resources that exist, IAM has no
wildcard actions, the webhook queue hears the job-events topic and nothing else, and no
role manages SNS subscriptions.

Run: .venv/bin/pytest -q terraform/tests
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfconfig import (  # noqa: E402
    BinOp,
    Call,
    Cond,
    Config,
    ForExpr,
    Obj,
    Ref,
    Template,
    Tup,
    Unary,
    Unknown,
    load_file,
    node_of,
    refs_in,
)

TF_DIR = Path(__file__).resolve().parent.parent
# The scale model, which derives the default write budget (write_budget_per_sec).
SCALING_DOC = TF_DIR.parent / "docs" / "scaling.md"
DEFAULT_BUDGET_LINE = re.compile(r"\*\*Default write budget: ([0-9][0-9,]*) writes/s\*\*")

CONCURRENCY = Ref(("var", "worker_max_concurrency"))
MAX_RECEIVE_COUNT = Ref(("var", "max_receive_count"))

# The environment every function reads (shared/aws/src/lib.rs, shared/core/src/config.rs,
# shared/core/src/telemetry.rs).
REQUIRED_ENV = {
    "CATALOG_TABLE", "JOBS_TABLE", "FANOUT_QUEUE_URL", "CHUNK_QUEUE_URL", "CHUNK_DLQ_URL",
    "WEBHOOK_QUEUE_URL", "EVENTS_TOPIC_ARN", "WEBHOOK_VISIBILITY_TIMEOUT_SECS", "UPLOADS_BUCKET",
    "MAX_IMPORT_BYTES", "IMPORT_UPLOAD_EXPIRY_SECS",
    "WEBHOOK_RETRY_HOURS", "CHUNK_SIZE", "FANOUT_PAGE_SIZE", "WRITE_BUDGET_PER_SEC",
    "WORKER_MAX_CONCURRENCY", "MAX_RECEIVE_COUNT", "VISIBILITY_TIMEOUT_SECS",
    "FAILURE_THRESHOLD", "FAILURE_MIN_SAMPLE", "LOG_FORMAT", "RUST_LOG", "BRAND_CLAIM",
    "AUTH_MODE", "LINK_SHARDS", "WEBHOOK_DISABLE_AFTER_DAYS", "WEBHOOK_SECRETS_KEY_ID",
    "DRIFT_SETTLE_MINUTES",
}

# What the HTTP functions read besides (shared/core/src/config.rs): each brand's request limit.
API_FUNCTIONS = {"job_api", "status"}
API_ENV = {
    "BRAND_RATE_PER_SEC": Ref(("var", "brand_requests_per_sec")),
    "BRAND_RATE_BURST": Ref(("var", "brand_request_burst")),
    "REPORT_ROWS_PER_RESPONSE": Ref(("var", "report_rows_per_response")),
    "APPROVAL_ABOVE_LOCATIONS": Ref(("var", "approval_above_locations")),
}

# Env var naming a resource -> (resource type, attribute, resource name at the defaults).
RESOURCE_ENV = {
    "CATALOG_TABLE": ("aws_dynamodb_table", "name", "bulklink-catalog"),
    "JOBS_TABLE": ("aws_dynamodb_table", "name", "bulklink-jobs"),
    "FANOUT_QUEUE_URL": ("aws_sqs_queue", "url", "bulklink-fanout"),
    "CHUNK_QUEUE_URL": ("aws_sqs_queue", "url", "bulklink-chunks"),
    "CHUNK_DLQ_URL": ("aws_sqs_queue", "url", "bulklink-chunks-dlq"),
    "WEBHOOK_QUEUE_URL": ("aws_sqs_queue", "url", "bulklink-webhooks"),
    "EVENTS_TOPIC_ARN": ("aws_sns_topic", "arn", "bulklink-job-events"),
    "UPLOADS_BUCKET": ("aws_s3_bucket", "id", "bulklink-uploads-"),
}

# Each queue consumed by an event source mapping -> its consumer.
CONSUMERS = {
    "fanout": "fanout",
    "chunks": "worker",
    "chunks_dlq": "worker_dlq",
    "webhooks": "webhooks",
}

# Webhooks are bulklink's own, not SNS subscriptions: no role may manage subscriptions.
SNS_SUBSCRIPTION_ACTIONS = {
    "sns:subscribe", "sns:unsubscribe", "sns:getsubscriptionattributes",
    "sns:confirmsubscription",
}

ROUTES = {
    "POST /offers/{offerId}/link-all-locations": "job_api",
    "POST /jobs/{jobId}/cancel": "job_api",
    "POST /jobs/{jobId}/approve": "job_api",
    "POST /jobs/{jobId}/reject": "job_api",
    "POST /jobs/{jobId}/pause": "job_api",
    "POST /jobs/{jobId}/resume": "job_api",
    "POST /offers": "job_api",
    "POST /locations": "job_api",
    "PUT /offers/{offerId}/locations/{locationId}": "job_api",
    "POST /offers/{offerId}/unlink-all-locations": "job_api",
    "POST /jobs/{jobId}/undo": "job_api",
    "POST /jobs/{jobId}/retry-failures": "job_api",
    "PATCH /offers/{offerId}": "job_api",
    "DELETE /offers/{offerId}": "job_api",
    "PATCH /locations/{locationId}": "job_api",
    "DELETE /locations/{locationId}": "job_api",
    "PUT /locations/by-external-id/{externalId}": "job_api",
    "PUT /offers/{offerId}/rule": "job_api",
    "DELETE /offers/{offerId}/rule": "job_api",
    "POST /imports": "job_api",
    "GET /imports/{importId}": "status",
    "GET /admin/write-budget": "job_api",
    "PUT /admin/write-budget": "job_api",
    "GET /jobs/{jobId}": "status",
    "GET /jobs/{jobId}/failures": "status",
    "GET /jobs/{jobId}/report": "status",
    "GET /jobs": "status",
    "GET /offers/{offerId}": "status",
    "GET /offers/{offerId}/locations": "status",
    "GET /locations/{locationId}": "status",
    "GET /locations": "status",
    "GET /offers": "status",
    "GET /offers/{offerId}/rule": "status",
    "GET /offers/{offerId}/drift": "status",
    "GET /jobs/{jobId}/deliveries": "status",
    "POST /webhooks": "status",
    "GET /webhooks": "status",
    "GET /webhooks/{id}": "status",
    "GET /webhooks/event-types": "status",
    "DELETE /webhooks/{id}": "status",
    "POST /webhooks/{id}/rotate-secret": "status",
    "GET /webhooks/{id}/deliveries": "status",
    "POST /webhooks/{id}/deliveries/{deliveryId}/redeliver": "status",
    "POST /webhooks/{id}/test": "status",
    "POST /webhooks/{id}/replay": "status",
    "POST /webhooks/{id}/enable": "status",
    "GET /healthz": "status",
    "GET /openapi.json": "status",
    "GET /console": "status",
    "GET /console/{proxy+}": "status",
}


# Documented, served by `bulklink serve` alone: on AWS an import's file goes straight to S3.
EMBEDDED_ONLY = {"PUT /imports/{importId}/file"}


# What anyone may fetch: the liveness probe, the contract and the console's static page (its
# data comes from the authorized routes).
PUBLIC_ROUTES = ("GET /healthz", "GET /openapi.json", "GET /console", "GET /console/{proxy+}")


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.load(TF_DIR)


# --- helpers ----------------------------------------------------------------------------------


def target(node, rtype: str) -> str:
    """The name of the `rtype` resource a single-reference expression points at."""
    refs = [r for r in refs_in(node) if r.names[0] == rtype]
    assert len(refs) == 1, f"expected one reference to a {rtype}, got {node!r}"
    return refs[0].names[1]


def stream_mapping(cfg: Config, body) -> bool:
    """Whether an ESM reads a DynamoDB stream (not a queue)."""
    source = cfg.expr(body, "event_source_arn")
    return any(r.names[0] == "aws_dynamodb_table" for r in refs_in(source))


def mappings(cfg: Config) -> dict:
    """Queue ESM name -> (queue resource name, function resource name, ESM body)."""
    out = {}
    for name, body in cfg.of_type("aws_lambda_event_source_mapping").items():
        if stream_mapping(cfg, body):
            continue
        queue = target(cfg.expr(body, "event_source_arn"), "aws_sqs_queue")
        function = target(cfg.expr(body, "function_name"), "aws_lambda_function")
        out[name] = (queue, function, body)
    return out


def environment(cfg: Config, function: str) -> dict:
    body = cfg.resource("aws_lambda_function", function)
    return cfg.resolve_object(cfg.expr(body, "environment", "variables"))


def validation_accepts(cfg: Config, variable: str, value) -> bool:
    checks = cfg.variables[variable].get("validation", [])
    assert checks, f"var.{variable} has no validation"
    return all(cfg.eval(node_of(v["condition"]), {variable: value}) for v in checks)


def policy_statements(cfg: Config) -> list[tuple[str, dict]]:
    """(where, statement) for every statement of every policy in the configuration:
    aws_iam_policy_document data sources and jsonencode()d policy attributes."""
    found = []
    for (dtype, name), body in cfg.data.items():
        if dtype == "aws_iam_policy_document":
            for i, st in enumerate(body.get("statement", [])):
                found.append((f"data.{dtype}.{name} statement {i}", st))
    for (rtype, name), body in cfg.resources.items():
        for attr in ("policy", "assume_role_policy", "inline_policy"):
            if attr not in body:
                continue
            node = node_of(body[attr])
            if isinstance(node, Call) and node.name == "jsonencode":
                doc = node.args[0]
                assert isinstance(doc, Obj), f"{rtype}.{name}.{attr}: not an object literal"
                statements = doc.as_dict().get("Statement", Tup(()))
                items = statements.items if isinstance(statements, Tup) else (statements,)
                for i, st in enumerate(items):
                    d = st.as_dict()
                    actions = d.get("Action", Tup(()))
                    actions = actions.items if isinstance(actions, Tup) else (actions,)
                    found.append(
                        (f"{rtype}.{name}.{attr} statement {i}",
                         {"actions": ["".join(a.parts) for a in actions if isinstance(a, Template)]})
                    )
    return found


def index_key(cfg: Config, ref: Ref):
    """The evaluated key of a reference's index step: "webhooks" of
    aws_iam_role.lambda["webhooks"].arn; None without one."""
    steps = [step for step in ref.path if isinstance(step, tuple) and step[0] == "["]
    assert len(steps) <= 1, f"several index steps in {ref!r}"
    return cfg.eval(steps[0][1]) if steps else None


def symbolic(cfg: Config, value) -> str:
    """A policy resource as text with references spelled out, locals followed:
    "${aws_dynamodb_table.jobs.arn}/index/*" -> "aws_dynamodb_table.jobs.arn/index/*"."""

    def spell(node) -> str:
        node = cfg.resolve(node)
        if isinstance(node, Ref):
            return node.dotted()
        assert isinstance(node, Template), f"unexpected policy resource {node!r}"
        return "".join(p if isinstance(p, str) else spell(p) for p in node.parts)

    return spell(node_of(value))


def service_principals(statement: dict) -> list:
    """The Service principals of a policy statement: literal names as text, interpolated
    ones (logs.${var.aws_region}.amazonaws.com) as their syntax tree."""
    out = []
    for principal in statement.get("principals", []):
        if principal["type"] != "Service":
            continue
        for identifier in principal["identifiers"]:
            node = node_of(identifier)
            literal = all(isinstance(p, str) for p in node.parts)
            out.append("".join(node.parts) if literal else repr(node))
    return out


def role_statements(cfg: Config) -> dict:
    """Function key (of local.function_names) -> the statements of its role's inline policy."""
    out = {}
    for name, body in cfg.of_type("aws_iam_role_policy").items():
        (role,) = [r for r in refs_in(cfg.expr(body, "role")) if r.names[0] == "aws_iam_role"]
        function = index_key(cfg, role)
        (doc,) = [r for r in refs_in(cfg.expr(body, "policy")) if r.names[0] == "data"]
        assert function not in out, f"two inline policies on the {function} role"
        out[function] = cfg.data[("aws_iam_policy_document", doc.names[2])]["statement"]
    return out


def allows(cfg: Config, statements: list, action: str, resource: str) -> bool:
    """Whether an Allow statement grants `action` on `resource` (IAM's * as a glob)."""
    for st in statements:
        if st.get("effect", "Allow") != "Allow" or action not in st.get("actions", []):
            continue
        if any(fnmatch.fnmatchcase(resource, symbolic(cfg, r)) for r in st.get("resources", [])):
            return True
    return False


def substitute(node, replacements: dict):
    """The node with each reference in `replacements` replaced by its expression (e.g. a
    resource attribute by the expression it is set to), so that it can be evaluated."""
    if isinstance(node, Ref):
        return replacements.get(node, node)
    if isinstance(node, BinOp):
        return BinOp(node.op, substitute(node.left, replacements), substitute(node.right, replacements))
    if isinstance(node, Unary):
        return Unary(node.op, substitute(node.operand, replacements))
    if isinstance(node, Cond):
        return Cond(*(substitute(n, replacements) for n in (node.cond, node.then, node.other)))
    if isinstance(node, Call):
        return Call(node.name, tuple(substitute(a, replacements) for a in node.args))
    return node


def redrive_target(cfg: Config, queue: str) -> str:
    policy = cfg.expr(cfg.resource("aws_sqs_queue", queue), "redrive_policy")
    return target(policy.args[0].as_dict()["deadLetterTargetArn"], "aws_sqs_queue")


# --- the tests ----------------------------------------------------------------------------------


def test_every_tf_file_parses():
    files = sorted(TF_DIR.glob("*.tf"))
    names = {f.name for f in files}
    assert {"versions.tf", "variables.tf", "outputs.tf"} <= names
    for path in files:
        parsed = load_file(path)
        assert parsed, f"{path.name} parsed to nothing"


def test_every_expression_in_the_configuration_is_understood_by_this_reader(cfg):
    def walk(value, where):
        if isinstance(value, dict):
            for k, v in value.items():
                walk(v, f"{where}.{k}")
        elif isinstance(value, list):
            for i, v in enumerate(value):
                walk(v, f"{where}[{i}]")
        else:
            try:
                node_of(value)
            except SyntaxError as e:  # pragma: no cover - message for the reader
                pytest.fail(f"{where}: {e}")

    for name, parsed in cfg.files.items():
        walk(parsed, name)


def test_the_worker_concurrency_comes_from_one_variable_in_all_three_places(cfg):
    worker = cfg.resource("aws_lambda_function", "worker")
    assert cfg.expr(worker, "reserved_concurrent_executions") == CONCURRENCY

    chunk_mappings = [body for _, (q, fn, body) in mappings(cfg).items() if fn == "worker"]
    assert len(chunk_mappings) == 1, "exactly one event source mapping should feed the worker"
    assert cfg.expr(chunk_mappings[0], "scaling_config", "maximum_concurrency") == CONCURRENCY

    assert environment(cfg, "worker")["WORKER_MAX_CONCURRENCY"] == CONCURRENCY


def test_the_worker_concurrency_is_at_least_two_as_sqs_event_sources_require(cfg):
    assert cfg.variables["worker_max_concurrency"]["default"] >= 2
    assert not validation_accepts(cfg, "worker_max_concurrency", 1)
    assert validation_accepts(cfg, "worker_max_concurrency", 2)


def test_only_the_worker_reserves_concurrency(cfg):
    reserving = {
        name for name, body in cfg.of_type("aws_lambda_function").items()
        if "reserved_concurrent_executions" in body
    }
    assert reserving == {"worker"}


def test_each_consumed_queue_hides_a_message_for_at_least_six_times_its_consumers_timeout(cfg):
    consumed = {queue: function for queue, function, _ in mappings(cfg).values()}
    assert consumed == CONSUMERS, "one event source mapping per consumed queue, the webhook queue included"
    for esm, (queue, function, _) in mappings(cfg).items():
        queue_body = cfg.resource("aws_sqs_queue", queue)
        assert "visibility_timeout_seconds" in queue_body, f"{queue} keeps the 30 s default"
        visibility = cfg.expr(queue_body, "visibility_timeout_seconds")
        timeout = cfg.expr(cfg.resource("aws_lambda_function", function), "timeout")

        # At the defaults...
        assert cfg.eval(visibility) >= 6 * cfg.eval(timeout), f"{queue} vs {function}"
        # ...and whatever the timeout is set to: the visibility is derived from it.
        for var in {r.names[1] for r in refs_in(timeout) if r.names[0] == "var"}:
            for value in (1, 30, 299, 900):
                assert cfg.eval(visibility, {var: value}) >= 6 * cfg.eval(timeout, {var: value}), (
                    f"{queue} with var.{var} = {value}"
                )


def test_every_main_queue_is_consumed_and_redrives_to_its_own_dead_letter_queue(cfg):
    consumed = {queue for queue, _, _ in mappings(cfg).values()}
    redriving = {
        name: body for name, body in cfg.of_type("aws_sqs_queue").items() if "redrive_policy" in body
    }
    assert set(redriving) == {"fanout", "chunks", "webhooks"}
    dead_letter_queues = [redrive_target(cfg, name) for name in redriving]
    assert len(set(dead_letter_queues)) == len(dead_letter_queues), "a dead-letter queue per queue"
    for name, body in redriving.items():
        assert name in consumed, f"nothing consumes {name}"
        policy = cfg.expr(body, "redrive_policy")
        assert isinstance(policy, Call) and policy.name == "jsonencode"
        fields = policy.args[0].as_dict()
        dlq = target(fields["deadLetterTargetArn"], "aws_sqs_queue")
        assert dlq != name and ("aws_sqs_queue", dlq) in cfg.resources
        assert fields["deadLetterTargetArn"].names[-1] == "arn"


def test_messages_are_dead_lettered_after_max_receive_count_deliveries_of_at_least_five(cfg):
    assert cfg.variables["max_receive_count"]["default"] >= 5
    assert not validation_accepts(cfg, "max_receive_count", 4)
    assert validation_accepts(cfg, "max_receive_count", 5)

    redriving = [body for body in cfg.of_type("aws_sqs_queue").values() if "redrive_policy" in body]
    assert redriving
    for body in redriving:
        fields = cfg.expr(body, "redrive_policy").args[0].as_dict()
        assert fields["maxReceiveCount"] == MAX_RECEIVE_COUNT
    for function in cfg.of_type("aws_lambda_function"):
        assert environment(cfg, function)["MAX_RECEIVE_COUNT"] == MAX_RECEIVE_COUNT


def test_every_event_source_mapping_reports_batch_item_failures(cfg):
    esms = cfg.of_type("aws_lambda_event_source_mapping")
    assert {queue for queue, _, _ in mappings(cfg).values()} == set(CONSUMERS)
    for name, body in esms.items():
        types = cfg.eval(cfg.expr(body, "function_response_types"))
        assert "ReportBatchItemFailures" in types, name


def test_every_function_gets_the_whole_environment_from_resources_and_variables(cfg):
    functions = cfg.of_type("aws_lambda_function")
    assert len(functions) == 8
    for function in functions:
        env = environment(cfg, function)
        missing = REQUIRED_ENV - set(env)
        assert not missing, f"{function} lacks {sorted(missing)}"
        for key, node in env.items():
            if key in ("LOG_FORMAT", "RUST_LOG", "WORKER_SOURCE", "AUTH_MODE"):
                continue
            assert isinstance(node, Ref) and node.names[0] != "local", (
                f"{function}: {key} is not taken from a variable or resource: {node!r}"
            )
        visibility = env["VISIBILITY_TIMEOUT_SECS"]
        assert visibility.names == ("aws_sqs_queue", "chunks", "visibility_timeout_seconds")


def test_the_functions_trust_the_authorizer_exactly_when_it_is_on(cfg):
    for function in cfg.of_type("aws_lambda_function"):
        mode = environment(cfg, function)["AUTH_MODE"]
        assert cfg.eval(mode, {"authorizer_enabled": True}) == "gateway", function
        assert cfg.eval(mode, {"authorizer_enabled": False}) == "none", function
        assert environment(cfg, function)["BRAND_CLAIM"] == Ref(("var", "brand_claim"))
    assert validation_accepts(cfg, "brand_claim", "custom:brand_id")
    assert not validation_accepts(cfg, "brand_claim", "brand id")


def test_every_table_queue_and_topic_variable_names_a_declared_resource(cfg):
    for function in cfg.of_type("aws_lambda_function"):
        env = environment(cfg, function)
        for key, (rtype, attr, resource_name) in RESOURCE_ENV.items():
            node = env[key]
            assert isinstance(node, Ref), f"{function}: {key} = {node!r}"
            assert len(node.names) == 3 and node.names[0] == rtype and node.names[2] == attr, (
                f"{function}: {key} should be a {rtype}'s {attr}, is {node.dotted()}"
            )
            declared = cfg.resources.get((rtype, node.names[1]))
            assert declared is not None, f"{function}: {key} names undeclared {node.dotted()}"
            # A bucket is named by its prefix (S3 adds a unique suffix).
            named_by = "bucket_prefix" if rtype == "aws_s3_bucket" else "name"
            assert cfg.eval(cfg.expr(declared, named_by)) == resource_name, (
                f"{function}: {key} points at {node.dotted()}, not at {resource_name}"
            )


def test_worker_and_worker_dlq_run_one_artifact_on_the_chunk_queue_and_its_dead_letters(cfg):
    worker = cfg.resource("aws_lambda_function", "worker")
    worker_dlq = cfg.resource("aws_lambda_function", "worker_dlq")
    assert cfg.expr(worker, "filename") == cfg.expr(worker_dlq, "filename")
    assert cfg.eval(environment(cfg, "worker")["WORKER_SOURCE"]) == "chunks"
    assert cfg.eval(environment(cfg, "worker_dlq")["WORKER_SOURCE"]) == "dead-letters"

    sources = {fn: queue for queue, fn, _ in mappings(cfg).values()}
    chunk_redrive = cfg.expr(cfg.resource("aws_sqs_queue", "chunks"), "redrive_policy")
    chunk_dlq = target(chunk_redrive.args[0].as_dict()["deadLetterTargetArn"], "aws_sqs_queue")
    assert sources["worker"] == "chunks"
    assert sources["worker_dlq"] == chunk_dlq


def test_no_iam_statement_grants_a_wildcard_action(cfg):
    statements = policy_statements(cfg)
    assert len(statements) >= 20
    for where, st in statements:
        # A wildcard denied grants nothing (the uploads bucket refuses s3:* without TLS).
        if st.get("effect") == "Deny" and "actions" in st:
            continue
        for key in ("actions", "not_actions"):
            for action in st.get(key, []):
                assert action != "*", f"{where}: Action \"*\""
                assert not action.endswith(":*"), f"{where}: service wildcard {action}"
                assert "*" not in action, f"{where}: wildcard action {action}"


def test_no_function_role_grants_its_actions_on_every_resource(cfg):
    attached = []
    for name, body in cfg.of_type("aws_iam_role_policy").items():
        # policy = data.aws_iam_policy_document.<doc>.json
        (ref,) = [r for r in refs_in(cfg.expr(body, "policy")) if r.names[0] == "data"]
        assert ref.names[1] == "aws_iam_policy_document" and ref.names[3] == "json", name
        attached.append(ref.names[2])
    assert len(set(attached)) == 8, "one policy document per function role"
    for doc in attached:
        for st in cfg.data[("aws_iam_policy_document", doc)]["statement"]:
            resources = st.get("resources", [])
            assert resources, f"{doc}: statement without resources"
            assert "*" not in resources, f"{doc}: Resource \"*\" for {st['actions']}"


def test_every_http_route_reaches_its_function_and_only_healthz_the_contract_and_the_console_are_public(cfg):
    integration_function = {
        name: target(cfg.expr(body, "integration_uri"), "aws_lambda_function")
        for name, body in cfg.of_type("aws_apigatewayv2_integration").items()
    }
    for body in cfg.of_type("aws_apigatewayv2_integration").values():
        assert cfg.eval(cfg.expr(body, "payload_format_version")) == "2.0"

    declared = {}
    for name, body in cfg.of_type("aws_apigatewayv2_route").items():
        function = integration_function[target(cfg.expr(body, "target"), "aws_apigatewayv2_integration")]
        if "for_each" in body:
            keys = cfg.eval(cfg.resolve(cfg.expr(body, "for_each").args[0]))
        else:
            keys = [cfg.eval(cfg.expr(body, "route_key"))]
        auth_on = cfg.eval(cfg.expr(body, "authorization_type"))
        auth_off = cfg.eval(cfg.expr(body, "authorization_type"), {"authorizer_enabled": False})
        for key in keys:
            assert key not in declared, f"route {key} declared twice"
            declared[key] = (function, auth_on, auth_off)

    assert {k: v[0] for k, v in declared.items()} == ROUTES
    for key, (_, auth_on, auth_off) in declared.items():
        expected = "NONE" if key in PUBLIC_ROUTES else "JWT"
        assert auth_on == expected, f"{key} is {auth_on} with the authorizer on"
        assert auth_off == "NONE"

    authorizer = cfg.resource("aws_apigatewayv2_authorizer", "jwt")
    assert cfg.eval(cfg.expr(authorizer, "count")) == 1
    assert cfg.eval(cfg.expr(authorizer, "count"), {"authorizer_enabled": False}) == 0
    assert cfg.variables["authorizer_enabled"]["default"] is True


def test_every_operation_of_the_api_contract_is_routed_and_nothing_else_but_the_console():
    contract = json.loads((Path(__file__).resolve().parents[2] / "docs" / "openapi.json").read_text())
    methods = {"get", "put", "post", "patch", "delete"}
    documented = {
        f"{method.upper()} {path}"
        for path, operations in contract["paths"].items()
        for method in operations
        if method in methods
    }
    assert documented - set(ROUTES) == EMBEDDED_ONLY, "documented but not routed"
    assert set(ROUTES) - documented == {"GET /console", "GET /console/{proxy+}"}


def test_every_function_has_its_own_log_group_role_and_built_artifact(cfg):
    names = cfg.resolve_object(Ref(("local", "function_names")))
    functions = cfg.of_type("aws_lambda_function")
    assert set(names) == set(functions)
    assert cfg.eval(names["webhooks"]) == "bulklink-webhooks"
    for rtype, name in [
        ("aws_cloudwatch_log_group", "lambda"),
        ("aws_iam_role", "lambda"),
        ("aws_iam_role_policy_attachment", "xray"),
    ]:
        assert cfg.expr(cfg.resource(rtype, name), "for_each") == Ref(("local", "function_names"))

    bins = cfg.eval(node_of(cfg.locals["bootstrap_zip"]).collection)
    hashed = node_of(cfg.locals["bootstrap_hash"])
    assert isinstance(hashed, ForExpr) and hashed.collection == Ref(("local", "bootstrap_zip"))
    artifacts = {}
    for function, body in functions.items():
        assert cfg.expr(body, "function_name") == Ref(("local", "function_names", function))
        role = cfg.expr(body, "role")
        assert role.names == ("aws_iam_role", "lambda", "arn") and index_key(cfg, role) == function
        zip_ = cfg.expr(body, "filename")
        assert zip_.names == ("local", "bootstrap_zip")
        artifacts[function] = index_key(cfg, zip_)
        assert artifacts[function] in bins, f"{function}: no artifact {artifacts[function]}"
        code_hash = cfg.expr(body, "source_code_hash")
        assert code_hash.names == ("local", "bootstrap_hash")
        assert index_key(cfg, code_hash) == artifacts[function]
        waits_for = {(r.names[:2], index_key(cfg, r)) for r in refs_in(cfg.expr(body, "depends_on"))}
        assert (("aws_cloudwatch_log_group", "lambda"), function) in waits_for, function
        assert (("aws_iam_role_policy_attachment", "xray"), function) in waits_for, function
        assert (("aws_iam_role_policy", function), None) in waits_for, function
    assert artifacts["webhooks"] == "bulklink-webhooks"


def test_the_webhook_settings_come_from_the_webhook_queue_and_one_variable(cfg):
    webhooks = cfg.resource("aws_lambda_function", "webhooks")
    timeout = cfg.expr(webhooks, "timeout")
    assert timeout == Ref(("var", "webhooks_timeout_seconds"))
    for function in cfg.of_type("aws_lambda_function"):
        env = environment(cfg, function)
        assert env["WEBHOOK_VISIBILITY_TIMEOUT_SECS"].names == (
            "aws_sqs_queue", "webhooks", "visibility_timeout_seconds"
        ), function
        assert env["WEBHOOK_RETRY_HOURS"] == Ref(("var", "webhook_retry_hours")), function
        assert env["WEBHOOK_DISABLE_AFTER_DAYS"] == Ref(
            ("var", "webhook_disable_after_days")
        ), function

    # The code refuses a webhook visibility timeout under 15 s: no accepted timeout gives one.
    visibility = cfg.expr(cfg.resource("aws_sqs_queue", "webhooks"), "visibility_timeout_seconds")
    accepted = [t for t in range(1, 901) if validation_accepts(cfg, "webhooks_timeout_seconds", t)]
    assert accepted and not validation_accepts(cfg, "webhooks_timeout_seconds", 901)
    for t in accepted:
        assert cfg.eval(visibility, {"webhooks_timeout_seconds": t}) >= 15, t

    assert cfg.variables["webhook_retry_hours"]["default"] == 24
    for hours in (1, 24, 336):
        assert validation_accepts(cfg, "webhook_retry_hours", hours), hours
    for hours in (0, -1, 337):
        assert not validation_accepts(cfg, "webhook_retry_hours", hours), hours
    # What the code accepts (WEBHOOK_DISABLE_AFTER_DAYS: 1 to 90), and nothing else.
    assert cfg.variables["webhook_disable_after_days"]["default"] == 5
    for days in (1, 5, 90):
        assert validation_accepts(cfg, "webhook_disable_after_days", days), days
    for days in (0, 0.5, 91):
        assert not validation_accepts(cfg, "webhook_disable_after_days", days), days


def test_a_disabled_subscription_raises_the_alarm_on_the_deliverers_own_metric(cfg):
    alarm = cfg.resource("aws_cloudwatch_metric_alarm", "webhooks_disabled")
    # The metric and dimension the webhooks function writes (webhooks/src/lambda.rs).
    assert alarm["namespace"] == "bulklink"
    assert alarm["metric_name"] == "WebhooksDisabled"
    assert alarm["dimensions"] == {"Function": "webhooks"}
    assert alarm["threshold"] == 0
    assert alarm["comparison_operator"] == "GreaterThanThreshold"


def test_the_webhook_queue_hears_every_job_event_raw(cfg):
    subscriptions = cfg.of_type("aws_sns_topic_subscription")
    for name, body in subscriptions.items():
        protocol = cfg.eval(cfg.expr(body, "protocol"))
        assert protocol not in ("http", "https"), f"{name}: webhooks are not SNS subscriptions"
    to_queue = {
        name: body for name, body in subscriptions.items()
        if any(r.names[:2] == ("aws_sqs_queue", "webhooks") for r in refs_in(cfg.expr(body, "endpoint")))
    }
    assert len(to_queue) == 1, "the webhook queue needs exactly one subscription"
    (body,) = to_queue.values()
    assert cfg.expr(body, "topic_arn") == Ref(("aws_sns_topic", "job_events", "arn"))
    assert cfg.expr(body, "endpoint") == Ref(("aws_sqs_queue", "webhooks", "arn"))
    assert cfg.eval(cfg.expr(body, "protocol")) == "sqs"
    # Raw: the message body is the event JSON the deliverer decodes, not an SNS envelope.
    assert cfg.eval(cfg.expr(body, "raw_message_delivery")) is True
    # Every event: the deliverer matches subscriptions itself.
    assert "filter_policy" not in body
    # An event SNS cannot hand over is kept in the webhooks DLQ, not lost.
    redrive = cfg.expr(body, "redrive_policy")
    assert any(r.names == ("aws_sqs_queue", "webhooks_dlq", "arn") for r in refs_in(redrive)), redrive
    dlq_policies = [
        p for p in cfg.of_type("aws_sqs_queue_policy").values()
        if target(cfg.expr(p, "queue_url"), "aws_sqs_queue") == "webhooks_dlq"
    ]
    assert len(dlq_policies) == 1, "SNS needs a queue policy to dead-letter into the webhooks DLQ"


def test_only_the_job_events_topic_may_send_to_the_webhook_queue(cfg):
    policies = [
        body for body in cfg.of_type("aws_sqs_queue_policy").values()
        if target(cfg.expr(body, "queue_url"), "aws_sqs_queue") == "webhooks"
    ]
    assert len(policies) == 1, "the webhook queue needs one queue policy"
    (doc,) = [r for r in refs_in(cfg.expr(policies[0], "policy")) if r.names[0] == "data"]
    assert doc.names[1] == "aws_iam_policy_document" and doc.names[3] == "json"
    statements = cfg.data[("aws_iam_policy_document", doc.names[2])]["statement"]
    assert statements
    for st in statements:
        assert st.get("effect", "Allow") == "Allow"
        assert [p["type"] for p in st["principals"]] == ["Service"]
        assert service_principals(st) == ["sns.amazonaws.com"], st["principals"]
        assert st["actions"] == ["sqs:SendMessage"]
        assert [node_of(r) for r in st["resources"]] == [Ref(("aws_sqs_queue", "webhooks", "arn"))]
        source = [
            c for c in st.get("condition", [])
            if c["variable"] == "aws:SourceArn" and c["test"] in ("ArnEquals", "ArnLike")
        ]
        assert len(source) == 1, "SNS must be limited to the job-events topic"
        assert [node_of(v) for v in source[0]["values"]] == [Ref(("aws_sns_topic", "job_events", "arn"))]


def test_sns_may_encrypt_to_the_kms_encrypted_webhook_queue(cfg):
    queue = cfg.resource("aws_sqs_queue", "webhooks")
    assert cfg.expr(queue, "kms_master_key_id") == Ref(("aws_kms_key", "main", "arn"))
    assert cfg.expr(cfg.resource("aws_sqs_queue", "webhooks_dlq"), "kms_master_key_id") == Ref(
        ("aws_kms_key", "main", "arn")
    )
    key_policy = cfg.expr(cfg.resource("aws_kms_key", "main"), "policy")
    assert key_policy.names[:2] == ("data", "aws_iam_policy_document")
    granted = set()
    for st in cfg.data[("aws_iam_policy_document", key_policy.names[2])]["statement"]:
        if st.get("effect", "Allow") == "Allow" and "sns.amazonaws.com" in service_principals(st):
            granted |= set(st["actions"])
    assert {"kms:GenerateDataKey", "kms:Decrypt"} <= granted, granted


def test_no_role_manages_sns_subscriptions_and_only_finishers_publish(cfg):
    for where, st in policy_statements(cfg):
        for action in st.get("actions", []):
            assert action.lower() not in SNS_SUBSCRIPTION_ACTIONS, f"{where}: {action}"
    publishers = set()
    for function, statements in role_statements(cfg).items():
        for st in statements:
            sns = [a for a in st["actions"] if a.lower().startswith("sns:")]
            assert set(sns) <= {"sns:Publish"}, f"{function}: {sns}"
            if sns:
                assert [node_of(r) for r in st["resources"]] == [
                    Ref(("aws_sns_topic", "job_events", "arn"))
                ], function
                publishers.add(function)
    assert publishers == {"fanout", "worker", "worker_dlq", "sweeper", "job_api"}


def test_each_role_may_do_what_its_part_in_webhooks_needs(cfg):
    roles = role_statements(cfg)
    assert set(roles) == set(cfg.of_type("aws_lambda_function"))
    jobs = "aws_dynamodb_table.jobs.arn"
    webhook_queue = "aws_sqs_queue.webhooks.arn"

    # Every consumer may consume its queue.
    for queue, function in CONSUMERS.items():
        for action in ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes",
                       "sqs:ChangeMessageVisibility"):
            assert allows(cfg, roles[function], action, f"aws_sqs_queue.{queue}.arn"), (
                f"{function}: {action} on {queue}"
            )

    # Who schedules webhook attempts: the deliverer (retries), status (redeliver), the
    # sweeper (overdue deliveries). Events reach the queue through the topic only.
    senders = {f for f in roles if allows(cfg, roles[f], "sqs:SendMessage", webhook_queue)}
    assert senders == {"webhooks", "status", "sweeper"}

    expected = {
        "webhooks": {
            jobs: ["GetItem", "PutItem", "UpdateItem", "Query", "BatchGetItem"],
            f"{jobs}/index/gsi1": ["Query"],
        },
        "status": {
            jobs: ["GetItem", "PutItem", "UpdateItem", "DeleteItem", "Query", "BatchGetItem"],
            f"{jobs}/index/gsi1": ["Query"],
        },
        "job_api": {jobs: ["GetItem", "PutItem"]},
        "sweeper": {jobs: ["BatchGetItem"], f"{jobs}/index/gsi2": ["Query"]},
    }
    for function, grants in expected.items():
        for resource, actions in grants.items():
            for action in actions:
                assert allows(cfg, roles[function], f"dynamodb:{action}", resource), (
                    f"{function}: dynamodb:{action} on {resource}"
                )
    # The deliverer never touches the catalog.
    catalog = "aws_dynamodb_table.catalog.arn"
    for st in roles["webhooks"]:
        assert not any(symbolic(cfg, r).startswith(catalog) for r in st["resources"])
    # Each role may use the deployment key (queues, table, environment).
    for function, statements in roles.items():
        for action in ("kms:Decrypt", "kms:GenerateDataKey"):
            assert allows(cfg, statements, action, "aws_kms_key.main.arn"), f"{function}: {action}"


def test_the_drift_watch_runs_the_sweeper_on_its_own_schedule_and_notes_on_rules_only(cfg):
    rule = cfg.resource("aws_cloudwatch_event_rule", "watch_drift")
    assert cfg.expr(rule, "schedule_expression") == Ref(("var", "drift_watch_schedule"))
    assert cfg.variables["drift_watch_schedule"]["default"] == "rate(15 minutes)"
    target = cfg.resource("aws_cloudwatch_event_target", "watch_drift")
    assert cfg.expr(target, "rule").names[:2] == ("aws_cloudwatch_event_rule", "watch_drift")
    assert cfg.expr(target, "arn").names == ("aws_lambda_function", "sweeper", "arn")
    # The task the sweeper reads (worker/src/sweeper.rs).
    payload = node_of(target["input"])
    assert isinstance(payload, Call) and payload.name == "jsonencode"
    task = payload.args[0].as_dict()["task"]
    assert "".join(task.parts) == "watch-drift"
    permission = cfg.resource("aws_lambda_permission", "watch_drift")
    assert cfg.expr(permission, "source_arn").names == (
        "aws_cloudwatch_event_rule", "watch_drift", "arn"
    )
    assert cfg.expr(permission, "function_name").names[:2] == ("aws_lambda_function", "sweeper")

    # What the watch reads, and where it writes: the rule registry's partition only.
    sweeper = role_statements(cfg)["sweeper"]
    catalog = "aws_dynamodb_table.catalog.arn"
    for action in ("Query", "GetItem", "BatchGetItem"):
        assert allows(cfg, sweeper, f"dynamodb:{action}", catalog), action
    assert allows(cfg, sweeper, "dynamodb:Query", f"{catalog}/index/gsi1")
    writes = [
        st for st in sweeper
        if any(symbolic(cfg, r).startswith(catalog) for r in st.get("resources", []))
        and any(a in st["actions"] for a in ("dynamodb:UpdateItem", "dynamodb:PutItem",
                                              "dynamodb:DeleteItem"))
    ]
    assert len(writes) == 1 and writes[0]["actions"] == ["dynamodb:UpdateItem"], writes
    (condition,) = writes[0]["condition"]
    assert condition["variable"] == "dynamodb:LeadingKeys"
    assert condition["test"] == "ForAllValues:StringEquals"
    assert condition["values"] == ["RULES"]

    # The settling time: one variable, what the code accepts (1 to 10,080 minutes).
    for function in cfg.of_type("aws_lambda_function"):
        assert environment(cfg, function)["DRIFT_SETTLE_MINUTES"] == Ref(
            ("var", "drift_settle_minutes")
        ), function
    assert cfg.variables["drift_settle_minutes"]["default"] == 30
    for minutes in (1, 30, 10080):
        assert validation_accepts(cfg, "drift_settle_minutes", minutes), minutes
    for minutes in (0, 10081):
        assert not validation_accepts(cfg, "drift_settle_minutes", minutes), minutes


def test_webhook_secrets_are_sealed_by_a_rotating_key_of_their_own_used_by_whom_needs_it(cfg):
    key = cfg.resource("aws_kms_key", "webhook_secrets")
    assert cfg.eval(cfg.expr(key, "enable_key_rotation")) is True
    assert cfg.eval(cfg.expr(key, "key_usage")) == "ENCRYPT_DECRYPT"
    for function in cfg.of_type("aws_lambda_function"):
        assert environment(cfg, function)["WEBHOOK_SECRETS_KEY_ID"] == Ref(
            ("aws_kms_key", "webhook_secrets", "arn")
        ), function
    # Its policy names no service: nothing but IAM-granted roles use it.
    policy = cfg.expr(key, "policy")
    for st in cfg.data[("aws_iam_policy_document", policy.names[2])]["statement"]:
        assert not service_principals(st), st
    roles = role_statements(cfg)
    secrets = "aws_kms_key.webhook_secrets.arn"
    sealers = {f for f in roles if allows(cfg, roles[f], "kms:GenerateDataKey", secrets)}
    openers = {f for f in roles if allows(cfg, roles[f], "kms:Decrypt", secrets)}
    # Subscriptions are made and rotated by the API; the deliverer signs with them.
    assert sealers == {"job_api", "status"}
    assert openers == {"job_api", "status", "webhooks"}
    # Each grant holds only under a webhook's encryption context.
    for function, statements in roles.items():
        for st in statements:
            if any(symbolic(cfg, r) == secrets for r in st.get("resources", [])):
                context = [
                    c for c in st.get("condition", [])
                    if c["variable"] == "kms:EncryptionContext:bulklink:webhook"
                ]
                assert context, f"{function}: {st.get('sid')} is not limited to webhooks' context"


def test_the_webhook_queue_its_dead_letters_and_its_function_alarm(cfg):
    dead_letter_alarms = cfg.resolve_object(
        cfg.expr(cfg.resource("aws_cloudwatch_metric_alarm", "dlq_depth"), "for_each")
    )
    alarmed_dlqs = {node.names[1] for node in dead_letter_alarms.values()}
    redriving = [n for n, b in cfg.of_type("aws_sqs_queue").items() if "redrive_policy" in b]
    # Every redrive target, and the estate mapping's on-failure destination.
    assert alarmed_dlqs == {redrive_target(cfg, q) for q in redriving} | {"estate_dlq"}
    assert "webhooks_dlq" in alarmed_dlqs

    age_alarms = cfg.resolve_object(
        cfg.expr(cfg.resource("aws_cloudwatch_metric_alarm", "oldest_message_age"), "for_each")
    )
    by_queue = {
        cfg.resolve_object(v)["queue"].names[1]: cfg.resolve_object(v)["seconds"]
        for v in age_alarms.values()
    }
    assert set(redriving) <= set(by_queue)
    assert by_queue["webhooks"] == Ref(("var", "webhooks_age_alarm_seconds"))
    assert cfg.variables["webhooks_age_alarm_seconds"]["default"] == 900

    error_alarms = cfg.resolve_object(
        cfg.expr(cfg.resource("aws_cloudwatch_metric_alarm", "function_errors"), "for_each")
    )
    alarmed_functions = {target(v, "aws_lambda_function") for v in error_alarms.values()}
    assert {"fanout", "worker", "webhooks"} <= alarmed_functions


def test_the_estate_function_reads_location_changes_of_the_catalog_stream_in_order(cfg):
    table = cfg.resource("aws_dynamodb_table", "catalog")
    assert cfg.eval(cfg.expr(table, "stream_enabled")) is True
    assert cfg.eval(cfg.expr(table, "stream_view_type")) == "NEW_AND_OLD_IMAGES"

    streams = {
        name: body
        for name, body in cfg.of_type("aws_lambda_event_source_mapping").items()
        if stream_mapping(cfg, body)
    }
    assert set(streams) == {"estate"}
    esm = streams["estate"]
    assert cfg.expr(esm, "event_source_arn") == Ref(("aws_dynamodb_table", "catalog", "stream_arn"))
    assert target(cfg.expr(esm, "function_name"), "aws_lambda_function") == "estate"
    assert cfg.eval(cfg.expr(esm, "starting_position")) == "LATEST"
    # A location's changes in order: one batch per shard at a time, never split.
    assert cfg.eval(cfg.expr(esm, "parallelization_factor")) == 1
    assert cfg.eval(cfg.expr(esm, "bisect_batch_on_function_error")) is False
    assert "ReportBatchItemFailures" in cfg.eval(cfg.expr(esm, "function_response_types"))
    pattern = cfg.expr(esm, "filter_criteria", "filter", "pattern")
    assert isinstance(pattern, Call) and pattern.name == "jsonencode"
    assert cfg.eval(pattern.args[0]) == {"dynamodb": {"Keys": {"sk": {"S": ["#LOC"]}}}}
    dlq = cfg.expr(esm, "destination_config", "on_failure", "destination_arn")
    assert dlq == Ref(("aws_sqs_queue", "estate_dlq", "arn"))

    role = role_statements(cfg)["estate"]
    stream = "aws_dynamodb_table.catalog.stream_arn"
    for action in ("dynamodb:DescribeStream", "dynamodb:GetRecords", "dynamodb:GetShardIterator", "dynamodb:ListStreams"):
        assert allows(cfg, role, action, stream), action
    assert allows(cfg, role, "sqs:SendMessage", "aws_sqs_queue.estate_dlq.arn")
    for action in ("dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:UpdateItem", "dynamodb:DeleteItem"):
        assert allows(cfg, role, action, "aws_dynamodb_table.catalog.arn"), action

    age = cfg.resource("aws_cloudwatch_metric_alarm", "estate_iterator_age")
    assert cfg.eval(cfg.expr(age, "metric_name")) == "IteratorAge"
    errors = cfg.resolve_object(
        cfg.expr(cfg.resource("aws_cloudwatch_metric_alarm", "function_errors"), "for_each")
    )
    assert "estate" in {target(v, "aws_lambda_function") for v in errors.values()}


def test_every_call_a_function_made_in_the_rehearsal_is_granted_to_its_role(cfg):
    """The deployment rehearsal (cli/tests/rehearsal.rs) runs every function binary against
    the emulator, each signing with a key of its own, and writes what each called; each call
    must be one its role allows, on that resource."""
    target = Path(os.environ.get("CARGO_TARGET_DIR") or TF_DIR.parent / "target")
    path = target / "tmp" / "rehearsal-iam-calls.json"
    if not path.exists():
        message = f"no {path}: run the rehearsal first (cargo test -p bulklink --test e2e rehearsal)"
        if os.environ.get("BULKLINK_REHEARSAL_CALLS_REQUIRED"):
            pytest.fail(message)
        pytest.skip(message)
    calls = json.loads(path.read_text())
    roles = role_statements(cfg)
    assert {"job_api", "status", "fanout", "worker", "webhooks", "sweeper", "estate"} <= set(calls)
    refused = [
        (function, action, resource)
        for function, seen in calls.items()
        for action, resource in seen
        if not allows(cfg, roles[function], action, resource)
    ]
    assert refused == [], "calls the functions make that their roles do not allow"


def test_the_default_write_budget_is_non_zero_and_the_one_docs_scaling_derives(cfg):
    stated = DEFAULT_BUDGET_LINE.findall(SCALING_DOC.read_text(encoding="utf-8"))
    assert len(stated) == 1, f"{SCALING_DOC.name} states the default write budget once: {stated}"
    derived = int(stated[0].replace(",", ""))
    default = cfg.variables["write_budget_per_sec"]["default"]
    assert default > 0, "the initial budget must bound the writes (0 = unlimited)"
    assert default == derived, f"variables.tf says {default}, {SCALING_DOC.name} derives {derived}"
    for function in cfg.of_type("aws_lambda_function"):
        assert environment(cfg, function)["WRITE_BUDGET_PER_SEC"] == Ref(("var", "write_budget_per_sec"))
    # 0 stays allowed: unlimited.
    assert validation_accepts(cfg, "write_budget_per_sec", 0)
    assert not validation_accepts(cfg, "write_budget_per_sec", -1)

    # The worker's precondition (a chunk at one worker's share of the budget takes at most
    # half the chunk queue's visibility timeout) holds at the defaults, and is not vacuous.
    worker = cfg.resource("aws_lambda_function", "worker")
    (precondition,) = cfg.attr(worker, "lifecycle", "precondition")
    visibility = Ref(("aws_sqs_queue", "chunks", "visibility_timeout_seconds"))
    condition = substitute(
        node_of(precondition["condition"]),
        {visibility: cfg.expr(cfg.resource("aws_sqs_queue", "chunks"), "visibility_timeout_seconds")},
    )
    assert visibility not in refs_in(condition)
    assert cfg.eval(condition) is True
    assert cfg.eval(condition, {"write_budget_per_sec": 4}) is False
    assert cfg.eval(condition, {"write_budget_per_sec": 0}) is True


def test_every_function_gets_the_link_shards_of_one_variable_defaulting_to_eight(cfg):
    for function in cfg.of_type("aws_lambda_function"):
        env = environment(cfg, function)
        assert env["LINK_SHARDS"] == Ref(("var", "link_shards")), function
    assert cfg.variables["link_shards"]["default"] == 8
    for shards, ok in [(8, True), (1, True), (64, True), (0, False), (65, False), (2.5, False)]:
        assert validation_accepts(cfg, "link_shards", shards) is ok, shards


def test_the_per_brand_request_limit_reaches_the_api_functions_from_its_variables(cfg):
    for function in cfg.of_type("aws_lambda_function"):
        env = environment(cfg, function)
        if function in API_FUNCTIONS:
            for key, variable in API_ENV.items():
                assert env.get(key) == variable, f"{function}: {key} = {env.get(key)!r}"
        else:
            assert not set(API_ENV) & set(env), f"{function} serves no HTTP requests"

    assert cfg.variables["brand_requests_per_sec"]["default"] == 20
    assert cfg.variables["brand_request_burst"]["default"] == 40
    for rate, ok in [(20, True), (0.5, True), (0, False), (-1, False)]:
        assert validation_accepts(cfg, "brand_requests_per_sec", rate) is ok, rate
    for burst, ok in [(40, True), (1, True), (0, False), (1.5, False)]:
        assert validation_accepts(cfg, "brand_request_burst", burst) is ok, burst


def test_the_stage_throttles_every_route_with_the_two_throttle_variables(cfg):
    stage = cfg.resource("aws_apigatewayv2_stage", "default")
    assert cfg.expr(stage, "default_route_settings", "throttling_rate_limit") == Ref(
        ("var", "api_throttle_rate_limit")
    )
    assert cfg.expr(stage, "default_route_settings", "throttling_burst_limit") == Ref(
        ("var", "api_throttle_burst_limit")
    )
    # No route has settings of its own: the default applies to every route.
    assert "route_settings" not in stage
    assert cfg.variables["api_throttle_rate_limit"]["default"] == 500
    assert cfg.variables["api_throttle_burst_limit"]["default"] == 1000
    for rate, ok in [(500, True), (0.5, True), (0, False)]:
        assert validation_accepts(cfg, "api_throttle_rate_limit", rate) is ok, rate
    for burst, ok in [(1000, True), (1, True), (0, False), (2.5, False)]:
        assert validation_accepts(cfg, "api_throttle_burst_limit", burst) is ok, burst


def test_pause_resume_and_the_write_budget_are_job_api_routes(cfg):
    routes = cfg.eval(cfg.resolve(Ref(("local", "job_api_routes"))))
    for key in ("POST /jobs/{jobId}/pause", "POST /jobs/{jobId}/resume",
                "GET /admin/write-budget", "PUT /admin/write-budget"):
        assert key in routes, f"{key} is not routed to job-api"


def test_each_role_may_do_what_pausing_and_the_live_write_budget_need(cfg):
    roles = role_statements(cfg)
    jobs = "aws_dynamodb_table.jobs.arn"
    expected = {
        # Re-reads the budget item; parks a paused job's chunk (put + job update).
        "worker": ["GetItem", "PutItem", "UpdateItem"],
        # Re-sends a resumed job's parked chunks and removes their items.
        "fanout": ["Query", "DeleteItem", "UpdateItem"],
        # The budget item (GET, PUT), pause and resume.
        "job_api": ["GetItem", "PutItem", "UpdateItem"],
    }
    for function, actions in expected.items():
        for action in actions:
            assert allows(cfg, roles[function], f"dynamodb:{action}", jobs), (
                f"{function}: dynamodb:{action} on the jobs table"
            )
    assert allows(cfg, roles["fanout"], "sqs:SendMessage", "aws_sqs_queue.chunks.arn")
    assert allows(cfg, roles["job_api"], "sqs:SendMessage", "aws_sqs_queue.fanout.arn")
    # Least privilege: the queries stay on the table, not its indexes, and job-api sends
    # no chunks itself.
    assert not allows(cfg, roles["fanout"], "dynamodb:Query", f"{jobs}/index/gsi1")
    assert not allows(cfg, roles["job_api"], "sqs:SendMessage", "aws_sqs_queue.chunks.arn")


def test_the_evaluator_refuses_what_it_cannot_know(cfg):
    # Guards the tests above: a resource attribute must not silently evaluate to something.
    with pytest.raises(Unknown):
        cfg.eval(Ref(("aws_sqs_queue", "chunks", "arn")))
