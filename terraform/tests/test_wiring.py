"""Wiring of the Terraform deployment, read from the HCL itself (python-hcl2), not from
its text: the numbers that must agree come from one variable, queues outlive their
consumers' timeouts, every function is pointed at resources that exist, IAM has no
wildcard actions.

Run: .venv/bin/pytest -q terraform/tests
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

from tfconfig import (  # noqa: E402
    Call,
    Config,
    Obj,
    Ref,
    Template,
    Tup,
    Unknown,
    load_file,
    node_of,
    refs_in,
)

TF_DIR = Path(__file__).resolve().parent.parent

CONCURRENCY = Ref(("var", "worker_max_concurrency"))
MAX_RECEIVE_COUNT = Ref(("var", "max_receive_count"))

# The environment every function reads (shared/src/aws/mod.rs, shared/src/config.rs,
# shared/src/telemetry.rs).
REQUIRED_ENV = {
    "CATALOG_TABLE", "JOBS_TABLE", "FANOUT_QUEUE_URL", "CHUNK_QUEUE_URL", "CHUNK_DLQ_URL",
    "EVENTS_TOPIC_ARN", "CHUNK_SIZE", "FANOUT_PAGE_SIZE", "WRITE_BUDGET_PER_SEC",
    "WORKER_MAX_CONCURRENCY", "MAX_RECEIVE_COUNT", "VISIBILITY_TIMEOUT_SECS",
    "FAILURE_THRESHOLD", "FAILURE_MIN_SAMPLE", "LOG_FORMAT", "RUST_LOG", "BRAND_CLAIM",
    "AUTH_MODE",
}

# Env var naming a resource -> (resource type, attribute, resource name at the defaults).
RESOURCE_ENV = {
    "CATALOG_TABLE": ("aws_dynamodb_table", "name", "bulklink-catalog"),
    "JOBS_TABLE": ("aws_dynamodb_table", "name", "bulklink-jobs"),
    "FANOUT_QUEUE_URL": ("aws_sqs_queue", "url", "bulklink-fanout"),
    "CHUNK_QUEUE_URL": ("aws_sqs_queue", "url", "bulklink-chunks"),
    "CHUNK_DLQ_URL": ("aws_sqs_queue", "url", "bulklink-chunks-dlq"),
    "EVENTS_TOPIC_ARN": ("aws_sns_topic", "arn", "bulklink-job-events"),
}

ROUTES = {
    "POST /offers/{offerId}/link-all-locations": "job_api",
    "POST /jobs/{jobId}/cancel": "job_api",
    "POST /offers": "job_api",
    "POST /locations": "job_api",
    "PUT /offers/{offerId}/locations/{locationId}": "job_api",
    "GET /jobs/{jobId}": "status",
    "GET /jobs/{jobId}/failures": "status",
    "GET /jobs": "status",
    "GET /offers/{offerId}": "status",
    "GET /offers/{offerId}/locations": "status",
    "GET /locations/{locationId}": "status",
    "POST /webhooks": "status",
    "GET /webhooks/{id}": "status",
    "DELETE /webhooks/{id}": "status",
    "GET /webhooks/{id}/confirm": "status",
    "GET /healthz": "status",
    "GET /openapi.json": "status",
}


@pytest.fixture(scope="module")
def cfg() -> Config:
    return Config.load(TF_DIR)


# --- helpers ----------------------------------------------------------------------------------


def target(node, rtype: str) -> str:
    """The name of the `rtype` resource a single-reference expression points at."""
    refs = [r for r in refs_in(node) if r.names[0] == rtype]
    assert len(refs) == 1, f"expected one reference to a {rtype}, got {node!r}"
    return refs[0].names[1]


def mappings(cfg: Config) -> dict:
    """ESM name -> (queue resource name, function resource name, ESM body)."""
    out = {}
    for name, body in cfg.of_type("aws_lambda_event_source_mapping").items():
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


def test_both_main_queues_are_consumed_and_redrive_to_their_own_dead_letter_queue(cfg):
    consumed = {queue for queue, _, _ in mappings(cfg).values()}
    redriving = {
        name: body for name, body in cfg.of_type("aws_sqs_queue").items() if "redrive_policy" in body
    }
    assert set(redriving) == {"fanout", "chunks"}
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
    assert len(esms) >= 3
    for name, body in esms.items():
        types = cfg.eval(cfg.expr(body, "function_response_types"))
        assert "ReportBatchItemFailures" in types, name


def test_every_function_gets_the_whole_environment_from_resources_and_variables(cfg):
    functions = cfg.of_type("aws_lambda_function")
    assert len(functions) == 6
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
            assert cfg.eval(cfg.expr(declared, "name")) == resource_name, (
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
    assert len(set(attached)) == 6, "one policy document per function role"
    for doc in attached:
        for st in cfg.data[("aws_iam_policy_document", doc)]["statement"]:
            resources = st.get("resources", [])
            assert resources, f"{doc}: statement without resources"
            assert "*" not in resources, f"{doc}: Resource \"*\" for {st['actions']}"


def test_every_http_route_reaches_its_function_and_only_healthz_is_public(cfg):
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
        expected = "NONE" if key == "GET /healthz" else "JWT"
        assert auth_on == expected, f"{key} is {auth_on} with the authorizer on"
        assert auth_off == "NONE"

    authorizer = cfg.resource("aws_apigatewayv2_authorizer", "jwt")
    assert cfg.eval(cfg.expr(authorizer, "count")) == 1
    assert cfg.eval(cfg.expr(authorizer, "count"), {"authorizer_enabled": False}) == 0
    assert cfg.variables["authorizer_enabled"]["default"] is True


def test_the_evaluator_refuses_what_it_cannot_know(cfg):
    # Guards the tests above: a resource attribute must not silently evaluate to something.
    with pytest.raises(Unknown):
        cfg.eval(Ref(("aws_sqs_queue", "chunks", "arn")))
