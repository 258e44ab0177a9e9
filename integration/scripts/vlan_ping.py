#!/usr/bin/env python3
"""Play a VLAN-aware host on a trunk port (the kernel here has no 8021q module): send
COUNT 802.1Q-tagged ICMP echo requests in VLAN VID from SRC_IP to DST_IP (whose MAC
is DST_MAC), answering the target's tagged ARP requests for SRC_IP, and count the
echo replies that come back tagged with VID. Prints "sent N replies M other_vlans K"
and exits 0 if every request was answered once.

Usage: vlan_ping.py IFACE VID SRC_IP DST_IP DST_MAC COUNT [GAP_S]
"""
import socket, struct, sys, time

from pktlib import csum, untag, vlan_socket  # beside this script (its directory is on sys.path)

iface, vid, sip, dip, dmac = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
count = int(sys.argv[6])
gap = float(sys.argv[7]) if len(sys.argv) > 7 else 0.02
s, mac = vlan_socket(iface)
dst = bytes.fromhex(dmac.replace(":", ""))
tag = struct.pack("!HH", 0x8100, vid)


def echo(seq):
    body = struct.pack("!BBHHH", 8, 0, 0, 0x4242, seq) + b"vswitch-vlan" * 4
    body = body[:2] + struct.pack("!H", csum(body)) + body[4:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), seq, 0, 64, 1, 0,
                     socket.inet_aton(sip), socket.inet_aton(dip))
    ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
    return dst + mac + tag + struct.pack("!H", 0x0800) + ip + body


replies, other, seen = 0, 0, set()
s.settimeout(0.005)
seq = 0
deadline = time.time() + count * gap + 5
next_send = time.time()
while time.time() < deadline and len(seen) < count:
    if seq < count and time.time() >= next_send:
        seq += 1
        s.send(echo(seq))
        next_send = time.time() + gap
    try:
        data, anc, _, addr = s.recvmsg(2048, 1024)
    except socket.timeout:
        continue
    if addr[2] == socket.PACKET_OUTGOING:
        continue
    tci, et, body = untag(data, anc)
    if et == 0x0806 and len(body) >= 28:
        op = struct.unpack("!H", body[6:8])[0]
        if op == 1 and body[24:28] == socket.inet_aton(sip):
            if tci != vid:
                other += 1
                continue
            arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 2, mac, socket.inet_aton(sip),
                              body[8:14], body[14:18])
            s.send(body[8:14] + mac + tag + struct.pack("!H", 0x0806) + arp)
    elif et == 0x0800 and len(body) >= 28 and body[9] == 1 and body[20] == 0:
        ident, sq = struct.unpack("!HH", body[24:28])
        if ident == 0x4242 and body[12:16] == socket.inet_aton(dip):
            if tci != vid:
                other += 1
            elif sq in seen:
                replies += 1  # a duplicate
            else:
                seen.add(sq)
                replies += 1
print(f"sent {seq} replies {replies} other_vlans {other}")
sys.exit(0 if replies == count and len(seen) == count and other == 0 else 1)
