"""The test harness: Debian trees, package builds and disk images for the
slow suites, the test matrix, and sh as an oracle for the parsers.

Libraries, not tests: the suites under tests/ import them."""
