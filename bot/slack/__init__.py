"""The Slack transport (Bolt AsyncApp): translates Slack to engine calls, never decides."""
