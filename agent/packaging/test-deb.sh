#!/usr/bin/env bash
# Checks the Debian package from `cargo deb -p redflag-agent` on this machine, as root, with no
# systemd running (CI's case): .ci/run runs it; by hand:
#
#   cargo deb -p redflag-agent && sudo bash agent/packaging/test-deb.sh target/debian/redflag-agent_*.deb
#
# It installs, upgrades, removes and purges the package for real (dpkg's database, /usr and
# /var/lib/redflag-agent are the machine's), in a private mount namespace where /etc is an
# overlay and /run a tmpfs, so the enable links, the config it writes and a stand-in
# /run/systemd/system never reach the machine's own. With /run/systemd/system present the
# maintainer scripts act as under systemd; `deb-systemd-invoke` and the service actions of
# `systemctl` (start, stop, restart, daemon-reload, ...) are stubs that record what the scripts
# asked for, while `systemctl preset`/`enable`/`mask` (what deb-systemd-helper makes the enable
# links with, which works without a running systemd) go to the real one. What it proves:
#
#   files     /usr/bin/redflag-agent (runs, --version), the unit in /usr/lib/systemd/system naming
#             that binary, the docs; `systemd-analyze verify` passes on the installed unit
#   install   enables the service; starts it only when /etc/aggregator/config.json exists (a real
#             Go-agent config, which `check-config` accepts); not when the Go agent's own unit in
#             /etc/systemd/system would shadow ours
#   upgrade   restarts it (if it runs); keeps /var/lib/redflag-agent and the config
#   remove    stops it; keeps the state and the config
#   purge     removes /var/lib/redflag-agent and the enable links; keeps the config
#
# Exit 0: every check passed; 1: one failed (the first failure is printed); 2: cannot run here.
set -euo pipefail

PKG=redflag-agent
UNIT=redflag-agent.service
UNIT_PATH=/usr/lib/systemd/system/$UNIT
BIN=/usr/bin/redflag-agent
CONFIG=/etc/aggregator/config.json
STATE_DIR=/var/lib/redflag-agent
WANTS_LINK=/etc/systemd/system/multi-user.target.wants/$UNIT

say() { echo "test-deb: $*"; }
fail() { echo "test-deb: FAIL: $*" >&2; exit 1; }
cannot() { echo "test-deb: cannot run here: $*" >&2; exit 2; }

here=$(cd "$(dirname "$0")" && pwd)
fixture=$here/../tests/fixtures/go-agent-config.json

if [ "${1:-}" != "--inside" ]; then
    deb=${1:-}
    [ -f "$deb" ] || cannot "usage: test-deb.sh PATH/TO/redflag-agent_VERSION_ARCH.deb (got '${deb}')"
    [ "$(id -u)" = 0 ] || cannot "needs root (it installs the package)"
    for tool in dpkg dpkg-query unshare mount systemd-analyze; do
        command -v "$tool" >/dev/null 2>&1 || cannot "needs $tool"
    done
    # This test installs and purges the package: refuse to do that to a machine that has it,
    # except in CI (a leftover of an earlier run there).
    if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then
        [ -n "${CI:-}" ] || cannot "$PKG is installed on this machine; this test would purge it (dpkg -P $PKG first)"
        say "CI: purging the $PKG left installed by an earlier run"
        dpkg -P "$PKG" >/dev/null
    fi
    if [ -e "$STATE_DIR" ]; then
        [ -n "${CI:-}" ] || cannot "$STATE_DIR exists on this machine; this test would remove it"
        rm -rf "$STATE_DIR"
    fi
    deb=$(cd "$(dirname "$deb")" && pwd)/$(basename "$deb")
    exec unshare --mount --propagation private bash "$0" --inside "$deb"
fi

# ---- inside the private mount namespace -----------------------------------------------------
deb=$2
work=$(mktemp -d "${TMPDIR:-/tmp}/test-deb.XXXXXX")
mkdir -p "$work/upper" "$work/overlay-work" "$work/stubs"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$work/upper,workdir=$work/overlay-work" /etc
mount -t tmpfs tmpfs /run
mkdir -p /run/systemd/system /run/lock
calls=$work/calls
real_systemctl=$(command -v systemctl)
cat > "$work/stubs/deb-systemd-invoke" <<STUB
#!/bin/sh
echo "deb-systemd-invoke \$*" >> "$calls"
STUB
cat > "$work/stubs/systemctl" <<STUB
#!/bin/sh
for arg in "\$@"; do
    case "\$arg" in
        -*) ;;
        start|stop|restart|try-restart|reload|reload-or-restart|daemon-reload|daemon-reexec|is-active|is-system-running)
            echo "systemctl \$*" >> "$calls"; exit 0 ;;
        *) break ;;
    esac
done
exec "$real_systemctl" "\$@"
STUB
chmod 755 "$work/stubs/deb-systemd-invoke" "$work/stubs/systemctl"
export PATH="$work/stubs:$PATH" DEBIAN_FRONTEND=noninteractive
cleanup() {
    # Leave nothing installed, whatever happened (/etc and /run vanish with the namespace).
    dpkg -P "$PKG" >/dev/null 2>&1 || true
    rm -rf "$STATE_DIR" "$work"
}
trap cleanup EXIT

