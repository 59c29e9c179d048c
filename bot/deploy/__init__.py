"""The engine: plans, starts and follows deployments through boto3; no Slack, no terminal."""
