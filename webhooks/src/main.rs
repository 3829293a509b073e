//! The webhook-delivery Lambda function (the webhook queue, subscribed raw to the job-events topic).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    webhooks::lambda::run().await
}
