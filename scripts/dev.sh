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
#
# --replicas N (make dev-cluster: 3) runs N otherix-api replicas (N odd: an
# even number would keep one a learner) forming one etcd Raft cluster, plus
# the local agent. Replica i (1..N) is named r<i>, keeps its data in
# DEV_DIR/r<i> (DEV_DIR defaults to .dev-cluster) and listens on loopback:
# REST on DEV_PORT_BASE+10*(i-1), its agent listener on the next port and
# its Raft peer listener on the one after (DEV_PORT_BASE defaults to 7180);
# the local agent's own API is on DEV_PORT_BASE+3. The first run starts r1,
# then joins the others with replica join tokens; later runs restart them
# all on their data dirs. Ctrl-C stops exactly the processes it started.
set -euo pipefail

replicas=1
while (($#)); do
	case $1 in
	--replicas) replicas=${2:-}; shift 2 || shift ;;
	--replicas=*) replicas=${1#--replicas=}; shift ;;
	*)
		echo "dev: unknown argument $1 (usage: scripts/dev.sh [--replicas N])" >&2
		exit 2
		;;
	esac
done
if ! [[ $replicas =~ ^[0-9]+$ ]] || ((replicas < 1 || replicas > 7 || replicas % 2 == 0)); then
	echo "dev: --replicas $replicas: want an odd number from 1 to 7 (an even number keeps one replica a learner)" >&2
	exit 2
fi

# abspath makes a path absolute without requiring it to exist.
abspath() {
	case $1 in
	/*) printf '%s\n' "$1" ;;
	*) printf '%s\n' "$PWD/${1#./}" ;;
	esac
}

if ((replicas > 1)); then
	DEV_DIR=$(abspath "${DEV_DIR:-.dev-cluster}")
	DEV_PORT_BASE=${DEV_PORT_BASE:-7180}
else
	DEV_DIR=$(abspath "${DEV_DIR:-.dev}")
fi
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
# The replicas' listeners, by index 1..N (cluster mode only).
rest=() agentl=() peerl=()
if ((replicas > 1)); then
	if ((DEV_PORT_BASE + 10 * (replicas - 1) + 2 > 65535)); then
		echo "dev: DEV_PORT_BASE=$DEV_PORT_BASE leaves no room for $replicas replicas" >&2
		exit 2
	fi
	for ((i = 1; i <= replicas; i++)); do
		b=$((DEV_PORT_BASE + 10 * (i - 1)))
		rest[i]=127.0.0.1:$b agentl[i]=127.0.0.1:$((b + 1)) peerl[i]=127.0.0.1:$((b + 2))
	done
	DEV_LISTEN=${rest[1]} DEV_AGENT_LISTEN=${agentl[1]}
	DEV_AGENT_API_LISTEN=127.0.0.1:$((DEV_PORT_BASE + 3))
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
api_pids=() # cluster mode, by replica index

log() { echo "dev: $*" >&2; }

# stop kills exactly the processes this script started, by pid.
stop() {
	local pid
	for pid in $agent_pid $api_pid ${api_pids[@]+"${api_pids[@]}"}; do
		kill -TERM "$pid" 2>/dev/null || true
	done
	for pid in $agent_pid $api_pid ${api_pids[@]+"${api_pids[@]}"}; do
		wait "$pid" 2>/dev/null || true
	done
	agent_pid=
	api_pid=
	api_pids=()
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
pairs=("DEV_LISTEN=$DEV_LISTEN" "DEV_AGENT_LISTEN=$DEV_AGENT_LISTEN" "DEV_AGENT_API_LISTEN=$DEV_AGENT_API_LISTEN")
if ((replicas > 1)); then
	pairs=("DEV_AGENT_API_LISTEN=$DEV_AGENT_API_LISTEN")
	for ((i = 1; i <= replicas; i++)); do
		pairs+=("DEV_PORT_BASE=${rest[i]}" "DEV_PORT_BASE=${agentl[i]}" "DEV_PORT_BASE=${peerl[i]}")
	done
fi
for pair in "${pairs[@]}"; do
	if port_in_use "${pair#*=}" && ((replicas > 1)); then
		die "${pair#*=} is already in use (another make dev-cluster?); move every listener with
     DEV_PORT_BASE=N make dev-cluster   (replica i on N+10*(i-1) to N+10*(i-1)+2, the agent on N+3)"
	fi
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
	if [[ -d $DEV_DIR/member-data || -d $DEV_DIR/r1/member-data ]]; then
		die "$DEV_DIR already holds a cluster whose admin password is not in $PASSWORD_FILE;
     write that password into $PASSWORD_FILE, or remove $DEV_DIR to start over"
	fi
	password=$(head -c 18 /dev/urandom | base64 | tr -d '/+=\n')
	(umask 077 && printf '%s\n' "$password" >"$PASSWORD_FILE")
	unset password
fi
chmod 0600 "$PASSWORD_FILE"
api_env=(OTHERIX_ADMIN__EMAIL="$ADMIN_EMAIL" OTHERIX_ADMIN__PASSWORD="$(head -n 1 "$PASSWORD_FILE")")

# wait_started LOG PID waits for an API's start lines (REST and agent
# listeners) in LOG and sets api_url, fingerprint and agent_url from them.
wait_started() {
	local log_file=$1 pid=$2 line aline
	local deadline=$((SECONDS + START_TIMEOUT))
	while :; do
		line=$(grep -m1 -E '^otherix-api .* listening on https://[^ ]+ \(CA fingerprint [0-9a-f]+' "$log_file" || true)
		aline=$(grep -m1 -E '^agent listener on https://[^ ]+ ' "$log_file" || true)
		if [[ -n $line && -n $aline ]]; then
			api_url=$(sed -E 's/.* listening on (https:\/\/[^ ]+) .*/\1/' <<<"$line")
			fingerprint=$(sed -E 's/.*\(CA fingerprint ([0-9a-f]+).*/\1/' <<<"$line")
			agent_url=$(sed -E 's/^agent listener on (https:\/\/[^ ]+) .*/\1/' <<<"$aline")
			return 0
		fi
		if ! kill -0 "$pid" 2>/dev/null; then
			wait "$pid" 2>/dev/null || true
			API_LOG=$log_file
			api_log_tail
			die "otherix-api exited while starting (is $DEV_LISTEN or $DEV_AGENT_LISTEN already in use, or another otherix-api running on $DEV_DIR?)"
		fi
		if ((SECONDS >= deadline)); then
			API_LOG=$log_file
			api_log_tail
			die "otherix-api did not print its start line within ${START_TIMEOUT}s"
		fi
		sleep 0.2
	done
}

