#!/usr/bin/env bash
# The quickstart demo: bring up examples/quickstart.yaml, invoke `orders`, ping and
# curl the database from an execution environment, list the ENIs, tear down.
set -euo pipefail
cd "$(dirname "$0")/.."
HP=.venv/bin/hyperplane
step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
trap '$HP down >/dev/null 2>&1 || true' EXIT

if [ -n "$($HP status --json | grep '"up": true' || true)" ]; then
  step "a topology is already up: taking it down first"
  $HP down
fi

step "hyperplane up examples/quickstart.yaml"
$HP up examples/quickstart.yaml

step "hyperplane invoke orders  (the database reports who called it)"
result=$($HP invoke orders --payload '{"order": 42}' --json)
echo "$result"
eni_ip=$(echo "$result" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["result"]["database_saw"])')
env_ip=$(echo "$result" | .venv/bin/python -c 'import json,sys; print(json.load(sys.stdin)["result"]["environment_ip"])')
echo "-> the environment's own address is $env_ip; the database saw $eni_ip, the Hyperplane ENI of its subnet"

step "hyperplane invoke billing  (another function, same subnets and groups: same ENIs)"
$HP invoke billing

step "ping from an execution environment of orders to db (10.0.1.10)"
$HP exec --function orders -- ping -c 3 -i 0.2 10.0.1.10

step "curl from an execution environment of orders to db"
$HP exec --function orders -- curl -s http://10.0.1.10:8080/whoami

step "hyperplane eni list  (one ENI per subnet + security-group set, shared)"
$HP eni list

step "hyperplane conntrack  (sessions in the userspace Hyperplane)"
$HP conntrack

step "hyperplane down"
$HP down
trap - EXIT
echo
echo "demo finished: everything it made has been removed"
