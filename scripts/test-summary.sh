#!/usr/bin/env bash
# Sums the "test result:" lines of a cargo test log and prints one closing
# line: "tests: N passed, N failed, N skipped". Exits non-zero if any test
# failed or if no test ran at all.
set -euo pipefail
log=${1:?usage: test-summary.sh LOG}
read -r passed failed ignored < <(
    awk '/^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i+1) ~ /^passed;?$/) p += $i
                if ($(i+1) ~ /^failed;?$/) f += $i
                if ($(i+1) ~ /^ignored;?$/) g += $i
            }
         }
         END { print p + 0, f + 0, g + 0 }' "$log"
)
echo "tests: $passed passed, $failed failed, $ignored skipped"
[ "$failed" -eq 0 ] && [ "$passed" -gt 0 ]
