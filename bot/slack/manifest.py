"""The Slack app manifest for the configured command names: what ``deploybot manifest`` prints.

bot/slack/manifest.yml is this text for the default names (a test holds the two equal), so a
workspace set up from either declares exactly the commands the bot listens to.
"""

from __future__ import annotations

from bot.command_names import CommandNames

# The names are checked against Slack's rules (bot/command_names.py) before they get here: each is
# a plain YAML scalar ("/", then [a-z0-9_-]), so substituting them needs no quoting.
_TEMPLATE = """\
# deploybot's Slack app manifest: paste it into https://api.slack.com/apps
# ("Create New App" > "From a manifest"). Schema: Slack's app manifest, version 1.
# `deploybot manifest` prints it for the command names in SLACK_DEPLOY_COMMAND,
# SLACK_REDEPLOY_COMMAND and SLACK_STATUS_COMMAND; this file is its output for the defaults.
# The bot runs in Socket Mode, so no URL appears here: Slack sends slash commands and
# button clicks over the socket the bot opens with its app-level token (connections:write,
# created on the app's Basic Information page; it is not a bot scope).
# tests/slack/test_manifest.py holds this file against the code: the commands against the
# bot's listeners and Slack's built-in names, the bot scopes against the Web API methods the
# bot calls.
_metadata:
  major_version: 1
  minor_version: 1
display_information:
  name: deploybot
  description: Deploys the hello-world service to ECS Fargate, with live rollout progress.
  background_color: "#232f3e"
features:
  app_home:
    # The bot tells whoever started a deployment how it ended, in a DM: "Without messages
    # tab, the app can't message users" (getsentry/eng-pipes#329; Slack answers
    # messages_tab_disabled). Read-only: nobody writes to the bot there.
    home_tab_enabled: false
    messages_tab_enabled: true
    messages_tab_read_only_enabled: true
  bot_user:
    display_name: deploybot
    always_online: true
  slash_commands:
    - command: {deploy}
      description: Deploy an image tag to ECS Fargate (alone, it lists recent tags)
      usage_hint: "TAG [to TARGET] | promote FROM to TO | rollback, abort, unfreeze, unlock, \\
        history, status [TARGET] | stats [TARGET] [30d] | freeze [TARGET] REASON | reload"
      should_escape: false
    - command: {redeploy}
      description: Force a new deployment of the image that runs now
      usage_hint: "[TARGET] [reason]"
      should_escape: false
    - command: {status}
      description: What runs now, the rollout, the lock and the last deploys
      usage_hint: "[TARGET]"
      should_escape: false
oauth_config:
  scopes:
    bot:
      # chat.postMessage and chat.update: the live progress message and its thread, and the
      # requester's DM (chat.postMessage to a user id needs no im:write) or ephemeral.
      - chat:write
      # The three slash commands.
      - commands
      # conversations.info before a change: whether the channel is shared with another
      # organisation (Slack Connect: is_ext_shared) or a group DM (is_mpim); public channels,
      # private channels and group DMs each need their own scope (bot/slack/workspace.py).
      - channels:read
      - groups:read
      - mpim:read
      # `/deploy stats` and the weekly digest share a chart (a PNG) with files.uploadV2:
      # files.getUploadURLExternal and files.completeUploadExternal need files:write.
      - files:write
      # Deploy on push (auto_deploy): CI's notice carries message metadata, and the
      # message_metadata_posted event needs this scope (docs.slack.dev/reference/scopes/
      # metadata.message.read).
      - metadata.message:read
      # deployers and approvers may name Slack user groups (S…): usergroups.list and
      # usergroups.users.list need usergroups:read (bot/slack/groups.py).
      - usergroups:read
settings:
  event_subscriptions:
    # CI's image-pushed notice (bot/slack/notify.py) reaches the bot as this event: "your
    # app will only subscribe to the event types defined within the metadata_subscriptions
    # key" (docs.slack.dev/reference/events/message_metadata_posted). "*": whichever app
    # posts it; the bot takes only those its own token posted (bot/slack/auto.py). Where
    # Slack asks for an id, put the app's own (Basic Information > App ID).
    bot_events:
      - message_metadata_posted
    metadata_subscriptions:
      - app_id: "*"
        event_type: deploybot_image_pushed
  interactivity:
    # The Deploy button on CI's notices and the Rollback button on final messages.
    is_enabled: true
  org_deploy_enabled: false
  socket_mode_enabled: true
  token_rotation_enabled: false
"""


def render_manifest(commands: CommandNames) -> str:
    """The manifest (YAML, comments kept) declaring ``commands``; they must be valid names."""
    problems = commands.problems()
    if problems:
        raise ValueError("; ".join(problems.values()))
    return _TEMPLATE.format(
        deploy=commands.deploy, redeploy=commands.redeploy, status=commands.status
    )
