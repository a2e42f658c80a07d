#!/usr/bin/env bash
# scripts/dev.sh: the `make dev` cluster. Runs otherix-api on DEV_DIR, logs in
# with a dev-only CLI config, enrolls this host as a node (first run only) and
# runs otherix-agent next to it, then stays in the foreground until Ctrl-C,
# when it stops exactly the two processes it started.
#
# Environment (the Makefile passes these):
#   DEV_DIR               data dir (default .dev): etcd data, PKI, logs, the
#                         admin password, the CLI config and the agent state;
#                         made absolute here, so the daemons never keep a
#                         path that depends on where they were started
#   DEV_PORT_BASE         moves all three listeners at once to 127.0.0.1:N,
#                         N+1 and N+2 (default: 7080, 7443, 7444 as below)
#   DEV_LISTEN            REST listener (default 127.0.0.1:7080)
#   DEV_AGENT_LISTEN      agent-facing listener of the API (default 127.0.0.1:7443)
#   DEV_AGENT_API_LISTEN  the local agent's own API (default 127.0.0.1:7444)
#   DEV_AGENT_FLAGS       extra flags for `otherix-agent serve`, added after
#                         the defaults below (e.g. "--data-plane off --accel tcg")
#   BIN_DIR               where the built binaries are (default bin)
set -euo pipefail

# abspath makes a path absolute without requiring it to exist.
abspath() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$PWD/${1#./}" ;;
	esac
}

DEV_DIR=$(abspath "${DEV_DIR:-.dev}")
DEV_DIR=${DEV_DIR%/}
if [[ -n ${DEV_PORT_BASE:-} ]]; then
	if ! [[ $DEV_PORT_BASE =~ ^[0-9]+$ ]] || ((DEV_PORT_BASE < 1 || DEV_PORT_BASE > 65533)); then
		echo "dev: DEV_PORT_BASE=$DEV_PORT_BASE: want a port number from 1 to 65533" >&2
		exit 2
	fi
	DEV_LISTEN=${DEV_LISTEN:-127.0.0.1:$DEV_PORT_BASE}
	DEV_AGENT_LISTEN=${DEV_AGENT_LISTEN:-127.0.0.1:$((DEV_PORT_BASE + 1))}
	DEV_AGENT_API_LISTEN=${DEV_AGENT_API_LISTEN:-127.0.0.1:$((DEV_PORT_BASE + 2))}
fi
DEV_LISTEN=${DEV_LISTEN:-127.0.0.1:7080}
DEV_AGENT_LISTEN=${DEV_AGENT_LISTEN:-127.0.0.1:7443}
DEV_AGENT_API_LISTEN=${DEV_AGENT_API_LISTEN:-127.0.0.1:7444}
BIN_DIR=$(abspath "${BIN_DIR:-bin}")
START_TIMEOUT=${DEV_START_TIMEOUT:-60} # seconds

ADMIN_EMAIL=admin@localhost
PASSWORD_FILE=$DEV_DIR/admin-password
AGENT_DIR=$DEV_DIR/agent
API_LOG=$DEV_DIR/api.log
AGENT_LOG=$DEV_DIR/agent.log
# A CLI config of its own, so the user's ~/.otherix/config is never touched.
export OTHERIX_CONFIG=$DEV_DIR/otherix-config

api_pid=
agent_pid=

log() { echo "dev: $*" >&2; }

# stop kills exactly the processes this script started, by pid.
stop() {
	local pid
	for pid in $agent_pid $api_pid; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $agent_pid $api_pid; do
		wait "$pid" 2>/dev/null || true
	done
	agent_pid=
	api_pid=
}
trap 'stop' EXIT
trap 'log "stopping"; stop; exit 130' INT
trap 'log "stopping"; stop; exit 143' TERM

die() {
	log "$*"
	exit 1
}

