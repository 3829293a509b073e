//! The estate Lambda function, fed by the catalog table's DynamoDB stream.

#[tokio::main]
async fn main() -> Result<(), lambda_runtime::Error> {
    worker::estate::run().await
}
