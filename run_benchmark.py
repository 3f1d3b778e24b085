#!/usr/bin/env python3
"""Treeformer Bench command line: a thin entry point over harness.cli (see README)."""

import sys

from harness.cli import main

if __name__ == "__main__":
    sys.exit(main())
