//! The job-api Lambda function (API Gateway HTTP API, payload v2).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let setup = shared::aws::LambdaSetup::from_env().await?;
    lambda_http::run(shared::http::finish_router(job_api::router(setup.ports))).await
}