# wait_ready URL PID LOG: /readyz answers (etcd is up and the replica takes
# traffic; a learner answers 503 until it is promoted).
wait_ready() {
	local url=$1 pid=$2 log_file=$3
	local deadline=$((SECONDS + START_TIMEOUT))
	command -v curl >/dev/null || return 0
	until curl -fsS --max-time 2 --cacert "$DEV_DIR/pki/ca.pem" "$url/readyz" >/dev/null 2>&1 ||
		curl -fsS --max-time 2 --cacert "$DEV_DIR/r1/pki/ca.pem" "$url/readyz" >/dev/null 2>&1; do
		if ! kill -0 "$pid" 2>/dev/null; then
			API_LOG=$log_file
			api_log_tail
			die "otherix-api exited while starting"
		fi
		if ((SECONDS >= deadline)); then
			API_LOG=$log_file
			api_log_tail
			die "$url/readyz did not answer within ${START_TIMEOUT}s"
		fi
		sleep 0.3
	done
}

# start_replica I [NAME=VALUE...] starts replica r<I> of the cluster with a
# peer listener; the assignments are extra environment (a join).
start_replica() {
	local i=$1
	shift
	local log_file=$DEV_DIR/r$i.log
	: >"$log_file"
	env "${api_env[@]}" "$@" "$BIN_DIR/otherix-api" --data-dir "$DEV_DIR/r$i" --name "r$i" \
		--listen "${rest[i]}" --agent-listen "${agentl[i]}" --peer-listen "${peerl[i]}" >>"$log_file" 2>&1 &
	api_pids[i]=$!
	log "otherix-api r$i started (pid ${api_pids[i]}, log $log_file)"
}

# listed NAME: the cluster's member list (through the logged-in CLI) names
# a started member NAME.
listed() {
	"$BIN_DIR/otherix" cluster members -o json 2>/dev/null | grep -q "\"name\": \"$1\""
}

login() {
	if ! "$BIN_DIR/otherix" login "$api_url" --user "$ADMIN_EMAIL" --password-stdin \
		--ca-fingerprint "$fingerprint" <"$PASSWORD_FILE" >/dev/null 2>"$DEV_DIR/login.err"; then
		cat "$DEV_DIR/login.err" >&2
		die "could not log in as $ADMIN_EMAIL with the password in $PASSWORD_FILE"
	fi
	rm -f "$DEV_DIR/login.err"
}

