"""Version collisions in the tree and across local git branches (real git, temporary repository)."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from polymigrate.catalog import discover
from polymigrate.lint import collisions


def _git(cwd, *args):
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True)


def _repo(tmp_path):
    _git(tmp_path, "init", "-q", "-b", "main")
    _git(tmp_path, "config", "user.email", "t@example.com")
    _git(tmp_path, "config", "user.name", "t")
    folder = tmp_path / "shop" / "postgresql"
    folder.mkdir(parents=True)
    (folder / "V1__create.sql").write_text("CREATE TABLE a (id bigint);\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "v1")
    return folder


def test_same_version_in_two_sub_folders_of_the_tree(tmp_path):
    folder = tmp_path / "postgresql"
    (folder / "tables").mkdir(parents=True)
    (folder / "V1__create.sql").write_text("CREATE TABLE a (id bigint);\n")
    (folder / "tables" / "V1.0__other.sql").write_text("CREATE TABLE b (id bigint);\n")
    found = collisions.find(discover("shop", "postgresql", folder))
    assert len(found) == 1 and found[0].rule == "version-collision"
    assert "V1" in found[0].message and found[0].severity == "high"


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_same_version_on_an_unmerged_branch(tmp_path):
    folder = _repo(tmp_path)
    _git(tmp_path, "checkout", "-q", "-b", "feature-carts")
    (folder / "V2__carts.sql").write_text("CREATE TABLE carts (id bigint);\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "carts")
    _git(tmp_path, "checkout", "-q", "main")
    (folder / "V2__orders.sql").write_text("CREATE TABLE orders (id bigint);\n")
    found = collisions.find(discover("shop", "postgresql", folder))
    assert [(f.file.rsplit("/", 1)[-1], "feature-carts" in f.message) for f in found] == [("V2__orders.sql", True)]


@pytest.mark.skipif(shutil.which("git") is None, reason="git not installed")
def test_merged_branches_and_distinct_versions_do_not_collide(tmp_path):
    folder = _repo(tmp_path)
    _git(tmp_path, "branch", "old-merged")  # same commit as main: already merged
    _git(tmp_path, "checkout", "-q", "-b", "feature-x")
    (folder / "V3__x.sql").write_text("CREATE TABLE x (id bigint);\n")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "commit", "-q", "-m", "x")
    _git(tmp_path, "checkout", "-q", "main")
    (folder / "V2__y.sql").write_text("CREATE TABLE y (id bigint);\n")
    assert collisions.find(discover("shop", "postgresql", folder)) == []


def test_outside_git_only_the_tree_is_checked(tmp_path, monkeypatch):
    folder = tmp_path / "postgresql"
    folder.mkdir()
    (folder / "V1__a.sql").write_text("SELECT 1;\n")
    monkeypatch.setenv("PATH", "/nonexistent")  # no git binary at all
    assert collisions.find(discover("shop", "postgresql", folder)) == []