# node_conditions reads `otherix node get -o json` (one field a line, as the
# CLI indents it) and prints "TYPE=STATUS: MESSAGE" for every condition with a
# message except plainly healthy ones (status True or ok on a type ending in
# Ready, Healthy or OK).
node_conditions() {
	awk '
		function flush() {
			if (type != "" && msg != "" && !((st == "True" || st == "ok") && type ~ /(Ready|Healthy|OK)$/))
				print type "=" st ": " msg
			type = st = msg = ""
		}
		function val(line) {
			sub(/^[^:]*: */, "", line); sub(/,$/, "", line); gsub(/^"|"$/, "", line)
			return line
		}
		/"conditions": \[/ { inc = 1; next }
		inc && /^ *\]/ { flush(); inc = 0; next }
		inc && /^ *\{/ { flush(); next }
		inc && /"type":/ { type = val($0) }
		inc && /"status":/ { st = val($0) }
		inc && /"message":/ { msg = val($0) }
	'
}

api_log_tail() {
	log "last lines of $API_LOG:"
	tail -n 25 "$API_LOG" >&2 || true
}

for b in otherix-api otherix-agent otherix; do
	[[ -x $BIN_DIR/$b ]] || die "$BIN_DIR/$b is missing: run make build"
done

# port_in_use HOST:PORT: something accepts connections there. Checked before
# starting anything, so a taken port is named with the variable that moves it
# instead of surfacing as a daemon that exited.
port_in_use() {
	local host=${1%:*} port=${1##*:}
	host=${host#[}
	host=${host%]}
	[[ -z $host || $host == 0.0.0.0 ]] && host=127.0.0.1
	[[ $host == :: ]] && host=::1
	(exec 3<>"/dev/tcp/$host/$port") 2>/dev/null
}
for pair in "DEV_LISTEN=$DEV_LISTEN" "DEV_AGENT_LISTEN=$DEV_AGENT_LISTEN" "DEV_AGENT_API_LISTEN=$DEV_AGENT_API_LISTEN"; do
	if port_in_use "${pair#*=}"; then
		die "${pair#*=} (${pair%%=*}) is already in use (another make dev?); move all three listeners with
     DEV_PORT_BASE=N make dev   (127.0.0.1:N, N+1 and N+2), or set ${pair%%=*}=HOST:PORT"
	fi
done

mkdir -p "$DEV_DIR"
chmod 0700 "$DEV_DIR"

# The admin password: generated on the first run and handed to the API, which
# creates admin@localhost with it on its first boot. Later runs reuse the file
# and pass it again: the API ignores it once the admin exists, and a first
# boot that failed before creating the admin gets the same password.
if [[ ! -s $PASSWORD_FILE ]]; then
	if [[ -d $DEV_DIR/member-data ]]; then
		die "$DEV_DIR already holds a cluster whose admin password is not in $PASSWORD_FILE;
     write that password into $PASSWORD_FILE, or remove $DEV_DIR to start over"
	fi
	password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')
	(umask 077 && printf '%s\n' "$password" >"$PASSWORD_FILE")
	unset password
fi
chmod 0600 "$PASSWORD_FILE"
api_env=(OTHERIX_ADMIN__EMAIL="$ADMIN_EMAIL" OTHERIX_ADMIN__PASSWORD="$(head -n 1 "$PASSWORD_FILE")")

# Start the API and wait for its start lines (REST and agent listeners).
: >"$API_LOG"
env "${api_env[@]}" "$BIN_DIR/otherix-api" --data-dir "$DEV_DIR" \
	--listen "$DEV_LISTEN" --agent-listen "$DEV_AGENT_LISTEN" >>"$API_LOG" 2>&1 &
api_pid=$!
log "otherix-api started (pid $api_pid, log $API_LOG)"

api_url=
agent_url=
fingerprint=
deadline=$((SECONDS + START_TIMEOUT))
while :; do
	line=$(grep -m1 -E '^otherix-api .* listening on https://[^ ]+ \(CA fingerprint [0-9a-f]+' "$API_LOG" || true)
	aline=$(grep -m1 -E '^agent listener on https://[^ ]+ ' "$API_LOG" || true)
	if [[ -n $line && -n $aline ]]; then
		api_url=$(sed -E 's/.* listening on (https:\/\/[^ ]+) .*/\1/' <<<"$line")
		fingerprint=$(sed -E 's/.*\(CA fingerprint ([0-9a-f]+).*/\1/' <<<"$line")
		agent_url=$(sed -E 's/^agent listener on (https:\/\/[^ ]+) .*/\1/' <<<"$aline")
		break
	fi
	if ! kill -0 "$api_pid" 2>/dev/null; then
		wait "$api_pid" 2>/dev/null || true
		api_pid=
		api_log_tail
		die "otherix-api exited while starting (is $DEV_LISTEN or $DEV_AGENT_LISTEN already in use, or another otherix-api running on $DEV_DIR?)"
	fi
	if ((SECONDS >= deadline)); then
		api_log_tail
		die "otherix-api did not print its start line within ${START_TIMEOUT}s"
	fi
	sleep 0.2
done

# /readyz: etcd is up and this replica takes traffic.
if command -v curl >/dev/null; then
	until curl -fsS --max-time 2 --cacert "$DEV_DIR/pki/ca.pem" "$api_url/readyz" >/dev/null 2>&1; do
		if ! kill -0 "$api_pid" 2>/dev/null; then
			api_pid=
			api_log_tail
			die "otherix-api exited while starting"
		fi
		if ((SECONDS >= deadline)); then
			api_log_tail
			die "$api_url/readyz did not answer within ${START_TIMEOUT}s"
		fi
		sleep 0.3
	done
fi

if ! "$BIN_DIR/otherix" login "$api_url" --user "$ADMIN_EMAIL" --password-stdin \
	--ca-fingerprint "$fingerprint" <"$PASSWORD_FILE" >/dev/null 2>"$DEV_DIR/login.err"; then
	cat "$DEV_DIR/login.err" >&2
	die "could not log in as $ADMIN_EMAIL with the password in $PASSWORD_FILE"
fi
rm -f "$DEV_DIR/login.err"

# Enroll this host as a node, once: the agent state survives re-runs.
node_name=$(hostname -s 2>/dev/null | tr 'A-Z' 'a-z' | tr -cd 'a-z0-9-' || true)
node_name=${node_name:-dev}
if [[ ! -f $AGENT_DIR/agent.yaml ]]; then
	token=$("$BIN_DIR/otherix" node join-token create --ttl 10m --name "$node_name" -o json 2>/dev/null |
		sed -n -E 's/^ *"token": *"([^"]+)".*/\1/p' || true)
	[[ -n $token ]] || die "could not create a join token for node $node_name"
	"$BIN_DIR/otherix-agent" bootstrap --server "$agent_url" --token "$token" \
		--name "$node_name" --state-dir "$AGENT_DIR" >&2 ||
		die "otherix-agent bootstrap failed"
	unset token
else
	node_name=$(sed -n -E 's/^node_name: *//p' "$AGENT_DIR/agent.yaml")
	# The agent listener moved since enrollment (DEV_AGENT_LISTEN or
	# DEV_PORT_BASE changed): same CA, same certificate, new address.
	server=$(sed -n -E 's/^server: *//p' "$AGENT_DIR/agent.yaml")
	if [[ -n $server && $server != "$agent_url" ]]; then
		log "the agent listener moved from $server to $agent_url: updating $AGENT_DIR/agent.yaml"
		sed -i -E "s|^server: .*|server: $agent_url|" "$AGENT_DIR/agent.yaml"
	fi
fi

: >"$AGENT_LOG"
# agent_flags are what the dev agent runs with: its state and its own API
# (mutual TLS, the control plane only) on loopback, then the dev defaults,
# then the user's DEV_AGENT_FLAGS (a later flag wins).
agent_flags=(--state-dir "$AGENT_DIR" --listen "$DEV_AGENT_API_LISTEN")
# QEMU's sockets live under the run dir and a unix socket path has at most
# 107 bytes: a checkout deep enough makes <DEV_DIR>/agent/run too long, so
# the run dir moves to a short one named after DEV_DIR (stable across runs,
# which re-adopting running VMs needs).
run_dir=$AGENT_DIR/run
if ((${#run_dir} + 1 + 26 + 1 + 11 > 107)); then
	run_base=/tmp
	[[ -n ${XDG_RUNTIME_DIR:-} && -d $XDG_RUNTIME_DIR ]] && run_base=$XDG_RUNTIME_DIR
	run_dir=$run_base/otherix-dev-$(id -u)-$(printf '%s' "$DEV_DIR" | sha256sum | cut -c1-12)
	# A world-writable /tmp: use the dir only if it is ours and no link.
	mkdir -p -m 0700 "$run_dir"
	if [[ -L $run_dir || ! -O $run_dir ]]; then
		die "$run_dir is not a directory of this user: remove it, or set DEV_AGENT_FLAGS=--run-dir=DIR"
	fi
	chmod 0700 "$run_dir"
	agent_flags+=(--run-dir "$run_dir")
fi
# The offline quick start serves its image over loopback, which the agent
# refuses to download from unless told (it denies loopback by default).
agent_flags+=(--image-allow 127.0.0.1/32)
if [[ -n ${DEV_AGENT_FLAGS:-} ]]; then
	read -r -a extra <<<"$DEV_AGENT_FLAGS"
	agent_flags+=("${extra[@]}")
fi
"$BIN_DIR/otherix-agent" serve "${agent_flags[@]}" >>"$AGENT_LOG" 2>&1 &
agent_pid=$!
log "otherix-agent started (pid $agent_pid, node $node_name, log $AGENT_LOG)"

# Wait for this agent's first heartbeat: the node may still be listed ready
# from the last run, so the agent's own log says when it has reported (and,
# before that, what it found: the data plane off, the accelerator).
deadline=$((SECONDS + START_TIMEOUT))
until grep -q 'heartbeat accepted' "$AGENT_LOG"; do
	kill -0 "$agent_pid" 2>/dev/null || {
		tail -n 20 "$AGENT_LOG" >&2
		die "otherix-agent exited"
	}
	if ((SECONDS >= deadline)); then
		log "otherix-agent has not reached the API within ${START_TIMEOUT}s (see $AGENT_LOG)"
		break
	fi
	sleep 0.2
done
phase=$("$BIN_DIR/otherix" node list 2>/dev/null | awk -v n="$node_name" '$1 == n { print $2 }' || true)

# notes are what the user should know about the node before using it: the
# data plane off (VMs with networks cannot run here), and any node condition
# that reports a problem (a host-route collision, a KVM that cannot boot
# guests, ...), read generically from the node's JSON.
notes=()
if grep -q 'network data plane off' "$AGENT_LOG"; then
	notes+=("network data plane off (not root, or --data-plane off): VMs with --network cannot run here")
fi
while IFS= read -r line; do
	[[ -n $line ]] && notes+=("$line")
done < <("$BIN_DIR/otherix" node get "$node_name" -o json 2>/dev/null | node_conditions || true)

cat <<EOF

  Otherix dev cluster
  API             $api_url
  CA fingerprint  $fingerprint
  admin           $ADMIN_EMAIL (password in $PASSWORD_FILE)
  node            $node_name (${phase:-not reported yet})
  agent flags     ${agent_flags[*]}
  logs            $API_LOG, $AGENT_LOG
EOF
for n in ${notes[@]+"${notes[@]}"}; do
	echo "  note            $n"
done
cat <<EOF

  Use the CLI with the dev config:
    export OTHERIX_CONFIG=$OTHERIX_CONFIG; $BIN_DIR/otherix node list
  or log in with your own config (~/.otherix/config):
    $BIN_DIR/otherix login $api_url --user $ADMIN_EMAIL --password-stdin --ca-fingerprint $fingerprint < $PASSWORD_FILE

  Ctrl-C stops the API and the agent.

EOF

# Stay in the foreground until Ctrl-C or the API exits.
status=0
wait "$api_pid" || status=$?
api_pid=
log "otherix-api exited (status $status)"
exit "$status"