api_url=
agent_url=
fingerprint=
if ((replicas == 1)); then
	: >"$API_LOG"
	env "${api_env[@]}" "$BIN_DIR/otherix-api" --data-dir "$DEV_DIR" \
		--listen "$DEV_LISTEN" --agent-listen "$DEV_AGENT_LISTEN" >>"$API_LOG" 2>&1 &
	api_pid=$!
	log "otherix-api started (pid $api_pid, log $API_LOG)"
	wait_started "$API_LOG" "$api_pid"
	wait_ready "$api_url" "$api_pid" "$API_LOG"
	login
else
	API_LOG=$DEV_DIR/r1.log
	# Replicas that hold a member restart together (none has a quorum
	# alone); the first run starts r1, then joins the others one by one:
	# a joiner reads the membership from any peer, so the previous one must
	# have started its member first.
	joiners=()
	for ((i = 1; i <= replicas; i++)); do
		if [[ -d $DEV_DIR/r$i/member-data ]]; then
			start_replica "$i"
		elif ((i == 1)); then
			start_replica 1
		else
			joiners+=("$i")
		fi
	done
	wait_started "$DEV_DIR/r1.log" "${api_pids[1]}"
	wait_ready "$api_url" "${api_pids[1]}" "$DEV_DIR/r1.log"
	login
	for i in ${joiners[@]+"${joiners[@]}"}; do
		token=$("$BIN_DIR/otherix" cluster join-token create --replica --ttl 10m 2>/dev/null) ||
			die "could not create a replica join token for r$i"
		# The token goes through the environment, not the command line
		# other users can read.
		start_replica "$i" OTHERIX_JOIN="$agent_url" OTHERIX_JOIN_TOKEN="$token"
		unset token
		deadline=$((SECONDS + START_TIMEOUT))
		until listed "r$i"; do
			kill -0 "${api_pids[i]}" 2>/dev/null || {
				API_LOG=$DEV_DIR/r$i.log
				api_log_tail
				die "otherix-api r$i exited while joining"
			}
			((SECONDS < deadline)) || die "r$i is not a member after ${START_TIMEOUT}s (see $DEV_DIR/r$i.log)"
			sleep 0.3
		done
	done
	for ((i = 2; i <= replicas; i++)); do
		wait_ready "https://${rest[i]}" "${api_pids[i]}" "$DEV_DIR/r$i.log"
	done
fi


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

title="Otherix dev cluster"
((replicas > 1)) && title="Otherix dev cluster, $replicas replicas"
cat <<EOF

  $title
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
if ((replicas > 1)); then
	echo
	for ((i = 1; i <= replicas; i++)); do
		printf '  replica r%-5s pid %-7s REST https://%s  agent https://%s  peer %s  log %s\n' \
			"$i" "${api_pids[i]}" "${rest[i]}" "${agentl[i]}" "${peerl[i]}" "$DEV_DIR/r$i.log"
	done
	echo
	echo "  Members:"
	"$BIN_DIR/otherix" cluster members 2>&1 | sed 's/^/    /' || true
	cat <<EOF

  Kill one to watch the others carry on (writes keep working, the member
  turns unhealthy in otherix cluster members):
    kill -9 ${api_pids[2]}    # r2
  and start it again (Ctrl-C does not stop a replica you started yourself):
    $BIN_DIR/otherix-api --data-dir $DEV_DIR/r2 --name r2 --listen ${rest[2]} --agent-listen ${agentl[2]} --peer-listen ${peerl[2]}
EOF
fi
cat <<EOF

  Use the CLI with the dev config:
    export OTHERIX_CONFIG=$OTHERIX_CONFIG; $BIN_DIR/otherix node list
  or log in with your own config (~/.otherix/config):
    $BIN_DIR/otherix login $api_url --user $ADMIN_EMAIL --password-stdin --ca-fingerprint $fingerprint < $PASSWORD_FILE

  Ctrl-C stops the API and the agent.

EOF

# Stay in the foreground until Ctrl-C or the API exits; in a cluster, until
# every replica exited (one killed on purpose leaves the others running).
status=0
if ((replicas > 1)); then
	for i in "${!api_pids[@]}"; do
		wait "${api_pids[i]}" || status=$?
	done
	api_pids=()
	log "every otherix-api replica exited"
	exit "$((status == 0 ? 1 : status))"
fi
wait "$api_pid" || status=$?
api_pid=
log "otherix-api exited (status $status)"
exit "$status"
