//! The status Lambda function (API Gateway HTTP API, payload v2).

#[tokio::main]
async fn main() -> Result<(), lambda_http::Error> {
    let setup = bulklink_lambda::LambdaSetup::init().await;
    let api = bulklink_lambda::or_fail_init(bulklink_http::LambdaApi::from_env(
        setup.ports,
        setup.settings,
    ))
    .await;
    lambda_http::run(api.finish(status::router)).await
}
