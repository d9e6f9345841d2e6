"""Whole-or-nothing writes keep the previous file on failure and get the usual permissions."""

import os

import pytest

from models import atomic


def test_write_replaces_whole_and_leaves_no_temporary(tmp_path):
  path = tmp_path / "table.json"
  atomic.write_text(str(path), "old")
  atomic.write_text(str(path), "new")
  assert path.read_text() == "new" and os.listdir(tmp_path) == ["table.json"]
  mask = os.umask(0)
  os.umask(mask)
  assert os.stat(path).st_mode & 0o777 == 0o666 & ~mask  # as open() would, not mkstemp's 0600


def test_a_failed_write_keeps_the_previous_file(tmp_path):
  path = tmp_path / "table.json"
  atomic.write_text(str(path), "old")
  with pytest.raises(UnicodeEncodeError):
    atomic.write_text(str(path), "\ud800")  # a lone surrogate cannot be encoded
  assert path.read_text() == "old" and os.listdir(tmp_path) == ["table.json"]
