# Sourced first by every benchmark script (bash), with the script's arguments:
#   . "$(dirname "$0")/../netns-guard.sh" "$@"
# Needs root; re-executes the script under `unshare --net` (a private, empty network
# namespace of its own), and refuses to go on in a namespace that has any interface
# but lo, whatever the environment says.
if [ "$(id -u)" != 0 ]; then echo "error: run as root (network namespaces)" >&2; exit 1; fi
if [ -z "${VSWITCH_BENCH_INNER:-}" ]; then
  export VSWITCH_BENCH_INNER=1
  exec unshare --net -- "$0" "$@"
fi
LINKS=$(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')
if [ "$LINKS" != "lo " ]; then
  echo "error: not in a fresh network namespace (interfaces: $LINKS); unset VSWITCH_BENCH_INNER and rerun" >&2
  exit 1
fi
