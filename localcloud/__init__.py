"""The embedded local cloud: moto server for S3/SQS/DynamoDB plus our own Lambda-invoke endpoint."""
