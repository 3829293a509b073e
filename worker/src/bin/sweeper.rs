//! The sweeper Lambda function, run on a schedule (EventBridge).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::sweeper::run().await
}
