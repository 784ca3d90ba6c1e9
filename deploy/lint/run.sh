#!/usr/bin/env bash
# Lints the deployment files as AWS users do: cfn-lint and checkov on the CloudFormation
# template (every skipped checkov check carries its reason in the template's Metadata),
# hadolint on the Dockerfiles. Installs the linters into .venv-lint when missing.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
venv="${FLEET_LINT_VENV:-$root/.venv-lint}"
req="$root/deploy/lint/requirements.txt"
if ! [[ -x "$venv/bin/checkov" && -f "$venv/.fleet-requirements" ]] || ! cmp -s "$req" "$venv/.fleet-requirements"; then
  echo "lint: installing cfn-lint, checkov and hadolint into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check -r "$req" >&2
  cp "$req" "$venv/.fleet-requirements"
fi
cd "$root"
templates=(deploy/cloudformation/*.yaml)
echo "==> cfn-lint ${templates[*]}"
"$venv/bin/cfn-lint" "${templates[@]}"
for t in "${templates[@]}"; do
  echo "==> checkov $t"
  "$venv/bin/checkov" -f "$t" --framework cloudformation --quiet --compact --skip-download
done
echo "==> hadolint deploy/docker/*.Dockerfile"
"$venv/bin/hadolint" deploy/docker/*.Dockerfile
