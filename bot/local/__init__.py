"""The embedded default: moto as AWS with an ECS rollout simulator, a Slack emulator."""
