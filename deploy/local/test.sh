#!/usr/bin/env bash
# Everything CI checks: formatting, lints, and the whole test suite (unit tests and
# black-box tests of the real binaries against the local AWS stack, which each test starts
# on its own free loopback port).
#
#   deploy/local/test.sh [ARGS]     ARGS go to the test runner (a filter, for example).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/stack.sh"
cd "$FLEET_ROOT"

stack_install
export FLEET_PYTHON

# Debian packages the tests use, installed in one go when missing: promtool (package
# prometheus) checks and unit-tests the alert rules; ip (iproute2) and nft (nftables) build
# the NAT test's private subnet from network namespaces (it needs root, which CI has);
# chromium and chromium-driver run the web console's test in a headless browser.
packages=()
command -v promtool >/dev/null 2>&1 || packages+=(prometheus)
command -v ip >/dev/null 2>&1 || packages+=(iproute2)
command -v nft >/dev/null 2>&1 || packages+=(nftables)
[[ -x /usr/bin/chromium ]] || packages+=(chromium)
[[ -x /usr/bin/chromedriver ]] || packages+=(chromium-driver)
if ((${#packages[@]})); then
  echo "==> installing Debian packages: ${packages[*]}"
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo=sudo
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null
fi

# The deployment files: cfn-lint, checkov, hadolint (installed into .venv-lint).
deploy/lint/run.sh

echo "==> cargo fmt --check"
cargo fmt --all --check
echo "==> cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings
# One feature set for the binaries and the tests (dev-dependencies enable features of shared
# crates), so the binaries the black-box tests start are built once, by this command.
echo "==> building the binaries and the tests"
cargo build --workspace --all-targets
# The job crate as a job binary ships it (without the local Invoke API's SQS delivery): its
# unit tests, doctests and the refusal of asynchronous invocations that build makes.
echo "==> fleet-job without its default features"
cargo test -p fleet-job --no-default-features
echo "==> tests"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast "$@"
else
  cargo test --workspace --no-fail-fast -- "$@"
fi
