#!/usr/bin/env bash
# The quickstart demo: bring up examples/quickstart.yaml, invoke `orders`, curl the
# database by name and ping it from an execution environment, show its security group
# at work (ping denied once the icmp rule is revoked, allowed again once authorized),
# print the reachability matrix, list the ENIs; then the control plane: a function created
# at run time (Pending, then Active on a shared ENI), two weeks of idleness in an instant
# (Inactive, restored on the next invoke), an ENI that outlives its function and blocks
# the deletion of its security group; cold starts against the legacy model; tear down.
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

step "curl from an execution environment of orders to db, by name (the VPC resolver, 10.0.0.2)"
$HP exec --function orders -- curl -s http://db.vpc-app.internal:8080/whoami

step "ping from an execution environment of orders to db (sg-db admits icmp from sg-lambda)"
$HP exec --function orders -- ping -c 3 -i 0.2 10.0.1.10

step "hyperplane sg revoke: sg-db stops admitting icmp (at run time), so db drops the ping"
$HP sg revoke --group sg-db --direction ingress --protocol icmp --source-group sg-lambda
$HP exec --function orders -- ping -c 2 -i 0.2 -W 1 10.0.1.10 || echo "-> no reply: denied by sg-db"

step "hyperplane sg authorize: the icmp rule is back, ping works again"
$HP sg authorize --group sg-db --direction ingress --protocol icmp --source-group sg-lambda
$HP exec --function orders -- ping -c 3 -i 0.2 10.0.1.10

step "hyperplane reach  (every declared pair, probed with real packets)"
$HP reach

step "hyperplane eni list  (one ENI per subnet + security-group set, shared)"
$HP eni list

step "hyperplane conntrack  (sessions in the userspace Hyperplane)"
$HP conntrack

step "hyperplane function create reports  (a new subnet + group set: a new ENI, Pending meanwhile)"
$HP function create reports --handler orders.handler --code examples/functions \
  --subnet-ids subnet-a --security-group-ids sg-lambda,sg-db
$HP invoke reports || echo "-> not yet: Pending while Lambda gets its network ready"
for _ in $(seq 50); do
  [ "$($HP function get reports --json | grep -c '"State": "Active"')" = 1 ] && break
  sleep 0.1
done
$HP function get reports
$HP invoke reports

step "hyperplane clock advance 15d  (no invocation for two weeks: functions go Inactive)"
$HP clock advance 15d
$HP function list
$HP invoke orders || echo "-> the first invoke after idleness fails and starts a restore"
for _ in $(seq 50); do
  [ "$($HP function get orders --json | grep -c '"State": "Active"')" = 1 ] && break
  sleep 0.1
done
$HP function list
$HP invoke orders

step "an ENI outlives its function: while it lingers, its security group cannot be deleted"
$HP function create audit --handler orders.handler --code examples/functions \
  --subnet-ids subnet-b --security-group-ids sg-db >/dev/null
sleep 1.5
$HP function delete audit
$HP eni list
$HP vpc delete-security-group sg-db || echo "-> DependencyViolation: the deleted function's ENI is still there"
sleep 4
$HP eni list
echo "-> gone after the deletion delay (settings.timing.eni_delete; up to 20 minutes on AWS)"

step "hyperplane down"
$HP down
trap - EXIT

step "hyperplane compare  (cold starts: shared Hyperplane ENIs vs an ENI per environment)"
$HP compare --concurrency 1,10
echo
echo "demo finished: everything it made has been removed"
