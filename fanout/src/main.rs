//! The fanout Lambda function (fanout queue).

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    fanout::lambda::run().await
}
