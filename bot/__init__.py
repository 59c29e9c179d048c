"""deploybot: a ChatOps Slack bot that deploys the hello-world service to ECS Fargate."""
