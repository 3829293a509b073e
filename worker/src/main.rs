//! The worker Lambda function (chunk queue, or chunk DLQ with `WORKER_SOURCE=dead-letters`).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::lambda::run().await
}
