#!/usr/bin/env bash
# The whole test suite, on a fresh machine: installs what it needs, starts a
# real single-node Slurm cluster for the Slurm tests, then runs every test of
# the workspace (release build, shared with the main job), and stops the
# cluster at the end, however the tests end.
#
# Environment: NAS_SLURM_DIR (the cluster's folder; default a fresh one under
# /tmp), and scripts/slurm-cluster.sh's own (NAS_SLURM_CPUS, ...).
set -euo pipefail
cd "$(dirname "$0")/.."
# --tests: the test binaries are built with the rest, in one cargo build.
scripts/setup.sh --model qwen2.5-coder-0.5b --tests
export VIRTUAL_ENV="$PWD/.venv" PATH="$PWD/.venv/bin:$PATH" LIBTORCH_USE_PYTORCH=1
# The wasm tests build C guests from source; with this set they fail (not
# skip) when the toolchain is missing, so a broken setup cannot pass quietly.
export NAS_REQUIRE_WASM_TOOLCHAIN=1
# The Slurm tests (module slurm:: of the integration binary) run against a
# real cluster: munge, mariadb, slurmdbd, slurmctld and slurmd from Debian's
# packages (installed when missing; needs root), about 15 s to start. With
# NAS_REQUIRE_SLURM=1 a missing cluster fails those tests instead of
# skipping them.
SLURM_DIR=${NAS_SLURM_DIR:-$(mktemp -d /tmp/nas-slurm.XXXXXX)}
stop_slurm() { scripts/slurm-cluster.sh stop "$SLURM_DIR" || true; }
trap stop_slurm EXIT
scripts/slurm-cluster.sh start "$SLURM_DIR"
export SLURM_CONF="$SLURM_DIR/etc/slurm.conf" NAS_REQUIRE_SLURM=1
# Every test binary runs even after one fails, so one run shows every failure.
cargo test --release --workspace --no-fail-fast "$@"
