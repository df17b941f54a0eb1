#!/bin/sh
# Regenerates the README's sample outputs (the code blocks after `<!-- sample: … -->` markers)
# from the binary, then shows what changed. tests/readme.rs fails while they differ.
set -e
cd "$(dirname "$0")/.."
UPDATE_README=1 cargo test --release --test readme the_readme_samples_are_what_the_binary_prints
git --no-pager diff --stat README.md
