#!/usr/bin/env python3
"""Tables for benches/e2e/run.sh: medians over rounds, ratios to the kernel row.

    report.py RESULTS SECTION      SECTION: l2 | routed | routed6 | nat | vxlan | raw

RESULTS has one line per (section, variant, round):
    SECTION <TAB> VARIANT <TAB> ROUND <TAB> key=value key=value ...
with "nan" for a value that could not be measured. Rows keep the order of first
appearance; the first row of a section is the base of the ratios.
"""
import math
import statistics
import sys

LABELS = {
    "kernel": "Linux bridge",
    "ovs": "OVS userspace (peers: tx csum off)",
    "ovs-tso": "OVS userspace + TSO",
    "vswitchd": "vswitchd (--fastpath off)",
    "vswitchd-fp": "vswitchd --fastpath on",
    "vswitchd-fp-nopeer": "vswitchd --fastpath on, plain redirect (VSWITCH_FASTPATH_PEER=off)",
    "veth": "direct veth pair (ceiling)",
    "kernel-route": "Linux IPv4 forwarding",
    "vswitchd-route": "vswitchd router (--fastpath off)",
    "vswitchd-route-fp": "vswitchd router --fastpath on",
    "kernel-route6": "Linux IPv6 forwarding",
    "vswitchd-route6": "vswitchd router, IPv6 (--fastpath off)",
    "vswitchd-route6-fp": "vswitchd router, IPv6 --fastpath on",
    "kernel-nat": "Linux forwarding + nftables masquerade",
    "vswitchd-nat": "vswitchd masquerade (--fastpath off)",
    "vswitchd-nat-fp": "vswitchd masquerade --fastpath on",
    "kernel-vxlan": "Linux VXLAN device + bridge",
    "vswitchd-vxlan": "vswitchd vxlan port",
    "vswitchd-vxlan-fp": "vswitchd vxlan port, --fastpath on (kernel external VXLAN device)",
    "vswitchd-kvxlan": "vswitchd, kernel VXLAN device as a system port (reference)",
}

# (key, header, format, ratio?)
TCP = [
    ("tcp1", "TCP 1 stream Gbit/s", "%.2f", True),
    ("tcp4", "TCP 4 streams Gbit/s", "%.2f", True),
]
CPU = [
    ("cpu", "switch CPU s (TCP 1)", "%.2f", True),
    ("softirq", "softirq s, all CPUs (TCP 1)", "%.2f", True),
]
COLUMNS = {
    "l2": TCP + [
        ("udp_sent_kpps", "UDP 64 B sent kpps", "%.0f", True),
        ("udp_rx_kpps", "UDP 64 B rx kpps", "%.0f", True),
        ("udp_loss", "UDP loss %", "%.1f", False),
        ("ping_med", "ping median µs", "%.0f", True),
        ("ping_p99", "ping p99 µs", "%.0f", True),
    ] + CPU,
    "routed": TCP + [
        ("ping_med", "ping median µs", "%.0f", True),
        ("ping_p99", "ping p99 µs", "%.0f", True),
    ] + CPU,
    "nat": TCP + CPU,
    "vxlan": TCP + CPU,
}
COLUMNS["routed6"] = COLUMNS["routed"]
TITLES = {"l2": "switch", "routed": "routed (c1 → c2 through the gateway)",
          "routed6": "routed IPv6 (c1 → c2 through the gateway)",
          "nat": "NAT (masquerade, c1 → outside)",
          "vxlan": "VXLAN (two hosts, c1 → c2 across the tunnel)"}


def load(path):
    data = {}  # section -> variant -> [dict per round]
    for line in open(path):
        line = line.rstrip("\n")
        if not line:
            continue
        section, variant, _round, kv = line.split("\t")
        vals = {}
        for item in kv.split():
            k, v = item.split("=", 1)
            try:
                vals[k] = float(v)
            except ValueError:
                vals[k] = float("nan")
        data.setdefault(section, {}).setdefault(variant, []).append(vals)
    return data


def median(xs):
    xs = [x for x in xs if not math.isnan(x)]
    return statistics.median(xs) if xs else float("nan")


def table(section, rows):
    cols = COLUMNS[section]
    med = {v: {k: median([r.get(k, float("nan")) for r in rounds]) for k, *_ in cols}
           for v, rounds in rows.items()}
    base = med[next(iter(med))]
    out = ["| " + " | ".join([TITLES[section]] + [c[1] for c in cols]) + " |",
           "|" + "---|" * (len(cols) + 1)]
    for v, m in med.items():
        cells = [LABELS.get(v, v)]
        for k, _h, fmt, ratio in cols:
            x = m[k]
            if math.isnan(x):
                cells.append("n/a")
                continue
            if k == "udp_loss":
                x = max(x, 0.0)  # rx may include a stray ARP/ND frame
            s = fmt % x
            if k == "cpu" and v.startswith("kernel"):
                s += "†"
            b = base[k]
            if ratio and not math.isnan(b) and b > 0:
                s += " (%.2f×)" % (x / b)
            cells.append(s)
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def raw(data):
    out = ["| case | variant | round | values |", "|---|---|---|---|"]
    for section, rows in data.items():
        for v, rounds in rows.items():
            for i, r in enumerate(rounds, 1):
                vals = " ".join("%s=%s" % (k, "nan" if math.isnan(x) else ("%g" % round(x, 2)))
                                for k, x in r.items())
                out.append("| %s | %s | %d | %s |" % (section, v, i, vals))
    return "\n".join(out)


def main():
    data = load(sys.argv[1])
    section = sys.argv[2]
    if section == "raw":
        print(raw(data))
    elif section in data:
        print(table(section, data[section]))


if __name__ == "__main__":
    main()
