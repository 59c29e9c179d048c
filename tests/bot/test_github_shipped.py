"""GitHubClient.shipped, lead time's commits, against the GitHub emulator: every page of the
compare with each commit's time, and GitHub's failures as Unavailable (asked again later)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from bot.github import GitHubClient, Unavailable
from bot.local.github_emulator import DEFAULT_REPOSITORY, DEFAULT_TOKEN, GitHubEmulator


def test_shipped_reads_every_page_of_the_compare_oldest_first_with_commit_times() -> None:
    with GitHubEmulator() as emu:
        shas = emu.add_commits([f"change {i}" for i in range(251)])
        gh = GitHubClient(DEFAULT_REPOSITORY, DEFAULT_TOKEN, emu.api_url)
        found = gh.shipped(shas[0][:7], shas[-1][:7])
        assert not isinstance(found, Unavailable), found
        # 250 commits: three pages of 100 (the emulator's, GitHub's, per_page=100).
        assert [sha for sha, _ in found] == shas[1:]
        assert len(emu.calls_of("compare")) == 3
        start = datetime(2024, 1, 1, tzinfo=UTC)  # the emulator's commits: a minute apart
        assert found[0][1] == start + timedelta(minutes=1)
        assert found[-1][1] == start + timedelta(minutes=250)

        emu.clear()
        capped = gh.shipped(shas[0], shas[-1], max_pages=2)
        assert not isinstance(capped, Unavailable)
        assert [sha for sha, _ in capped] == shas[1:201]  # the oldest, which set lead time


def test_shipped_says_why_github_could_not_answer() -> None:
    with GitHubEmulator() as emu:
        shas = emu.add_commits(["a", "b"])
        gh = GitHubClient(DEFAULT_REPOSITORY, DEFAULT_TOKEN, emu.api_url)
        emu.garble("compare")
        garbled = gh.shipped(shas[0], shas[1])
        assert isinstance(garbled, Unavailable) and garbled.kind == "bad_answer"
        emu.fail("compare", 404)
        missing = gh.shipped(shas[0], shas[1])
        assert isinstance(missing, Unavailable)
        assert isinstance(gh.shipped("not a sha", shas[1]), Unavailable)
        no_token = GitHubClient(DEFAULT_REPOSITORY, None, emu.api_url).shipped(shas[0], shas[1])
        assert isinstance(no_token, Unavailable)
        assert gh.shipped(shas[0], shas[1]) == ((shas[1], datetime(2024, 1, 1, 0, 1, tzinfo=UTC)),)
