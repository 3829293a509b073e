# HTTP API (API Gateway v2), payload format 2.0: job-api serves the write routes and the
# live write budget, status the read routes, webhook subscriptions and their delivery log.
# A JWT authorizer guards every route except GET /healthz, GET /openapi.json and the
# console's static page (GET /console, GET /console/{proxy+}).

locals {
  job_api_routes = [
    "POST /offers/{offerId}/link-all-locations",
    "POST /jobs/{jobId}/cancel",
    "POST /jobs/{jobId}/approve",
    "POST /jobs/{jobId}/reject",
    "POST /jobs/{jobId}/pause",
    "POST /jobs/{jobId}/resume",
    "POST /offers",
    "POST /locations",
    "PUT /offers/{offerId}/locations/{locationId}",
    "POST /offers/{offerId}/unlink-all-locations",
    "POST /jobs/{jobId}/undo",
    "POST /jobs/{jobId}/retry-failures",
    "PATCH /offers/{offerId}",
    "DELETE /offers/{offerId}",
    "PATCH /locations/{locationId}",
    "DELETE /locations/{locationId}",
    "PUT /locations/by-external-id/{externalId}",
    "PUT /offers/{offerId}/rule",
    "DELETE /offers/{offerId}/rule",
    # An import's upload URL (the file itself goes to S3, presigned; s3.tf).
    "POST /imports",
    # The live write budget, an operator's setting stored in the jobs table (docs/scaling.md).
    "GET /admin/write-budget",
    "PUT /admin/write-budget",
  ]

  # Public (no authorizer): the operator console's page and its two files, served by status.
  console_routes = ["GET /console", "GET /console/{proxy+}"]

  # Public (no authorizer): GET /healthz, the liveness probe, and GET /openapi.json, the API's
  # contract (aws_apigatewayv2_route.healthz and .openapi).
  status_routes = [
    "GET /jobs/{jobId}",
    "GET /jobs/{jobId}/failures",
    "GET /jobs/{jobId}/report",
    "GET /jobs",
    "GET /offers/{offerId}",
    "GET /offers/{offerId}/locations",
    "GET /locations/{locationId}",
    "GET /locations",
    "GET /offers",
    "GET /offers/{offerId}/rule",
    "GET /offers/{offerId}/drift",
    "GET /imports/{importId}",
    "GET /jobs/{jobId}/deliveries",
    "POST /webhooks",
    "GET /webhooks",
    "GET /webhooks/{id}",
    "GET /webhooks/event-types",
    "DELETE /webhooks/{id}",
    "POST /webhooks/{id}/rotate-secret",
    "GET /webhooks/{id}/deliveries",
    "POST /webhooks/{id}/deliveries/{deliveryId}/redeliver",
    "POST /webhooks/{id}/test",
    "POST /webhooks/{id}/replay",
    "POST /webhooks/{id}/enable",
  ]

  route_authorization_type = var.authorizer_enabled ? "JWT" : "NONE"
  route_authorizer_id      = one(aws_apigatewayv2_authorizer.jwt[*].id) # null without the authorizer
}

resource "aws_apigatewayv2_api" "http" {
  name          = "${var.name}-api"
  description   = "bulklink: link one offer to all of a brand's locations"
  protocol_type = "HTTP"
}

resource "aws_apigatewayv2_authorizer" "jwt" {
  count = var.authorizer_enabled ? 1 : 0

  api_id           = aws_apigatewayv2_api.http.id
  name             = "${var.name}-jwt"
  authorizer_type  = "JWT"
  identity_sources = ["$request.header.Authorization"]

  jwt_configuration {
    issuer   = var.jwt_issuer
    audience = var.jwt_audience
  }

  lifecycle {
    precondition {
      condition     = var.jwt_issuer != null && length(var.jwt_audience) > 0
      error_message = "authorizer_enabled is true: set jwt_issuer and jwt_audience (or set authorizer_enabled = false explicitly)."
    }
  }
}

resource "aws_apigatewayv2_integration" "job_api" {
  api_id                 = aws_apigatewayv2_api.http.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.job_api.invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_integration" "status" {
  api_id                 = aws_apigatewayv2_api.http.id
  integration_type       = "AWS_PROXY"
  integration_uri        = aws_lambda_function.status.invoke_arn
  payload_format_version = "2.0"
}

