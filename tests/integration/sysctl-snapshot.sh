#!/usr/bin/env bash
# Print every sysctl of the host namespace except counters and values the kernel changes
# by itself, plus the list of network namespaces: the "host state" tests compare.
set -euo pipefail
sysctl -a 2>/dev/null | grep -v -E \
  -e '^(fs\.(dentry-state|file-nr|inode-nr|inode-state|quota|aio-nr|fscache)|kernel\.(random|ns_last_pid|pty\.nr|tainted|sched_domain|perf_event_max|core_pipe|cap_last)|vm\.(nr_|stat_refresh)|net\.netfilter|dev\.)' \
  | sort
echo "netns: $(ip netns list 2>/dev/null | awk '{print $1}' | grep -v -E '^(it-|nstest|bench-)' | sort | tr '\n' ' ')"
