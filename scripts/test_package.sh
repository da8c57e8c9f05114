#!/usr/bin/env bash
# The Debian package as a host would get it: installs the .deb that scripts/release.sh built,
# checks the unit (systemd-analyze verify), the system user and the owner-only buffer
# directory, starts the agent the way the unit does (its User, Group, UMask, runtime
# directory and ExecStart, read from the installed unit) against the test broker, sends a
# line as a member of the "messagebuffer" group (accepted, delivered) and as a user outside
# it (refused by the socket's permissions), stops it with SIGTERM, removes the package (the
# buffer directory stays) and purges it (the buffer directory goes).
#
#   scripts/test_package.sh DEB        (as root, with MB_TEST_BROKERS set; scripts/test.sh
#                                       runs it when MB_TEST_PACKAGE=1, as .ci/run does)
# Without systemd running (a container), the unit's sandboxing (ProtectSystem=...) is not
# exercised; everything else the unit sets is.
set -euo pipefail
deb=${1:?usage: scripts/test_package.sh DEB}
brokers=${MB_TEST_BROKERS:?MB_TEST_BROKERS must name the test broker}
say() { echo "test_package: $*" >&2; }
fail() { say "FAIL: $*"; exit 1; }
# Asked for (MB_TEST_PACKAGE=1, as in CI), a test that cannot run is a failure, not a pass.
cannot() { if [[ ${MB_TEST_PACKAGE:-} == 1 ]]; then fail "$*"; else say "skipped: $*"; exit 0; fi; }
[[ $(id -u) -eq 0 ]] || cannot "installing a package needs root"
command -v dpkg >/dev/null || cannot "no dpkg on this machine"
if dpkg -s messagebuffer >/dev/null 2>&1; then
  cannot "a messagebuffer package is already installed here; not touching it"
fi

unit=/usr/lib/systemd/system/messagebuffer.service
sock=/run/messagebuffer/messagebuffer.sock
app=mb-test-app other=mb-test-other
agent_pid=""
log=$(mktemp)
cleanup() {
  [[ -n $agent_pid ]] && kill -KILL "$agent_pid" 2>/dev/null || true
  dpkg -P messagebuffer >/dev/null 2>&1 || true
  rm -rf /run/messagebuffer "$log"
  userdel "$app" 2>/dev/null || true
  userdel "$other" 2>/dev/null || true
}
trap cleanup EXIT

dpkg -i "$deb" >&2
[[ -x /usr/bin/messagebuffer ]] || fail "/usr/bin/messagebuffer is not installed"
/usr/bin/messagebuffer --version >&2
systemd-analyze verify "$unit" >&2 || fail "systemd-analyze verify $unit"
getent passwd messagebuffer >/dev/null || fail "no system user messagebuffer"
[[ $(stat -c '%U %a' /var/lib/messagebuffer) == "messagebuffer 700" ]] ||
  fail "/var/lib/messagebuffer is $(stat -c '%U %a' /var/lib/messagebuffer), not messagebuffer 700"

# What the unit says, so that the run below is the unit's.
field() { sed -n "s/^$1=//p" "$unit" | head -n 1; }
user=$(field User) group=$(field Group) umask=$(field UMask) exec=$(field ExecStart)
rundir=/run/$(field RuntimeDirectory) runmode=$(field RuntimeDirectoryMode)
mkdir -p "$rundir" && chown "$user:$group" "$rundir" && chmod "$runmode" "$rundir"
# The operator's one edit: the brokers.
sed -i "s|\"brokers\": \[[^]]*\]|\"brokers\": [\"${brokers//,/\",\"}\"]|" /etc/messagebuffer/config.json
grep -q "${brokers%%,*}" /etc/messagebuffer/config.json || fail "could not set the brokers"
# (and no metrics listener: its port may be taken on a test machine)
sed -i '/"metrics":/d' /etc/messagebuffer/config.json

# setpriv execs in place (the pid is the agent's, as under systemd), with the user's groups,
# an empty environment and / as the working directory, as systemd starts a service.
(cd / && exec env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin bash -c \
  "umask $umask; exec setpriv --reuid=$user --regid=$group --init-groups -- $exec") \
  >"$log" 2>&1 &
agent_pid=$!
for _ in $(seq 1 200); do [[ -S $sock ]] && break; sleep 0.05; done
[[ -S $sock ]] || { cat "$log" >&2; fail "the agent did not open $sock"; }
[[ $(stat -c '%U %G %a' "$sock") == "messagebuffer messagebuffer 660" ]] ||
  fail "socket is $(stat -c '%U %G %a' "$sock"), not messagebuffer messagebuffer 660"

useradd --system --no-create-home --shell /usr/sbin/nologin -G messagebuffer "$app"
useradd --system --no-create-home --shell /usr/sbin/nologin "$other"
topic=package-test-$(date +%s)
printf '%s\t\tfrom a group member\n' "$topic" |
  runuser -u "$app" -- /usr/bin/messagebuffer send --socket "$sock" ||
  fail "a member of the group could not send"
set +e
refused=$(printf '%s\t\tfrom outside\n' "$topic" |
  runuser -u "$other" -- /usr/bin/messagebuffer send --socket "$sock" 2>&1)
code=$?
set -e
# (EACCES comes from the runtime directory, 0750, which the user may not enter; the socket's
# own 0660 is checked above.)
[[ $code -eq 2 && $refused == *EACCES* ]] || fail "a user outside the group was not refused: $code $refused"
say "outside the group: $refused"
for _ in $(seq 1 300); do
  delivered=$(/usr/bin/messagebuffer top --socket "$sock" --json --interval 0.1 |
    sed -n 's/^ *"delivered": \([0-9]*\),$/\1/p' | head -n 1) || true
  [[ $delivered == 1 ]] && break
  sleep 0.1
done
[[ $delivered == 1 ]] || { cat "$log" >&2; fail "the record was not delivered (delivered=$delivered)"; }

kill -TERM "$agent_pid"
wait "$agent_pid" || { cat "$log" >&2; fail "the agent did not exit 0 on SIGTERM"; }
agent_pid=""

dpkg -r messagebuffer >&2
[[ ! -e /usr/bin/messagebuffer ]] || fail "remove left /usr/bin/messagebuffer"
[[ -d /var/lib/messagebuffer ]] || fail "remove deleted the buffer directory"
dpkg -P messagebuffer >&2
[[ ! -e /var/lib/messagebuffer ]] || fail "purge left /var/lib/messagebuffer"
say "ok: installed, verified, served its group, refused others, delivered, removed, purged"
