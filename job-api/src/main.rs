//! The job-api Lambda function (API Gateway HTTP API, payload v2).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let setup = shared::aws::LambdaSetup::init().await;
    let router = job_api::router(setup.api_state());
    lambda_http::run(shared::http::finish_router(
        router,
        setup.auth,
        &setup.settings,
    ))
    .await
}
