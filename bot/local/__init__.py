"""The embedded local default: the ECS rollout simulator, the Slack emulator, the playground."""
