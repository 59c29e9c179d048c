"""Small helpers the tests share: free ports and waiting for a server to answer."""

from bot.local.net import free_port, wait_http

__all__ = ["free_port", "wait_http"]