out=$work/dpkg.out
# Runs dpkg with ARGS; fails with its output if dpkg fails. Resets the recorded calls first.
pkg() {
    : > "$calls"
    dpkg "$@" > "$out" 2>&1 || { cat "$out" >&2; fail "dpkg $* failed"; }
}
called() { grep -qx -- "deb-systemd-invoke $1 $UNIT" "$calls"; }
must_call() { called "$1" || fail "$2: the maintainer scripts did not ask for '$1' (asked for: $(tr '\n' ';' < "$calls"))"; }
must_not_call() { ! called "$1" || fail "$2: the maintainer scripts asked for '$1' (asked for: $(tr '\n' ';' < "$calls"))"; }
said() { grep -q -- "$1" "$out" || { cat "$out" >&2; fail "$2: dpkg's output does not say '$1'"; }; }

# 1. A first install without a config: files in place, enabled, not started.
[ ! -e "$CONFIG" ] || rm -f "$CONFIG"
pkg -i "$deb"
say "installed $(dpkg-query -W -f='${Package} ${Version}' "$PKG")"
[ -x "$BIN" ] || fail "$BIN missing or not executable"
version=$("$BIN" --version) || fail "$BIN --version failed"
case "$version" in
    "redflag-agent "*"RedFlag agent API 0.1.18"*) say "$BIN --version: $version" ;;
    *) fail "$BIN --version printed '$version'" ;;
esac
[ -f "$UNIT_PATH" ] || fail "$UNIT_PATH missing"
grep -qx "ExecStart=$BIN --config $CONFIG" "$UNIT_PATH" || fail "$UNIT_PATH does not run $BIN --config $CONFIG"
for doc in README.md README.Debian copyright; do
    [ -s "/usr/share/doc/$PKG/$doc" ] || fail "/usr/share/doc/$PKG/$doc missing"
done
systemd-analyze verify "$UNIT_PATH" > "$work/verify.out" 2>&1 || { cat "$work/verify.out" >&2; fail "systemd-analyze verify $UNIT_PATH"; }
[ ! -s "$work/verify.out" ] || { cat "$work/verify.out" >&2; fail "systemd-analyze verify $UNIT_PATH printed warnings"; }
say "systemd-analyze verify $UNIT_PATH: clean"
# (merged /usr: the link may say /lib/systemd/system, the same file)
[ "$(readlink -f "$WANTS_LINK")" = "$(readlink -f "$UNIT_PATH")" ] || fail "not enabled: $WANTS_LINK -> '$(readlink "$WANTS_LINK" || true)'"
must_not_call start "first install without $CONFIG"
said "no $CONFIG yet" "first install without $CONFIG"
say "first install without a config: enabled, not started, told what to do"

# 2. A first install with a config (a real one the Go agent wrote): started.
pkg -P "$PKG"
mkdir -p "$(dirname "$CONFIG")"
install -m 0600 "$fixture" "$CONFIG"
pkg -i "$deb"
must_call start "first install with $CONFIG"
"$BIN" --config "$CONFIG" check-config > "$work/check.out" 2>&1 || { cat "$work/check.out" >&2; fail "check-config on the Go agent's config"; }
say "first install with a Go-written config: check-config valid, started"

# 3. An upgrade: restarted; the state and the config kept.
mkdir -p "$STATE_DIR"
echo kept > "$STATE_DIR/journal.json"
config_sum=$(sha256sum < "$CONFIG")
pkg -i "$deb"
must_call try-restart "upgrade"
must_not_call stop "upgrade"
[ "$(cat "$STATE_DIR/journal.json")" = kept ] || fail "upgrade: $STATE_DIR/journal.json lost"
[ "$(sha256sum < "$CONFIG")" = "$config_sum" ] || fail "upgrade: $CONFIG changed"
say "upgrade: restarted, $STATE_DIR and $CONFIG kept"

# 4. Remove: stopped; binary and unit gone; the state and the config kept.
pkg -r "$PKG"
must_call stop "remove"
[ ! -e "$BIN" ] && [ ! -e "$UNIT_PATH" ] || fail "remove: $BIN or $UNIT_PATH still there"
[ -f "$STATE_DIR/journal.json" ] || fail "remove: $STATE_DIR removed (only purge may)"
[ -f "$CONFIG" ] || fail "remove: $CONFIG removed"
say "remove: stopped, files gone, state and config kept"

# 5. Purge: the state directory and the enable links go; the config stays.
pkg -P "$PKG"
[ ! -e "$STATE_DIR" ] || fail "purge: $STATE_DIR still there"
[ ! -e "$WANTS_LINK" ] && [ ! -L "$WANTS_LINK" ] || fail "purge: $WANTS_LINK still there"
[ ! -L "/etc/systemd/system/$UNIT" ] || fail "purge: the unit is still masked"
[ -f "$CONFIG" ] || fail "purge: $CONFIG removed (it is this host's registration, not the package's)"
if dpkg-query -W -f='${Status}' "$PKG" 2>/dev/null | grep -qv 'not-installed'; then fail "purge: dpkg still knows $PKG"; fi
said "kept $CONFIG" "purge"
say "purge: $STATE_DIR and the enable links removed, config kept"

# 6. The Go agent's own unit in /etc would shadow ours: not started, and told why.
printf '[Service]\nExecStart=/usr/local/bin/redflag-agent\n' > "/etc/systemd/system/$UNIT"
pkg -i "$deb"
must_not_call start "install over the Go agent's unit"
said "overrides this package's unit" "install over the Go agent's unit"
pkg -P "$PKG"
rm -f "/etc/systemd/system/$UNIT"
say "install over the Go agent's unit in /etc: not started, told to remove it"

say "PASS: the package installs, enables, starts with a config, upgrades, removes and purges as documented"
