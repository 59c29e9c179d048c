"""The embedded local default: moto as AWS with an ECS rollout simulator, and the Slack emulator."""