resource "aws_apigatewayv2_route" "job_api" {
  for_each = toset(local.job_api_routes)

  api_id             = aws_apigatewayv2_api.http.id
  route_key          = each.value
  target             = "integrations/${aws_apigatewayv2_integration.job_api.id}"
  authorization_type = local.route_authorization_type
  authorizer_id      = local.route_authorizer_id
}

resource "aws_apigatewayv2_route" "status" {
  for_each = toset(local.status_routes)

  api_id             = aws_apigatewayv2_api.http.id
  route_key          = each.value
  target             = "integrations/${aws_apigatewayv2_integration.status.id}"
  authorization_type = local.route_authorization_type
  authorizer_id      = local.route_authorizer_id
}

resource "aws_apigatewayv2_route" "healthz" {
  #checkov:skip=CKV_AWS_309:GET /healthz is the public liveness probe for load balancers and uptime checks; it reveals nothing and touches no data
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = "GET /healthz"
  target             = "integrations/${aws_apigatewayv2_integration.status.id}"
  authorization_type = "NONE"
}

resource "aws_apigatewayv2_route" "openapi" {
  #checkov:skip=CKV_AWS_309:GET /openapi.json is the API's published contract, the same document as docs/openapi.json; it touches no data
  api_id             = aws_apigatewayv2_api.http.id
  route_key          = "GET /openapi.json"
  target             = "integrations/${aws_apigatewayv2_integration.status.id}"
  authorization_type = "NONE"
}

# The operator console: static HTML, CSS and JavaScript compiled into the status function.
# The page is public; the data it shows comes from the routes above, with the caller's token.
resource "aws_apigatewayv2_route" "console" {
  #checkov:skip=CKV_AWS_309:the console's static page (HTML, CSS, JavaScript) holds no data; it calls the authorized routes with the user's bearer token
  for_each = toset(local.console_routes)

  api_id             = aws_apigatewayv2_api.http.id
  route_key          = each.value
  target             = "integrations/${aws_apigatewayv2_integration.status.id}"
  authorization_type = "NONE"
}

resource "aws_cloudwatch_log_group" "api_access" {
  #checkov:skip=CKV_AWS_338:Retention is an operator choice (var.log_retention_days, default 30 days for cost); set 365 or more where a year of logs is required
  name              = "/aws/apigateway/${var.name}-api/access"
  retention_in_days = var.log_retention_days
  kms_key_id        = aws_kms_key.main.arn
}

resource "aws_apigatewayv2_stage" "default" {
  api_id      = aws_apigatewayv2_api.http.id
  name        = "$default"
  auto_deploy = true

  # Every route without settings of its own, all callers together: API Gateway knows no
  # brands (HTTP APIs have no usage plans). Per-brand limits are the functions' own
  # (BRAND_RATE_PER_SEC / BRAND_RATE_BURST, lambda.tf); see docs/scaling.md.
  default_route_settings {
    throttling_rate_limit  = var.api_throttle_rate_limit
    throttling_burst_limit = var.api_throttle_burst_limit
  }

  access_log_settings {
    destination_arn = aws_cloudwatch_log_group.api_access.arn
    format = jsonencode({
      requestId        = "$context.requestId"
      sourceIp         = "$context.identity.sourceIp"
      requestTime      = "$context.requestTime"
      httpMethod       = "$context.httpMethod"
      path             = "$context.path"
      routeKey         = "$context.routeKey"
      status           = "$context.status"
      protocol         = "$context.protocol"
      responseLength   = "$context.responseLength"
      integrationError = "$context.integrationErrorMessage"
      authorizerError  = "$context.authorizer.error"
      principal        = "$context.authorizer.claims.sub"
    })
  }
}

resource "aws_lambda_permission" "api_job_api" {
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.job_api.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http.execution_arn}/*/*"
}

resource "aws_lambda_permission" "api_status" {
  statement_id  = "AllowHttpApi"
  action        = "lambda:InvokeFunction"
  function_name = aws_lambda_function.status.function_name
  principal     = "apigateway.amazonaws.com"
  source_arn    = "${aws_apigatewayv2_api.http.execution_arn}/*/*"
}
